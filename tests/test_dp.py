"""Client-level DP (DP-FedAvg, McMahan et al. 2018): clipping and the noise scale (the accounting is tested in
tests/test_privacy_accounting.py)."""

from __future__ import annotations

import numpy as np
import pytest

from raydiff.strategies import ClientDP, FedAvg, FedBuff, GaussianMechanism, Update


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


def test_fedbuff_with_dp_puts_at_most_one_update_per_client_in_a_buffer(tmp_path):
    """Sensitivity C needs each client at most once in each noised sum: a client whose update waits in the
    buffer is not dispatched again until a version absorbs it (long dry run, uneven speeds, dropouts)."""
    import pandas as pd

    import raydiff

    cfg = {
        "clients": {"num_clients": 10, "dropout": 0.1, "speed": {"dist": "lognormal", "sigma": 1.0}},
        "strategy": {"name": "fedbuff", "concurrency": 8, "buffer_size": 4, "dp": {"enabled": True}},
        "run": {"dry_run": True, "max_updates": 300},
    }
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
