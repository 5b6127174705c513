"""Strategy from config: the one place that maps ``strategy.*`` to classes."""
from __future__ import annotations

from typing import Optional

import numpy as np

from ..config import StrategyConfig
from .base import Strategy
from .dp import GaussianMechanism
from .fedasync import FedAsync
from .fedavg import FedAvg
from .fedbuff import FedBuff
from .server_opt import make_server_optimizer
from .staleness import staleness_fn


def make_strategy(cfg: StrategyConfig, rng: Optional[np.random.Generator] = None) -> Strategy:
    """``rng`` draws the DP noise (required when ``cfg.dp.enabled``)."""
    dp = None
    if cfg.dp.enabled:
        if rng is None:
            raise ValueError("strategy.dp needs a random generator for its noise")
        dp = GaussianMechanism(cfg.dp.noise_multiplier, cfg.dp.clip_norm, rng)
    opt = make_server_optimizer(cfg.server_optimizer, cfg.server_lr, cfg.server_momentum, cfg.server_beta1,
                                cfg.server_beta2, cfg.server_tau)
    if cfg.name == "fedavg":
        return FedAvg(cfg.server_lr, optimizer=opt, dp=dp)
    if cfg.name == "fedasync":
        return FedAsync(cfg.alpha, staleness_fn(cfg.staleness.fn, cfg.staleness.a, cfg.staleness.b),
                        max_staleness=cfg.max_staleness)
    if cfg.name == "fedbuff":
        return FedBuff(cfg.buffer_size, cfg.server_lr, cfg.staleness_exponent, max_staleness=cfg.max_staleness,
                       optimizer=opt, dp=dp)
    raise ValueError(f"strategy.name: unknown strategy {cfg.name!r}; allowed: fedavg, fedasync, fedbuff")
