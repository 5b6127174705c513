"""Errors a user can fix. The CLI prints them as one paragraph and exits 2 (no traceback)."""


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


class InternalError(Exception):
    """Not the user's input: a bug in raydiff or in code it runs (a client's training, a user strategy).

    The CLI prints the message (which carries the remote traceback) and exits 1; the run folder keeps
    everything settled so far, with status ``failed``.
    """


class ClientJobError(InternalError):
    """An exception inside a client's training job."""
