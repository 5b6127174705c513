"""Client heterogeneity: job timing against hand-computed numbers, dropout, speed sampling."""
from __future__ import annotations

import numpy as np
import pytest

from raydiff.config import ClientsConfig, SpeedConfig
from raydiff.hetero import ClientProfile, plan_job, sample_profiles, sample_speeds

# 1000 samples/s, 1e6 bytes/s each way, 0.1 s latency; 320 samples and 2e6 bytes each way:
#   download = 0.1 + 2e6/1e6 = 2.1 s, compute = 320/1000 = 0.32 s, upload = 2.1 s, total 4.52 s
DOWNLOAD, COMPUTE, UPLOAD, TOTAL = 2.1, 0.32, 2.1, 4.52


def profile(dropout: float) -> ClientProfile:
    return ClientProfile(client_id=0, speed=1000.0, down_bps=1e6, up_bps=1e6, latency_s=0.1, dropout=dropout)


def plan(dropout: float, rng: np.random.Generator):
    return plan_job(profile(dropout), 320, 2_000_000, 2_000_000, rng)


def test_plan_without_dropout_matches_hand_computation():
    p = plan(0.0, np.random.default_rng(0))
    assert p.download_s == pytest.approx(DOWNLOAD, rel=1e-12)
    assert p.compute_s == pytest.approx(COMPUTE, rel=1e-12)
    assert p.upload_s == pytest.approx(UPLOAD, rel=1e-12)
    assert p.end_s == pytest.approx(TOTAL, rel=1e-12)
    assert p.duration_s == pytest.approx(TOTAL, rel=1e-12)
    assert p.fails is False
    assert p.failure_reason == ""


def test_asymmetric_link():
    """Slow uplink: 1e6 bytes up at 2.5e5 B/s = 4 s + 0.05 s latency; down 1e6 at 1e7 = 0.1 + 0.05."""
    prof = ClientProfile(3, speed=50.0, down_bps=1e7, up_bps=2.5e5, latency_s=0.05, dropout=0.0)
    p = plan_job(prof, 100, 1_000_000, 1_000_000, np.random.default_rng(0))
    assert p.download_s == pytest.approx(0.15, rel=1e-12)
    assert p.compute_s == pytest.approx(2.0, rel=1e-12)
    assert p.upload_s == pytest.approx(4.05, rel=1e-12)
    assert p.end_s == pytest.approx(6.2, rel=1e-12)


def test_certain_dropout_ends_inside_the_phase_it_names():
    """dropout=1 (ClientProfile is a plain dataclass; ClientsConfig would refuse 1.0)."""
    rng = np.random.default_rng(1)
    seen = set()
    for _ in range(600):
        p = plan(1.0, rng)
        assert p.fails is True
        assert 0.0 <= p.end_s < p.duration_s
        assert p.duration_s == pytest.approx(TOTAL)
        if p.end_s < DOWNLOAD:
            expected = "dropout_download"
        elif p.end_s < DOWNLOAD + COMPUTE:
            expected = "dropout_compute"
        else:
            expected = "dropout_upload"
        assert p.failure_reason == expected, p
        seen.add(p.failure_reason)
    assert seen == {"dropout_download", "dropout_compute", "dropout_upload"}


def test_plans_are_deterministic_for_a_seeded_generator():
    r1, r2 = np.random.default_rng(42), np.random.default_rng(42)
    a = [plan(0.4, r1) for _ in range(50)]
    b = [plan(0.4, r2) for _ in range(50)]
    assert a == b
    assert any(p.fails for p in a) and not all(p.fails for p in a)


def test_rng_stream_does_not_depend_on_outcome():
    """Two draws per job always: a failing and a finishing job leave the generator in the same state."""
    r1, r2 = np.random.default_rng(9), np.random.default_rng(9)
    assert plan(0.0, r1).fails is False
    assert plan(1.0, r2).fails is True
    assert r1.random() == r2.random()


def test_dropout_frequency():
    rng = np.random.default_rng(2024)
    rate = np.mean([plan(0.3, rng).fails for _ in range(20000)])
    assert abs(rate - 0.3) < 0.02


def test_lognormal_speeds_have_the_configured_mean():
    cfg = ClientsConfig(num_clients=20000, speed=SpeedConfig(dist="lognormal", mean=500.0, sigma=0.5))
    s = sample_speeds(cfg, np.random.default_rng(0))
    assert s.shape == (20000,)
    assert (s > 0).all()
    assert abs(s.mean() / 500.0 - 1.0) < 0.03
    # spread: std of log-speed is sigma; the median sits below the mean at mean*exp(-sigma^2/2) = 441.2
    assert np.std(np.log(s)) == pytest.approx(0.5, rel=0.03)
    assert np.median(s) == pytest.approx(441.25, rel=0.03)


def test_lognormal_is_deterministic():
    cfg = ClientsConfig(num_clients=10, speed=SpeedConfig(dist="lognormal", mean=100.0, sigma=1.0))
    a = sample_speeds(cfg, np.random.default_rng(3))
    b = sample_speeds(cfg, np.random.default_rng(3))
    assert np.array_equal(a, b)
    assert len(np.unique(a)) == 10


def test_constant_speeds():
    cfg = ClientsConfig(num_clients=7, speed=SpeedConfig(dist="constant", mean=123.0))
    s = sample_speeds(cfg, np.random.default_rng(0))
    assert s.tolist() == [123.0] * 7


def test_profiles_convert_megabits_to_bytes():
    """100 Mbit/s = 12.5e6 bytes/s; latency and dropout copied; ids 0..n-1."""
    cfg = ClientsConfig(num_clients=3, bandwidth_mbps=100.0, latency_s=0.2, dropout=0.25,
                        speed=SpeedConfig(mean=800.0))
    profs = sample_profiles(cfg, np.random.default_rng(0))
    assert [p.client_id for p in profs] == [0, 1, 2]
    for p in profs:
        assert p.down_bps == 12_500_000.0 and p.up_bps == 12_500_000.0
        assert p.latency_s == 0.2 and p.dropout == 0.25 and p.speed == 800.0
