"""A run folder's life cycle: one writer at a time, and a status written first and last.

``status.json`` says ``running`` before anything else is written and ``finished``, ``interrupted``
or ``failed`` (with the reason) after the last file, so a reader can always tell a complete run
from one that was killed, crashed or is still going; it also holds the sha256 of the resolved
config, so a folder is never mistaken for a run of another config. While a run writes, it holds an
exclusive lock on the folder itself (``fcntl.flock``, which the kernel releases when the process dies,
even by SIGKILL, so a killed run never leaves a stale lock); a second run on the same folder is refused.
A new run never mixes with an old one: it refuses a folder that holds another config's finished
run (unless ``force``) or files that are not a run's, and removes the old run's files first.

What counts as a run is decided by raydiff's own marker only: a ``status.json`` that raydiff wrote
(its ``raydiff`` field, or the exact shape of the status files of the release before the field). A
user's ``config.yaml``, ``README`` or an unreadable ``status.json`` never make a folder a run, and
nothing raydiff did not write is ever deleted or overwritten, ``--force`` or not: ``force`` replaces
another raydiff run (deleting only the files a run writes) and lets a run share a folder with other
files as long as no name collides.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
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
# raydiff's mark in status.json: only a folder whose status.json carries it (or the exact shape of the
# previous release's status files, see _is_raydiff_status) is a run that raydiff may replace or resume
MARKER_KEY, MARKER = "raydiff", "run-folder/1"
# what a run writes; a new run in an old run's folder removes these first (nothing else is ever deleted)
RUN_FILES = (
    "config.yaml",
    "partition.parquet",
    "partition.png",
    "events.parquet",
    "evals.parquet",
    "evals_per_class.parquet",  # utility and per-class quality (raydiff.utility)
    "evals_per_client.parquet",
    "summary.json",
    "checkpoint.npz",
    "checkpoint.pkl",
    "privacy.parquet",
    "privacy.png",
    STATUS,
)
RUN_DIRS = ("samples", "model")
# what a run writes inside RUN_DIRS (diffusers' save_pretrained of a DDPMPipeline; the sample grids):
# the only files a new run removes there, so a user's file put below samples/ or model/ survives
MODEL_FILES = (
    "model_index.json",
    "scheduler/scheduler_config.json",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "unet/diffusion_pytorch_model.bin",
)
SAMPLE_FILE = re.compile(r"(v\d{6}|final|real)\.png")
# temporary files: outputs._atomic's fresh ones, and the fixed names of older releases
TMP_FILE = re.compile(r"(\..+\.[A-Za-z0-9_]+\.tmp|.+\.tmp)")
_SHA = re.compile(r"[0-9a-f]{64}")


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


def _is_raydiff_status(st: Optional[dict[str, Any]]) -> bool:
    """Whether a parsed status.json is one raydiff wrote: it carries the marker, or it has exactly the shape of
    the previous release's status files (a status word, a sha256, a pid and a start time), so that finished
    runs of that release are still recognised (a sweep skips them) while no file of a user's passes."""
    if not isinstance(st, dict):
        return False
    if st.get(MARKER_KEY) == MARKER:
        return True
    return (
        MARKER_KEY not in st
        and st.get("status") in (RUNNING, FINISHED, INTERRUPTED, FAILED)
        and isinstance(st.get("config_sha256"), str)
        and _SHA.fullmatch(st["config_sha256"]) is not None
        and isinstance(st.get("pid"), int)
        and isinstance(st.get("started"), str)
        and isinstance(st.get("host"), str)
    )


def is_run_folder(folder: Path) -> bool:
    """The folder holds a raydiff run: its status.json is raydiff's (see :func:`_is_raydiff_status`)."""
    return _is_raydiff_status(read_status(folder))


def _write_status(folder: Path, data: dict[str, Any]) -> None:
    """status.json, atomically; on a full disk (no room for the new file beside the old one) rewritten in place,
    so a run that failed for lack of space still says ``failed``, not ``running``."""
    import errno

    from .outputs import json_safe, write_json

    data = dict(data, **{MARKER_KEY: MARKER})
    try:
        write_json(folder / STATUS, data)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        text = json.dumps(json_safe(data), indent=2, sort_keys=True, allow_nan=False) + "\n"
        # truncating frees the old file's blocks, which the few hundred bytes of the new one then reuse;
        # O_NOFOLLOW: never through a link planted under the name
        fd = os.open(folder / STATUS, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)


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
    _check_lengths(named, flag)
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


def _check_lengths(path: Path, flag: str) -> None:
    """Every name in ``path`` fits the file system (255 bytes on most) and so does the whole path; else the OS
    refuses it deep inside a run (ENAMETOOLONG) with a traceback."""
    try:
        name_max = os.pathconf("/", "PC_NAME_MAX")
        path_max = os.pathconf("/", "PC_PATH_MAX")
    except (OSError, ValueError, AttributeError):
        name_max, path_max = 255, 4096
    for part in path.parts:
        size = len(os.fsencode(part))
        if size > name_max:
            raise RunFolderError(
                f"{flag}: the name {part[:40]!r}... is {size} bytes long, and this file system allows {name_max} "
                "per name; choose a shorter name"
            )
    # room for the longest name a run writes below it (model/unet/diffusion_pytorch_model.safetensors + temp)
    if len(os.fsencode(str(path.absolute()))) + 80 > path_max:
        raise RunFolderError(f"{flag} {str(path)[:60]!r}... is too long a path ({path_max} bytes at most here)")


def check_writable_file(path: Path, flag: str) -> None:
    """``path`` can be written as a file (its folder is, or can be made, writable; it is not a folder)."""
    if "\x00" in str(path):
        raise RunFolderError(f"{flag} {str(path)!r} holds a NUL character, which no file name can hold")
    _check_lengths(path, flag)
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
    """What ``folder`` holds. A run only by raydiff's own marker (a status.json raydiff wrote): a user's
    config.yaml, summary.json or unreadable status.json make a folder "other", never a run."""
    if not folder.is_dir():
        return Existing("none", "", False)
    if not any(True for _ in folder.iterdir()):
        return Existing("none", "", False)
    st = read_status(folder)
    if st is not None and _is_raydiff_status(st):
        return Existing("run", str(st.get("status", "")), st.get("config_sha256") == sha)
    return Existing("other", "", False)


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
            found = inspect(path, sha)
            _refuse(path, found, force)  # again, now that no other run can start here
            if found.kind == "run":  # raydiff's own run, proven by its marker: its files (only) go
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
        if not _is_raydiff_status(found):
            lock.release()
            raise RunFolderError(
                f"--resume {str(path)!r} has no status.json written by raydiff, so it is not a raydiff run "
                "folder (or one of a release before run folders had a status); start a new run instead"
            )
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
        # links under the names the end of the run writes (samples/, model/ and their files) go, so that
        # nothing is ever written through a planted link; the files themselves are replaced as they are written
        # (files in the folder itself are written to fresh temporaries and renamed over any link: outputs._atomic)
        _clear_outputs(self.path, links_only=True)

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
    if ex.kind == "other":
        if not force:
            raise RunFolderError(
                f"--out {str(path)!r} holds files that are not a raydiff run (raydiff counts a folder as a "
                "run only by the status.json it writes); choose an empty or new folder (or pass --force to "
                "write the run's files among them)"
            )
        taken = [n for n in (*RUN_FILES, *RUN_DIRS) if (path / n).exists() or (path / n).is_symlink()]
        if taken:
            raise RunFolderError(
                f"--out {str(path)!r} is not a raydiff run, yet it holds {', '.join(taken)}, which a run "
                "writes; raydiff never overwrites or deletes files it did not write, --force or not: move "
                "them away or choose another --out"
            )
    if ex.kind == "run" and ex.status in (FINISHED, INTERRUPTED) and not ex.same_config and not force:
        what = "a finished run" if ex.status == FINISHED else "an interrupted run (resume it with --resume)"
        raise RunFolderError(
            f"--out {str(path)!r} holds {what} of another config; choose another --out, or pass --force to replace it"
        )


def _unlink(p: Path) -> None:
    """Remove a file or a link (never what a link points to, never a folder)."""
    if p.is_symlink() or p.is_file():
        p.unlink()


def _rmdir_if_empty(p: Path) -> None:
    if p.is_dir() and not p.is_symlink() and not any(True for _ in p.iterdir()):
        p.rmdir()


def _clear_outputs(path: Path, links_only: bool = False) -> None:
    """Remove what the end of a run writes below samples/ and model/ (raydiff's own names only; links are
    unlinked, never followed), and a samples/ or model/ that is a link; anything else there stays.
    ``links_only``: a resumed run keeps its earlier grids and only loses links planted under those names."""

    def drop(p: Path) -> None:
        if p.is_symlink() or (not links_only and p.is_file()):
            p.unlink()

    from .records import EVALS_STREAM, EVENTS_STREAM, STREAM_DIR  # the run's record stream (raydiff.records)

    for name in (*RUN_DIRS, STREAM_DIR):
        if (path / name).is_symlink():
            (path / name).unlink()
    stream = path / STREAM_DIR
    if stream.is_dir() and not links_only:
        for name in (EVENTS_STREAM, EVALS_STREAM):
            _unlink(stream / name)
        _rmdir_if_empty(stream)
    samples = path / "samples"
    if samples.is_dir():
        for p in samples.iterdir():
            if SAMPLE_FILE.fullmatch(p.name) or (TMP_FILE.fullmatch(p.name) and SAMPLE_FILE.search(p.name)):
                drop(p)
        if not links_only:
            _rmdir_if_empty(samples)
    model = path / "model"
    if model.is_dir():
        for sub in ("unet", "scheduler"):
            if (model / sub).is_symlink():
                (model / sub).unlink()
        for rel in MODEL_FILES:
            drop(model / rel)
        if not links_only:
            for sub in ("unet", "scheduler", ""):
                _rmdir_if_empty(model / sub if sub else model)


def _clear(path: Path) -> None:
    """Remove an old run's files (and only those), so the new run's folder never mixes with it. Called only
    for a folder that raydiff's marker proves to be a run."""
    for name in RUN_FILES:
        _unlink(path / name)
    for p in path.iterdir():  # temporaries of an interrupted write: raydiff's names only
        if TMP_FILE.fullmatch(p.name) and any(n in p.name for n in RUN_FILES):
            _unlink(p)
    _clear_outputs(path)


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
    "is_run_folder",
    "read_status",
]


def run_state(folder: Path) -> str:
    """A run folder's state in one word: its status (``finished``, ``interrupted``, ``failed``), ``running`` while
    a live process holds its lock, ``killed`` when status.json still says running but no process holds the lock
    (SIGKILL, the OOM killer, a lost node: the kernel dropped the lock with the process), else ``unknown``."""
    st = read_status(folder)
    word = str(st.get("status", "")) if st else ""
    if word == RUNNING:
        return RUNNING if is_locked(folder) else "killed"
    return word if word in (FINISHED, INTERRUPTED, FAILED) else "unknown"
