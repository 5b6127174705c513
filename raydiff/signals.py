"""SIGINT, SIGTERM and SIGHUP stop a run the same way: a consistent run folder, then exit 128 + signal.

Ctrl-C sends SIGINT; ``timeout``, batch schedulers and ``ray job stop`` send SIGTERM; a closed
terminal sends SIGHUP. The first of them raises :class:`Interrupted` (a ``KeyboardInterrupt``, so
the event loop's Ctrl-C path handles all three) in the main thread; any later one, while the run
winds down and writes its folder, is deferred: it is reported and ignored, so the folder promised by
the first is written. ``ray.init`` installs its own SIGTERM handler (``sys.exit``, which aborted
the driver mid-write); :func:`reinstall` puts ours back after it. Exit codes: 130, 143, 129.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any, Optional, Union

log = logging.getLogger(__name__)

HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
Handler = Union[Callable[[int, Optional[FrameType]], Any], int, None]


class Interrupted(KeyboardInterrupt):
    """The run was asked to stop by a signal (Ctrl-C, SIGTERM, SIGHUP)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def exit_code(signum: Optional[int]) -> int:
    """The shell's convention: 128 + the signal's number (SIGINT when unknown)."""
    return 128 + int(signum if signum is not None else signal.SIGINT)


def signal_name(signum: Optional[int]) -> Optional[str]:
    return None if signum is None else signal.Signals(signum).name


_current: Optional[SignalGuard] = None
_last: Optional[int] = None  # the first signal of the most recent guarded run


class SignalGuard:
    """Context manager around one run. Installs nothing outside the main thread (sweeps run in threads)."""

    def __init__(self) -> None:
        self.first: Optional[int] = None
        self.deferring = False  # True while the run writes its last status: every signal waits until then
        self.previous: dict[int, Handler] = {}
        self.enabled = threading.current_thread() is threading.main_thread()

    def __enter__(self) -> SignalGuard:
        global _current, _last
        if self.enabled:
            for s in HANDLED:
                prev = signal.getsignal(s)
                if prev is signal.SIG_IGN:  # nohup's ignored SIGHUP stays ignored
                    continue
                self.previous[s] = prev
            self._outer = _current
            _current = self
            _last = None
            self.install()
        return self

    def install(self) -> None:
        """(Re)install the handlers; after ``ray.init``, which replaces SIGTERM's."""
        if self.enabled:
            for s in self.previous:
                signal.signal(s, self._handle)

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        global _last
        if self.first is None and not self.deferring:
            self.first = _last = signum
            raise Interrupted(signum)
        print(
            f"raydiff: {signal.Signals(signum).name} received while the run folder is being written; it is "
            "deferred so that the folder is complete (the run exits by itself in a moment; kill -9 forces it)",
            file=sys.stderr,
            flush=True,
        )

    def __exit__(self, *exc: Any) -> None:
        global _current
        if self.enabled:
            for s, prev in self.previous.items():
                signal.signal(s, prev if prev is not None else signal.SIG_DFL)
            _current = self._outer


def defer() -> None:
    """From now on (the run's last writes), every signal is deferred rather than raised."""
    if _current is not None:
        _current.deferring = True


def reinstall() -> None:
    """Put the current run's handlers back (``ray.init`` replaced SIGTERM's); no-op outside a guarded run."""
    if _current is not None:
        _current.install()


def last_signal() -> Optional[int]:
    """The signal that stopped the most recent guarded run in this thread's process, or None."""
    return _last


__all__ = ["Interrupted", "SignalGuard", "exit_code", "last_signal", "reinstall", "signal_name"]
