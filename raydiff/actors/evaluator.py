"""Evaluator: scores global versions off the training path (its own actor, so training never waits)."""
from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..config import Config
from ..diffusion import heldout_loss, sample
from ..model import FlatModel, build_scheduler, build_unet
from .device import setup_torch


class Evaluator:
    """Held-out denoising loss at fixed (t, noise) pairs drawn once from the run seed; sample batches."""

    def __init__(self, cfg: Config, heldout: np.ndarray, num_cpus: float = 1.0) -> None:
        self.device = setup_torch(num_cpus, cfg.train.device)
        rng = np.random.default_rng([cfg.seed, 0xE7A1])
        n = min(cfg.eval.num_heldout, len(heldout))
        self.images = np.ascontiguousarray(heldout[rng.permutation(len(heldout))[:n]])
        self.t = rng.integers(0, cfg.model.num_train_timesteps, size=n).astype(np.int64)
        self.noise = rng.standard_normal(self.images.shape).astype(np.float32)
        self.fm = FlatModel(build_unet(cfg.model, heldout.shape[-1], heldout.shape[1]), self.device)
        self.scheduler = build_scheduler(cfg.model)

    def evaluate(self, version: int, vtime: float, vector: np.ndarray) -> dict[str, Any]:
        t0 = time.perf_counter()
        self.fm.load(vector)
        loss = heldout_loss(self.fm, self.scheduler, self.images, self.t, self.noise)
        return dict(version=version, vtime=vtime, heldout_loss=loss, eval_seconds=time.perf_counter() - t0)

    def sample(self, vector: np.ndarray, n: int, seed: int) -> np.ndarray:
        self.fm.load(vector)
        return sample(self.fm, self.scheduler, n, seed)
