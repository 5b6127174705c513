"""FedAvg (McMahan et al. 2017), the seed paper's synchronous baseline: a round's deltas, weighted by data size."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from .base import Decision, Strategy, Update
from .server_opt import SGD, ServerOptimizer, server_optimizer_from

if TYPE_CHECKING:
    from ..config import StrategyConfig


class FedAvg(Strategy):
    """acc += n_i * delta_i; at the round's end optimizer.step(x, acc / sum(n_i)).

    - ``optimizer``: default ``SGD(server_lr)``, i.e. x <- x + server_lr * acc / sum(n_i). Pass
      ``FedAdam`` etc. for FedOpt (Reddi et al. 2021); then ``server_lr`` is not used.
    - Round-based: the orchestrator selects ``ceil(clients_per_round * (1 + over_selection))`` clients,
      keeps the first ``clients_per_round`` updates to arrive, and closes the round (``end_round``)
      then, when every selected client is back, or at ``deadline_s``.
    - Under :class:`~raydiff.strategies.wrappers.ClientDP` every update arrives clipped with
      ``num_samples = 1``, so the round's mean is unweighted, as DP-FedAvg requires.
    """

    round_based = True
    aggregates_sums = True
    config_fields = None  # reads the strategy section itself, ignores other built-ins' fields

    def __init__(self, server_lr: float = 1.0, optimizer: Optional[ServerOptimizer] = None) -> None:
        self.server_lr = server_lr
        self.optimizer = optimizer if optimizer is not None else SGD(server_lr)
        self.acc: np.ndarray | None = None
        self.total = 0
        self.count = 0

    @classmethod
    def from_config(cls, cfg: StrategyConfig) -> FedAvg:
        cls.refuse_options(cfg, "clients_per_round, over_selection, deadline_s, server_lr, server_optimizer, ...")
        return cls(
            cfg.server_lr,
            optimizer=server_optimizer_from(cfg),
        )

    def receive(self, x: np.ndarray, version: int, update: Update) -> Decision:
        if self.acc is None:
            self.acc = np.zeros_like(x)
        weight = update.num_samples
        self.acc += np.float32(weight) * update.delta
        self.total += weight
        self.count += 1
        return Decision("buffered", weight=float(weight))

    def end_round(self, x: np.ndarray) -> bool:
        if self.count == 0 or self.acc is None:
            return False  # every client of the round dropped: the model stays as it was
        self.apply_aggregate(x, self.acc, self.total, self.optimizer)
        self.discard_pending()
        return True

    def pending(self) -> int:
        return self.count

    def discard_pending(self) -> None:
        if self.acc is not None:
            self.acc.fill(0.0)
        self.total = 0
        self.count = 0

    def state_dict(self) -> dict[str, Any]:
        return {
            "acc": None if self.acc is None else self.acc.copy(),
            "total": self.total,
            "count": self.count,
            "optimizer": self.optimizer.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.acc = None if state["acc"] is None else np.array(state["acc"], dtype=np.float32, copy=True)
        self.total, self.count = int(state["total"]), int(state["count"])
        self.optimizer.load_state_dict(state["optimizer"])
