"""Staleness discount functions s(staleness) of FedAsync (Xie et al. 2019, section 5.2)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Staleness:
    """A staleness discount as a value (not a closure), so a server holding it can be checkpointed."""

    name: str
    a: float = 0.5
    b: int = 4

    def __call__(self, s: int) -> float:
        if self.name == "constant":
            return 1.0
        if self.name == "polynomial":
            return float((s + 1) ** (-self.a))
        return 1.0 if s <= self.b else 1.0 / (self.a * (s - self.b) + 1.0)


def staleness_fn(name: str, a: float = 0.5, b: int = 4) -> Callable[[int], float]:
    """``constant``: 1; ``polynomial``: (s+1)^-a; ``hinge``: 1 if s <= b else 1/(a(s-b)+1)."""
    if name not in ("constant", "polynomial", "hinge"):
        raise ValueError(f"unknown staleness function {name!r}; allowed: constant, polynomial, hinge")
    return Staleness(name, a, b)


def staleness_rejection(staleness: int, max_staleness: Optional[int]) -> Optional[str]:
    """The rejection reason for an update older than the bound, or None (no bound, or within it)."""
    if max_staleness is not None and staleness > max_staleness:
        return f"stale: staleness {staleness} > max_staleness {max_staleness}"
    return None


def check_max_staleness(max_staleness: Optional[int]) -> None:
    """Constructor check shared by the asynchronous strategies."""
    if max_staleness is not None and max_staleness < 0:
        raise ValueError(f"max_staleness must be >= 0 or None, got {max_staleness}")
