"""Plain classes that Ray wraps where they are spawned (``ray.remote(cls).options(...)``).

They hold models and vectors and execute; they never decide policy.
"""

from .client import ClientWorker
from .evaluator import Evaluator
from .server import ParameterServer

__all__ = ["ClientWorker", "Evaluator", "ParameterServer"]
