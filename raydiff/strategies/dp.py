"""Client-level differential privacy: DP-FedAvg of McMahan et al. 2018 ("Learning Differentially
Private Recurrent Language Models").

Each client's update is clipped to L2 norm ``C``, so one client changes the SUM of updates by at
most ``C``; Gaussian noise N(0, (sigma*C)^2) per coordinate, added once to that sum per aggregation,
makes the aggregation step a Gaussian mechanism. What a run spends is accounted from its events, not
here: :mod:`raydiff.privacy.accounting` (who really took part in which aggregation).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .update_checks import l2_norm


class GaussianMechanism:
    """Clip per update, noise per aggregate. ``rng`` is the only source of noise (give it its own stream).

    ``secret``: ``rng`` was seeded from OS entropy (``strategy.dp.secret_noise``), so nobody can regenerate
    the noise from the run's seed; then :meth:`state_dict` saves no generator state (a checkpoint would
    otherwise let its reader replay the noise) and a resumed run draws fresh noise.
    """

    def __init__(
        self, noise_multiplier: float, clip_norm: float, rng: np.random.Generator, secret: bool = False
    ) -> None:
        if not noise_multiplier >= 0:
            raise ValueError(f"noise_multiplier must be >= 0, got {noise_multiplier}")
        if not clip_norm > 0:
            raise ValueError(f"clip_norm must be > 0, got {clip_norm}")
        self.noise_multiplier = noise_multiplier
        self.clip_norm = clip_norm
        self.rng = rng
        self.secret = secret

    @property
    def noise_std(self) -> float:
        """sigma * C: the per-coordinate standard deviation of the noise added to a sum."""
        return self.noise_multiplier * self.clip_norm

    def clip(self, delta: np.ndarray) -> np.ndarray:
        """delta * min(1, C/||delta||), always as a NEW float32 array (the input may be read-only)."""
        norm = l2_norm(delta)
        scale = 1.0 if norm <= self.clip_norm else self.clip_norm / norm
        return delta * np.float32(scale)

    def noise_sum(self, sum_vector: np.ndarray) -> np.ndarray:
        """Add N(0, (sigma*C)^2) to every coordinate of ``sum_vector`` IN PLACE; returns it.

        Call it once per aggregation on the sum of clipped updates, before dividing by the count.
        """
        if self.noise_multiplier > 0:
            noise = self.rng.standard_normal(sum_vector.shape, dtype=np.float32)
            noise *= np.float32(self.noise_std)
            sum_vector += noise
        return sum_vector

    def state_dict(self) -> dict[str, Any]:
        """The noise stream's position, so a resumed run draws the same noise (none with secret noise)."""
        if self.secret:
            return {"secret": True}
        return {"bit_generator": self.rng.bit_generator.state}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if self.secret:
            return  # keep this process's own OS-entropy stream: secret noise is deliberately not replayed
        self.rng.bit_generator.state = state["bit_generator"]
