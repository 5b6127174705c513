"""FedBuff (Nguyen et al. 2022): buffer K staleness-weighted deltas, then take one server step."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from .base import Decision, Strategy, Update
from .server_opt import SGD, ServerOptimizer, server_optimizer_from
from .staleness import check_max_staleness, staleness_rejection

if TYPE_CHECKING:
    from ..config import StrategyConfig


class FedBuff(Strategy):
    """acc += delta / (1 + s)^p per update; after K updates, optimizer.step(x, acc / K).

    - ``optimizer``: the server rule for the buffer's mean; default ``SGD(server_lr)``, i.e.
      x <- x + server_lr * acc / K as in the paper. ``FedAvgM`` gives server momentum. When an
      optimizer is given, ``server_lr`` is not used (the optimizer has its own lr).
    - ``max_staleness``: older updates are rejected; x and the buffer stay untouched.
    - Weights are <= 1, so under :class:`~raydiff.strategies.wrappers.ClientDP` (updates clipped
      first) one client moves the buffer's sum by at most C.
    """

    aggregates_sums = True
    config_fields = None  # reads the strategy section itself, ignores other built-ins' fields

    def __init__(
        self,
        buffer_size: int,
        server_lr: float,
        staleness_exponent: float,
        max_staleness: Optional[int] = None,
        optimizer: Optional[ServerOptimizer] = None,
    ) -> None:
        check_max_staleness(max_staleness)
        self.k = buffer_size
        self.server_lr = server_lr
        self.p = staleness_exponent
        self.max_staleness = max_staleness
        self.optimizer = optimizer if optimizer is not None else SGD(server_lr)
        self.acc: np.ndarray | None = None
        self.count = 0

    @classmethod
    def from_config(cls, cfg: StrategyConfig) -> FedBuff:
        cls.refuse_options(
            cfg, "concurrency, buffer_size, staleness_exponent, max_staleness, server_lr, server_optimizer, ..."
        )
        return cls(
            cfg.buffer_size,
            cfg.server_lr,
            cfg.staleness_exponent,
            max_staleness=cfg.max_staleness,
            optimizer=server_optimizer_from(cfg),
        )

    @property
    def updates_per_version(self) -> int:
        return self.k

    def receive(self, x: np.ndarray, version: int, update: Update) -> Decision:
        s = version - update.base_version
        reason = staleness_rejection(s, self.max_staleness)
        if reason is not None:
            return Decision("rejected", reason=reason)
        w = float((1.0 + s) ** (-self.p))
        if self.acc is None:
            self.acc = np.zeros_like(x)
        self.acc += np.float32(w) * update.delta
        self.count += 1
        if self.count < self.k:
            return Decision("buffered", weight=w)
        self.apply_aggregate(x, self.acc, self.k, self.optimizer)
        self.discard_pending()
        return Decision("applied", weight=w)

    def pending(self) -> int:
        return self.count

    def discard_pending(self) -> None:
        if self.acc is not None:
            self.acc.fill(0.0)
        self.count = 0

    def state_dict(self) -> dict[str, Any]:
        return {
            "acc": None if self.acc is None else self.acc.copy(),
            "count": self.count,
            "optimizer": self.optimizer.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.acc = None if state["acc"] is None else np.array(state["acc"], dtype=np.float32, copy=True)
        self.count = int(state["count"])
        self.optimizer.load_state_dict(state["optimizer"])
