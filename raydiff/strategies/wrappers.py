"""Wrappers that give ANY strategy client-level DP, a norm bound on updates, or an EMA of the model.

A wrapper is a strategy that holds another (``inner``) and passes every declaration and call through,
changing only what it is about. So a researcher's strategy gets DP, norm bounds and an EMA without
writing them, and the built-ins keep their exact formulas (the wrapped FedAvg and FedBuff compute
the same floats as before the wrappers existed). Order, outermost first:
``WithEMA(NormBounded(ClientDP(StalenessBounded(strategy))))``: the norm bound sees the raw update, DP
clips what passes it, the EMA follows every new version (``StalenessBounded`` only around a strategy
that does not read ``strategy.max_staleness`` itself).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Optional

import numpy as np

from .base import Decision, RunContext, Strategy, SumHook, Update
from .dp import GaussianMechanism
from .ema import EMA
from .staleness import check_max_staleness, staleness_rejection
from .update_checks import NormBound


class StrategyWrapper(Strategy):
    """Delegates everything to ``inner``; subclasses override the calls they change."""

    def __init__(self, inner: Strategy) -> None:
        if not isinstance(inner, Strategy):
            raise TypeError(f"a wrapper needs a Strategy, got {type(inner).__name__}")
        self.inner = inner

    @property
    def round_based(self) -> bool:
        return self.inner.round_based

    @property
    def needs_base(self) -> bool:
        return self.inner.needs_base

    @property
    def aggregates_sums(self) -> bool:
        return self.inner.aggregates_sums

    @property
    def round_reports(self) -> int:
        return self.inner.round_reports

    @property
    def round_deadline_s(self) -> Optional[float]:
        return self.inner.round_deadline_s

    @property
    def jobs_in_flight(self) -> int:
        return self.inner.jobs_in_flight

    @property
    def updates_per_version(self) -> int:
        return self.inner.updates_per_version

    @property
    def one_update_per_client(self) -> bool:
        return self.inner.one_update_per_client

    def bind(self, context: RunContext) -> None:
        super().bind(context)
        self.inner.bind(context)

    def start(self, x: np.ndarray) -> None:
        self.inner.start(x)

    def receive(self, x: np.ndarray, version: int, update: Update) -> Decision:
        return self.inner.receive(x, version, update)

    def end_round(self, x: np.ndarray) -> bool:
        return self.inner.end_round(x)

    def pending(self) -> int:
        return self.inner.pending()

    def discard_pending(self) -> None:
        self.inner.discard_pending()

    def export_vector(self) -> Optional[np.ndarray]:
        return self.inner.export_vector()

    def add_sum_hook(self, hook: SumHook) -> None:
        self.inner.add_sum_hook(hook)

    def own_state(self) -> dict[str, Any]:
        """This wrapper's own state (the inner strategy's is saved beside it)."""
        return {}

    def load_own_state(self, state: Mapping[str, Any]) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {"inner": self.inner.state_dict(), **self.own_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.inner.load_state_dict(state["inner"])
        self.load_own_state(state)


class ClientDP(StrategyWrapper):
    """Client-level DP (DP-FedAvg, McMahan et al. 2018) around a strategy that aggregates sums.

    Every update is clipped to L2 norm C and handed on with ``num_samples = 1`` (a client's data size
    must not scale its weight: n_i * C would break the sensitivity bound); Gaussian noise
    N(0, (sigma*C)^2) goes on each aggregated sum once, before it is divided or given to a server
    optimizer. With ``mask`` (partial exchange), only the exchanged coordinates get noise: the others
    receive no client data, so there is nothing to hide there.
    """

    def __init__(self, inner: Strategy, mechanism: GaussianMechanism, mask: Optional[np.ndarray] = None) -> None:
        super().__init__(inner)
        if not inner.aggregates_sums:
            raise ValueError(
                f"client-level DP noises an aggregated sum of updates, and {type(inner).__name__} "
                "does not aggregate sums (aggregates_sums is False; FedAsync mixes one update "
                "at a time): use fedavg or fedbuff, or a strategy that applies versions through "
                "Strategy.apply_aggregate"
            )
        self.mechanism = mechanism
        self.mask = mask
        inner.add_sum_hook(self._noise)

    @property
    def one_update_per_client(self) -> bool:
        return True  # the sensitivity of a sum is C only if each client is in it at most once

    def receive(self, x: np.ndarray, version: int, update: Update) -> Decision:
        return self.inner.receive(x, version, replace(update, delta=self.mechanism.clip(update.delta), num_samples=1))

    def _noise(self, total: np.ndarray) -> None:
        if self.mask is None:
            self.mechanism.noise_sum(total)
        else:
            part = total[self.mask]
            self.mechanism.noise_sum(part)
            total[self.mask] = part

    def own_state(self) -> dict[str, Any]:
        return {"mechanism": self.mechanism.state_dict()}

    def load_own_state(self, state: Mapping[str, Any]) -> None:
        self.mechanism.load_state_dict(state["mechanism"])


class NormBounded(StrategyWrapper):
    """Clip (or reject) updates whose L2 norm exceeds a bound, before the strategy sees them."""

    def __init__(self, inner: Strategy, bound: NormBound) -> None:
        super().__init__(inner)
        self.bound = bound

    def receive(self, x: np.ndarray, version: int, update: Update) -> Decision:
        delta, reason = self.bound.apply(update.delta)
        if reason is not None:
            return Decision("rejected", reason=reason)
        return self.inner.receive(x, version, update if delta is update.delta else replace(update, delta=delta))


class StalenessBounded(StrategyWrapper):
    """``strategy.max_staleness`` for a strategy that does not bound staleness itself (a user's): an update
    more than ``max_staleness`` versions old is rejected before the strategy sees it, as FedAsync and
    FedBuff reject it (same reason text), so the field is never silently ignored."""

    def __init__(self, inner: Strategy, max_staleness: int) -> None:
        super().__init__(inner)
        check_max_staleness(max_staleness)
        self.max_staleness = max_staleness

    def receive(self, x: np.ndarray, version: int, update: Update) -> Decision:
        reason = staleness_rejection(version - update.base_version, self.max_staleness)
        if reason is not None:
            return Decision("rejected", reason=reason)
        return self.inner.receive(x, version, update)


class WithEMA(StrategyWrapper):
    """Keeps an exponential moving average of the global model, updated at every new version, and
    offers it for export (``eval.export_ema``): ema <- decay*ema + (1-decay)*x, starting from x0."""

    def __init__(self, inner: Strategy, decay: float) -> None:
        super().__init__(inner)
        self.ema = EMA(decay)

    def start(self, x: np.ndarray) -> None:
        self.inner.start(x)
        self.ema.update(x)

    def receive(self, x: np.ndarray, version: int, update: Update) -> Decision:
        decision = self.inner.receive(x, version, update)
        if decision.status == "applied":
            self.ema.update(x)
        return decision

    def end_round(self, x: np.ndarray) -> bool:
        changed = self.inner.end_round(x)
        if changed:
            self.ema.update(x)
        return changed

    def export_vector(self) -> Optional[np.ndarray]:
        return None if self.ema.value is None else self.ema.value.copy()

    def own_state(self) -> dict[str, Any]:
        return {"ema": self.ema.state_dict()}

    def load_own_state(self, state: Mapping[str, Any]) -> None:
        self.ema.load_state_dict(state["ema"])
