"""FedAsync (Xie et al. 2019): every update is mixed in at once, its weight discounted by staleness."""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from .base import Decision, Strategy, Update
from .staleness import check_max_staleness, staleness_rejection


class FedAsync(Strategy):
    """x <- (1 - alpha_s) x + alpha_s x_client, alpha_s = alpha * s(version - base_version).

    ``max_staleness``: an update more than this many versions old is rejected and x is left as it was
    (None: no bound, every update is mixed in however old).
    """

    needs_base = True

    def __init__(self, alpha: float, staleness: Callable[[int], float],
                 max_staleness: Optional[int] = None) -> None:
        check_max_staleness(max_staleness)
        self.alpha = alpha
        self.staleness = staleness
        self.max_staleness = max_staleness

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
