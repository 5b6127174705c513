"""FedAsync (Xie et al. 2019): every update is mixed in at once, its weight discounted by staleness."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from ..errors import ConfigError
from .base import Decision, Strategy, Update
from .staleness import check_max_staleness, staleness_fn, staleness_rejection

if TYPE_CHECKING:
    from ..config import StrategyConfig


class FedAsync(Strategy):
    """x <- (1 - alpha_s) x + alpha_s x_client, alpha_s = alpha * s(version - base_version).

    ``max_staleness``: an update more than this many versions old is rejected and x is left as it was
    (None: no bound, every update is mixed in however old). Stateless between updates.
    """

    needs_base = True
    config_fields = None  # reads the strategy section itself, ignores other built-ins' fields

    def __init__(self, alpha: float, staleness: Callable[[int], float], max_staleness: Optional[int] = None) -> None:
        check_max_staleness(max_staleness)
        self.alpha = alpha
        self.staleness = staleness
        self.max_staleness = max_staleness

    @classmethod
    def from_config(cls, cfg: StrategyConfig) -> FedAsync:
        cls.refuse_options(cfg, "concurrency, alpha, staleness, max_staleness")
        if cfg.server_optimizer != "sgd":
            raise ConfigError(
                "strategy.server_optimizer: server optimizers apply to aggregated updates and "
                "fedasync mixes one update at a time: use fedavg or fedbuff, or server_optimizer: sgd"
            )
        st = cfg.staleness
        return cls(cfg.alpha, staleness_fn(st.fn, st.a, st.b), max_staleness=cfg.max_staleness)

    def receive(self, x: np.ndarray, version: int, update: Update) -> Decision:
        s = version - update.base_version
        reason = staleness_rejection(s, self.max_staleness)
        if reason is not None:
            return Decision("rejected", reason=reason)
        if update.base is None:
            raise ValueError("FedAsync needs the base vector of each update")
        a = self.alpha * self.staleness(s)
        x_client = update.base + update.delta
        x *= np.float32(1.0 - a)
        x += np.float32(a) * x_client
        return Decision("applied", weight=a)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass
