"""Exponential moving average of the global model: a smoother model to evaluate and sample from."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

import numpy as np


class EMA:
    """ema <- decay * ema + (1 - decay) * x at each update; the first update copies x.

    Starting from a copy rather than from zeros avoids a bias toward 0 in the early versions.
    """

    def __init__(self, decay: float) -> None:
        if not 0 <= decay <= 1:
            raise ValueError(f"decay must be in [0, 1], got {decay}")
        self.decay = decay
        self.value: Optional[np.ndarray] = None  # the average, float32; None before the first update
        self.updates = 0

    def update(self, x: np.ndarray) -> np.ndarray:
        """Fold in the current global vector (not kept: x may change in place later). Returns the average."""
        if self.value is None:
            self.value = np.array(x, dtype=np.float32, copy=True)
        else:
            self.value *= np.float32(self.decay)
            self.value += np.float32(1.0 - self.decay) * x
        self.updates += 1
        return self.value

    def state_dict(self) -> dict[str, Any]:
        return {
            "decay": self.decay,
            "updates": self.updates,
            "value": None if self.value is None else self.value.copy(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.decay = float(state["decay"])
        self.updates = int(state["updates"])
        self.value = None if state["value"] is None else np.array(state["value"], dtype=np.float32, copy=True)
