"""Staleness discount functions s(staleness) of FedAsync (Xie et al. 2019, section 5.2)."""
from __future__ import annotations

from typing import Callable, Optional


def staleness_fn(name: str, a: float = 0.5, b: int = 4) -> Callable[[int], float]:
    """``constant``: 1; ``polynomial``: (s+1)^-a; ``hinge``: 1 if s <= b else 1/(a(s-b)+1)."""
    if name == "constant":
        return lambda s: 1.0
    if name == "polynomial":
        return lambda s: float((s + 1) ** (-a))
    if name == "hinge":
        return lambda s: 1.0 if s <= b else 1.0 / (a * (s - b) + 1.0)
    raise ValueError(f"unknown staleness function {name!r}; allowed: constant, polynomial, hinge")


def staleness_rejection(staleness: int, max_staleness: Optional[int]) -> Optional[str]:
    """The rejection reason for an update older than the bound, or None (no bound, or within it)."""
    if max_staleness is not None and staleness > max_staleness:
        return f"stale: staleness {staleness} > max_staleness {max_staleness}"
    return None


def check_max_staleness(max_staleness: Optional[int]) -> None:
    """Constructor check shared by the asynchronous strategies."""
    if max_staleness is not None and max_staleness < 0:
        raise ValueError(f"max_staleness must be >= 0 or None, got {max_staleness}")
