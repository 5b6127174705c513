"""The contract between the parameter server and an aggregation rule."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal, Optional

import numpy as np


@dataclass(frozen=True)
class Update:
    """What a client sends back: its change to the base model it was given, and how much data made it."""

    client_id: int
    base_version: int
    num_samples: int
    delta: np.ndarray  # float32, x_client - x_base
    base: Optional[np.ndarray] = None  # x_base, given only to strategies with ``needs_base``


@dataclass(frozen=True)
class Decision:
    """``applied``: x changed now (new version); ``buffered``: kept for a later version; ``rejected``: dropped."""

    status: Literal["applied", "buffered", "rejected"]
    weight: float = 0.0  # the effective weight the update received (or will receive)
    reason: str = ""


class Strategy(ABC):
    """An aggregation rule. ``x`` is the global float32 vector, updated in place.

    Asynchronous rules decide per update; synchronous ones (``synchronous = True``) buffer until the
    orchestrator closes the round with :meth:`end_round`.
    """

    synchronous: bool = False
    needs_base: bool = False

    @abstractmethod
    def receive(self, x: np.ndarray, version: int, update: Update) -> Decision:
        """Take one update that arrived while the server is at ``version``."""

    def end_round(self, x: np.ndarray) -> bool:
        """Close a synchronous round; True if x changed. Asynchronous rules have no rounds."""
        return False

    def pending(self) -> int:
        """Updates received but not yet folded into x."""
        return 0

    def discard_pending(self) -> None:
        """Forget buffered updates (at the end of a run)."""
