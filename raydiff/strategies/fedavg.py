"""FedAvg (McMahan et al. 2017), the seed paper's synchronous baseline: a round's deltas, weighted by data size."""
from __future__ import annotations

from typing import Optional

import numpy as np

from .base import Decision, Strategy, Update
from .dp import GaussianMechanism
from .server_opt import SGD, ServerOptimizer


class FedAvg(Strategy):
    """acc += n_i * delta_i; at the round's end optimizer.step(x, acc / sum(n_i)).

    - ``optimizer``: default ``SGD(server_lr)``, i.e. x <- x + server_lr * acc / sum(n_i). Pass
      ``FedAdam`` etc. for FedOpt (Reddi et al. 2021); then ``server_lr`` is not used.
    - ``dp`` (DP-FedAvg, McMahan et al. 2018): each delta is clipped to norm C and weighted 1, not
      n_i: with sample weights one client could move the sum by n_i * C, which breaks the
      sensitivity bound. Noise goes on the round's sum once; the sum is then divided by the number
      of updates in the round.
    """

    synchronous = True

    def __init__(self, server_lr: float = 1.0, optimizer: Optional[ServerOptimizer] = None,
                 dp: Optional[GaussianMechanism] = None) -> None:
        self.server_lr = server_lr
        self.optimizer = optimizer if optimizer is not None else SGD(server_lr)
        self.dp = dp
        self.acc: np.ndarray | None = None
        self.total = 0
        self.count = 0

    def receive(self, x: np.ndarray, version: int, update: Update) -> Decision:
        if self.acc is None:
            self.acc = np.zeros_like(x)
        if self.dp is None:
            weight = update.num_samples
            self.acc += np.float32(weight) * update.delta
        else:
            weight = 1
            self.acc += self.dp.clip(update.delta)
        self.total += weight
        self.count += 1
        return Decision("buffered", weight=float(weight))

    def end_round(self, x: np.ndarray) -> bool:
        if self.count == 0:
            return False  # every client of the round dropped: the model stays as it was
        if self.dp is not None:
            self.dp.noise_sum(self.acc)
        self.acc /= np.float32(self.total)
        self.optimizer.step(x, self.acc)
        self.discard_pending()
        return True

    def pending(self) -> int:
        return self.count

    def discard_pending(self) -> None:
        if self.acc is not None:
            self.acc.fill(0.0)
        self.total = 0
        self.count = 0
