"""Errors a user can fix. The CLI prints them as one paragraph and exits 2 (no traceback)."""

import re


class RaydiffError(Exception):
    """Base class: the message is written for the user, naming what is wrong and what is allowed."""


class ConfigError(RaydiffError):
    """A scenario file, a field or an override is malformed or out of range."""


class DataError(RaydiffError):
    """A dataset is missing, corrupt, or cannot be partitioned as asked."""


class ResourceError(RaydiffError):
    """The Ray cluster lacks what the config asks for (GPUs, CPUs, nodes)."""


class RunFolderError(RaydiffError):
    """A run folder cannot be used: in use by another run, holds another config's finished run, not writable."""


class CheckpointError(RaydiffError):
    """A checkpoint is missing, truncated, corrupted, of another format or of another config."""


class ModelNotFinite(RaydiffError):
    """The global model became NaN or infinite (a learning rate too large, for example): the run stops."""


class NoProgress(RaydiffError):
    """The schedule cannot make a model version (every job fails, misses its deadline or is rejected): the run
    stops with the reason instead of spinning forever."""


class InternalError(Exception):
    """Not the user's input: a bug in raydiff or in code it runs (a client's training, a user strategy).

    The CLI prints the message (which carries the remote traceback) and exits 1; the run folder keeps
    everything settled so far, with status ``failed``.
    """


class ClientJobError(InternalError):
    """An exception inside a client's training job."""


_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")


def strip_ansi(text: str) -> str:
    """``text`` without ANSI escape sequences (Ray colours remote tracebacks; a log file or status.json
    would show them as ``[36m`` garbage)."""
    return _ANSI.sub("", text)


# OS errors that mean the machine, not raydiff, stopped a write: the CLI reports them as one paragraph, exit 2
_OS_CAUSES = {
    "ENOSPC": "the disk is full",
    "EDQUOT": "the disk quota is used up",
    "EFBIG": "a file grew past the largest size allowed here (a file-size limit such as ulimit -f, or the file "
    "system's own)",
    "ENAMETOOLONG": "a file name is longer than the file system allows (255 bytes per name on most)",
    "EROFS": "the file system is read-only",
    "EACCES": "permission was denied",
    "EPERM": "the operation is not permitted",
    "EIO": "the disk reported an input/output error",
    "EMFILE": "the process has too many open files",
    "ENFILE": "the system has too many open files",
}
# the same causes as the safetensors writer words them (a Rust io::Error inside SafetensorError's text)
_TEXT_CAUSES = {
    "No space left on device": "ENOSPC",
    "Disk quota exceeded": "EDQUOT",
    "File too large": "EFBIG",
    "File name too long": "ENAMETOOLONG",
    "Read-only file system": "EROFS",
    "Permission denied": "EACCES",
}


def os_error_message(exc: BaseException) -> "str | None":
    """The one-paragraph message for an error that means the machine refused a write (disk full, a file-size
    limit, a name too long, ...), or None for any other error (a bug keeps its traceback)."""
    import errno

    code = None
    if isinstance(exc, OSError) and exc.errno is not None:
        code = errno.errorcode.get(exc.errno)
    elif type(exc).__name__ == "SafetensorError" or isinstance(exc, (RuntimeError, ValueError)):
        text = str(exc)
        code = next((c for t, c in _TEXT_CAUSES.items() if t in text), None)
    if code not in _OS_CAUSES:
        return None
    where = getattr(exc, "filename", None)
    detail = getattr(exc, "strerror", None) or str(exc).strip().splitlines()[0][:200]
    return (f"writing {str(where)!r} failed: " if where else "a write failed: ") + (
        f"{_OS_CAUSES[code]} ({detail}). The run stopped; its folder keeps what was written before and its "
        "status.json says failed (when there was room to write it). Free space or choose another place "
        "(--out), then run again"
    )
