"""A run folder's life cycle: one writer at a time, and a status written first and last.

``status.json`` says ``running`` before anything else is written and ``finished``, ``interrupted``
or ``failed`` (with the reason) after the last file, so a reader can always tell a complete run
from one that was killed, crashed or is still going; it also holds the sha256 of the resolved
config, so a folder is never mistaken for a run of another config. While a run writes, it holds an
exclusive lock on the folder itself (``fcntl.flock``, which the kernel releases when the process dies,
even by SIGKILL, so a killed run never leaves a stale lock); a second run on the same folder is refused.
A new run never mixes with an old one: it refuses a folder that holds another config's finished
run (unless ``force``) or files that are not a run's, and removes the old run's files first.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from .config import Config
from .errors import RunFolderError

log = logging.getLogger(__name__)

STATUS = "status.json"
RUNNING, FINISHED, INTERRUPTED, FAILED = "running", "finished", "interrupted", "failed"
# what a run writes; a new run in an old run's folder removes these first (nothing else is ever deleted)
RUN_FILES = (
    "config.yaml",
    "partition.parquet",
    "partition.png",
    "events.parquet",
    "evals.parquet",
    "summary.json",
    "checkpoint.npz",
    "checkpoint.pkl",
    "privacy.parquet",
    "privacy.png",
    STATUS,
)
RUN_DIRS = ("samples", "model")


def config_sha256(cfg: Config) -> str:
    """The identity of a resolved config: sha256 of its config.yaml text."""
    from .config_load import dump_yaml

    return hashlib.sha256(dump_yaml(cfg).encode("utf-8")).hexdigest()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def read_status(folder: Path) -> Optional[dict[str, Any]]:
    """``status.json`` as a dict, or None when there is none (a run of an older raydiff, or no run)."""
    try:
        data = json.loads((folder / STATUS).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"status": "unreadable"}
    return data if isinstance(data, dict) else {"status": "unreadable"}


def _write_status(folder: Path, data: dict[str, Any]) -> None:
    from .outputs import write_json

    write_json(folder / STATUS, data)


# ---------------------------------------------------------------------------------------- the lock
class FolderLock:
    """An exclusive ``flock`` on the run folder itself (its directory), for as long as this object holds it.

    Locking the directory leaves no lock file behind, and the kernel drops the lock when the process
    dies however it dies."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.fd: Optional[int] = None

    def acquire(self) -> None:
        try:
            import fcntl
        except ImportError:  # not a POSIX system: no lock (Ray runs there only partly anyway)
            log.warning("no file locking on this system: nothing stops two runs writing %s", self.folder)
            return
        try:
            fd = os.open(self.folder, os.O_RDONLY)
        except OSError as exc:
            raise RunFolderError(f"run folder {str(self.folder)!r} cannot be opened ({exc.strerror or exc})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            st = read_status(self.folder) or {}
            holder = (
                f"pid {st.get('pid')} on {st.get('host')}, started {st.get('started')}"
                if st.get("pid")
                else "another process"
            )
            raise RunFolderError(
                f"run folder {str(self.folder)!r} is in use by another run ({holder}); wait for it "
                "to end, or choose another --out"
            ) from None
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = None


def is_locked(folder: Path) -> bool:
    """Whether a live process holds the folder's lock (a ``running`` status without it is a killed run)."""
    try:
        import fcntl
    except ImportError:
        return False
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


# ---------------------------------------------------------------------------------------- checks
def check_writable_dir(path: Path, flag: str, shown: Optional[Path] = None) -> None:
    """``path`` is, or can be made, a folder this process may write in; else a RunFolderError naming it
    (or ``shown``, the file the user named, when ``path`` is that file's folder)."""
    named = shown if shown is not None else path
    if "\x00" in str(named):
        raise RunFolderError(f"{flag} {str(named)!r} holds a NUL character, which no file name can hold")
    if path.exists() and not path.is_dir():
        if shown is None:
            raise RunFolderError(f"{flag} {str(path)!r} is a file, not a folder")
        raise RunFolderError(f"{flag} {str(named)!r} is below {str(path)!r}, which is a file, not a folder")
    probe = path
    while not probe.exists():
        if probe.is_symlink():  # a dangling link: mkdir would fail
            raise RunFolderError(f"{flag} {str(named)!r}: {str(probe)!r} is a broken link")
        probe = probe.parent
    if not probe.is_dir():
        raise RunFolderError(f"{flag} {str(named)!r} is below {str(probe)!r}, which is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise RunFolderError(f"{flag} {str(named)!r}: no permission to write in {str(probe)!r}")


def check_writable_file(path: Path, flag: str) -> None:
    """``path`` can be written as a file (its folder is, or can be made, writable; it is not a folder)."""
    if "\x00" in str(path):
        raise RunFolderError(f"{flag} {str(path)!r} holds a NUL character, which no file name can hold")
    if path.is_dir():
        raise RunFolderError(f"{flag} {str(path)!r} is a folder; give a file name")
    check_writable_dir(path.parent, flag, shown=path)
    if path.exists() and not os.access(path, os.W_OK):
        raise RunFolderError(f"{flag} {str(path)!r}: no permission to overwrite it")


@dataclass(frozen=True)
class Existing:
    """What a folder holds before a run starts in it."""

    kind: str  # "none" (absent or empty), "run" (a raydiff run's files), "other" (files that are not a run's)
    status: str  # the run's status ("" when unknown or no run)
    same_config: bool


def inspect(folder: Path, sha: str) -> Existing:
    if not folder.is_dir():
        return Existing("none", "", False)
    names = {p.name for p in folder.iterdir()}
    if not names:
        return Existing("none", "", False)
    st = read_status(folder)
    if st is not None:
        return Existing("run", str(st.get("status", "")), st.get("config_sha256") == sha)
    if "summary.json" in names or "config.yaml" in names:  # a folder of an older raydiff: no status.json
        from .config_load import load_config

        try:
            same = config_sha256(load_config(folder / "config.yaml")) == sha
        except Exception:  # noqa: BLE001 - an unreadable old config is simply not this config
            same = False
        legacy = "summary.json" in names and _legacy_finished(folder)
        return Existing("run", FINISHED if legacy else "", same)
    return Existing("other", "", False)


def _legacy_finished(folder: Path) -> bool:
    """A folder without status.json counts as finished when its summary.json is not interrupted and was
    written after its config.yaml (a re-run killed after writing its config leaves an older summary)."""
    try:
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
        newer = (folder / "summary.json").stat().st_mtime >= (folder / "config.yaml").stat().st_mtime
    except (OSError, ValueError):
        return False
    return isinstance(summary, dict) and not summary.get("interrupted") and newer


def is_finished(folder: Path, sha: str) -> bool:
    """The folder holds a finished run of exactly this config (a sweep skips it)."""
    ex = inspect(folder, sha)
    return ex.kind == "run" and ex.status == FINISHED and ex.same_config and not is_locked(folder)


def describe(folder: Path, sha: str) -> str:
    """One word for ``raydiff sweep --list``: done, running, failed, interrupted, killed, changed or todo."""
    ex = inspect(folder, sha)
    if ex.kind != "run":
        return "todo"
    if not ex.same_config:
        return "changed"
    if ex.status == RUNNING:
        return "running" if is_locked(folder) else "killed"
    if ex.status == FINISHED:
        return "done"
    return ex.status or "todo"


# ---------------------------------------------------------------------------------------- the life cycle
class RunFolder:
    """A locked run folder; ``close(status, ...)`` writes the final status and releases the lock."""

    def __init__(self, path: Path, sha: str, lock: FolderLock, status: dict[str, Any]) -> None:
        self.path, self.sha, self.lock, self.status = path, sha, lock, status

    @classmethod
    def create(cls, path: Path, cfg: Config, force: bool = False) -> RunFolder:
        """Make (or take over) ``path`` for a new run of ``cfg``: checked, locked, emptied of an old run's
        files, with ``status: running`` written before anything else."""
        sha = config_sha256(cfg)
        check_writable_dir(path, "--out")
        _refuse(path, inspect(path, sha), force)  # before creating anything
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunFolderError(f"--out {str(path)!r}: cannot create the folder ({exc.strerror or exc})") from None
        lock = FolderLock(path)
        lock.acquire()
        try:
            _refuse(path, inspect(path, sha), force)  # again, now that no other run can start here
            _clear(path)
            status = dict(
                status=RUNNING,
                config_sha256=sha,
                name=cfg.name,
                pid=os.getpid(),
                host=socket.gethostname(),
                started=_now(),
            )
            _write_status(path, status)
        except BaseException:
            lock.release()
            raise
        return cls(path, sha, lock, status)

    @classmethod
    def reopen(cls, path: Path) -> tuple[RunFolder, dict[str, Any]]:
        """Lock an existing run folder to resume it; returns it with its status as found (the caller checks
        whether it already finished before writing anything)."""
        if "\x00" in str(path) or not path.is_dir():
            raise RunFolderError(f"--resume {str(path)!r}: no such run folder")
        if not (path / "config.yaml").is_file():
            raise RunFolderError(f"--resume {str(path)!r} holds no config.yaml: not a run folder")
        lock = FolderLock(path)
        lock.acquire()
        found = read_status(path) or {}
        return cls(path, str(found.get("config_sha256", "")), lock, dict(found)), found

    def mark_running(self, sha: str) -> None:
        """A resumed run: ``status: running`` again (the start time stays; the resume time is added)."""
        self.sha = sha
        self.status = dict(
            self.status, status=RUNNING, config_sha256=sha, pid=os.getpid(), host=socket.gethostname(), resumed=_now()
        )
        self.status.pop("ended", None)
        self.status.pop("reason", None)
        _write_status(self.path, self.status)

    def close(self, status: Optional[str], reason: str = "", **extra: Any) -> None:
        """Write the final status (None: leave it as it is) and release the lock."""
        try:
            if status is not None:
                self.status = dict(self.status, status=status, ended=_now(), **extra)
                if reason:
                    self.status["reason"] = reason
                else:
                    self.status.pop("reason", None)
                _write_status(self.path, self.status)
        finally:
            self.lock.release()


def _refuse(path: Path, ex: Existing, force: bool) -> None:
    if ex.kind == "other" and not force:
        raise RunFolderError(
            f"--out {str(path)!r} holds files that are not a raydiff run; choose an empty or new "
            "folder (or pass --force to write the run's files among them)"
        )
    if ex.kind == "run" and ex.status in (FINISHED, INTERRUPTED) and not ex.same_config and not force:
        what = "a finished run" if ex.status == FINISHED else "an interrupted run (resume it with --resume)"
        raise RunFolderError(
            f"--out {str(path)!r} holds {what} of another config; choose another --out, or pass --force to replace it"
        )


def _clear(path: Path) -> None:
    """Remove an old run's files (and only those), so the new run's folder never mixes with it."""
    for name in RUN_FILES:
        for p in (path / name, path / f"{name}.tmp"):
            if p.is_file() or p.is_symlink():
                p.unlink()
    for name in RUN_DIRS:
        p = path / name
        if p.is_symlink():
            p.unlink()
        elif p.is_dir():
            shutil.rmtree(p)


__all__ = [
    "FAILED",
    "FINISHED",
    "INTERRUPTED",
    "RUNNING",
    "STATUS",
    "FolderLock",
    "RunFolder",
    "check_writable_dir",
    "check_writable_file",
    "config_sha256",
    "describe",
    "is_finished",
    "is_locked",
    "read_status",
]
