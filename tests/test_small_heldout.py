"""A held-out set too small for a metric skips that metric with a warning; it never crashes the final
scoring after training (which would lose the finished run's folder)."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

from raydiff.config import EvalConfig
from raydiff.metrics.suite import QualitySuite


def blobs(n: int, label: int, rng: np.random.Generator) -> np.ndarray:
    base = np.zeros((8, 8), np.float32) - 1
    base[:, :4] = 1 if label == 0 else -1
    base[:, 4:] = 1 if label == 1 else -1
    return np.clip(base + rng.normal(0, 0.3, (n, 1, 8, 8)), -1, 1).astype(np.float32)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rng = np.random.default_rng(0)
    train = np.concatenate([blobs(20, 0, rng), blobs(20, 1, rng)])
    labels = np.array([0] * 20 + [1] * 20)
    real = np.concatenate([blobs(2, 0, rng), blobs(2, 1, rng)])
    fake = np.concatenate([blobs(5, 0, rng), blobs(5, 1, rng)])
    return train, labels, real, np.array([0, 0, 1, 1]), fake, str(tmp_path_factory.mktemp("judges"))


def suite(data, n_real: int) -> QualitySuite:
    train, labels, real, real_labels, _, cache = data
    return QualitySuite(EvalConfig(cache_dir=cache), 0, real[:n_real], real_labels[:n_real], train, labels)


def test_three_heldout_images_skip_precision_recall(data, caplog):
    with caplog.at_level(logging.WARNING, logger="raydiff.metrics.suite"):
        s = suite(data, 3)
    assert "precision and recall skipped" in caplog.text and "3 images" in caplog.text
    row = s.score(data[4])  # raised ValueError (k-NN with k=3 needs 4 points) before the fix
    assert math.isfinite(row["fid_domain"]) and math.isfinite(row["kid_domain"])
    assert math.isnan(row["precision"]) and math.isnan(row["recall"])


def test_four_heldout_images_score_everything(data):
    row = suite(data, 4).score(data[4])
    assert 0 <= row["precision"] <= 1 and 0 <= row["recall"] <= 1


def test_one_heldout_image_skips_fid(data, caplog):
    with caplog.at_level(logging.WARNING, logger="raydiff.metrics.suite"):
        s = suite(data, 1)
    assert "FID, KID, precision and recall skipped" in caplog.text
    assert s.score(data[4]) == {}  # raised in the Frechet distance (needs 2 rows) before the fix
