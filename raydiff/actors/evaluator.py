"""Evaluator: scores global versions off the training path (its own actor, so training never waits).

The orchestrator only queues ``evaluate`` calls; Ray runs them one after another on this actor while
clients keep training, and the driver collects the rows at the end of the run.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any, Optional

import numpy as np

from ..config import Config
from ..diffusion import heldout_loss, sample
from ..metrics.eval_checks import default_sample_steps
from ..metrics.suite import QualitySuite
from ..model import FlatModel, build_scheduler, build_unet
from .device import setup_torch

log = logging.getLogger(__name__)


class Evaluator:
    """Held-out denoising loss at fixed (t, noise) pairs drawn once from the run seed; sample batches;
    FID-type metrics of those samples against the held-out images (:class:`QualitySuite`)."""

    def __init__(
        self,
        cfg: Config,
        heldout: np.ndarray,
        num_cpus: float = 1.0,
        heldout_labels: Optional[np.ndarray] = None,
        train_images: Optional[np.ndarray] = None,
        train_labels: Optional[np.ndarray] = None,
    ) -> None:
        self.device = setup_torch(num_cpus, cfg.train.device)
        self.cfg = cfg
        rng = np.random.default_rng([cfg.seed, 0xE7A1])
        n = min(cfg.eval.num_heldout, len(heldout))
        self.images = np.ascontiguousarray(heldout[rng.permutation(len(heldout))[:n]])
        self.t = rng.integers(0, cfg.model.num_train_timesteps, size=n).astype(np.int64)
        self.noise = rng.standard_normal(self.images.shape).astype(np.float32)
        self.fm = FlatModel(build_unet(cfg.model, heldout.shape[-1], heldout.shape[1]), self.device)
        self.scheduler = build_scheduler(cfg.model)
        ev = cfg.eval
        self.steps = default_sample_steps(ev.sampler, ev.sample_steps, cfg.model.num_train_timesteps)
        self.fid_samples = ev.fid_num_samples or ev.num_samples
        # FID compares against ALL held-out images (not the num_heldout subset the loss uses).
        self.quality = QualitySuite(ev, cfg.seed, heldout, heldout_labels, train_images, train_labels, self.device)
        self._memo: Optional[tuple[tuple, np.ndarray]] = None

    def ready(self) -> bool:
        """Answers once __init__ is done (the session waits for it before the clock starts)."""
        return True

    def evaluate(self, version: int, vtime: float, vector: np.ndarray, fid: bool = False) -> dict[str, Any]:
        """One evals.parquet row. With ``fid``: also sample and score (fid_* columns, fid_seconds)."""
        t0 = time.perf_counter()
        self.fm.load(vector)
        row: dict[str, Any] = dict(
            version=version,
            vtime=vtime,
            heldout_loss=heldout_loss(self.fm, self.scheduler, self.images, self.t, self.noise),
        )
        if fid and (self.cfg.eval.fid or self.cfg.eval.inception_weights):
            t1 = time.perf_counter()
            scores = self.quality.score(self.sample(vector, self.fid_samples, self.cfg.seed))
            if scores:
                row.update(scores, fid_num_samples=self.fid_samples, fid_seconds=time.perf_counter() - t1)
        row["eval_seconds"] = time.perf_counter() - t0
        log.info("evaluated version %d in %.2f s", version, row["eval_seconds"])
        return row

    def sample(self, vector: np.ndarray, n: int, seed: int) -> np.ndarray:
        """Samples with the configured sampler. The last batch is remembered: the final FID and the final
        grid (or a grid and an FID of the same version) then cost one sampling, not two."""
        vec = np.ascontiguousarray(vector)
        key = (hashlib.blake2b(vec.view(np.uint8).tobytes(), digest_size=16).hexdigest(), n, seed)
        if self._memo is not None and self._memo[0] == key:
            return self._memo[1]
        self.fm.load(vec)
        images = sample(self.fm, self.scheduler, n, seed, self.steps, self.cfg.eval.sampler)
        self._memo = (key, images)
        return images
