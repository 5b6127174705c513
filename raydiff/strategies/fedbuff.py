"""FedBuff (Nguyen et al. 2022): buffer K staleness-weighted deltas, then take one server step."""
from __future__ import annotations

import numpy as np

from .base import Decision, Strategy, Update


class FedBuff(Strategy):
    """acc += delta / (1 + s)^p per update; after K updates, x <- x + server_lr * acc / K."""

    def __init__(self, buffer_size: int, server_lr: float, staleness_exponent: float) -> None:
        self.k = buffer_size
        self.server_lr = server_lr
        self.p = staleness_exponent
        self.acc: np.ndarray | None = None
        self.count = 0

    def receive(self, x: np.ndarray, version: int, update: Update) -> Decision:
        w = float((1.0 + (version - update.base_version)) ** (-self.p))
        if self.acc is None:
            self.acc = np.zeros_like(x)
        self.acc += np.float32(w) * update.delta
        self.count += 1
        if self.count < self.k:
            return Decision("buffered", weight=w)
        x += np.float32(self.server_lr / self.k) * self.acc
        self.discard_pending()
        return Decision("applied", weight=w)

    def pending(self) -> int:
        return self.count

    def discard_pending(self) -> None:
        if self.acc is not None:
            self.acc.fill(0.0)
        self.count = 0
