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
from ..model import FlatModel, build_scheduler, build_unet, num_classes_of
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
        pick = rng.permutation(len(heldout))[:n]
        self.images = np.ascontiguousarray(heldout[pick])
        self.t = rng.integers(0, cfg.model.num_train_timesteps, size=n).astype(np.int64)
        self.noise = rng.standard_normal(self.images.shape).astype(np.float32)
        self.conditional = cfg.model.conditional
        # a conditional model is built for the training labels' classes (the rule every actor applies) and
        # scored on the held-out loss given each image's true class
        self.num_classes = num_classes_of(train_labels) if train_labels is not None else 0
        self.labels = heldout_labels[pick] if self.conditional and heldout_labels is not None else None
        if self.conditional and self.labels is None:
            raise ValueError("model.conditional: the evaluator needs the held-out labels")
        k = self.num_classes if self.conditional else None
        self.fm = FlatModel(build_unet(cfg.model, heldout.shape[-1], heldout.shape[1], num_classes=k), self.device)
        self.heldout, self.heldout_labels = heldout, heldout_labels
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
            heldout_loss=heldout_loss(self.fm, self.scheduler, self.images, self.t, self.noise, labels=self.labels),
        )
        if fid and (self.cfg.eval.fid or self.cfg.eval.inception_weights):
            t1 = time.perf_counter()
            scores = self.quality.score(self.sample(vector, self.fid_samples, self.cfg.seed))
            if scores:
                row.update(scores, fid_num_samples=self.fid_samples, fid_seconds=time.perf_counter() - t1)
        row["eval_seconds"] = time.perf_counter() - t0
        log.info("evaluated version %d in %.2f s", version, row["eval_seconds"])
        return row

    def sample_labels(self, n: int) -> Optional[np.ndarray]:
        """A conditional model's ``n`` samples as equal numbers per class (n // classes each, at least one),
        class by class; None for an unconditional model."""
        if not self.conditional:
            return None
        from ..utility import sample_labels

        return sample_labels(self.num_classes, max(1, n // self.num_classes))

    def sample(self, vector: np.ndarray, n: int, seed: int) -> np.ndarray:
        """Samples with the configured sampler. The last batch is remembered: the final FID and the final
        grid (or a grid and an FID of the same version) then cost one sampling, not two.

        A conditional model draws :meth:`sample_labels` (n rounded down to a multiple of the class count)
        with classifier-free guidance ``eval.guidance_scale``."""
        vec = np.ascontiguousarray(vector)
        key = (hashlib.blake2b(vec.view(np.uint8).tobytes(), digest_size=16).hexdigest(), n, seed)
        if self._memo is not None and self._memo[0] == key:
            return self._memo[1]
        self.fm.load(vec)
        labels = self.sample_labels(n)
        n = n if labels is None else len(labels)
        images = sample(
            self.fm,
            self.scheduler,
            n,
            seed,
            self.steps,
            self.cfg.eval.sampler,
            class_labels=labels,
            guidance_scale=self.cfg.eval.guidance_scale,
        )
        self._memo = (key, images)
        return images

    def class_evaluate(self, vector: np.ndarray, version: int) -> dict[str, Any]:
        """Utility and per-class quality of ``vector`` (raydiff.utility): {} without labelled data or with
        ``eval.utility_samples_per_class`` 0. Returns ``summary`` (summary.json fields), ``per_class``
        (evals_per_class.parquet rows), ``samples`` and ``labels`` (the batch, for samples/by_class.png).

        ``utility_samples_per_class`` samples per class with ``eval.utility_sampler`` and its steps; an
        unconditional model draws as many in all, labelled by the domain classifier."""
        from ..utility import class_evaluation, real_baseline

        ev, per = self.cfg.eval, self.cfg.eval.utility_samples_per_class
        judge = self.quality.judge()
        real_features = self.quality.real_features
        if per < 1 or judge is None or self.heldout_labels is None or real_features is None:
            return {}
        t0 = time.perf_counter()
        q = self.quality
        assert q.train_images is not None and q.train_labels is not None  # judge() needs them
        k = num_classes_of(q.train_labels)
        base = real_baseline(q.train_images, q.train_labels, per, k, self.cfg.seed, ev.cache_dir, self.device)
        labels = None
        if self.conditional:
            from ..utility import sample_labels

            labels = sample_labels(k, per)
        seed = int(np.random.default_rng([self.cfg.seed, 0x7711]).integers(2**62))
        T = self.cfg.model.num_train_timesteps  # utility_sample_steps is capped at the schedule's length
        steps = min(default_sample_steps(ev.utility_sampler, ev.utility_sample_steps, T), T)
        self.fm.load(np.ascontiguousarray(vector))
        images = sample(
            self.fm,
            self.scheduler,
            k * per,
            seed,
            steps,
            ev.utility_sampler,
            class_labels=labels,
            guidance_scale=ev.guidance_scale,
        )
        t1 = time.perf_counter()
        summary, rows = class_evaluation(
            images,
            labels,
            judge,
            self.heldout,
            np.asarray(self.heldout_labels),
            real_features,
            base,
            k,
            self.cfg.seed,
            version,
            self.device,
        )
        summary.update(utility_seconds=time.perf_counter() - t0, utility_sample_seconds=t1 - t0)
        log.info(
            "utility of version %d: %.3f (real %.3f), label fidelity %s, in %.1f s",
            version,
            summary["utility_accuracy"],
            summary["utility_accuracy_real"],
            summary["label_fidelity"],
            summary["utility_seconds"],
        )
        used = labels if labels is not None else judge.predict(images)
        return dict(summary=summary, per_class=rows, samples=images, labels=used, num_classes=k)
