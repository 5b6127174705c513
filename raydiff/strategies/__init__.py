"""Aggregation policy: pure numpy, no Ray, so every formula is unit-testable with hand-computed numbers."""
from .base import Decision, Strategy, Update
from .checks import NormBound, check_update, l2_norm
from .compression import COMPRESSORS, FP16, Compressor, Int8, NoCompression, Partial, TopK, make_compressor
from .dp import GaussianMechanism, PrivacyAccountant
from .ema import EMA
from .factory import make_strategy
from .fedasync import FedAsync
from .fedavg import FedAvg
from .fedbuff import FedBuff
from .masks import unet_mask
from .server_opt import (SERVER_OPTIMIZERS, SGD, FedAdagrad, FedAdam, FedAvgM, FedYogi, ServerOptimizer,
                         make_server_optimizer)
from .staleness import staleness_fn

__all__ = ["Decision", "Strategy", "Update", "check_update", "make_strategy", "FedAsync", "FedAvg", "FedBuff",
           "staleness_fn", "NormBound", "l2_norm", "Compressor", "NoCompression", "FP16", "Int8", "TopK",
           "Partial", "make_compressor", "unet_mask", "GaussianMechanism", "PrivacyAccountant", "EMA",
           "ServerOptimizer", "SERVER_OPTIMIZERS", "COMPRESSORS", "SGD", "FedAvgM", "FedAdagrad", "FedAdam",
           "FedYogi", "make_server_optimizer"]
