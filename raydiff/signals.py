"""SIGINT, SIGTERM and SIGHUP stop a run the same way: a consistent run folder, then exit 128 + signal.

Ctrl-C sends SIGINT; ``timeout``, batch schedulers and ``ray job stop`` send SIGTERM; a closed
terminal sends SIGHUP. The first of them raises :class:`Interrupted` (a ``KeyboardInterrupt``, so
the event loop's Ctrl-C path handles all three) in the main thread; any later one, while the run
winds down and writes its folder, is deferred: it is reported and ignored, so the folder promised by
the first is written. ``ray.init`` installs its own SIGTERM handler (``sys.exit``, which aborted
the driver mid-write); :func:`reinstall` puts ours back after it, and again after ``ray.shutdown()``
(which resets the handlers at the C level while ``signal.getsignal`` still reports ours, so a later SIGTERM
killed the process outright). Exit codes: 130, 143, 129.

While the run writes what it must (its records, model and summary), :func:`hold` makes a first signal note
itself instead of raising: the writes finish, and what follows them is skipped (:func:`stopping`). From the
first signal on, :func:`seconds_left` counts down ``run.stop_grace_s``: the wind-down is bounded.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
        self.first_at: Optional[float] = None  # time.monotonic() of the first signal
        self.holding = 0  # > 0 inside hold(): a first signal is noted, not raised
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
            self.first_at = time.monotonic()
            log.info("%s received (wall clock %.3f)", signal.Signals(signum).name, time.time())
            if self.holding:
                print(
                    f"raydiff: {signal.Signals(signum).name} received: the run stops once its records, model and "
                    "summary are written",
                    file=sys.stderr,
                    flush=True,
                )
                return
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


@contextmanager
def hold() -> Iterator[None]:
    """Inside: a first signal is noted (the run then stops after this block) instead of raised in the middle
    of a write. Nests; a no-op outside a guarded run."""
    cur = _current
    if cur is None:
        yield
        return
    cur.holding += 1
    try:
        yield
    finally:
        cur.holding -= 1


def stopping() -> bool:
    """Whether a signal asked the current run to stop."""
    return _current is not None and _current.first is not None


def note_stop(signum: int) -> None:
    """Record a stop that arrived as an exception elsewhere (a KeyboardInterrupt without our handler)."""
    global _last
    if _current is not None and _current.first is None:
        _current.first = _last = signum
        _current.first_at = time.monotonic()


def seconds_left(grace_s: float) -> float:
    """Of the wind-down's ``grace_s``, what is left (inf when no signal came)."""
    if _current is None or _current.first_at is None:
        return float("inf")
    return grace_s - (time.monotonic() - _current.first_at)


def reinstall() -> None:
    """Put the current run's handlers back (``ray.init`` replaced SIGTERM's); no-op outside a guarded run."""
    if _current is not None:
        _current.install()


def last_signal() -> Optional[int]:
    """The signal that stopped the most recent guarded run in this thread's process, or None."""
    return _last


__all__ = [
    "Interrupted",
    "SignalGuard",
    "exit_code",
    "hold",
    "last_signal",
    "note_stop",
    "reinstall",
    "seconds_left",
    "signal_name",
    "stopping",
]
