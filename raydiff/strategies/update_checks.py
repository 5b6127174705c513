"""Checks every update passes before any strategy sees it: a rejected update never touches x."""

from __future__ import annotations

from typing import Literal, Optional

import numpy as np

NON_FINITE = "non_finite"  # the reason's first word when an update holds NaN or Inf (the orchestrator counts them)


def check_update(delta: np.ndarray, expected_size: int) -> Optional[str]:
    """The reason to reject ``delta``, or None if it is acceptable."""
    if delta.dtype != np.float32 or delta.shape != (expected_size,):
        return f"malformed: expected float32[{expected_size}], got {delta.dtype}{list(delta.shape)}"
    if not np.isfinite(delta).all():
        return f"{NON_FINITE}: the update holds NaN or Inf"
    return None


def l2_norm(delta: np.ndarray) -> float:
    """||delta||_2, accumulated in float64: float32 sums of 10^7 squares would lose digits."""
    return float(np.sqrt(np.einsum("i,i->", delta, delta, dtype=np.float64)))


class NormBound:
    """An L2-norm limit on updates, against a client that sends a huge (faulty or malicious) delta.

    ``mode='clip'`` scales the delta down to norm ``max_norm``; ``mode='reject'`` refuses it.
    """

    def __init__(self, max_norm: float, mode: Literal["clip", "reject"] = "clip") -> None:
        if not max_norm > 0:
            raise ValueError(f"max_norm must be > 0, got {max_norm}")
        if mode not in ("clip", "reject"):
            raise ValueError(f"mode must be 'clip' or 'reject', got {mode!r}")
        self.max_norm = max_norm
        self.mode = mode

    def apply(self, delta: np.ndarray) -> tuple[np.ndarray, Optional[str]]:
        """(delta to use, rejection reason or None).

        A delta within the bound comes back as the SAME array, untouched. A clipped delta is a NEW
        array: the input may be a read-only object-store buffer and is never written to.
        """
        norm = l2_norm(delta)
        if norm <= self.max_norm:
            return delta, None
        if self.mode == "reject":
            return delta, f"norm: {norm:.4g} > {self.max_norm}"
        return delta * np.float32(self.max_norm / norm), None
