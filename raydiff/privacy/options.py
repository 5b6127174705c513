"""The privacy audit's settings: the proposed ``eval.privacy_audit`` section of the config (a frozen dataclass,
validated like every other section, no torch)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..errors import ConfigError

# A generated sample counts as extracted when it is at least this many times closer to its nearest
# training image than to its nearest held-out image (README, "Privacy audit", says why 1/3).
EXTRACTION_THRESHOLD = 1.0 / 3.0


def _require(ok: bool, name: str, what: str) -> None:
    if not ok:
        raise ConfigError(f"eval.privacy_audit.{name}: {what}")


@dataclass(frozen=True)
class AuditOptions:
    """What the end-of-run privacy audit scores (README, "Privacy audit").

    Membership inference scores each image by its denoising loss at ``timesteps`` timesteps evenly
    spread over ``t_range`` (fractions of num_train_timesteps) with ``noise_draws`` fixed noise draws
    each. The range is where a trained DDPM's loss separates members best (measured on the quickstart:
    t in 50..300 of 1000 gives AUC 0.53-0.55 where t = 1 or 800 gives 0.51-0.52; SecMI and Carlini et al.
    2023 also attack at small-to-middle t).
    """

    enabled: bool = True
    num_members: int = 2000  # training images scored (a seeded random subset when there are more)
    num_nonmembers: int = 2000  # held-out images scored (all of them when there are fewer)
    timesteps: int = 6
    noise_draws: int = 4
    t_range: tuple[float, ...] = (0.05, 0.3)  # [low, high]
    num_samples: Optional[int] = None  # generated samples for memorisation; null: eval.num_samples (free: reused)
    extraction_threshold: float = EXTRACTION_THRESHOLD
    batch_size: int = 512
    # torch CPU threads while auditing; null: torch's default. 1, because the audit's small batches gain little
    # from a second thread and lose 10x to spin-waiting when the cores are shared (measured on the quickstart
    # model at load 15-25 on 2 cores: 8 s of CPU with 1 thread, 78 s with 2)
    num_threads: Optional[int] = 1

    def __post_init__(self) -> None:
        _require(self.num_members >= 2, "num_members", f"must be >= 2, got {self.num_members}")
        _require(self.num_nonmembers >= 2, "num_nonmembers", f"must be >= 2, got {self.num_nonmembers}")
        _require(self.timesteps >= 1, "timesteps", f"must be >= 1, got {self.timesteps}")
        _require(self.noise_draws >= 1, "noise_draws", f"must be >= 1, got {self.noise_draws}")
        pair = tuple(self.t_range)
        _require(
            len(pair) == 2 and 0 <= pair[0] <= pair[1] < 1,
            "t_range",
            f"must be [low, high] with 0 <= low <= high < 1 (fractions of model.num_train_timesteps), got {list(pair)}",
        )
        _require(
            self.num_samples is None or self.num_samples >= 1,
            "num_samples",
            f"must be >= 1 (or null for eval.num_samples), got {self.num_samples}",
        )
        _require(
            0 < self.extraction_threshold < 1,
            "extraction_threshold",
            f"must be in (0, 1), got {self.extraction_threshold}",
        )
        _require(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        _require(
            self.num_threads is None or self.num_threads >= 1,
            "num_threads",
            f"must be >= 1 (or null for torch's default), got {self.num_threads}",
        )

    def timestep_grid(self, num_train_timesteps: int) -> list[int]:
        """The attacked timesteps: ``timesteps`` integers evenly spread over t_range * T (duplicates kept)."""
        lo, hi = self.t_range
        T = num_train_timesteps
        if self.timesteps == 1:
            return [round((lo + hi) / 2 * (T - 1))]
        return [round((lo + (hi - lo) * i / (self.timesteps - 1)) * (T - 1)) for i in range(self.timesteps)]


__all__ = ["EXTRACTION_THRESHOLD", "AuditOptions"]
