"""Aggregation policy: pure numpy, no Ray, so every formula is unit-testable with hand-computed numbers.

:class:`Strategy` is the public API (``raydiff.Strategy``): an aggregation rule that declares its own
scheduling. The built-ins are registered by name; wrappers add DP, a norm bound and an EMA to any of them.
"""

from .base import Decision, RunContext, Schedule, Strategy, Update, implements_state
from .compression import COMPRESSORS, FP16, Compressor, Int8, NoCompression, Partial, TopK, make_compressor
from .dp import GaussianMechanism
from .ema import EMA
from .fedasync import FedAsync
from .fedavg import FedAvg
from .fedbuff import FedBuff
from .masks import unet_mask
from .registry import build_strategy, register_strategy, registered_strategies, strategy_class
from .server_opt import (
    SERVER_OPTIMIZERS,
    SGD,
    FedAdagrad,
    FedAdam,
    FedAvgM,
    FedYogi,
    ServerOptimizer,
    make_server_optimizer,
)
from .staleness import staleness_fn
from .update_checks import NormBound, check_update, l2_norm
from .wrappers import ClientDP, NormBounded, StalenessBounded, StrategyWrapper, WithEMA

__all__ = [
    "COMPRESSORS",
    "EMA",
    "FP16",
    "SERVER_OPTIMIZERS",
    "SGD",
    "ClientDP",
    "Compressor",
    "Decision",
    "FedAdagrad",
    "FedAdam",
    "FedAsync",
    "FedAvg",
    "FedAvgM",
    "FedBuff",
    "FedYogi",
    "GaussianMechanism",
    "Int8",
    "NoCompression",
    "NormBound",
    "NormBounded",
    "Partial",
    "RunContext",
    "Schedule",
    "ServerOptimizer",
    "StalenessBounded",
    "Strategy",
    "StrategyWrapper",
    "TopK",
    "Update",
    "WithEMA",
    "build_strategy",
    "check_update",
    "implements_state",
    "l2_norm",
    "make_compressor",
    "make_server_optimizer",
    "register_strategy",
    "registered_strategies",
    "staleness_fn",
    "strategy_class",
    "unet_mask",
]
