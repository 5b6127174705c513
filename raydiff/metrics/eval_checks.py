"""Evaluation checks that need more than one config section, made before Ray starts."""

from __future__ import annotations

from ..config import Config
from ..errors import ConfigError


def default_sample_steps(sampler: str, steps: int | None, num_train_timesteps: int) -> int:
    """``eval.sample_steps`` resolved: null means every training timestep for DDPM, 50 for DDIM."""
    if steps is not None:
        return steps
    return num_train_timesteps if sampler == "ddpm" else min(50, num_train_timesteps)


def check_eval(cfg: Config) -> None:
    """Sampling steps within the schedule; the Inception weights file present (never downloaded)."""
    ev, T = cfg.eval, cfg.model.num_train_timesteps
    if ev.sample_steps is not None and ev.sample_steps > T:
        raise ConfigError(
            f"eval.sample_steps={ev.sample_steps} exceeds model.num_train_timesteps={T}: a sampler "
            "cannot take more steps than the noise schedule has"
        )
    from .inception import check_inception_weights

    check_inception_weights(ev.inception_weights)
