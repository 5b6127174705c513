"""The digit judge: a classifier trained on REAL digits, asked how confidently it labels generated ones.

A cheap, offline stand-in for FID on the embedded dataset: good samples are labelled confidently
and cover all ten classes; noise is labelled with low confidence or collapses onto a few classes.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=1)
def _classifier():
    from sklearn.datasets import load_digits
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.svm import SVC

    d = load_digits()
    return CalibratedClassifierCV(SVC(), ensemble=False).fit(d.data, d.target)


def judge_digits(samples: np.ndarray, confident: float = 0.5) -> dict[str, float]:
    """``samples``: (N, 1, H, W) in [-1, 1]; resized to 8x8 and scaled to the digits' 0..16 range."""
    x = samples
    if x.shape[-1] != 8:
        import torch
        import torch.nn.functional as F

        x = F.interpolate(torch.from_numpy(x), size=(8, 8), mode="bilinear", align_corners=False).numpy()
    feats = ((np.clip(x[:, 0], -1, 1) + 1) / 2 * 16).reshape(len(x), -1)
    proba = _classifier().predict_proba(feats)
    conf = proba.max(axis=1)
    labels = proba.argmax(axis=1)
    sure = labels[conf >= confident]
    return dict(judge_mean_confidence=float(conf.mean()), judge_confident_fraction=float((conf >= confident).mean()),
                judge_classes_covered=int(len(np.unique(sure))),
                judge_class_counts=[int(v) for v in np.bincount(labels, minlength=10)])
