"""Aggregation policy: pure numpy, no Ray, so every formula is unit-testable with hand-computed numbers."""
from .base import Decision, Strategy, Update
from .checks import check_update
from .factory import make_strategy
from .fedasync import FedAsync
from .fedavg import FedAvg
from .fedbuff import FedBuff
from .staleness import staleness_fn

__all__ = ["Decision", "Strategy", "Update", "check_update", "make_strategy", "FedAsync", "FedAvg", "FedBuff",
           "staleness_fn"]
