"""raydiff: federated (asynchronous) training of diffusion models, simulated on Ray actors.

    >>> import raydiff
    >>> result = raydiff.run("scenarios/quickstart.yaml", ["run.max_updates=20"])
    >>> result.out_dir, result.summary["model_sha256"]
"""
from .config import Config
from .config_load import load_config
from .errors import ConfigError, DataError, RaydiffError, ResourceError
from .runner import RunResult, run

__version__ = "0.1.0"
__all__ = ["Config", "load_config", "run", "RunResult", "RaydiffError", "ConfigError", "DataError",
           "ResourceError", "__version__"]
