"""Sample-quality metrics of one batch of generated images against the held-out real images.

Everything expensive (training or loading the domain classifier, real features, Inception's real
statistics) happens once, lazily, on the first ``score``: a run that never computes FID never pays
for it, and the work lands on the evaluator actor, off the training path.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Optional

import numpy as np
import torch

from ..config import EvalConfig
from .distances import density_coverage, frechet_distance, kernel_inception_distance, precision_recall

log = logging.getLogger(__name__)

# evals.parquet columns written by ``score`` (documented in README, "Evaluation").
DOMAIN_COLUMNS = (
    "fid_domain",
    "kid_domain",
    "precision",
    "recall",
    "density",
    "coverage",
    "domain_classifier_accuracy",
)
KID_SUBSETS, KID_SUBSET_SIZE, PR_K = 100, 1000, 3
DC_K = 5  # density and coverage: Naeem et al.'s k
MIN_REAL_FID = 2  # a covariance (FID) and an unbiased MMD (KID) need two images per set


class QualitySuite:
    """Domain-classifier FID/KID/precision/recall, plus Inception FID when ``ev.inception_weights`` is set."""

    def __init__(
        self,
        ev: EvalConfig,
        seed: int,
        real: np.ndarray,
        real_labels: Optional[np.ndarray],
        train_images: Optional[np.ndarray],
        train_labels: Optional[np.ndarray],
        device: torch.device | str = "cpu",
    ) -> None:
        self.ev, self.seed, self.device = ev, seed, device
        self.real, self.real_labels = real, real_labels
        self.train_images, self.train_labels = train_images, train_labels
        self.classifier: Any = None
        self.real_features: Optional[np.ndarray] = None
        self.classifier_accuracy = float("nan")
        self.inception: Any = None
        # labelled: the domain classifier can be trained (FID's features; the utility evaluation's judge)
        self.labelled = train_images is not None and train_labels is not None and len(np.unique(train_labels)) >= 2
        self.domain_ok = ev.fid and self.labelled
        if ev.fid and not self.domain_ok:
            log.warning("domain FID skipped: it needs training images with at least two labels")
        # A tiny held-out set must not crash the final scoring after training (the run folder would be
        # lost): FID/KID need 2 real images, precision/recall k+1. Too few: skip the metric, say so once.
        self.enough_real = len(real) >= MIN_REAL_FID
        self.pr_ok = len(real) > PR_K
        if (self.domain_ok or ev.inception_weights) and not self.enough_real:
            log.warning(
                "FID, KID, precision and recall skipped: the held-out set has %d image(s), they need >= %d "
                "(raise data.holdout_fraction)",
                len(real),
                MIN_REAL_FID,
            )
        elif self.domain_ok and not self.pr_ok:
            log.warning(
                "precision and recall skipped (NaN): the held-out set has %d images, k-NN with k=%d needs "
                ">= %d (raise data.holdout_fraction)",
                len(real),
                PR_K,
                PR_K + 1,
            )

    def judge(self) -> Any:
        """The domain classifier (trained or loaded on first use); None without labelled training images."""
        if self.labelled and self.classifier is None:
            self._prepare_domain()
        return self.classifier

    def _prepare(self) -> None:
        if self.domain_ok and self.classifier is None:
            self._prepare_domain()
        if self.ev.inception_weights and self.inception is None:
            from .inception import InceptionFID

            self.inception = InceptionFID(self.ev.inception_weights, self.real, self.device)

    def _prepare_domain(self) -> None:
        if self.classifier is None:
            assert self.train_images is not None and self.train_labels is not None  # labelled says so
            from .domain import domain_classifier

            t0 = time.perf_counter()
            self.classifier = domain_classifier(
                self.train_images, self.train_labels, self.ev.cache_dir, self.seed, self.device
            )
            self.real_features = self.classifier.features(self.real)
            if self.real_labels is not None:
                self.classifier_accuracy = self.classifier.accuracy(self.real, self.real_labels)
            log.info(
                "domain classifier ready in %.1f s: held-out accuracy %.3f",
                time.perf_counter() - t0,
                self.classifier_accuracy,
            )

    def score(self, fake: np.ndarray) -> dict[str, Any]:
        """Metric columns for one batch of samples (N, C, H, W) in [-1, 1]."""
        if len(fake) < 2 * PR_K:
            log.warning("FID skipped: %d samples are too few (need >= %d)", len(fake), 2 * PR_K)
            return {}
        if not self.enough_real:
            return {}
        self._prepare()
        row: dict[str, Any] = {}
        if self.classifier is not None:
            assert self.real_features is not None  # set with the classifier
            f = self.classifier.features(fake)
            rng = np.random.default_rng([self.seed, 0xF1D])  # the same KID subsets at every version
            precision, recall = precision_recall(self.real_features, f, PR_K) if self.pr_ok else (math.nan, math.nan)
            dc = density_coverage(self.real_features, f, DC_K) if len(self.real) > DC_K else (math.nan, math.nan)
            row.update(
                fid_domain=frechet_distance(self.real_features, f),
                kid_domain=kernel_inception_distance(self.real_features, f, KID_SUBSETS, KID_SUBSET_SIZE, rng),
                precision=precision,
                recall=recall,
                density=dc[0],
                coverage=dc[1],
                domain_classifier_accuracy=self.classifier_accuracy,
            )
        if self.inception is not None:
            row["fid_inception"] = self.inception.score(fake)
        return row


__all__ = ["DOMAIN_COLUMNS", "QualitySuite"]
