"""Errors a user can fix. The CLI prints them as one paragraph and exits 2 (no traceback)."""


class RaydiffError(Exception):
    """Base class: the message is written for the user, naming what is wrong and what is allowed."""


class ConfigError(RaydiffError):
    """A scenario file, a field or an override is malformed or out of range."""


class DataError(RaydiffError):
    """A dataset is missing, corrupt, or cannot be partitioned as asked."""


class ResourceError(RaydiffError):
    """The Ray cluster lacks what the config asks for (GPUs, CPUs, nodes)."""
