"""Strategy from config: the one place that maps ``strategy.name`` to a class."""
from __future__ import annotations

from ..config import StrategyConfig
from .base import Strategy
from .fedasync import FedAsync
from .fedavg import FedAvg
from .fedbuff import FedBuff
from .staleness import staleness_fn


def make_strategy(cfg: StrategyConfig) -> Strategy:
    if cfg.name == "fedavg":
        return FedAvg(cfg.server_lr)
    if cfg.name == "fedasync":
        return FedAsync(cfg.alpha, staleness_fn(cfg.staleness.fn, cfg.staleness.a, cfg.staleness.b))
    if cfg.name == "fedbuff":
        return FedBuff(cfg.buffer_size, cfg.server_lr, cfg.staleness_exponent)
    raise ValueError(f"strategy.name: unknown strategy {cfg.name!r}; allowed: fedavg, fedasync, fedbuff")
