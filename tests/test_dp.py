"""Client-level DP (DP-FedAvg, McMahan et al. 2018): clipping, the noise scale, and the privacy accountant."""
from __future__ import annotations

import math

import numpy as np
import pytest

from raydiff.strategies import ClientDP, FedAvg, FedBuff, GaussianMechanism, PrivacyAccountant, Update


def f32(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)


def close(actual: np.ndarray, expected: list[float]) -> None:
    np.testing.assert_allclose(actual, np.array(expected), rtol=1e-6, atol=1e-7)


def mech(sigma: float = 0.0, clip: float = 1.0, seed: int = 0) -> GaussianMechanism:
    return GaussianMechanism(sigma, clip, np.random.default_rng(seed))


class TestGaussianMechanism:
    def test_clip_scales_down_to_the_norm(self):
        """||[3,4,0]|| = 5: C=1 gives [0.6, 0.8, 0]; C=10 leaves the values, still in a new array."""
        d = f32(3, 4, 0)
        d.flags.writeable = False  # as an object-store buffer would be
        close(mech(clip=1.0).clip(d), [0.6, 0.8, 0.0])
        out = mech(clip=10.0).clip(d)
        assert out.tolist() == [3.0, 4.0, 0.0] and out is not d and out.dtype == np.float32

    def test_noise_std_is_sigma_times_clip(self):
        """sigma=1.1, C=2: 10^6 noise values have std 2.2 (sampling error ~0.0016) and mean ~0."""
        m = mech(sigma=1.1, clip=2.0, seed=1)
        assert m.noise_std == pytest.approx(2.2)
        s = np.zeros(1_000_000, np.float32)
        out = m.noise_sum(s)
        assert out is s  # in place
        assert abs(float(s.std()) - 2.2) < 0.01
        assert abs(float(s.mean())) < 0.01

    def test_zero_noise_multiplier_adds_nothing_and_draws_nothing(self):
        m = mech(sigma=0.0)
        before = m.rng.bit_generator.state
        s = f32(1, 2, 3)
        m.noise_sum(s)
        assert s.tolist() == [1.0, 2.0, 3.0]
        assert m.rng.bit_generator.state == before

    def test_state_dict_replays_the_noise(self):
        m = mech(sigma=1.0, seed=5)
        state = m.state_dict()
        a = m.noise_sum(np.zeros(4, np.float32)).copy()
        m.load_state_dict(state)
        assert m.noise_sum(np.zeros(4, np.float32)).tobytes() == a.tobytes()

    @pytest.mark.parametrize("sigma, clip", [(-0.1, 1.0), (1.0, 0.0)])
    def test_bad_arguments(self, sigma, clip):
        with pytest.raises(ValueError):
            mech(sigma=sigma, clip=clip)


class TestDPInFedBuff:
    def test_clip_before_staleness_weight(self):
        """K=2, p=0.5, C=1, sigma=0. [0,0,2] at staleness 0 -> clipped [0,0,1], weight 1;
        [6,8,0] at staleness 3 -> clipped [0.6,0.8,0], weight 1/2 -> [0.3,0.4,0].
        acc/K = [0.15, 0.2, 0.5]; x = [1.15, 2.2, 3.5].
        (Weighting before clipping would give [0.6,0.8,0] for the second update instead.)
        """
        x = f32(1, 2, 3)
        s = ClientDP(FedBuff(2, 1.0, 0.5), mech(clip=1.0))
        assert s.receive(x, 3, Update(0, 3, 1, f32(0, 0, 2))).status == "buffered"
        assert s.receive(x, 3, Update(1, 0, 1, f32(6, 8, 0))).status == "applied"
        close(x, [1.15, 2.2, 3.5])

    def test_noise_once_per_step_on_the_sum(self):
        """sigma=1.1, C=1, K=2, p=0: x = x0 + (sum of clipped + 1.1*z)/2, z the first 3 draws of seed 7.

        The buffered receive draws nothing: the generator is still at its start when the buffer fills.
        """
        x = f32(1, 2, 3)
        dp = mech(sigma=1.1, clip=1.0, seed=7)
        start = dp.rng.bit_generator.state
        s = ClientDP(FedBuff(2, 1.0, 0.0), dp)
        s.receive(x, 0, Update(0, 0, 1, f32(0.5, 0, 0)))
        assert dp.rng.bit_generator.state == start
        s.receive(x, 0, Update(1, 0, 1, f32(0, 0.5, 0)))
        z = np.random.default_rng(7).standard_normal(3, dtype=np.float32)
        expected = np.array([1.25, 2.25, 3.0]) + 1.1 * z.astype(np.float64) / 2
        np.testing.assert_allclose(x, expected, rtol=1e-6)
        assert dp.rng.bit_generator.state != start


class TestDPInFedAvg:
    def test_uniform_weights_and_clipping(self):
        """C=5, sigma=0: [3,4,0] (n=1) stays; [0,0,10] (n=3) -> [0,0,5]. Uniform mean = [1.5, 2, 2.5],
        x = [2.5, 4, 5.5]. (Sample weights would give ([3,4,0] + 3*[0,0,5])/4 = [0.75, 1, 3.75].)
        """
        x = f32(1, 2, 3)
        s = ClientDP(FedAvg(1.0), mech(clip=5.0))
        assert s.receive(x, 0, Update(0, 0, 1, f32(3, 4, 0))).weight == 1.0
        assert s.receive(x, 0, Update(1, 0, 3, f32(0, 0, 10))).weight == 1.0
        assert s.end_round(x) is True
        close(x, [2.5, 4.0, 5.5])

    def test_noise_divided_by_count(self):
        """sigma=2, C=1, three zero updates: x = x0 + 2*z/3."""
        x = f32(1, 2, 3)
        s = ClientDP(FedAvg(1.0), mech(sigma=2.0, clip=1.0, seed=11))
        for i in range(3):
            s.receive(x, 0, Update(i, 0, 10, f32(0, 0, 0)))
        s.end_round(x)
        z = np.random.default_rng(11).standard_normal(3, dtype=np.float32).astype(np.float64)
        np.testing.assert_allclose(x, np.array([1.0, 2.0, 3.0]) + 2.0 * z / 3, rtol=1e-6)


def _independent_epsilon(q: float, sigma: float, steps: int, delta: float, improved: bool) -> float:
    """RDP of the sampled Gaussian mechanism at INTEGER orders, written out from Mironov, Talwar and
    Zhang 2019 ("Renyi Differential Privacy of the Sampled Gaussian Mechanism", Sec. 3.3):
    A_a = sum_k C(a,k) (1-q)^(a-k) q^k exp((k^2-k)/(2 sigma^2)), rdp(a) = log(A_a)/(a-1).
    Conversion: classic (Mironov 2017, Prop. 3) eps = T rdp + log(1/delta)/(a-1), or the improved one of
    Balle et al. 2020 (Thm. 21) that Opacus uses: eps = T rdp - (log delta + log a)/(a-1) + log((a-1)/a).
    No Opacus code is involved.
    """
    best = math.inf
    for a in range(2, 64):
        terms = [math.lgamma(a + 1) - math.lgamma(k + 1) - math.lgamma(a - k + 1) + (a - k) * math.log1p(-q)
                 + k * math.log(q) + (k * k - k) / (2 * sigma * sigma) for k in range(a + 1)]
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


class TestPrivacyAccountant:
    def test_independent_computation_reproduces_the_published_value(self):
        assert round(_independent_epsilon(TF_Q, TF_SIGMA, TF_STEPS, TF_DELTA, improved=False), 2) == 3.01

    def test_matches_the_independent_computation(self):
        """Opacus also uses fractional orders, so it may only be lower than the integer-order bound,
        and only a little. Both convert with Balle et al., so both are below the published 3.01."""
        acc = PrivacyAccountant(TF_SIGMA, TF_Q)
        acc.step(TF_STEPS)
        eps = acc.epsilon(TF_DELTA)
        ours = _independent_epsilon(TF_Q, TF_SIGMA, TF_STEPS, TF_DELTA, improved=True)
        assert 0.98 * ours <= eps <= ours
        assert eps == pytest.approx(2.5966, abs=1e-4)  # the value Opacus 1.6 gives
        assert eps < 3.01

    def test_known_value_q001_sigma11_1000_steps(self):
        """q=0.01, sigma=1.1, 1000 steps, delta=1e-5: 1.7118, as Opacus's own RDPAccountant reports after 1000
        single steps; the independent integer-order bound is 1.7253."""
        from opacus.accountants import RDPAccountant

        acc = PrivacyAccountant(1.1, 0.01)
        acc.step(600)
        acc.step(400)
        eps = acc.epsilon(1e-5)
        assert eps == pytest.approx(1.7118, abs=1e-4)
        ref = RDPAccountant()
        for _ in range(1000):
            ref.step(noise_multiplier=1.1, sample_rate=0.01)
        assert eps == pytest.approx(ref.get_epsilon(1e-5), rel=1e-12)
        assert _independent_epsilon(0.01, 1.1, 1000, 1e-5, improved=True) == pytest.approx(1.7253, abs=1e-4)

    def test_monotone(self):
        def eps(sigma: float, q: float, steps: int) -> float:
            a = PrivacyAccountant(sigma, q)
            a.step(steps)
            return a.epsilon(1e-5)

        assert eps(1.1, 0.01, 100) < eps(1.1, 0.01, 1000) < eps(1.1, 0.01, 5000)
        assert eps(2.0, 0.01, 1000) < eps(1.1, 0.01, 1000) < eps(0.8, 0.01, 1000)
        assert eps(1.1, 0.01, 1000) < eps(1.1, 0.05, 1000)

    def test_edges_and_state(self):
        acc = PrivacyAccountant(1.1, 0.01)
        assert acc.epsilon(1e-5) == 0.0  # nothing released yet
        acc.step()
        acc.step(2)
        assert acc.steps == 3
        fresh = PrivacyAccountant(1.1, 0.01)
        fresh.load_state_dict(acc.state_dict())
        assert fresh.epsilon(1e-5) == acc.epsilon(1e-5)
        no_noise = PrivacyAccountant(0.0, 0.01)
        no_noise.step()
        assert no_noise.epsilon(1e-5) == math.inf

    @pytest.mark.parametrize("sigma, q", [(-1.0, 0.1), (1.0, 0.0), (1.0, 1.5)])
    def test_bad_arguments(self, sigma, q):
        with pytest.raises(ValueError):
            PrivacyAccountant(sigma, q)


def test_fedbuff_with_dp_puts_at_most_one_update_per_client_in_a_buffer(tmp_path):
    """Sensitivity C needs each client at most once in each noised sum: a client whose update waits in the
    buffer is not dispatched again until a version absorbs it (long dry run, uneven speeds, dropouts)."""
    import pandas as pd

    import raydiff

    cfg = {"clients": {"num_clients": 10, "dropout": 0.1, "speed": {"dist": "lognormal", "sigma": 1.0}},
           "strategy": {"name": "fedbuff", "concurrency": 8, "buffer_size": 4, "dp": {"enabled": True}},
           "run": {"dry_run": True, "max_updates": 300}}
    raydiff.run(cfg, out=tmp_path / "dp", progress=False)
    ev = pd.read_parquet(tmp_path / "dp" / "events.parquet")
    applied = ev[ev.status == "applied"]
    per_version = applied.groupby("applied_version").client_id
    assert per_version.size().eq(4).all() and per_version.nunique().eq(4).all()
    # without DP the same schedule lets fast clients fill a buffer twice (the defect this guards against)
    cfg["strategy"]["dp"] = {"enabled": False}
    raydiff.run(cfg, out=tmp_path / "plain", progress=False)
    ev = pd.read_parquet(tmp_path / "plain" / "events.parquet")
    plain = ev[ev.status == "applied"].groupby("applied_version").client_id
    assert (plain.nunique() < plain.size()).any()
