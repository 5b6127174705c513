"""FedAsync (Xie et al. 2019): every update is mixed in at once, its weight discounted by staleness."""
from __future__ import annotations

from typing import Callable

import numpy as np

from .base import Decision, Strategy, Update


class FedAsync(Strategy):
    """x <- (1 - alpha_s) x + alpha_s x_client, alpha_s = alpha * s(version - base_version)."""

    needs_base = True

    def __init__(self, alpha: float, staleness: Callable[[int], float]) -> None:
        self.alpha = alpha
        self.staleness = staleness

    def receive(self, x: np.ndarray, version: int, update: Update) -> Decision:
        if update.base is None:
            raise ValueError("FedAsync needs the base vector of each update")
        a = self.alpha * self.staleness(version - update.base_version)
        x_client = update.base + update.delta
        x *= np.float32(1.0 - a)
        x += np.float32(a) * x_client
        return Decision("applied", weight=a)
