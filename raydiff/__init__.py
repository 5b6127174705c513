"""raydiff: federated (asynchronous) training of diffusion models, simulated on Ray actors.

    >>> import raydiff
    >>> result = raydiff.run("scenarios/quickstart.yaml", ["run.max_updates=20"])
    >>> result.out_dir, result.summary["model_sha256"]

``import raydiff`` is light: it loads neither torch nor Ray (``run`` and ``RunResult`` are imported on
first use), so analysis code and strategy modules can use raydiff's names cheaply: the strategy API
(``Strategy``, ``Update``, ``Decision``) and the server optimizers a strategy passes to
``Strategy.apply_aggregate`` (``SGD``, ``FedAvgM``, ``FedAdagrad``, ``FedAdam``, ``FedYogi``; pure numpy).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import Config
from .config_load import load_config
from .errors import ConfigError, DataError, RaydiffError, ResourceError
from .strategies import (
    SGD,
    Decision,
    FedAdagrad,
    FedAdam,
    FedAvgM,
    FedYogi,
    RunContext,
    Schedule,
    ServerOptimizer,
    Strategy,
    Update,
    register_strategy,
)

if TYPE_CHECKING:
    from .runner import RunResult, run

__version__ = "0.1.0"
__all__ = [
    "SGD",
    "Config",
    "ConfigError",
    "DataError",
    "Decision",
    "FedAdagrad",
    "FedAdam",
    "FedAvgM",
    "FedYogi",
    "RaydiffError",
    "ResourceError",
    "RunContext",
    "RunResult",
    "Schedule",
    "ServerOptimizer",
    "Strategy",
    "Update",
    "__version__",
    "load_config",
    "register_strategy",
    "run",
]


def __getattr__(name: str) -> Any:
    if name in ("run", "RunResult"):  # torch and Ray load here, only when a run is asked for
        from . import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'raydiff' has no attribute {name!r}")
