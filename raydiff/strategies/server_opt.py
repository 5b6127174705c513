"""Server optimizers of Reddi et al. 2021, "Adaptive Federated Optimization" (Algorithm 2).

The aggregated client delta is treated as a pseudo-gradient that already points the way to move
(``delta = mean(x_client - x)``), so every rule ADDS its step: plain FedAvg is ``SGD(1.0)``.

Choices, following the paper:
- No bias correction of m or v (Algorithm 2 has none).
- ``v`` starts at ``tau**2`` (the paper asks for ``v_{-1} >= tau^2``; we take the smallest choice),
  ``m`` at 0. Both are float32 arrays created at the first step, shaped like ``x``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

if TYPE_CHECKING:
    from ..config import StrategyConfig


class ServerOptimizer(ABC):
    """Applies one aggregated pseudo-gradient to the global vector, in place."""

    def __init__(self, lr: float) -> None:
        if not lr > 0:
            raise ValueError(f"server optimizer lr must be > 0, got {lr}")
        self.lr = lr
        self.steps = 0

    def step(self, x: np.ndarray, delta: np.ndarray) -> None:
        """x <- x + (this rule's step computed from ``delta``); ``delta`` is not modified."""
        self._step(x, delta)
        self.steps += 1

    @abstractmethod
    def _step(self, x: np.ndarray, delta: np.ndarray) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: the step count and copies of the moment arrays."""
        return {"steps": self.steps}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.steps = int(state["steps"])


def _copy(a: Optional[np.ndarray]) -> Optional[np.ndarray]:
    return None if a is None else np.array(a, dtype=np.float32, copy=True)


class SGD(ServerOptimizer):
    """x += lr * delta: FedAvg's and FedBuff's classic server step."""

    def _step(self, x: np.ndarray, delta: np.ndarray) -> None:
        x += np.float32(self.lr) * delta


class FedAvgM(ServerOptimizer):
    """Server momentum (Hsu et al. 2019): m = momentum*m + delta; x += lr*m."""

    def __init__(self, lr: float, momentum: float) -> None:
        super().__init__(lr)
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.momentum = momentum
        self.m: Optional[np.ndarray] = None

    def _step(self, x: np.ndarray, delta: np.ndarray) -> None:
        if self.m is None:
            self.m = np.zeros_like(x)
        self.m *= np.float32(self.momentum)
        self.m += delta
        x += np.float32(self.lr) * self.m

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "m": _copy(self.m)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.m = _copy(state["m"])


class _Adaptive(ServerOptimizer):
    """Shared by FedAdagrad, FedAdam, FedYogi: they differ only in how v absorbs delta^2."""

    def __init__(self, lr: float, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-3) -> None:
        super().__init__(lr)
        if not (0 <= beta1 < 1 and 0 <= beta2 < 1 and tau > 0):
            raise ValueError(f"need 0 <= beta1, beta2 < 1 and tau > 0; got beta1={beta1}, beta2={beta2}, tau={tau}")
        self.beta1, self.beta2, self.tau = beta1, beta2, tau
        self.m: Optional[np.ndarray] = None
        self.v: Optional[np.ndarray] = None

    @abstractmethod
    def _update_v(self, v: np.ndarray, d2: np.ndarray) -> None:
        """Fold delta**2 into v, in place."""

    def _step(self, x: np.ndarray, delta: np.ndarray) -> None:
        if self.m is None or self.v is None:
            self.m = np.zeros_like(x)
            self.v = np.full_like(x, np.float32(self.tau) ** 2)
        self.m *= np.float32(self.beta1)
        self.m += np.float32(1.0 - self.beta1) * delta
        self._update_v(self.v, np.square(delta))
        x += np.float32(self.lr) * self.m / (np.sqrt(self.v) + np.float32(self.tau))

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "m": _copy(self.m), "v": _copy(self.v)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.m, self.v = _copy(state["m"]), _copy(state["v"])


class FedAdagrad(_Adaptive):
    """v = v + delta^2 (beta2 is unused)."""

    def _update_v(self, v: np.ndarray, d2: np.ndarray) -> None:
        v += d2


class FedAdam(_Adaptive):
    """v = beta2*v + (1-beta2)*delta^2."""

    def _update_v(self, v: np.ndarray, d2: np.ndarray) -> None:
        v *= np.float32(self.beta2)
        v += np.float32(1.0 - self.beta2) * d2


class FedYogi(_Adaptive):
    """v = v - (1-beta2)*delta^2*sign(v - delta^2): v moves toward delta^2 additively, never explodes."""

    def _update_v(self, v: np.ndarray, d2: np.ndarray) -> None:
        v -= np.float32(1.0 - self.beta2) * d2 * np.sign(v - d2)


SERVER_OPTIMIZERS = ("sgd", "fedavgm", "fedadagrad", "fedadam", "fedyogi")


def make_server_optimizer(
    name: str, lr: float, momentum: float = 0.9, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-3
) -> ServerOptimizer:
    """The optimizer called ``name``; arguments a rule does not use are ignored."""
    if name == "sgd":
        return SGD(lr)
    if name == "fedavgm":
        return FedAvgM(lr, momentum)
    if name == "fedadagrad":
        return FedAdagrad(lr, beta1, beta2, tau)
    if name == "fedadam":
        return FedAdam(lr, beta1, beta2, tau)
    if name == "fedyogi":
        return FedYogi(lr, beta1, beta2, tau)
    raise ValueError(f"unknown server optimizer {name!r}; allowed: {', '.join(SERVER_OPTIMIZERS)}")


def server_optimizer_from(cfg: StrategyConfig) -> ServerOptimizer:
    """The optimizer ``strategy.server_optimizer`` names, with the config's learning rate and moments."""
    return make_server_optimizer(
        cfg.server_optimizer, cfg.server_lr, cfg.server_momentum, cfg.server_beta1, cfg.server_beta2, cfg.server_tau
    )
