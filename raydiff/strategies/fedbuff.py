"""FedBuff (Nguyen et al. 2022): buffer K staleness-weighted deltas, then take one server step."""
from __future__ import annotations

from typing import Optional

import numpy as np

from .base import Decision, Strategy, Update
from .dp import GaussianMechanism
from .server_opt import SGD, ServerOptimizer
from .staleness import check_max_staleness, staleness_rejection


class FedBuff(Strategy):
    """acc += delta / (1 + s)^p per update; after K updates, optimizer.step(x, acc / K).

    - ``optimizer``: the server rule for the buffer's mean; default ``SGD(server_lr)``, i.e.
      x <- x + server_lr * acc / K as in the paper. ``FedAvgM`` gives server momentum. When an
      optimizer is given, ``server_lr`` is not used (the optimizer has its own lr).
    - ``max_staleness``: older updates are rejected; x and the buffer stay untouched.
    - ``dp``: each delta is clipped before weighting (weights are <= 1, so the sum's sensitivity
      stays C), and noise is added to the buffer's sum once per server step.
    """

    def __init__(self, buffer_size: int, server_lr: float, staleness_exponent: float,
                 max_staleness: Optional[int] = None, optimizer: Optional[ServerOptimizer] = None,
                 dp: Optional[GaussianMechanism] = None) -> None:
        check_max_staleness(max_staleness)
        self.k = buffer_size
        self.server_lr = server_lr
        self.p = staleness_exponent
        self.max_staleness = max_staleness
        self.optimizer = optimizer if optimizer is not None else SGD(server_lr)
        self.dp = dp
        self.acc: np.ndarray | None = None
        self.count = 0

    def receive(self, x: np.ndarray, version: int, update: Update) -> Decision:
        s = version - update.base_version
        reason = staleness_rejection(s, self.max_staleness)
        if reason is not None:
            return Decision("rejected", reason=reason)
        w = float((1.0 + s) ** (-self.p))
        delta = update.delta if self.dp is None else self.dp.clip(update.delta)
        if self.acc is None:
            self.acc = np.zeros_like(x)
        self.acc += np.float32(w) * delta
        self.count += 1
        if self.count < self.k:
            return Decision("buffered", weight=w)
        if self.dp is not None:
            self.dp.noise_sum(self.acc)
        self.acc /= np.float32(self.k)
        self.optimizer.step(x, self.acc)
        self.discard_pending()
        return Decision("applied", weight=w)

    def pending(self) -> int:
        return self.count

    def discard_pending(self) -> None:
        if self.acc is not None:
            self.acc.fill(0.0)
        self.count = 0
