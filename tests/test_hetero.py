"""Client heterogeneity (raydiff/hetero.py): job timing against hand-computed numbers, dropout and
offline failures, the RNG contract of plan_job, speed distributions (KS tests), tiers, jitter,
network spread, device traces, speed-data correlation and availability processes.

No Ray: everything here is pure numpy.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from raydiff.config import AvailabilityConfig, ClientsConfig, NetworkConfig, SpeedConfig
from raydiff.config_load import load_config
from raydiff.errors import ConfigError, DataError
from raydiff.hetero import (
    MBPS,
    Availability,
    BernoulliAvailability,
    ClientProfile,
    OnOffAvailability,
    class_share,
    make_availability,
    plan_job,
    read_trace,
    sample_profiles,
    sample_speeds,
)

# 1000 samples/s, 1e6 bytes/s each way, 0.1 s latency; 320 samples and 2e6 bytes each way:
#   download = 0.1 + 2e6/1e6 = 2.1 s, compute = 320/1000 = 0.32 s, upload = 2.1 s, total 4.52 s
DOWNLOAD, COMPUTE, UPLOAD, TOTAL = 2.1, 0.32, 2.1, 4.52


def profile(dropout: float) -> ClientProfile:
    return ClientProfile(client_id=0, speed=1000.0, down_bps=1e6, up_bps=1e6, latency_s=0.1, dropout=dropout)


def plan(dropout: float, rng: np.random.Generator, **kw):
    return plan_job(profile(dropout), 320, 2_000_000, 2_000_000, rng, **kw)


def reference_draws(seed: int) -> tuple[float, float, float]:
    """What plan_job draws, in order: the dropout coin, the failure point u, the jitter normal z."""
    r = np.random.default_rng(seed)
    return float(r.random()), float(r.random()), float(r.standard_normal())


# ============================================================================================
# plan_job: hand-computed timings
# ============================================================================================


def test_plan_without_dropout_matches_hand_computation():
    p = plan(0.0, np.random.default_rng(0))
    assert p.download_s == pytest.approx(DOWNLOAD, rel=1e-12)
    assert p.compute_s == pytest.approx(COMPUTE, rel=1e-12)
    assert p.upload_s == pytest.approx(UPLOAD, rel=1e-12)
    assert p.end_s == pytest.approx(TOTAL, rel=1e-12)
    assert (p.download_s + p.compute_s + p.upload_s) == pytest.approx(TOTAL, rel=1e-12)
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


def test_asymmetric_transfer_sizes():
    """Download and upload sizes are separate arguments: 3e6 bytes down at 1e6 B/s, 5e5 up at 1e6 B/s."""
    p = plan_job(profile(0.0), 320, 3_000_000, 500_000, np.random.default_rng(0))
    assert p.download_s == pytest.approx(0.1 + 3.0, rel=1e-12)
    assert p.upload_s == pytest.approx(0.1 + 0.5, rel=1e-12)


def test_dropout_point_is_u_times_the_duration():
    """dropout=1: the coin always says drop; the job ends at u * total where u is the second draw."""
    for seed in range(20):
        _, u, _ = reference_draws(seed)
        p = plan(1.0, np.random.default_rng(seed))
        assert p.fails is True
        assert p.end_s == pytest.approx(u * TOTAL, rel=1e-12)


def test_certain_dropout_ends_inside_the_phase_it_names():
    """dropout=1 (ClientProfile is a plain dataclass; ClientsConfig would refuse 1.0)."""
    rng = np.random.default_rng(1)
    seen = set()
    for _ in range(600):
        p = plan(1.0, rng)
        assert p.fails is True
        assert 0.0 <= p.end_s < (p.download_s + p.compute_s + p.upload_s)
        assert (p.download_s + p.compute_s + p.upload_s) == pytest.approx(TOTAL)
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
    a = [plan(0.4, r1, jitter=0.3) for _ in range(50)]
    b = [plan(0.4, r2, jitter=0.3) for _ in range(50)]
    assert a == b
    assert any(p.fails for p in a) and not all(p.fails for p in a)


def test_dropout_frequency():
    rng = np.random.default_rng(2024)
    rate = np.mean([plan(0.3, rng).fails for _ in range(20000)])
    assert abs(rate - 0.3) < 0.02


# ============================================================================================
# plan_job: the RNG contract (three draws per job, always)
# ============================================================================================


@pytest.mark.parametrize(
    "kw",
    [
        dict(dropout=0.0),
        dict(dropout=1.0),
        dict(dropout=0.0, jitter=0.5),
        dict(dropout=1.0, jitter=0.5),
        dict(dropout=0.0, offline_after=0.5),
        dict(dropout=1.0, offline_after=0.5, jitter=2.0),
        dict(dropout=0.0, offline_after=0.0),
    ],
)
def test_rng_stream_is_three_draws_whatever_the_outcome(kw):
    """After one plan_job the generator is exactly where random(), random(), standard_normal() leave it,
    whether the job finishes, drops out, goes offline, and whether jitter is on or off."""
    dropout = kw.pop("dropout")
    r = np.random.default_rng(9)
    plan(dropout, r, **kw)
    ref = np.random.default_rng(9)
    ref.random()
    ref.random()
    ref.standard_normal()
    assert r.bit_generator.state == ref.bit_generator.state
    assert r.random() == ref.random()


def test_rng_stream_does_not_depend_on_outcome():
    """A failing and a finishing job (with and without jitter) leave the generator in the same state."""
    r1, r2, r3 = np.random.default_rng(9), np.random.default_rng(9), np.random.default_rng(9)
    assert plan(0.0, r1).fails is False
    assert plan(1.0, r2).fails is True
    assert plan(0.0, r3, jitter=0.7, offline_after=0.01).fails is True
    x = r1.random()
    assert x == r2.random() == r3.random()


# ============================================================================================
# plan_job: jitter
# ============================================================================================


def test_jitter_zero_gives_exactly_samples_over_speed():
    rng = np.random.default_rng(5)
    for _ in range(100):
        assert plan(0.0, rng, jitter=0.0).compute_s == 320 / 1000.0  # exact, not approx


def test_jitter_hand_computed_from_the_third_draw():
    """compute = samples / speed * exp(jitter*z - jitter^2/2), z the third draw; transfers untouched."""
    j = 0.4
    for seed in range(10):
        _, _, z = reference_draws(seed)
        p = plan(0.0, np.random.default_rng(seed), jitter=j)
        assert p.compute_s == pytest.approx(320 / 1000.0 * math.exp(j * z - j * j / 2), rel=1e-12)
        assert p.download_s == pytest.approx(DOWNLOAD, rel=1e-12)
        assert p.upload_s == pytest.approx(UPLOAD, rel=1e-12)


def test_jitter_preserves_mean_compute_time():
    """The per-job compute-time factor is lognormal with mean 1: jitter spreads job durations without
    changing their mean, so switching jitter on does not slow the whole simulation down.
    log(compute) is normal with mean log(samples/speed) - jitter^2/2 and std jitter.
    """
    j, n = 0.5, 100_000
    rng = np.random.default_rng(11)
    compute = np.array([plan(0.0, rng, jitter=j).compute_s for _ in range(n)])
    base = 320 / 1000.0
    assert compute.mean() / base == pytest.approx(1.0, rel=0.01)
    assert np.log(compute).std() == pytest.approx(j, rel=0.02)
    assert np.log(compute).mean() == pytest.approx(math.log(base) - j * j / 2, abs=0.01)
    assert stats.kstest(np.log(compute), stats.norm(math.log(base) - j * j / 2, j).cdf).pvalue > 0.01


# ============================================================================================
# plan_job: offline failures
# ============================================================================================


@pytest.mark.parametrize(
    "after,phase", [(1.0, "download"), (0.0, "download"), (2.2, "compute"), (3.0, "upload"), (4.5, "upload")]
)
def test_offline_before_the_end_fails_at_exactly_offline_after(after, phase):
    p = plan(0.0, np.random.default_rng(0), offline_after=after)
    assert p.fails is True
    assert p.end_s == after  # exactly, not approximately
    assert p.failure_reason == f"offline_{phase}"
    assert (p.download_s + p.compute_s + p.upload_s) == pytest.approx(TOTAL)  # the planned phases are still reported


@pytest.mark.parametrize("after", [TOTAL + 1e-9, 100.0, math.inf])
def test_offline_after_the_end_does_not_fail(after):
    p = plan(0.0, np.random.default_rng(0), offline_after=after)
    assert p.fails is False and p.failure_reason == "" and p.end_s == pytest.approx(TOTAL)


def test_earlier_dropout_wins_over_later_offline():
    seed = 3
    _, u, _ = reference_draws(seed)
    point = u * TOTAL
    p = plan(1.0, np.random.default_rng(seed), offline_after=point + 0.01)
    assert p.failure_reason.startswith("dropout_")
    assert p.end_s == pytest.approx(point, rel=1e-12)


def test_earlier_offline_wins_over_later_dropout():
    seed = 3
    _, u, _ = reference_draws(seed)
    point = u * TOTAL
    assert point > 0.02
    p = plan(1.0, np.random.default_rng(seed), offline_after=point / 2)
    assert p.failure_reason.startswith("offline_")
    assert p.end_s == point / 2


# ============================================================================================
# speeds: distributions
# ============================================================================================


def speeds(n: int, seed: int = 0, **speed) -> np.ndarray:
    return sample_speeds(ClientsConfig(num_clients=n, speed=SpeedConfig(**speed)), np.random.default_rng(seed))


def test_constant_speeds():
    s = speeds(7, dist="constant", mean=123.0)
    assert s.tolist() == [123.0] * 7


def test_lognormal_speeds_have_the_configured_mean():
    s = speeds(20000, dist="lognormal", mean=500.0, sigma=0.5)
    assert s.shape == (20000,)
    assert (s > 0).all()
    assert abs(s.mean() / 500.0 - 1.0) < 0.03
    # spread: std of log-speed is sigma; the median sits below the mean at mean*exp(-sigma^2/2) = 441.2
    assert np.std(np.log(s)) == pytest.approx(0.5, rel=0.03)
    assert np.median(s) == pytest.approx(441.25, rel=0.03)


def test_lognormal_is_deterministic():
    a = speeds(10, seed=3, dist="lognormal", mean=100.0, sigma=1.0)
    b = speeds(10, seed=3, dist="lognormal", mean=100.0, sigma=1.0)
    assert np.array_equal(a, b)
    assert len(np.unique(a)) == 10


@pytest.mark.parametrize("mean,sigma", [(500.0, 0.5), (1000.0, 1.0), (3.0, 0.2)])
def test_lognormal_ks(mean, sigma):
    """log(speed) ~ N(log(mean) - sigma^2/2, sigma): scipy's lognorm(s=sigma, scale=mean*exp(-sigma^2/2))."""
    s = speeds(5000, seed=17, dist="lognormal", mean=mean, sigma=sigma)
    dist = stats.lognorm(s=sigma, scale=mean * math.exp(-(sigma**2) / 2))
    assert stats.kstest(s, dist.cdf).pvalue > 0.01
    # power check: the median parameterisation (scale=mean) is clearly rejected at this sample size
    wrong = stats.lognorm(s=sigma, scale=mean)
    assert stats.kstest(s, wrong.cdf).pvalue < 1e-3


@pytest.mark.parametrize("mean,shape", [(1000.0, 2.0), (50.0, 1.5), (200.0, 3.0)])
def test_pareto_ks(mean, shape):
    """speed = xm * (1 + Lomax(shape)), xm = mean*(shape-1)/shape: scipy's pareto(b=shape, scale=xm)."""
    s = speeds(5000, seed=23, dist="pareto", mean=mean, shape=shape)
    xm = mean * (shape - 1) / shape
    assert s.min() >= xm
    assert stats.kstest(s, stats.pareto(b=shape, scale=xm).cdf).pvalue > 0.01
    # power check: x_m = mean (the naive choice) is rejected
    assert stats.kstest(s, stats.pareto(b=shape, scale=mean).cdf).pvalue < 1e-6


@pytest.mark.parametrize(
    "speed",
    [
        dict(dist="constant", mean=700.0),
        dict(dist="lognormal", mean=700.0, sigma=0.8),
        dict(dist="pareto", mean=700.0, shape=3.0),
        dict(dist="pareto", mean=700.0, shape=2.5),
    ],
)
def test_sample_mean_is_the_configured_mean(speed):
    s = speeds(200_000, seed=1, **speed)
    assert s.mean() == pytest.approx(700.0, rel=0.03)


# ============================================================================================
# speeds: tiers
# ============================================================================================


def tiers(n: int, fractions, tier_speeds, seed: int = 0) -> np.ndarray:
    return speeds(n, seed=seed, dist="tiers", tier_fractions=tuple(fractions), tier_speeds=tuple(tier_speeds))


def counts(s: np.ndarray, tier_speeds) -> list[int]:
    return [int((s == v).sum()) for v in tier_speeds]


def test_tiers_exact_proportions():
    s = tiers(10, [0.5, 0.3, 0.2], [100.0, 500.0, 2000.0])
    assert counts(s, [100.0, 500.0, 2000.0]) == [5, 3, 2]
    s = tiers(1000, [0.5, 0.3, 0.2], [100.0, 500.0, 2000.0])
    assert counts(s, [100.0, 500.0, 2000.0]) == [500, 300, 200]


def test_tiers_are_shuffled_over_clients():
    s = tiers(100, [0.5, 0.3, 0.2], [1.0, 2.0, 3.0])
    assert not np.array_equal(s, np.sort(s)) and not np.array_equal(s, np.sort(s)[::-1])
    assert not np.array_equal(s, tiers(100, [0.5, 0.3, 0.2], [1.0, 2.0, 3.0], seed=1))  # seed decides order
    assert np.array_equal(s, tiers(100, [0.5, 0.3, 0.2], [1.0, 2.0, 3.0]))  # and only the seed


@pytest.mark.parametrize(
    "n,fractions,expected",
    [
        (7, [0.5, 0.3, 0.2], [4, 2, 1]),  # 3.5, 2.1, 1.4 -> floors 3,2,1; the 1 left goes to .5
        (9, [0.5, 0.3, 0.2], [4, 3, 2]),  # 4.5, 2.7, 1.8 -> floors 4,2,1; 2 left go to .8 then .7
        (10, [1 / 3, 1 / 3, 1 / 3], [4, 3, 3]),  # equal remainders: the earlier tier first
        (11, [1 / 3, 1 / 3, 1 / 3], [4, 4, 3]),
        (1, [0.6, 0.4], [1, 0]),
        (3, [0.0, 1.0], [0, 3]),
        (100, [0.29, 0.71], [29, 71]),  # 0.29*100 is 28.999999999999996 in floating point
    ],
)
def test_tiers_largest_remainder(n, fractions, expected):
    v = [float(10 * (i + 1)) for i in range(len(fractions))]
    s = tiers(n, fractions, v)
    assert len(s) == n
    assert counts(s, v) == expected


def test_tiers_mean_is_set_by_the_tiers_not_by_speed_mean():
    """What the code does: tier_speeds are absolute speeds; speed.mean is ignored for tiers
    (contrary to sample_speeds' docstring "mean speed.mean for every distribution")."""
    s = speeds(10, dist="tiers", mean=12345.0, tier_fractions=(0.5, 0.5), tier_speeds=(100.0, 300.0))
    assert s.mean() == 200.0


@pytest.mark.parametrize(
    "fractions,tier_speeds,key",
    [
        ((0.5, 0.3), (1.0, 2.0), "clients.speed.tier_fractions"),  # sums to 0.8
        ((0.6, 0.6), (1.0, 2.0), "clients.speed.tier_fractions"),  # sums to 1.2
        ((1.2, -0.2), (1.0, 2.0), "clients.speed.tier_fractions"),  # negative
        ((0.5, 0.5), (1.0,), "clients.speed.tier_fractions"),  # length mismatch
        ((1.0,), (1.0, 2.0), "clients.speed.tier_fractions"),
        ((), (), "clients.speed.tier_fractions"),  # tiers with no tiers
        ((0.5, 0.5), (1.0, 0.0), "clients.speed.tier_speeds"),  # zero speed
        ((0.5, 0.5), (-1.0, 2.0), "clients.speed.tier_speeds"),  # negative speed
    ],
)
def test_tiers_config_errors(fractions, tier_speeds, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        SpeedConfig(dist="tiers", tier_fractions=fractions, tier_speeds=tier_speeds)
    # the same through the YAML/dict loader, which is what users hit
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(
            {
                "clients": {
                    "speed": {"dist": "tiers", "tier_fractions": list(fractions), "tier_speeds": list(tier_speeds)}
                }
            }
        )


def test_tier_fields_are_ignored_for_other_distributions():
    SpeedConfig(dist="lognormal", tier_fractions=(0.3,), tier_speeds=())  # no error


# ============================================================================================
# profiles: network
# ============================================================================================


def test_profiles_convert_megabits_to_bytes():
    """100 Mbit/s down = 12.5e6 bytes/s, 20 Mbit/s up = 2.5e6 bytes/s; latency and dropout copied; ids 0..n-1."""
    cfg = ClientsConfig(
        num_clients=3,
        network=NetworkConfig(down_mbps=100.0, up_mbps=20.0, latency_s=0.2),
        dropout=0.25,
        speed=SpeedConfig(mean=800.0),
    )
    profs = sample_profiles(cfg, np.random.default_rng(0))
    assert [p.client_id for p in profs] == [0, 1, 2]
    for p in profs:
        assert p.down_bps == 12_500_000.0 and p.up_bps == 2_500_000.0
        assert p.latency_s == 0.2 and p.dropout == 0.25 and p.speed == 800.0
        assert p.mean_on_s == math.inf and p.mean_off_s == 0.0  # availability "always"
    assert MBPS == 125_000.0


def test_profile_timings_hand_computed_end_to_end():
    """From the config: 8 Mbit/s down = 1e6 B/s, 4 Mbit/s up = 5e5 B/s, latency 0.1 s, 500 samples/s.
    1e6 bytes each way and 250 samples: download 0.1 + 1 = 1.1, compute 0.5, upload 0.1 + 2 = 2.1."""
    cfg = ClientsConfig(
        num_clients=1, network=NetworkConfig(down_mbps=8.0, up_mbps=4.0, latency_s=0.1), speed=SpeedConfig(mean=500.0)
    )
    (prof,) = sample_profiles(cfg, np.random.default_rng(0))
    p = plan_job(prof, 250, 1_000_000, 1_000_000, np.random.default_rng(0))
    assert (p.download_s, p.compute_s, p.upload_s) == pytest.approx((1.1, 0.5, 2.1), rel=1e-12)
    assert p.end_s == pytest.approx(3.7, rel=1e-12)


def test_network_lognormal_spread():
    """sigma > 0: one mean-1 lognormal factor per client, applied to both directions."""
    n = 50_000
    cfg = ClientsConfig(num_clients=n, network=NetworkConfig(down_mbps=80.0, up_mbps=10.0, sigma=0.6))
    profs = sample_profiles(cfg, np.random.default_rng(4))
    down = np.array([p.down_bps for p in profs])
    up = np.array([p.up_bps for p in profs])
    np.testing.assert_allclose(down / up, 8.0, rtol=1e-12)  # the same factor up and down
    assert down.mean() == pytest.approx(80.0 * MBPS, rel=0.02)
    assert up.mean() == pytest.approx(10.0 * MBPS, rel=0.02)
    assert np.log(down).std() == pytest.approx(0.6, rel=0.02)
    assert len(np.unique(down)) == n  # spread: every client differs
    factor = down / (80.0 * MBPS)
    assert stats.kstest(factor, stats.lognorm(s=0.6, scale=math.exp(-0.18)).cdf).pvalue > 0.01


def test_network_without_spread_is_identical_for_all():
    cfg = ClientsConfig(
        num_clients=5,
        network=NetworkConfig(down_mbps=50.0, up_mbps=5.0, sigma=0.0),
        speed=SpeedConfig(dist="lognormal"),
    )
    profs = sample_profiles(cfg, np.random.default_rng(4))
    assert {p.down_bps for p in profs} == {50.0 * MBPS}
    assert {p.up_bps for p in profs} == {5.0 * MBPS}


def test_profiles_availability_means_only_for_onoff():
    on = ClientsConfig(num_clients=2, availability=AvailabilityConfig(mode="onoff", mean_on_s=60, mean_off_s=30))
    assert [(p.mean_on_s, p.mean_off_s) for p in sample_profiles(on, np.random.default_rng(0))] == [(60, 30)] * 2
    bern = ClientsConfig(num_clients=2, availability=AvailabilityConfig(mode="bernoulli", mean_on_s=60))
    assert [(p.mean_on_s, p.mean_off_s) for p in sample_profiles(bern, np.random.default_rng(0))] == [
        (math.inf, 0.0)
    ] * 2


# ============================================================================================
# profiles: device traces
# ============================================================================================

HEADER = "client_id,speed,down_mbps,up_mbps,latency_s"


def write_trace(tmp_path: Path, text: str, name: str = "trace.csv") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_trace_loads_sorted_by_client_id_and_keeps_the_first_rows(tmp_path):
    p = write_trace(tmp_path, HEADER + "\n5,50,10,1,0.5\n2,20,40,4,0.2\n9,90,90,9,0.9\n0,100,80,8,0\n")
    rows = read_trace(p, 3)
    assert [r["client_id"] for r in rows] == [0.0, 2.0, 5.0]
    assert rows[0] == dict(client_id=0.0, speed=100.0, down_mbps=80.0, up_mbps=8.0, latency_s=0.0)
    assert len(read_trace(p, 4)) == 4


def test_sample_profiles_uses_the_trace(tmp_path):
    p = write_trace(tmp_path, HEADER + "\n5,50,10,1,0.5\n2,20,40,4,0.2\n0,100,80,8,0\n")
    cfg = ClientsConfig(
        num_clients=3,
        trace=str(p),
        dropout=0.1,
        speed=SpeedConfig(dist="lognormal", mean=1.0),  # ignored: the trace rules
        network=NetworkConfig(down_mbps=1.0, up_mbps=1.0, latency_s=9.0, sigma=1.0),
    )
    profs = sample_profiles(cfg, np.random.default_rng(0))
    assert [p.client_id for p in profs] == [0, 1, 2]
    assert [p.speed for p in profs] == [100.0, 20.0, 50.0]
    assert [p.down_bps for p in profs] == [80 * 1e6 / 8, 40 * 1e6 / 8, 10 * 1e6 / 8]
    assert [p.up_bps for p in profs] == [8 * 1e6 / 8, 4 * 1e6 / 8, 1 * 1e6 / 8]
    assert [p.latency_s for p in profs] == [0.0, 0.2, 0.5]
    assert {p.dropout for p in profs} == {0.1}
    assert {(p.mean_on_s, p.mean_off_s) for p in profs} == {(math.inf, 0.0)}  # availability "always"


def test_trace_on_off_columns_used_only_in_onoff_mode(tmp_path):
    p = write_trace(tmp_path, HEADER + ",mean_on_s,mean_off_s\n1,10,8,8,0.1,100,50\n0,10,8,8,0.1,200,0\n")
    onoff = AvailabilityConfig(mode="onoff", mean_on_s=600, mean_off_s=300)
    profs = sample_profiles(ClientsConfig(num_clients=2, trace=str(p), availability=onoff), np.random.default_rng(0))
    assert [(q.mean_on_s, q.mean_off_s) for q in profs] == [(200.0, 0.0), (100.0, 50.0)]
    profs = sample_profiles(ClientsConfig(num_clients=2, trace=str(p)), np.random.default_rng(0))
    assert [(q.mean_on_s, q.mean_off_s) for q in profs] == [(math.inf, 0.0)] * 2
    # without those columns, onoff falls back to the config's means
    q = write_trace(tmp_path, HEADER + "\n0,10,8,8,0.1\n", name="plain.csv")
    (prof,) = sample_profiles(ClientsConfig(num_clients=1, trace=str(q), availability=onoff), np.random.default_rng(0))
    assert (prof.mean_on_s, prof.mean_off_s) == (600.0, 300.0)


def test_trace_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"clients\.trace.*nope\.csv.*does not exist"):
        read_trace(tmp_path / "nope.csv", 1)


def test_trace_missing_column_lists_required_columns(tmp_path):
    p = write_trace(tmp_path, "client_id,speed,down_mbps,latency_s\n0,1,1,0\n")
    with pytest.raises(DataError) as exc:
        read_trace(p, 1)
    msg = str(exc.value)
    assert "missing column(s) up_mbps" in msg
    assert "required: client_id, speed, down_mbps, up_mbps, latency_s" in msg
    assert "mean_on_s" in msg  # optional columns are named too


def test_trace_non_numeric_value_names_line_and_column(tmp_path):
    p = write_trace(tmp_path, HEADER + "\n0,10,8,8,0.1\n1,fast,8,8,0.1\n")
    with pytest.raises(DataError, match=r"line 3: speed='fast' is not a number"):
        read_trace(p, 2)


def test_trace_short_row_is_a_clear_error(tmp_path):
    p = write_trace(tmp_path, HEADER + "\n0,10,8\n")
    with pytest.raises(DataError, match=r"line 2: up_mbps=None is not a number"):
        read_trace(p, 1)


@pytest.mark.parametrize(
    "row,col,bound",
    [
        ("0,-5,8,8,0.1", "speed", "a finite number in [1e-06, 1e+12], as clients.speed.mean"),
        ("0,0,8,8,0.1", "speed", "a finite number in [1e-06, 1e+12]"),
        ("0,10,0,8,0.1", "down_mbps", "a finite number in [1e-06, 1e+09], as clients.network.down_mbps"),
        ("0,10,8,-1,0.1", "up_mbps", "a finite number in [1e-06, 1e+09]"),
        ("0,10,8,8,-0.1", "latency_s", "a finite number in [0, 1000000]"),
        ("-1,10,8,8,0.1", "client_id", "a whole number in [0, 9.0072e+15]"),
        ("0.5,10,8,8,0.1", "client_id", "a whole number"),
        ("0,inf,8,8,0.1", "speed", "a finite number"),
        ("0,nan,8,8,0.1", "speed", "a finite number"),
        ("0,1e-320,8,8,0.1", "speed", "a finite number"),
        # issue 25: a latency the config caps at 1e6 gave finish_vtime=inf through a trace
        ("0,10,8,8,1e308", "latency_s", "a finite number in [0, 1000000], as clients.network.latency_s"),
        ("0,10,8,8,5e-324", "latency_s", "a finite number in [0, 1000000]"),
    ],
)
def test_trace_out_of_range_values(tmp_path, row, col, bound):
    import re

    p = write_trace(tmp_path, HEADER + "\n" + row + "\n")
    with pytest.raises(DataError, match=rf"line 2: {col}=\S+ must be {re.escape(bound)}"):
        read_trace(p, 1)


def test_trace_zero_latency_and_zero_off_time_are_allowed(tmp_path):
    p = write_trace(tmp_path, HEADER + ",mean_on_s,mean_off_s\n0,10,8,8,0,5,0\n")
    assert read_trace(p, 1)[0]["latency_s"] == 0.0
    q = write_trace(tmp_path, HEADER + ",mean_on_s\n0,10,8,8,0,0\n", name="zero_on.csv")
    with pytest.raises(DataError, match=r"mean_on_s=0 must be a finite number in \[1e-06, 1e\+12\]"):
        read_trace(q, 1)


def test_trace_duplicate_client_id(tmp_path):
    p = write_trace(tmp_path, HEADER + "\n0,10,8,8,0.1\n1,10,8,8,0.1\n0,20,8,8,0.1\n")
    with pytest.raises(DataError, match="client_id values repeat"):
        read_trace(p, 2)


def test_trace_fewer_rows_than_clients(tmp_path):
    p = write_trace(tmp_path, HEADER + "\n0,10,8,8,0.1\n1,10,8,8,0.1\n")
    with pytest.raises(DataError, match=r"has 2 clients but clients\.num_clients=3"):
        read_trace(p, 3)
    with pytest.raises(DataError, match=r"has 2 clients but clients\.num_clients=3"):
        sample_profiles(ClientsConfig(num_clients=3, trace=str(p)), np.random.default_rng(0))


# ============================================================================================
# profiles: speed tied to data
# ============================================================================================


def test_class_share_on_a_hand_made_partition():
    labels = np.array([0, 1, 2, 0, 1, 2, 3, 3])
    parts = [np.array([0, 1]), np.array([2, 3, 4]), np.array([], dtype=int), np.array([6, 7]), np.array([5])]
    share = class_share(parts, labels, (0, 3))
    np.testing.assert_allclose(share, [0.5, 1 / 3, 0.0, 1.0, 0.0])
    np.testing.assert_allclose(class_share(parts, labels, [2]), [0.0, 1 / 3, 0.0, 0.0, 1.0])
    np.testing.assert_allclose(class_share(parts, labels, [9]), [0.0] * 5)  # a class nobody holds


def test_slow_score_gives_the_slowest_speed_to_the_highest_score():
    n = 200
    cfg = ClientsConfig(
        num_clients=n, speed=SpeedConfig(dist="lognormal", mean=1000, sigma=1.0), network=NetworkConfig(sigma=0.5)
    )
    score = np.random.default_rng(99).random(n)
    plain = sample_profiles(cfg, np.random.default_rng(7))
    tied = sample_profiles(cfg, np.random.default_rng(7), slow_score=score)
    s_plain = np.array([p.speed for p in plain])
    s_tied = np.array([p.speed for p in tied])
    np.testing.assert_array_equal(np.sort(s_tied), np.sort(s_plain))  # the same multiset of speeds
    assert s_tied[np.argmax(score)] == s_tied.min()
    assert s_tied[np.argmin(score)] == s_tied.max()
    by_score = s_tied[np.argsort(-score)]  # highest score first -> ascending speed
    assert np.all(np.diff(by_score) >= 0)
    assert stats.spearmanr(score, s_tied).statistic == pytest.approx(-1.0)
    # only speeds move: the links are those of the uncorrelated draw
    assert [p.down_bps for p in tied] == [p.down_bps for p in plain]


def test_slow_score_ties_keep_the_order_stable():
    cfg = ClientsConfig(
        num_clients=4, speed=SpeedConfig(dist="tiers", tier_fractions=(0.25,) * 4, tier_speeds=(1.0, 2.0, 3.0, 4.0))
    )
    tied = sample_profiles(cfg, np.random.default_rng(0), slow_score=np.array([0.5, 0.9, 0.5, 0.0]))
    # client 1 (0.9) slowest; clients 0 and 2 (0.5, tie) next, in client order; client 3 fastest
    assert [p.speed for p in tied] == [2.0, 1.0, 3.0, 4.0]


def test_slow_score_applies_to_trace_speeds(tmp_path):
    p = write_trace(tmp_path, HEADER + "\n0,10,8,8,0\n1,30,8,8,0\n2,20,8,8,0\n")
    profs = sample_profiles(
        ClientsConfig(num_clients=3, trace=str(p)), np.random.default_rng(0), slow_score=np.array([0.0, 1.0, 0.5])
    )
    assert [q.speed for q in profs] == [30.0, 10.0, 20.0]


# ============================================================================================
# availability
# ============================================================================================


def test_always_available():
    a = Availability()
    assert a.is_on(3, 12.5) is True
    assert a.on_until(3, 12.5) == math.inf
    assert a.next_on(3, 12.5) == 12.5


def test_make_availability_by_mode():
    for mode, cls in [("always", Availability), ("bernoulli", BernoulliAvailability), ("onoff", OnOffAvailability)]:
        cfg = ClientsConfig(num_clients=3, availability=AvailabilityConfig(mode=mode))
        a = make_availability(cfg, sample_profiles(cfg, np.random.default_rng(0)), np.random.default_rng(0))
        assert type(a) is cls


def test_bernoulli_frequency_and_retry():
    a = BernoulliAvailability(0.3, 2.5, np.random.default_rng(0))
    freq = np.mean([a.is_on(0, float(t)) for t in range(20000)])
    assert freq == pytest.approx(0.3, abs=0.015)
    assert a.next_on(0, 10.0) == 12.5
    assert a.on_until(0, 10.0) == math.inf  # no memory: once dispatched, a job is not cut off


def test_onoff_long_run_fraction_for_one_client():
    """Alternating renewal process, exponential on (60 s) / off (30 s): fraction on -> 60/90."""
    a = OnOffAvailability(np.array([60.0]), np.array([30.0]), np.random.default_rng(5))
    times = np.linspace(0.0, 1e6, 200_001)
    frac = np.mean([a.is_on(0, float(t)) for t in times])
    assert frac == pytest.approx(2 / 3, abs=0.02)


def test_onoff_periods_are_exponential_with_the_given_means():
    a = OnOffAvailability(np.array([60.0]), np.array([30.0]), np.random.default_rng(6))
    switches, states = [], []
    t = 0.0
    for _ in range(20_000):  # walk from switch to switch
        on = a.is_on(0, t)
        nxt = a.on_until(0, t) if on else a.next_on(0, t)
        switches.append(nxt)
        states.append(on)
        t = nxt
    lengths = np.diff(np.array([0.0, *switches]))[1:]  # drop the first (residual) period
    kinds = np.array(states[1:])
    on_len, off_len = lengths[kinds], lengths[~kinds]
    assert on_len.mean() == pytest.approx(60.0, rel=0.05)
    assert off_len.mean() == pytest.approx(30.0, rel=0.05)
    assert stats.kstest(on_len, stats.expon(scale=60.0).cdf).pvalue > 0.01
    assert stats.kstest(off_len, stats.expon(scale=30.0).cdf).pvalue > 0.01


def test_onoff_starts_stationary():
    """Over many clients: fraction on at t=0 is p_on = 60/90, and stays p_on at later times;
    the residual of the first period is exponential with the mean of its state (memoryless)."""
    n = 20_000
    a = OnOffAvailability(np.full(n, 60.0), np.full(n, 30.0), np.random.default_rng(7))
    on0 = np.array([a.is_on(c, 0.0) for c in range(n)])
    assert on0.mean() == pytest.approx(2 / 3, abs=0.015)
    first = np.array([a.on_until(c, 0.0) if on0[c] else a.next_on(c, 0.0) for c in range(n)])
    assert stats.kstest(first[on0], stats.expon(scale=60.0).cdf).pvalue > 0.01
    assert stats.kstest(first[~on0], stats.expon(scale=30.0).cdf).pvalue > 0.01
    for t in (10.0, 45.0, 500.0):
        assert np.mean([a.is_on(c, t) for c in range(n)]) == pytest.approx(2 / 3, abs=0.015)


def test_onoff_on_until_and_next_on():
    a = OnOffAvailability(np.full(50, 10.0), np.full(50, 10.0), np.random.default_rng(8))
    checked_on = checked_off = 0
    for c in range(50):
        t = 3.0
        if a.is_on(c, t):
            end = a.on_until(c, t)
            assert end > t
            assert a.next_on(c, t) == t  # online: now
            assert a.is_on(c, (t + end) / 2)
            assert a.is_on(c, np.nextafter(end, -np.inf))
            assert not a.is_on(c, end)  # at the switch time the client is already offline
            assert a.on_until(c, end) == end  # offline: "online until now"
            checked_on += 1
        else:
            start = a.next_on(c, t)
            assert start > t
            assert a.on_until(c, t) == t
            assert not a.is_on(c, np.nextafter(start, -np.inf))
            assert a.is_on(c, start)
            assert a.next_on(c, start) == start
            checked_off += 1
    assert checked_on and checked_off


def test_onoff_without_off_time_is_always_on():
    a = OnOffAvailability(np.full(5, 10.0), np.zeros(5), np.random.default_rng(0))
    assert all(a.is_on(c, t) for c in range(5) for t in np.linspace(0, 1000, 101))


def test_onoff_is_deterministic_for_the_same_queries():
    def trace(seed):
        a = OnOffAvailability(np.full(10, 5.0), np.full(10, 5.0), np.random.default_rng(seed))
        return [a.is_on(c, t) for t in np.linspace(0, 100, 51) for c in range(10)]

    assert trace(1) == trace(1)
    assert trace(1) != trace(2)
