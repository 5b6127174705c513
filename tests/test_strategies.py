"""Aggregation rules and the parameter server, checked against hand-computed numbers.

Every expected vector below was worked out by hand and is written as a literal; none is
recomputed with the formula under test. The common starting point is

    x     = [1, 2, 3]          (the server's current model)
    base  = [0, 4, -2]         (the stale model the client started from; base != x)
    delta = [2, -2, 6]         (so the client's model is base + delta = [2, 2, 4])
"""

from __future__ import annotations

import numpy as np
import pytest

from raydiff.actors.server import ParameterServer
from raydiff.config import StalenessConfig, StrategyConfig
from raydiff.errors import ConfigError
from raydiff.messages import ServerReply
from raydiff.strategies import (
    EMA,
    FedAsync,
    FedAvg,
    FedBuff,
    NormBound,
    Update,
    build_strategy,
    check_update,
    l2_norm,
    staleness_fn,
    strategy_class,
)


def f32(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)


X0 = (1.0, 2.0, 3.0)
BASE = (0.0, 4.0, -2.0)
DELTA = (2.0, -2.0, 6.0)


def close(actual: np.ndarray, expected: list[float]) -> None:
    np.testing.assert_allclose(actual, np.array(expected), rtol=1e-6, atol=0)


# --------------------------------------------------------------------------------------------
# staleness functions
# --------------------------------------------------------------------------------------------


class TestStalenessFn:
    def test_constant_is_one_at_any_staleness(self):
        s = staleness_fn("constant")
        assert [s(0), s(1), s(7), s(1000)] == [1.0, 1.0, 1.0, 1.0]

    def test_polynomial_values(self):
        """(s+1)^-a: a=0.5 gives 1, 1/2, 1/3 at staleness 0, 3, 8; a=1 gives 1/2 at staleness 1."""
        s = staleness_fn("polynomial", a=0.5)
        assert s(0) == 1.0
        assert s(3) == 0.5
        assert s(8) == pytest.approx(0.3333333333333333, rel=1e-12)
        assert staleness_fn("polynomial", a=1.0)(1) == 0.5

    def test_hinge_values(self):
        """Hinge a=10, b=4: flat 1 up to b, then 1/(10(s-4)+1): 1/11 at 5, 1/21 at 6."""
        s = staleness_fn("hinge", a=10, b=4)
        assert s(0) == 1.0
        assert s(4) == 1.0
        assert s(5) == pytest.approx(0.09090909090909091, rel=1e-12)
        assert s(6) == pytest.approx(0.047619047619047616, rel=1e-12)

    def test_unknown_name_raises(self):
        with pytest.raises(ValueError, match="linear"):
            staleness_fn("linear")


# --------------------------------------------------------------------------------------------
# FedAsync
# --------------------------------------------------------------------------------------------


class TestFedAsync:
    def _receive(self, fn, version, base_version):
        x = f32(*X0)
        strategy = FedAsync(0.5, fn)
        d = strategy.receive(x, version, Update(0, base_version, 10, f32(*DELTA), f32(*BASE)))
        return x, d

    def test_constant_mixes_client_model_not_delta(self):
        """alpha=0.5: x <- 0.5*[1,2,3] + 0.5*[2,2,4] = [1.5, 2, 3.5].

        Adding 0.5*delta would give [2, 1, 6] instead, and mixing with the delta alone [1.5, 0, 4.5].
        """
        x, d = self._receive(staleness_fn("constant"), version=9, base_version=2)
        close(x, [1.5, 2.0, 3.5])
        assert d.status == "applied"
        assert d.weight == 0.5

    def test_polynomial_staleness_three(self):
        """a=0.5, staleness 3: s=1/2, alpha_s=1/4: x = 0.75*[1,2,3] + 0.25*[2,2,4] = [1.25, 2, 3.25]."""
        x, d = self._receive(staleness_fn("polynomial", a=0.5), version=5, base_version=2)
        close(x, [1.25, 2.0, 3.25])
        assert d.status == "applied"
        assert d.weight == 0.25

    def test_hinge_at_the_hinge(self):
        """Hinge a=10, b=4 at staleness 4: still s=1, so the same as constant: [1.5, 2, 3.5]."""
        x, d = self._receive(staleness_fn("hinge", a=10, b=4), version=4, base_version=0)
        close(x, [1.5, 2.0, 3.5])
        assert d.weight == 0.5

    def test_hinge_past_the_hinge(self):
        """Staleness 5: alpha_s=1/22 -> [23/22, 2, 67/22]; staleness 6: alpha_s=1/42 -> [43/42, 2, 127/42]."""
        x, d = self._receive(staleness_fn("hinge", a=10, b=4), version=5, base_version=0)
        close(x, [1.0454545454545454, 2.0, 3.0454545454545454])
        assert d.weight == pytest.approx(0.045454545454545456, rel=1e-12)

        x, d = self._receive(staleness_fn("hinge", a=10, b=4), version=6, base_version=0)
        close(x, [1.0238095238095237, 2.0, 3.0238095238095237])
        assert d.weight == pytest.approx(0.023809523809523808, rel=1e-12)

    def test_updates_x_in_place_and_keeps_float32(self):
        x = f32(*X0)
        FedAsync(0.5, staleness_fn("constant")).receive(x, 0, Update(0, 0, 1, f32(*DELTA), f32(*BASE)))
        assert x.dtype == np.float32
        close(x, [1.5, 2.0, 3.5])

    def test_two_updates_in_sequence(self):
        """alpha=1, constant: x becomes each client's model in turn (a full replacement)."""
        x = f32(*X0)
        s = FedAsync(1.0, staleness_fn("constant"))
        s.receive(x, 0, Update(0, 0, 1, f32(*DELTA), f32(*BASE)))
        close(x, [2.0, 2.0, 4.0])
        s.receive(x, 1, Update(1, 0, 1, f32(1, 1, 1), f32(-1, 0, 5)))
        close(x, [0.0, 1.0, 6.0])

    def test_missing_base_raises(self):
        x = f32(*X0)
        with pytest.raises(ValueError, match="base"):
            FedAsync(0.5, staleness_fn("constant")).receive(x, 0, Update(0, 0, 1, f32(*DELTA)))
        assert x.tobytes() == f32(*X0).tobytes()

    def test_flags(self):
        s = FedAsync(0.5, staleness_fn("constant"))
        assert s.needs_base is True and s.round_based is False and s.aggregates_sums is False
        assert s.pending() == 0


# --------------------------------------------------------------------------------------------
# FedBuff
# --------------------------------------------------------------------------------------------

D1 = (2.0, -2.0, 6.0)  # staleness 0 -> weight 1
D2 = (4.0, 8.0, -4.0)  # staleness 3 -> weight 1/(1+3)^p


class TestFedBuff:
    @pytest.mark.parametrize(
        "p, lr, w2, expected",
        [
            # p=0.5: acc = [2,-2,6] + 0.5*[4,8,-4] = [4,2,4]; /2 -> [2,1,2]; x = [3,3,5]
            (0.5, 1.0, 0.5, [3.0, 3.0, 5.0]),
            # p=1: acc = [2,-2,6] + 0.25*[4,8,-4] = [3,0,5]; /2 -> [1.5,0,2.5]; x = [2.5,2,5.5]
            (1.0, 1.0, 0.25, [2.5, 2.0, 5.5]),
            # p=1, lr=0.5: x = [1,2,3] + 0.5*[1.5,0,2.5] = [1.75, 2, 4.25]
            (1.0, 0.5, 0.25, [1.75, 2.0, 4.25]),
        ],
    )
    def test_buffer_of_two(self, p, lr, w2, expected):
        """First update is buffered (x bit-identical); the second applies the weighted mean step."""
        x = f32(*X0)
        before = x.tobytes()
        s = FedBuff(buffer_size=2, server_lr=lr, staleness_exponent=p)

        d1 = s.receive(x, 3, Update(0, 3, 10, f32(*D1)))
        assert d1.status == "buffered"
        assert d1.weight == 1.0
        assert x.tobytes() == before
        assert s.pending() == 1

        d2 = s.receive(x, 3, Update(1, 0, 10, f32(*D2)))
        assert d2.status == "applied"
        assert d2.weight == w2
        close(x, expected)
        assert s.pending() == 0

    def test_third_update_starts_a_fresh_buffer(self):
        """After a server step the accumulator is empty: the next step uses only the new updates."""
        x = f32(*X0)
        s = FedBuff(buffer_size=2, server_lr=1.0, staleness_exponent=0.5)
        s.receive(x, 3, Update(0, 3, 10, f32(*D1)))
        s.receive(x, 3, Update(1, 0, 10, f32(*D2)))
        close(x, [3.0, 3.0, 5.0])

        after_step = x.tobytes()
        d3 = s.receive(x, 4, Update(2, 4, 10, f32(2, 2, 2)))
        assert d3.status == "buffered"
        assert s.pending() == 1
        assert x.tobytes() == after_step

        d4 = s.receive(x, 4, Update(3, 4, 10, f32(0, 0, 2)))
        assert d4.status == "applied"
        # (2,2,2)+(0,0,2) = (2,2,4); /2 -> (1,1,2); x = (3,3,5)+(1,1,2)
        close(x, [4.0, 4.0, 7.0])

    def test_buffer_of_one_applies_immediately(self):
        x = f32(*X0)
        d = FedBuff(1, 1.0, 0.5).receive(x, 8, Update(0, 0, 1, f32(3, 3, 3)))  # staleness 8: w = 1/3
        assert d.status == "applied"
        close(x, [2.0, 3.0, 4.0])

    def test_discard_pending_forgets_buffered_updates(self):
        x = f32(*X0)
        s = FedBuff(2, 1.0, 0.5)
        s.receive(x, 0, Update(0, 0, 1, f32(100, 100, 100)))
        s.discard_pending()
        assert s.pending() == 0
        s.receive(x, 0, Update(1, 0, 1, f32(2, 2, 2)))
        s.receive(x, 0, Update(2, 0, 1, f32(0, 0, 2)))
        close(x, [2.0, 3.0, 5.0])


# --------------------------------------------------------------------------------------------
# FedAvg
# --------------------------------------------------------------------------------------------

# (num_samples, delta): sum n_i d_i = [8,0,-8] + [0,12,12] + [8,8,0] = [16,20,4]; sum n_i = 8
ROUND = [(1, (8.0, 0.0, -8.0)), (3, (0.0, 4.0, 4.0)), (4, (2.0, 2.0, 0.0))]


class TestFedAvg:
    @pytest.mark.parametrize(
        "lr, expected",
        [
            (1.0, [3.0, 4.5, 3.5]),  # [1,2,3] + [16,20,4]/8 = [1,2,3] + [2,2.5,0.5]
            (0.5, [2.0, 3.25, 3.25]),  # [1,2,3] + 0.5*[2,2.5,0.5]
        ],
    )
    def test_sample_weighted_round(self, lr, expected):
        """receive buffers (x untouched); end_round applies sum(n d)/sum(n), not the plain mean."""
        x = f32(*X0)
        before = x.tobytes()
        s = FedAvg(server_lr=lr)
        for i, (n, d) in enumerate(ROUND):
            dec = s.receive(x, 0, Update(i, 0, n, f32(*d)))
            assert dec.status == "buffered"
            assert dec.weight == float(n)
            assert x.tobytes() == before
        assert s.pending() == 3
        assert s.end_round(x) is True
        close(x, expected)
        assert s.pending() == 0

    def test_empty_round_changes_nothing(self):
        x = f32(*X0)
        s = FedAvg()
        assert s.end_round(x) is False
        assert x.tobytes() == f32(*X0).tobytes()

    def test_rounds_do_not_leak_into_each_other(self):
        """Round 2 averages only its own update; then an empty round 3 leaves x alone."""
        x = f32(*X0)
        s = FedAvg()
        for i, (n, d) in enumerate(ROUND):
            s.receive(x, 0, Update(i, 0, n, f32(*d)))
        s.end_round(x)
        s.receive(x, 1, Update(0, 1, 2, f32(1, -1, 1)))
        assert s.end_round(x) is True
        close(x, [4.0, 3.5, 4.5])
        snapshot = x.tobytes()
        assert s.end_round(x) is False
        assert x.tobytes() == snapshot

    def test_flags(self):
        assert FedAvg().round_based is True and FedAvg().needs_base is False
        assert FedBuff(2, 1.0, 0.5).round_based is False and FedBuff(2, 1.0, 0.5).needs_base is False
        assert FedAvg().aggregates_sums and FedBuff(2, 1.0, 0.5).aggregates_sums


# --------------------------------------------------------------------------------------------
# check_update
# --------------------------------------------------------------------------------------------


class TestCheckUpdate:
    def test_good_vector(self):
        assert check_update(f32(1, 2, 3), 3) is None

    @pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
    def test_non_finite(self, bad):
        reason = check_update(f32(1, bad, 3), 3)
        assert reason is not None
        assert "non_finite" in reason and "NaN or Inf" in reason

    def test_wrong_dtype(self):
        reason = check_update(np.array([1.0, 2.0, 3.0], dtype=np.float64), 3)
        assert reason is not None
        assert "malformed" in reason and "float64" in reason

    @pytest.mark.parametrize("shape", [(4,), (2,), (1, 3), (3, 1)])
    def test_wrong_shape(self, shape):
        reason = check_update(np.zeros(shape, dtype=np.float32), 3)
        assert reason is not None
        assert "malformed" in reason and "float32[3]" in reason


# --------------------------------------------------------------------------------------------
# ParameterServer (the plain class; no Ray)
# --------------------------------------------------------------------------------------------


class TestParameterServer:
    def test_copies_and_casts_initial_vector(self):
        x0 = np.array(X0, dtype=np.float64)
        ps = ParameterServer(x0, FedBuff(2, 1.0, 0.5))
        x0[0] = 99.0
        assert ps.x.dtype == np.float32
        assert ps.x.tolist() == [1.0, 2.0, 3.0]
        assert ps.version == 0

    def test_nan_update_is_rejected_and_touches_nothing(self):
        ps = ParameterServer(f32(*X0), FedBuff(1, 1.0, 0.5))
        before = ps.x.tobytes()
        out, vec = ps.submit(7, 0, 0, 10, f32(1, np.nan, 1))
        assert out.status == "rejected"
        assert "non_finite" in out.reason
        assert out.version == 0
        assert out.applied_jobs == ()
        assert vec is None
        assert ps.version == 0
        assert ps.x.tobytes() == before
        assert ps.strategy.pending() == 0
        assert ps.discard_pending() == []

    def test_malformed_update_is_rejected(self):
        ps = ParameterServer(f32(*X0), FedBuff(1, 1.0, 0.5))
        out, vec = ps.submit(1, 0, 0, 10, np.zeros(3, dtype=np.float64))
        assert out.status == "rejected" and "malformed" in out.reason
        assert vec is None and ps.version == 0

    def test_fedbuff_two_through_the_server(self):
        """K=2: job 10 buffered; job 11 completes the buffer -> version 1, applied_jobs [10, 11]."""
        ps = ParameterServer(f32(*X0), FedBuff(2, 1.0, 0.5))
        out, vec = ps.submit(10, 0, 0, 5, f32(*D1))
        assert out.status == "buffered"
        assert out.applied_jobs == ()
        assert out.version == 0
        assert vec is None
        assert ps.x.tolist() == [1.0, 2.0, 3.0]

        # Staleness 0 again (still version 0), so both weights are 1: x = [1,2,3] + ([2,-2,6]+[4,8,-4])/2
        out, vec = ps.submit(11, 1, 0, 5, f32(*D2))
        assert out.status == "applied"
        assert out.applied_jobs == (10, 11)
        assert out.version == 1
        assert ps.version == 1
        close(ps.x, [4.0, 5.0, 4.0])
        assert vec is not None
        assert vec.tobytes() == ps.x.tobytes()
        assert vec is not ps.x and not np.shares_memory(vec, ps.x)
        vec[:] = 0
        close(ps.x, [4.0, 5.0, 4.0])

        out, _ = ps.submit(12, 2, 1, 5, f32(1, 1, 1))
        assert out.status == "buffered" and out.applied_jobs == ()

    def test_rejected_update_between_buffered_ones(self):
        """A bad update in the middle neither fills the buffer nor appears among applied jobs."""
        ps = ParameterServer(f32(*X0), FedBuff(2, 1.0, 0.5))
        ps.submit(1, 0, 0, 5, f32(*D1))
        out, _ = ps.submit(2, 1, 0, 5, f32(np.inf, 0, 0))
        assert out.status == "rejected"
        assert ps.strategy.pending() == 1
        out, _ = ps.submit(3, 2, 0, 5, f32(*D2))
        assert out.status == "applied"
        assert out.applied_jobs == (1, 3)
        close(ps.x, [4.0, 5.0, 4.0])

    def test_staleness_is_version_minus_base_version(self):
        """FedBuff K=1, p=1: each submit is a version; weights 1/(1+s) follow the reported staleness."""
        ps = ParameterServer(f32(0, 0, 0), FedBuff(1, 1.0, 1.0))
        reports = [ps.submit(j, j, 0, 1, f32(6, 6, 6))[0] for j in range(3)]
        assert [r.staleness for r in reports] == [0, 1, 2]
        assert [r.version for r in reports] == [1, 2, 3]
        close(ps.x, [11.0, 11.0, 11.0])  # 6 + 3 + 2
        out, _ = ps.submit(9, 0, 2, 1, f32(0, 0, 0))
        assert out.staleness == 1
        out, _ = ps.submit(10, 0, 0, 1, f32(np.nan, 0, 0))
        assert out.status == "rejected" and out.staleness == 4

    def test_discard_pending_returns_buffered_jobs(self):
        ps = ParameterServer(f32(*X0), FedBuff(3, 1.0, 0.5))
        ps.submit(4, 0, 0, 1, f32(100, 100, 100))
        ps.submit(5, 1, 0, 1, f32(100, 100, 100))
        assert ps.discard_pending() == [4, 5]
        assert ps.strategy.pending() == 0
        assert ps.discard_pending() == []
        assert ps.x.tolist() == [1.0, 2.0, 3.0]
        for j, d in enumerate([(3, 0, 0), (0, 3, 0), (0, 0, 3)]):
            out, _ = ps.submit(20 + j, j, 0, 1, f32(*d))
        assert out.applied_jobs == (20, 21, 22)
        close(ps.x, [2.0, 3.0, 4.0])

    def test_fedavg_round_through_the_server(self):
        ps = ParameterServer(f32(*X0), FedAvg(1.0))
        for j, (n, d) in enumerate(ROUND):
            out, vec = ps.submit(30 + j, j, 0, n, f32(*d))
            assert out.status == "buffered" and vec is None and out.version == 0
        assert ps.x.tolist() == [1.0, 2.0, 3.0]
        out, vec = ps.end_round()
        assert out.version == 1
        assert out.applied_jobs == (30, 31, 32)
        close(vec, [3.0, 4.5, 3.5])
        assert vec.tobytes() == ps.x.tobytes() and vec is not ps.x

        out, vec = ps.end_round()
        assert out == ServerReply(version=1)
        assert vec is None

    def test_fedasync_through_the_server_uses_base(self):
        ps = ParameterServer(f32(*X0), FedAsync(0.5, staleness_fn("polynomial", a=0.5)))
        ps.version = 3  # pretend three versions passed since the client's base
        out, vec = ps.submit(1, 0, 0, 1, f32(*DELTA), f32(*BASE))
        assert out.staleness == 3
        assert out.status == "applied" and out.applied_jobs == (1,) and out.version == 4
        close(vec, [1.25, 2.0, 3.25])

    def test_vector_and_version_accessors(self):
        ps = ParameterServer(f32(*X0), FedAvg())
        v = ps.vector()
        v[:] = 0
        assert ps.x.tolist() == [1.0, 2.0, 3.0]
        assert ps.get_version() == 0


# --------------------------------------------------------------------------------------------
# building from the config: the registry
# --------------------------------------------------------------------------------------------


def make_strategy(cfg: StrategyConfig):
    return build_strategy(cfg, num_clients=10)


class TestMakeStrategy:
    def test_fedavg(self):
        s = make_strategy(StrategyConfig(name="fedavg", server_lr=0.25))
        assert type(s) is FedAvg and s.server_lr == 0.25

    def test_fedbuff(self):
        s = make_strategy(StrategyConfig(name="fedbuff", buffer_size=3, server_lr=0.7, staleness_exponent=2.0))
        assert type(s) is FedBuff
        assert (s.k, s.server_lr, s.p) == (3, 0.7, 2.0)

    def test_fedasync_with_its_staleness_function(self):
        s = make_strategy(StrategyConfig(name="fedasync", alpha=0.4, staleness=StalenessConfig(fn="hinge", a=10, b=4)))
        assert type(s) is FedAsync
        assert s.alpha == 0.4
        assert s.staleness(4) == 1.0
        assert s.staleness(5) == pytest.approx(0.09090909090909091, rel=1e-12)

    def test_unknown_name(self):
        with pytest.raises(ConfigError, match="'fedsgd' is not one of fedavg, fedasync, fedbuff"):
            make_strategy(StrategyConfig(name="fedsgd"))

    def test_registered_name_is_the_class(self):
        assert strategy_class("fedbuff") is FedBuff


# --------------------------------------------------------------------------------------------
# max_staleness (FedAsync, FedBuff)
# --------------------------------------------------------------------------------------------


class TestMaxStaleness:
    def test_fedasync_at_and_past_the_bound(self):
        """Bound 3: staleness 3 is mixed in ([1.5, 2, 3.5] as with no bound); staleness 4 is rejected."""
        s = FedAsync(0.5, staleness_fn("constant"), max_staleness=3)
        x = f32(*X0)
        assert s.receive(x, 5, Update(0, 2, 1, f32(*DELTA), f32(*BASE))).status == "applied"
        close(x, [1.5, 2.0, 3.5])
        before = x.tobytes()
        d = s.receive(x, 6, Update(1, 2, 1, f32(*DELTA), f32(*BASE)))
        assert (d.status, d.weight, d.reason) == ("rejected", 0.0, "stale: staleness 4 > max_staleness 3")
        assert x.tobytes() == before

    def test_fedasync_without_bound_takes_any_age(self):
        x = f32(*X0)
        d = FedAsync(0.5, staleness_fn("constant")).receive(x, 1000, Update(0, 0, 1, f32(*DELTA), f32(*BASE)))
        assert d.status == "applied"
        close(x, [1.5, 2.0, 3.5])

    def test_fedbuff_rejection_leaves_the_buffer_alone(self):
        """Bound 2: D1 buffered; D2 at staleness 3 rejected (x, buffer untouched); D2 at staleness 0 then
        completes the buffer exactly as if the rejected one never came: [1,2,3] + ([2,-2,6]+[4,8,-4])/2."""
        s = FedBuff(2, 1.0, 0.5, max_staleness=2)
        x = f32(*X0)
        s.receive(x, 3, Update(0, 3, 1, f32(*D1)))
        before = x.tobytes()
        d = s.receive(x, 3, Update(1, 0, 1, f32(*D2)))
        assert d.status == "rejected" and d.reason == "stale: staleness 3 > max_staleness 2"
        assert x.tobytes() == before and s.pending() == 1
        assert s.receive(x, 3, Update(2, 3, 1, f32(*D2))).status == "applied"
        close(x, [4.0, 5.0, 4.0])

    def test_bound_zero_through_the_server(self):
        """K=1, bound 0: the first update makes version 1; a second one from version 0 is stale by 1."""
        ps = ParameterServer(f32(*X0), FedBuff(1, 1.0, 0.5, max_staleness=0))
        out, vec = ps.submit(1, 0, 0, 1, f32(1, 1, 1))
        assert out.status == "applied" and out.version == 1
        out, vec = ps.submit(2, 1, 0, 1, f32(1, 1, 1))
        assert out.status == "rejected" and out.reason == "stale: staleness 1 > max_staleness 0"
        assert out.applied_jobs == () and out.version == 1 and vec is None
        close(ps.x, [2.0, 3.0, 4.0])
        assert ps.discard_pending() == []

    @pytest.mark.parametrize(
        "make",
        [
            lambda: FedAsync(0.5, staleness_fn("constant"), max_staleness=-1),
            lambda: FedBuff(2, 1.0, 0.5, max_staleness=-1),
        ],
    )
    def test_negative_bound_raises(self, make):
        with pytest.raises(ValueError, match="max_staleness"):
            make()


# --------------------------------------------------------------------------------------------
# NormBound and l2_norm
# --------------------------------------------------------------------------------------------


class TestNormBound:
    def test_clip_to_the_bound_in_a_new_array(self):
        """||[3,4,0]|| = 5; bound 2.5 halves it: [1.5, 2, 0]. The (read-only) input is untouched."""
        d = f32(3, 4, 0)
        d.flags.writeable = False
        out, reason = NormBound(2.5, "clip").apply(d)
        assert reason is None and out is not d
        close(out, [1.5, 2.0, 0.0])
        assert d.tolist() == [3.0, 4.0, 0.0]

    def test_within_the_bound_is_the_same_array(self):
        d = f32(3, 4, 0)
        for mode in ("clip", "reject"):
            out, reason = NormBound(5.0, mode).apply(d)  # type: ignore[arg-type]
            assert out is d and reason is None

    def test_reject_reason(self):
        assert NormBound(2.5, "reject").apply(f32(3, 4, 0))[1] == "norm: 5 > 2.5"
        assert NormBound(1.5, "reject").apply(f32(1, 1, 1))[1] == "norm: 1.732 > 1.5"

    @pytest.mark.parametrize("max_norm, mode", [(0.0, "clip"), (1.0, "drop")])
    def test_bad_arguments(self, max_norm, mode):
        with pytest.raises(ValueError):
            NormBound(max_norm, mode)

    def test_l2_norm_is_accurate_on_long_vectors(self):
        """2,000,000 copies of [3, 4]: the norm is 5 * sqrt(2e6) = 7071.067811865475."""
        d = np.tile(f32(3, 4), 2_000_000)
        assert l2_norm(d) == pytest.approx(7071.067811865475, rel=1e-12)
        assert l2_norm(np.zeros(0, np.float32)) == 0.0


# --------------------------------------------------------------------------------------------
# EMA of the global model
# --------------------------------------------------------------------------------------------


class TestEMA:
    def test_literal_sequence(self):
        """decay 0.9: first update copies [1,2,3]; then 0.9*[1,2,3] + 0.1*[11,2,-7] = [2,2,2];
        then 0.9*[2,2,2] + 0.1*[2,12,2] = [2,3,2]."""
        e = EMA(0.9)
        x = f32(1, 2, 3)
        e.update(x)
        x[:] = 100.0  # the average keeps its own copy
        assert e.value is not None and e.value.tolist() == [1.0, 2.0, 3.0]
        e.update(f32(11, 2, -7))
        close(e.value, [2.0, 2.0, 2.0])
        close(e.update(f32(2, 12, 2)), [2.0, 3.0, 2.0])
        assert e.updates == 3 and e.value.dtype == np.float32

    def test_state_round_trip(self):
        e = EMA(0.5)
        e.update(f32(2, 4, 6))
        state = e.state_dict()
        f = EMA(0.99)
        f.load_state_dict(state)
        state["value"][:] = 0  # a copy
        close(f.update(f32(0, 0, 2)), [1.0, 2.0, 4.0])  # 0.5*[2,4,6] + 0.5*[0,0,2]
        assert f.decay == 0.5 and f.updates == 2

    def test_bad_decay(self):
        with pytest.raises(ValueError):
            EMA(1.5)
