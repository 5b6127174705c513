"""FedAvg (McMahan et al. 2017), the seed paper's synchronous baseline: a round's deltas, weighted by data size."""
from __future__ import annotations

import numpy as np

from .base import Decision, Strategy, Update


class FedAvg(Strategy):
    """acc += n_i * delta_i; at the round's end x <- x + server_lr * acc / sum(n_i)."""

    synchronous = True

    def __init__(self, server_lr: float = 1.0) -> None:
        self.server_lr = server_lr
        self.acc: np.ndarray | None = None
        self.total = 0
        self.count = 0

    def receive(self, x: np.ndarray, version: int, update: Update) -> Decision:
        if self.acc is None:
            self.acc = np.zeros_like(x)
        self.acc += np.float32(update.num_samples) * update.delta
        self.total += update.num_samples
        self.count += 1
        return Decision("buffered", weight=float(update.num_samples))

    def end_round(self, x: np.ndarray) -> bool:
        if self.count == 0:
            return False  # every client of the round dropped: the model stays as it was
        x += np.float32(self.server_lr / self.total) * self.acc
        self.discard_pending()
        return True

    def pending(self) -> int:
        return self.count

    def discard_pending(self) -> None:
        if self.acc is not None:
            self.acc.fill(0.0)
        self.total = 0
        self.count = 0
