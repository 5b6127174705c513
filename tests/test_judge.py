"""The digit judge tells digits from noise (otherwise the quickstart's quality check means nothing)."""

import numpy as np

from raydiff.data.datasets import load_digits_set
from raydiff.digit_judge import judge_digits, judge_model


def test_judge_is_accurate_and_rejects_noise():
    assert judge_model()[1] > 0.97
    rng = np.random.default_rng(1)
    real = load_digits_set().images[rng.permutation(1797)[:200]]
    r = judge_digits(real)
    assert r["judge_mean_confidence"] > 0.9 and r["judge_classes_covered"] == 10
    for noise in (rng.uniform(-1, 1, (200, 1, 8, 8)), np.clip(rng.standard_normal((200, 1, 8, 8)), -1, 1)):
        n = judge_digits(noise.astype(np.float32))
        assert n["judge_mean_confidence"] < 0.1 and n["judge_confident_fraction"] < 0.05


def test_judge_resizes_larger_samples():
    import torch
    import torch.nn.functional as F

    real = load_digits_set().images[:100]
    big = F.interpolate(torch.from_numpy(real), size=(16, 16), mode="bilinear", align_corners=False).numpy()
    assert judge_digits(big)["judge_mean_confidence"] > 0.8
