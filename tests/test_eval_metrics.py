"""Sample-quality metrics without Ray: the domain classifier, FID/KID/precision/recall on degraded real digits,
DDIM sampling, the Inception FID path and its missing-weights message."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import linalg
from scipy.ndimage import gaussian_filter

from raydiff.config import ModelConfig
from raydiff.data import split_holdout
from raydiff.data.datasets import load_digits_set
from raydiff.diffusion import sample
from raydiff.metrics import domain
from raydiff.metrics.distances import (
    frechet_distance,
    frechet_from_moments,
    kernel_inception_distance,
    precision_recall,
)
from raydiff.model import FlatModel, build_scheduler, build_unet

LEVELS_NOISE = (0.1, 0.2, 0.4, 0.8)
LEVELS_BLUR = (0.5, 1.0, 1.5, 2.0)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """Digits split 70/30 (more held-out images than a run's 10%, for steadier statistics); classifier trained once."""
    ds = load_digits_set()
    train, held = split_holdout(ds, 0.3, np.random.default_rng([0, 6]))
    cache = tmp_path_factory.mktemp("judges")
    clf = domain.domain_classifier(train.images, train.labels, str(cache), seed=0)
    return train, held, clf, cache


def _halves(clf, images, seed=0):
    p = np.random.default_rng(seed).permutation(len(images))
    n = len(images) // 2
    return images[p[:n]], images[p[n:]]


def test_judge_accuracy_and_cache_hit(digits):
    train, held, clf, cache = digits
    acc = clf.accuracy(held.images, held.labels)
    assert acc > 0.90, acc  # measured 0.974 (0.966 on a run's default 10% hold-out)
    files = list(cache.glob("domain-*.pt"))
    assert len(files) == 1
    mtime, trained = files[0].stat().st_mtime_ns, domain.TRAINED
    again = domain.domain_classifier(train.images, train.labels, str(cache), seed=0)
    assert domain.TRAINED == trained  # loaded, not retrained
    assert files[0].stat().st_mtime_ns == mtime
    np.testing.assert_allclose(again.features(held.images[:20]), clf.features(held.images[:20]))
    # different labels are a different training set: a new key, a new file
    assert domain.classifier_key(train.images, train.labels[::-1].copy(), 0) != again.key


def test_fid_and_kid_real_vs_real_small_and_monotone_in_degradation(digits):
    _, held, clf, _ = digits
    a, b = _halves(clf, held.images)
    fa = clf.features(a)
    rng = np.random.default_rng(1)
    kid = lambda f: kernel_inception_distance(fa, f, 50, 1000, np.random.default_rng(2))
    fb = clf.features(b)
    base_fid, base_kid = frechet_distance(fa, fb), kid(fb)
    noisy = [clf.features(np.clip(b + rng.normal(0, s, b.shape), -1, 1).astype(np.float32)) for s in LEVELS_NOISE]
    blurred = [clf.features(gaussian_filter(b, sigma=(0, 0, s, s)).astype(np.float32)) for s in LEVELS_BLUR]
    uniform = clf.features(rng.uniform(-1, 1, b.shape).astype(np.float32))
    for degraded in (noisy, blurred):
        fids = [base_fid] + [frechet_distance(fa, f) for f in degraded]
        kids = [base_kid] + [kid(f) for f in degraded]
        assert all(x < y for x, y in itertools.pairwise(fids)), fids
        assert all(x < y for x, y in itertools.pairwise(kids)), kids
    # measured: real vs real FID 0.36 (KID -0.003), uniform noise FID 11.5 (KID 0.98)
    assert base_fid < 0.1 * frechet_distance(fa, uniform)
    assert abs(base_kid) < 0.05 * kid(uniform)


def test_precision_recall_real_high_noise_low(digits):
    _, held, clf, _ = digits
    a, b = _halves(clf, held.images)
    fa, fb = clf.features(a), clf.features(b)
    p, r = precision_recall(fa, fb)
    assert p > 0.8 and r > 0.8, (p, r)  # measured 0.89, 0.92
    noise = clf.features(np.random.default_rng(3).uniform(-1, 1, b.shape).astype(np.float32))
    p, r = precision_recall(fa, noise)
    assert p < 0.5 and r < 0.1, (p, r)  # measured 0.21, 0.04


def test_frechet_matches_scipy_sqrtm_and_closed_forms():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 5)), rng.normal(size=(5, 5))
    s1, s2 = a @ a.T + 0.1 * np.eye(5), b @ b.T + 0.1 * np.eye(5)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    ref = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
    assert frechet_from_moments(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-8)
    d1, d2 = np.diag([1.0, 4.0]), np.diag([9.0, 1.0])  # diagonal: sum (sqrt(a) - sqrt(b))^2
    assert frechet_from_moments(np.zeros(2), d1, np.ones(2), d2) == pytest.approx(2 + 4 + 1)
    x = rng.normal(size=(40, 8))
    assert frechet_distance(x, x) == pytest.approx(0, abs=1e-9)  # singular-ish covariance: no NaN, no imag
    with pytest.raises(ValueError):
        frechet_distance(x[:1], x)


def test_kid_is_unbiased_near_zero_for_one_distribution():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(400, 16)), rng.normal(size=(400, 16))
    shifted = rng.normal(0.5, 1, size=(400, 16))
    same = kernel_inception_distance(x, y, 20, 200, np.random.default_rng(1))
    assert abs(same) < 0.1 * kernel_inception_distance(x, shifted, 20, 200, np.random.default_rng(1))


@pytest.mark.parametrize("sampler, steps", [("ddim", 10), ("ddpm", 5)])
def test_sampling_finite_in_range_and_seeded(sampler, steps):
    cfg = ModelConfig(num_train_timesteps=100)
    fm = FlatModel(build_unet(cfg, 8, 1, seed=0))
    sched = build_scheduler(cfg)
    x = sample(fm, sched, 6, seed=5, num_inference_steps=steps, sampler=sampler)
    assert x.shape == (6, 1, 8, 8) and x.dtype == np.float32
    assert np.isfinite(x).all() and x.min() >= -1 and x.max() <= 1
    np.testing.assert_array_equal(x, sample(fm, sched, 6, seed=5, num_inference_steps=steps, sampler=sampler))
    assert not np.array_equal(x, sample(fm, sched, 6, seed=6, num_inference_steps=steps, sampler=sampler))
    assert len(sched.timesteps) == 100  # the caller's scheduler is left as it was


def test_missing_inception_weights_exit_2_before_anything_runs(tmp_path, capsys):
    from raydiff.cli import main

    scenario = Path(__file__).resolve().parents[1] / "scenarios" / "quickstart.yaml"
    rc = main(
        [
            "run",
            str(scenario),
            "--out",
            str(tmp_path / "out"),
            "--no-progress",
            "--set",
            f"eval.inception_weights={tmp_path / 'nope.pth'}",
        ]
    )
    err = capsys.readouterr().err
    flat = " ".join(err.split())
    assert rc == 2
    assert flat.startswith("raydiff: error: eval.inception_weights:") and "is not a file" in flat
    assert "null to skip Inception FID" in flat and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # failed before the run folder (and Ray)


def test_sample_steps_beyond_schedule_is_a_config_error():
    from raydiff import load_config
    from raydiff.errors import ConfigError
    from raydiff.runner import check_config

    with pytest.raises(ConfigError, match="eval.sample_steps=50 exceeds model.num_train_timesteps=20"):
        check_config(load_config({"model": {"num_train_timesteps": 20}, "eval": {"sample_steps": 50}}))
    with pytest.raises(ConfigError, match="eval.every_vtime"):
        load_config({"eval": {"every_vtime": 0}})


def test_inception_fid_passes_the_weights_path(monkeypatch, tmp_path):
    """No real weights offline: a stand-in class records what torchmetrics would be given."""
    import torchmetrics.image.fid as tm_fid

    from raydiff.metrics.inception import InceptionFID

    seen = {}

    class FakeFID:
        def __init__(self, **kw):
            seen.update(kw)
            self.updates = []

        def to(self, device):
            return self

        def update(self, imgs, real):
            assert imgs.dtype == torch.uint8 and imgs.shape[1] == 3
            self.updates.append((len(imgs), real))

        def reset(self):
            self.updates = [u for u in self.updates if u[1]]

        def compute(self):
            return torch.tensor(float(sum(n for n, real in self.updates if not real)))

    monkeypatch.setattr(tm_fid, "FrechetInceptionDistance", FakeFID)
    from raydiff.metrics.inception import _INCEPTION_KEYS

    weights = tmp_path / "w.pth"
    torch.save({k: torch.zeros(1) for k in _INCEPTION_KEYS}, weights)  # tensors only, InceptionV3's keys
    fid = InceptionFID(str(weights), np.zeros((5, 1, 8, 8), np.float32), batch=2)
    # torch-fidelity gets a private copy of the tensors raydiff read, never the user's file (it unpickles freely)
    assert seen["feature"] == 2048
    assert seen["feature_extractor_weights_path"] != str(weights)
    assert seen["feature_extractor_weights_path"].endswith("inception.pth")
    assert seen["reset_real_features"] is False
    assert fid.score(np.zeros((3, 1, 8, 8), np.float32)) == 3.0  # real stats kept, fakes replaced


def test_inception_fid_real_torchmetrics_with_random_weights(monkeypatch, tmp_path):
    """The real torchmetrics + torch-fidelity path, fed a weights FILE of a randomly initialised InceptionV3."""
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    from raydiff.metrics.inception import InceptionFID

    with monkeypatch.context() as m:  # build the network without loading any weights, save its random init
        m.setattr(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd, *a, **k: None)
        m.setattr(fe, "load_state_dict_from_url", lambda *a, **k: pytest.fail("tried to download"))
        m.setattr(torch, "load", lambda *a, **k: {})
        net = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path="x")
    path = tmp_path / "random-inception.pth"
    torch.save(net.state_dict(), path)
    del net
    real = np.random.default_rng(0).uniform(-1, 1, (4, 1, 8, 8)).astype(np.float32)
    fid = InceptionFID(str(path), real)
    assert abs(fid.score(real)) < 1e-6
    assert np.isfinite(fid.score(-real))
