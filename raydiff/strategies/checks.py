"""Checks every update passes before any strategy sees it: a rejected update never touches x."""
from __future__ import annotations

from typing import Optional

import numpy as np


def check_update(delta: np.ndarray, expected_size: int) -> Optional[str]:
    """The reason to reject ``delta``, or None if it is acceptable."""
    if delta.dtype != np.float32 or delta.shape != (expected_size,):
        return f"malformed: expected float32[{expected_size}], got {delta.dtype}{list(delta.shape)}"
    if not np.isfinite(delta).all():
        return "non_finite: the update holds NaN or Inf"
    return None
