"""Client-level privacy accounting (raydiff/privacy/accounting.py) against hand-computed numbers and against an
independent library, Google's dp-accounting (RDP and PLD accountants; a dev dependency, used only here)."""

from __future__ import annotations

import itertools
import logging
import math

import pandas as pd
import pytest
from scipy.stats import norm

from raydiff.privacy import (
    composed_mu,
    gdp_epsilon,
    privacy_columns,
    privacy_over_versions,
    rigorous_epsilon,
    sampled_epsilon,
)
from raydiff.privacy.accounting import gdp_log_delta, uniform_selection_p

dp_accounting = pytest.importorskip("dp_accounting")
logging.getLogger("absl").setLevel(logging.ERROR)  # dp-accounting logs each RDP order it drops

DELTA = 1e-5


def plain_delta(mu: float, eps: float) -> float:
    """Balle and Wang 2018's formula as printed, in plain floating point (fine for moderate mu)."""
    return norm.cdf(-eps / mu + mu / 2) - math.exp(eps) * norm.cdf(-eps / mu - mu / 2)


class TestRigorousEpsilon:
    @pytest.mark.parametrize("mu", [0.1, 0.5, 1.0, 2.0, 5.0])
    def test_solves_the_analytic_gaussian_curve(self, mu):
        eps = gdp_epsilon(mu, DELTA)
        assert plain_delta(mu, eps) == pytest.approx(DELTA, rel=1e-7)
        assert math.exp(gdp_log_delta(mu, eps)) == pytest.approx(DELTA, rel=1e-9)

    def test_hand_checked_value(self):
        """One Gaussian mechanism with sigma = 1 (mu = 1) at delta = 1e-5: eps = 4.3772 (Balle and Wang's
        curve; the classical bound sqrt(2 ln(1.25/delta))/sigma would give 4.84)."""
        assert rigorous_epsilon(1, 1.0, DELTA) == pytest.approx(4.37718, abs=1e-4)

    def test_k_participations_are_one_mechanism_with_sigma_over_sqrt_k(self):
        assert composed_mu(50, 1.0) == pytest.approx(math.sqrt(50))
        assert rigorous_epsilon(50, 1.0, DELTA) == pytest.approx(gdp_epsilon(math.sqrt(50), DELTA), rel=1e-12)
        assert rigorous_epsilon(4, 2.0, DELTA) == pytest.approx(rigorous_epsilon(1, 1.0, DELTA), rel=1e-12)

    def test_edges(self):
        assert rigorous_epsilon(0, 1.0, DELTA) == 0.0  # never took part
        assert rigorous_epsilon(0, 0.0, DELTA) == 0.0
        assert rigorous_epsilon(3, 0.0, DELTA) == math.inf  # no noise: no privacy
        assert gdp_epsilon(1e-6, DELTA) == 0.0  # delta(0) = 2 Phi(mu/2) - 1 < delta already
        big = rigorous_epsilon(10**6, 0.01, DELTA)  # mu = 1e5: mu^2/2 dominates, finite and exact
        assert 5e9 < big < 5e9 + 1e6 and math.isfinite(big)
        # increasing in participations, decreasing in sigma
        eps = [rigorous_epsilon(k, 1.0, DELTA) for k in (1, 2, 10, 100, 1000)]
        assert all(a < b for a, b in itertools.pairwise(eps))
        assert rigorous_epsilon(10, 2.0, DELTA) < rigorous_epsilon(10, 1.0, DELTA)

    @pytest.mark.parametrize(
        "bad",
        [
            dict(delta=0.0),
            dict(delta=1.0),
            dict(delta=math.nan),
            dict(sigma=-1.0),
            dict(sigma=math.inf),
            dict(sigma=math.nan),
        ],
    )
    def test_bad_arguments(self, bad):
        with pytest.raises(ValueError):
            rigorous_epsilon(3, bad.get("sigma", 1.0), bad.get("delta", DELTA))

    @pytest.mark.parametrize("sigma, k", [(1.0, 1), (1.0, 10), (0.5, 8), (2.0, 30), (5.0, 100)])
    def test_agrees_with_dp_accounting_pld(self, sigma, k):
        """dp-accounting's PLD accountant composes k Gaussian mechanisms numerically; its answer is a
        pessimistic discretisation of the same exact curve: never below ours (up to rounding), and within 0.5%."""
        from dp_accounting import GaussianDpEvent, SelfComposedDpEvent
        from dp_accounting.pld import PLDAccountant

        acc = PLDAccountant()
        acc.compose(SelfComposedDpEvent(GaussianDpEvent(sigma), k))
        pld = acc.get_epsilon(DELTA)
        ours = rigorous_epsilon(k, sigma, DELTA)
        assert ours <= pld * (1 + 1e-9)
        assert pld == pytest.approx(ours, rel=5e-3)

    @pytest.mark.parametrize("mu", [0.3, 1.0, 4.0, 12.0])
    def test_delta_agrees_with_dp_accounting_gaussian_privacy_loss(self, mu):
        """dp-accounting's own closed form of the Gaussian mechanism's delta(eps), sensitivity 1, std 1/mu."""
        from dp_accounting.pld.privacy_loss_mechanism import GaussianPrivacyLoss

        eps = gdp_epsilon(mu, DELTA)
        assert GaussianPrivacyLoss(standard_deviation=1 / mu).get_delta_for_epsilon(eps) == pytest.approx(
            DELTA, rel=1e-6
        )


# (sigma, q, steps) where dp-accounting's RDP series converges at every order (see the next class)
RDP_GRID = [
    (1.0, 0.01, 1000),
    (1.0, 0.1, 150),
    (1.0, 0.16, 400),
    (2.0, 0.4, 10),
    (5.0, 0.01, 10),
    (0.8, 0.01, 1000),
    (1.5, 0.05, 600),
    (1.2, 0.2, 300),
    (1.0, 1.0, 20),
]


def dp_accounting_event(sigma: float, q: float, steps: int):
    from dp_accounting import GaussianDpEvent, PoissonSampledDpEvent, SelfComposedDpEvent

    step = GaussianDpEvent(sigma) if q == 1 else PoissonSampledDpEvent(q, GaussianDpEvent(sigma))
    return SelfComposedDpEvent(step, steps)


class TestSampledEpsilon:
    @pytest.mark.parametrize("sigma, q, steps", RDP_GRID)
    def test_rdp_agrees_with_dp_accounting_within_1_percent(self, sigma, q, steps):
        from dp_accounting.rdp import RdpAccountant

        acc = RdpAccountant()
        acc.compose(dp_accounting_event(sigma, q, steps))
        assert sampled_epsilon(sigma, q, steps, DELTA) == pytest.approx(acc.get_epsilon(DELTA), rel=0.01)

    @pytest.mark.parametrize("sigma, q, steps", RDP_GRID[:5])
    def test_pld_is_never_larger_than_rdp(self, sigma, q, steps):
        """PLD accounting is (near) exact, RDP an upper bound: PLD <= RDP."""
        from dp_accounting.pld import PLDAccountant

        acc = PLDAccountant()
        acc.compose(dp_accounting_event(sigma, q, steps))
        assert acc.get_epsilon(DELTA) <= sampled_epsilon(sigma, q, steps, DELTA)

    def test_issue_defect_1_numbers(self):
        """The issue's measurement: sigma 1, 400 rounds: q = 0.10 assumed gives 15.9; the fast clients' real
        0.16 gives 27.3."""
        assert sampled_epsilon(1.0, 0.10, 400, DELTA) == pytest.approx(15.9, abs=0.05)
        assert sampled_epsilon(1.0, 0.16, 400, DELTA) == pytest.approx(27.3, abs=0.05)

    def test_fractional_orders_match_direct_integration(self):
        """Where dp-accounting gives up (sigma 0.5, q 0.1: its fractional-order series 'failed to converge',
        the order is dropped and its epsilon is looser), Opacus' RDP, which we use, equals the definition
        integrated numerically: A_a = E_{z ~ N(0, s^2)}[(1 - q + q exp((2z - 1) / (2 s^2)))^a]."""
        import mpmath as mp
        from opacus.accountants.analysis.rdp import compute_rdp

        q, s = 0.1, 0.5
        mp.mp.dps = 40
        for a in (1.5, 2.5, 3.7):
            f = lambda z, a=a: mp.npdf(z, 0, s) * ((1 - q) + q * mp.exp((2 * z - 1) / (2 * s * s))) ** a
            exact = float(mp.log(mp.quad(f, [-mp.inf, -5, 0, 0.5, 1, 3, 10, mp.inf])) / (a - 1))
            assert compute_rdp(q=q, noise_multiplier=s, steps=1, orders=[a])[0] == pytest.approx(exact, rel=1e-9)

    def test_edges(self):
        assert sampled_epsilon(1.0, 0.1, 0, DELTA) == 0.0
        assert sampled_epsilon(1.0, 0.0, 10, DELTA) == 0.0
        assert sampled_epsilon(0.0, 0.1, 10, DELTA) == math.inf
        with pytest.raises(ValueError):
            sampled_epsilon(1.0, 1.5, 10, DELTA)


def _independent_epsilon(q: float, sigma: float, steps: int, delta: float, improved: bool) -> float:
    """RDP of the sampled Gaussian mechanism at INTEGER orders, written out from Mironov, Talwar and
    Zhang 2019 ("Renyi Differential Privacy of the Sampled Gaussian Mechanism", Sec. 3.3):
    A_a = sum_k C(a,k) (1-q)^(a-k) q^k exp((k^2-k)/(2 sigma^2)), rdp(a) = log(A_a)/(a-1).
    Conversion: classic (Mironov 2017, Prop. 3) eps = T rdp + log(1/delta)/(a-1), or the improved one of
    Balle et al. 2020 (Thm. 21) that Opacus uses: eps = T rdp - (log delta + log a)/(a-1) + log((a-1)/a).
    No Opacus or dp-accounting code is involved. (Moved from tests/test_dp.py with the old accountant.)
    """
    best = math.inf
    for a in range(2, 64):
        terms = [
            math.lgamma(a + 1)
            - math.lgamma(k + 1)
            - math.lgamma(a - k + 1)
            + (a - k) * math.log1p(-q)
            + k * math.log(q)
            + (k * k - k) / (2 * sigma * sigma)
            for k in range(a + 1)
        ]
        top = max(terms)
        rdp = steps * (top + math.log(sum(math.exp(t - top) for t in terms))) / (a - 1)
        if improved:
            eps = rdp - (math.log(delta) + math.log(a)) / (a - 1) + math.log((a - 1) / a)
        else:
            eps = rdp + math.log(1 / delta) / (a - 1)
        best = min(best, eps)
    return best


# TensorFlow Privacy's MNIST tutorial (tensorflow/privacy, tutorials/README.md): N=60000, batch 256,
# noise multiplier 1.1, 60 epochs -> "eps = 3.01 and delta = 1e-05" (classic RDP conversion).
TF_Q, TF_SIGMA, TF_STEPS, TF_DELTA = 256 / 60000, 1.1, 60 * 60000 // 256, 1e-5


class TestSampledEpsilonByHand:
    def test_independent_computation_reproduces_the_published_value(self):
        assert round(_independent_epsilon(TF_Q, TF_SIGMA, TF_STEPS, TF_DELTA, improved=False), 2) == 3.01

    def test_matches_the_independent_computation(self):
        """Fractional and larger orders may only lower the integer-order bound, and only a little; both convert
        with Balle et al., so both are below the published 3.01 (classic conversion)."""
        eps = sampled_epsilon(TF_SIGMA, TF_Q, TF_STEPS, TF_DELTA)
        ours = _independent_epsilon(TF_Q, TF_SIGMA, TF_STEPS, TF_DELTA, improved=True)
        assert 0.98 * ours <= eps <= ours
        assert eps == pytest.approx(2.5966, abs=1e-4)
        assert eps < 3.01

    def test_known_value_q001_sigma11_1000_steps(self):
        """q=0.01, sigma=1.1, 1000 steps, delta=1e-5: 1.7118, as Opacus' own RDPAccountant reports after 1000
        single steps; the independent integer-order bound is 1.7253."""
        from opacus.accountants import RDPAccountant

        eps = sampled_epsilon(1.1, 0.01, 1000, DELTA)
        assert eps == pytest.approx(1.7118, abs=1e-4)
        ref = RDPAccountant()
        for _ in range(1000):
            ref.step(noise_multiplier=1.1, sample_rate=0.01)
        assert eps <= ref.get_epsilon(DELTA) + 1e-12  # our orders include Opacus' defaults
        assert eps == pytest.approx(ref.get_epsilon(DELTA), rel=1e-6)
        assert _independent_epsilon(0.01, 1.1, 1000, DELTA, improved=True) == pytest.approx(1.7253, abs=1e-4)

    def test_monotone(self):
        e = lambda sigma, q, steps: sampled_epsilon(sigma, q, steps, DELTA)
        assert e(1.1, 0.01, 100) < e(1.1, 0.01, 1000) < e(1.1, 0.01, 5000)
        assert e(2.0, 0.01, 1000) < e(1.1, 0.01, 1000) < e(0.8, 0.01, 1000)
        assert e(1.1, 0.01, 1000) < e(1.1, 0.05, 1000)


def events(rows: list[tuple[int, str, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["client_id", "status", "applied_version"])


class TestFromEvents:
    # 4 clients. v1: clients 0, 1; v2: clients 0, 2; v3: client 0 twice (as FedBuff could before phase 2);
    # dropped and rejected rows never count.
    EV = events(
        [
            (0, "applied", 1),
            (1, "applied", 1),
            (3, "dropped", None),
            (0, "applied", 2),
            (2, "applied", 2),
            (1, "rejected", None),
            (0, "applied", 3),
            (0, "applied", 3),
            (3, "failed", None),
        ]
    )

    def test_hand_computed(self):
        """At v3: client 0's sum of m^2 = 1 + 1 + 4 = 6; clients 1, 2: 1; client 3: 0. epsilon = eps(6 single
        participations); median of (0, eps1, eps1, eps6) = eps1. Two updates of client 0 in v3: not uniform
        selection, so q = the busiest client's rate, 3 of 3 = 1; mean rate = 6 / (3 versions * 4 clients).
        At v2: busiest 2 of 2 at mean rate 4/8: P(Bin(2, 0.5) >= 2) = 1/4, 1 - (3/4)^4 = 0.68 > 1%: uniform,
        q = 0.5."""
        sigma = 1.3
        p0, p1, p2, p3 = privacy_over_versions(self.EV, 4, sigma, DELTA, [0, 1, 2, 3])
        assert (p0.epsilon, p0.epsilon_median, p0.epsilon_sampled) == (0.0, 0.0, 0.0)
        assert p1.epsilon == pytest.approx(rigorous_epsilon(1, sigma, DELTA))
        assert p1.epsilon_median == pytest.approx(rigorous_epsilon(1, sigma, DELTA) / 2)  # (0, 0, e1, e1)
        assert p2.epsilon == pytest.approx(rigorous_epsilon(2, sigma, DELTA))
        assert (p2.sample_rate, p2.sample_rate_mean, p2.sample_rate_max, p2.uniform_selection) == (0.5, 0.5, 1.0, True)
        assert p2.epsilon_sampled == pytest.approx(sampled_epsilon(sigma, 0.5, 2, DELTA))
        assert p3.epsilon == pytest.approx(rigorous_epsilon(6, sigma, DELTA))
        assert p3.epsilon_median == pytest.approx(rigorous_epsilon(1, sigma, DELTA))
        assert (p3.sample_rate, p3.sample_rate_mean, p3.uniform_selection) == (1.0, 0.5, False)
        assert (p3.participations_max, p3.updates_per_aggregation_max) == (3, 2)
        assert p3.epsilon_sampled == pytest.approx(sampled_epsilon(sigma, 1.0, 3, DELTA))
        assert p3.delta == DELTA

    def test_uniform_selection_p(self):
        """Binomial tail, Sidak over clients: 10 clients, 4 versions, rate 1/2: P(Bin >= 4) = 1/16."""
        assert uniform_selection_p(4, 4, 0.5, 10) == pytest.approx(1 - (15 / 16) ** 10)
        assert uniform_selection_p(0, 4, 0.5, 10) == 1.0

    def test_rows_and_frame_agree_and_default_versions(self):
        rows = self.EV.to_dict("records")
        assert privacy_over_versions(rows, 4, 1.0, DELTA) == privacy_over_versions(self.EV, 4, 1.0, DELTA)
        assert [p.version for p in privacy_over_versions(self.EV, 4, 1.0, DELTA)] == [1, 2, 3]

    def test_privacy_columns_extend_eval_rows(self):
        out = privacy_columns(
            [dict(version=0, heldout_loss=1.0), dict(version=3, heldout_loss=0.5)], self.EV, 4, 1.0, DELTA
        )
        assert out[0]["heldout_loss"] == 1.0 and out[0]["epsilon"] == 0.0
        assert {"epsilon", "epsilon_median", "epsilon_sampled", "delta"} <= set(out[1])
        assert out[1]["epsilon"] == pytest.approx(rigorous_epsilon(6, 1.0, DELTA))

    def test_bad_events(self):
        with pytest.raises(ValueError, match="applied_version"):
            privacy_over_versions(self.EV.drop(columns="applied_version"), 4, 1.0, DELTA)
        with pytest.raises(ValueError, match="client ids"):
            privacy_over_versions(self.EV, 2, 1.0, DELTA)  # client 2 has applied updates
        with pytest.raises(ValueError, match="applied_version >= 1"):
            privacy_over_versions(events([(0, "applied", None)]), 4, 1.0, DELTA)


def dry_run_events(tmp_path, n: int, rounds: int, sigma: float, speed: dict, **strategy) -> pd.DataFrame:
    import raydiff

    cfg = {
        "name": "acct",
        "seed": 0,
        "data": {"dataset": "synthetic", "synthetic_size": 500},
        "clients": {"num_clients": n, "speed": speed},
        "train": {"local_steps": 1, "batch_size": 8},
        "strategy": dict(strategy, dp={"enabled": True, "noise_multiplier": sigma}),
        "eval": {"every_versions": 0},
        "run": {"max_updates": rounds, "dry_run": True},
    }
    res = raydiff.run(cfg, out=tmp_path / "run", progress=False)
    return pd.read_parquet(res.out_dir / "events.parquet")


def test_over_selection_dry_run_reports_the_real_rate(tmp_path):
    """Defect 1 of issue 14: FedAvg, 5 of 50 clients per round with over_selection 0.6 (8 selected, the first 5
    kept) and lognormal speeds. The fast clients are kept almost every time they are selected, so their
    participation rate is far above the 5/50 = 0.1 the old accountant assumed; epsilon_sampled must use the
    real rate, and say that selection was not uniform (the rigorous epsilon counts their participations)."""
    n, rounds, sigma = 50, 200, 1.0
    ev = dry_run_events(
        tmp_path,
        n,
        rounds,
        sigma,
        {"dist": "lognormal", "mean": 1000, "sigma": 1.0},
        name="fedavg",
        clients_per_round=5,
        over_selection=0.6,
    )
    (p,) = privacy_over_versions(ev, n, sigma, DELTA, [rounds])
    assert p.sample_rate_mean == pytest.approx(0.1)  # 5 updates per round / 50 clients: the old assumption
    assert not p.uniform_selection
    assert p.sample_rate == p.sample_rate_max >= 0.15  # measured 0.19 at 400 rounds: the fastest client's rate
    assumed = sampled_epsilon(sigma, 0.1, rounds, DELTA)
    assert p.epsilon_sampled > 1.3 * assumed
    assert p.epsilon == pytest.approx(rigorous_epsilon(p.participations_max, sigma, DELTA))
    assert p.updates_per_aggregation_max == 1  # FedAvg: one update per client per round


def test_uniform_fedavg_keeps_the_textbook_rate(tmp_path):
    """Equal speeds, no over-selection: selection is uniform, so q is exactly clients_per_round / clients and
    epsilon_sampled is the textbook DP-FedAvg number, although by chance the busiest client joined more often."""
    n, rounds, sigma = 100, 100, 1.0
    ev = dry_run_events(
        tmp_path, n, rounds, sigma, {"dist": "constant", "mean": 1000}, name="fedavg", clients_per_round=10
    )
    (p,) = privacy_over_versions(ev, n, sigma, DELTA, [rounds])
    assert p.uniform_selection and p.sample_rate == pytest.approx(0.1)
    assert p.sample_rate_max > 0.12  # the luckiest of 100 clients
    assert p.epsilon_sampled == pytest.approx(sampled_epsilon(sigma, 0.1, rounds, DELTA))
    assert p.epsilon > p.epsilon_sampled  # no amplification assumed: the rigorous bound is larger
