"""Strategies as a researcher would write them: outside the raydiff package, plugged in by import path
or instance. Used by tests/test_user_strategy.py (this folder is not a test module)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

import numpy as np

import raydiff
from raydiff.strategies import SGD


class BufferedMean(raydiff.Strategy):
    """Buffer ``k`` updates and step by their plain (unweighted) mean; staleness ignored.

    Aggregates through ``apply_aggregate``, so client-level DP can wrap it.
    """

    aggregates_sums = True

    def __init__(self, k: int = 2, lr: float = 1.0) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k, self.lr, self.optimizer = k, lr, SGD(lr)  # self.lr: options() reads it back for config.yaml
        self.acc: Optional[np.ndarray] = None
        self.count = 0

    @property
    def updates_per_version(self) -> int:
        return self.k

    def receive(self, x: np.ndarray, version: int, update: raydiff.Update) -> raydiff.Decision:
        if self.acc is None:
            self.acc = np.zeros_like(x)
        self.acc += update.delta
        self.count += 1
        if self.count < self.k:
            return raydiff.Decision("buffered", weight=1.0)
        self.apply_aggregate(x, self.acc, self.k, self.optimizer)
        self.discard_pending()
        return raydiff.Decision("applied", weight=1.0)

    def pending(self) -> int:
        return self.count

    def discard_pending(self) -> None:
        if self.acc is not None:
            self.acc.fill(0.0)
        self.count = 0

    def state_dict(self) -> dict[str, Any]:
        return {"acc": None if self.acc is None else self.acc.copy(), "count": self.count}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.acc = None if state["acc"] is None else np.array(state["acc"], dtype=np.float32)
        self.count = int(state["count"])


class NoState(raydiff.Strategy):
    """Latest wins, but without state_dict: refused when run.checkpoint_every is set."""

    needs_base = True

    def receive(self, x: np.ndarray, version: int, update: raydiff.Update) -> raydiff.Decision:
        x[:] = update.base + update.delta
        return raydiff.Decision("applied", weight=1.0)


class NotAStrategy:
    pass


class LatestWins(raydiff.Strategy):
    """Stateless, asynchronous, no options: x becomes the client's model (for the staleness bound)."""

    needs_base = True

    def receive(self, x: np.ndarray, version: int, update: raydiff.Update) -> raydiff.Decision:
        x[:] = update.base + update.delta
        return raydiff.Decision("applied", weight=1.0)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass


class SetState(LatestWins):
    """Keeps the clients it has seen in a set: a state_dict() that no checkpoint can save."""

    def __init__(self) -> None:
        self.seen: set[int] = set()

    def state_dict(self) -> dict[str, Any]:
        return {"seen": self.seen}


class HiddenOption(LatestWins):
    """Stores its argument under another name, so the default options() cannot read it back."""

    def __init__(self, rate: float = 0.5) -> None:
        self._r = rate


class DeclaredOption(HiddenOption):
    """The same, with options() declared."""

    def options(self) -> dict[str, Any]:
        return {"rate": self._r}


class Raises(LatestWins):
    """A strategy with a bug: every update raises."""

    def receive(self, x: np.ndarray, version: int, update: raydiff.Update) -> raydiff.Decision:
        raise ValueError("boom from the strategy")
