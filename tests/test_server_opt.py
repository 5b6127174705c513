"""Server optimizers (Reddi et al. 2021) against hand-computed numbers, alone and inside FedAvg / FedBuff.

Hyperparameters are chosen so the square roots come out exact: with beta2 = 0.5 and tau = 1
(v0 = tau^2 = 1), FedAdam's v1 = 0.5 + 0.5 d^2 is 25 for d = 7 and 1 for d = +-1.
"""

from __future__ import annotations

import numpy as np
import pytest

from raydiff.strategies import (
    SGD,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedBuff,
    FedYogi,
    Update,
    make_server_optimizer,
)


def f32(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)


def close(actual: np.ndarray, expected: list[float]) -> None:
    np.testing.assert_allclose(actual, np.array(expected), rtol=1e-6, atol=1e-7)


class TestSGD:
    def test_step_adds_lr_times_delta(self):
        """[1,2,3] + 0.5*[2,-2,6] = [2,1,6]; the delta itself is left alone."""
        x, d = f32(1, 2, 3), f32(2, -2, 6)
        opt = SGD(0.5)
        opt.step(x, d)
        close(x, [2.0, 1.0, 6.0])
        assert d.tolist() == [2.0, -2.0, 6.0]
        assert opt.steps == 1 and x.dtype == np.float32

    def test_lr_must_be_positive(self):
        with pytest.raises(ValueError, match="lr"):
            SGD(0.0)


class TestFedAvgM:
    def test_two_steps(self):
        """lr=0.5, momentum=0.9. Step 1: m=[2,-2,6], x=[1,2,3]+[1,-1,3]=[2,1,6].
        Step 2 with d=[0,2,-6]: m=0.9*[2,-2,6]+[0,2,-6]=[1.8,0.2,-0.6], x=[2,1,6]+[0.9,0.1,-0.3]=[2.9,1.1,5.7].
        """
        x = f32(1, 2, 3)
        opt = FedAvgM(0.5, 0.9)
        opt.step(x, f32(2, -2, 6))
        close(x, [2.0, 1.0, 6.0])
        opt.step(x, f32(0, 2, -6))
        close(opt.m, [1.8, 0.2, -0.6])
        close(x, [2.9, 1.1, 5.7])

    def test_zero_momentum_is_sgd(self):
        x = f32(1, 2, 3)
        FedAvgM(0.5, 0.0).step(x, f32(2, -2, 6))
        close(x, [2.0, 1.0, 6.0])

    def test_bad_momentum(self):
        with pytest.raises(ValueError, match="momentum"):
            FedAvgM(1.0, 1.0)


class TestFedAdam:
    def test_two_steps(self):
        """lr=1, b1=0.5, b2=0.5, tau=1.
        Step 1, d=[7,-1,1]: m=[3.5,-0.5,0.5]; v=0.5*1+0.5*[49,1,1]=[25,1,1];
          x += m/(sqrt(v)+1) = [3.5/6, -0.5/2, 0.5/2] -> [1+7/12, 1.75, 3.25].
        Step 2, d=[5,1,1]: m=[1.75+2.5, -0.25+0.5, 0.25+0.5]=[4.25,0.25,0.75]; v=[12.5+12.5, 1, 1]=[25,1,1];
          x += [4.25/6, 0.125, 0.375] -> [1+7/12+17/24 = 55/24, 1.875, 3.625].
        (v0 = 0 instead of tau^2 would give v=0.5 at the -1 entry and 0.5/(sqrt(0.5)+1) != 0.25.)
        """
        x = f32(1, 2, 3)
        opt = FedAdam(1.0, beta1=0.5, beta2=0.5, tau=1.0)
        opt.step(x, f32(7, -1, 1))
        close(x, [1.5833333333333333, 1.75, 3.25])
        close(opt.v, [25.0, 1.0, 1.0])
        opt.step(x, f32(5, 1, 1))
        close(opt.m, [4.25, 0.25, 0.75])
        close(x, [2.2916666666666665, 1.875, 3.625])
        assert opt.steps == 2

    def test_v_starts_at_tau_squared(self):
        """Defaults b2=0.99, tau=1e-3, a zero delta: v = 0.99 * 1e-6, m = 0 and x does not move."""
        x = f32(1, 2, 3)
        opt = FedAdam(0.1)
        opt.step(x, f32(0, 0, 0))
        close(opt.v, [9.9e-7, 9.9e-7, 9.9e-7])
        assert x.tolist() == [1.0, 2.0, 3.0]


class TestFedYogi:
    def test_one_step_each_sign(self):
        """lr=1, b1=0.5, b2=0.75, tau=1, v0=1; d=[1.5, 1, 0.5], d^2=[2.25, 1, 0.25].
        sign(v0 - d^2) = [-1, 0, +1] -> v = [1 + 0.25*2.25, 1, 1 - 0.25*0.25] = [1.5625, 1, 0.9375].
        m = [0.75, 0.5, 0.25]; x += [0.75/2.25, 0.5/2, 0.25/(sqrt(0.9375)+1)]
          = [1/3, 0.25, 0.25/1.9682458365518543 = 0.12701665379258311].
        (FedAdam would give v = 0.75 + 0.25 d^2 = [1.3125, 1, 0.8125].)
        """
        x = f32(1, 2, 3)
        opt = FedYogi(1.0, beta1=0.5, beta2=0.75, tau=1.0)
        opt.step(x, f32(1.5, 1, 0.5))
        close(opt.v, [1.5625, 1.0, 0.9375])
        close(x, [1.3333333333333333, 2.25, 3.127016653792583])


class TestFedAdagrad:
    def test_one_step(self):
        """lr=1, b1=0.5, tau=1, v0=1; d=[0.75, -2.4, 0]: v = 1 + d^2 = [1.5625, 6.76, 1];
        m = [0.375, -1.2, 0]; x += [0.375/2.25, -1.2/3.6, 0] = [1/6, -1/3, 0].
        """
        x = f32(1, 2, 3)
        opt = FedAdagrad(1.0, beta1=0.5, tau=1.0)
        opt.step(x, f32(0.75, -2.4, 0))
        close(opt.v, [1.5625, 6.76, 1.0])
        close(x, [1.1666666666666667, 1.6666666666666667, 3.0])


@pytest.mark.parametrize(
    "make",
    [
        lambda: SGD(0.5),
        lambda: FedAvgM(0.5, 0.9),
        lambda: FedAdam(0.1, 0.5, 0.5, 1.0),
        lambda: FedYogi(0.1, 0.5, 0.75, 1.0),
        lambda: FedAdagrad(0.1, 0.5, 0.5, 1.0),
    ],
)
def test_state_dict_round_trip_resumes_exactly(make):
    """Save after one step, load into a fresh optimizer: the next step is bit-identical."""
    a, b = make(), make()
    xa = f32(1, 2, 3)
    a.step(xa, f32(2, -2, 6))
    state = a.state_dict()
    xb = xa.copy()
    b.load_state_dict(state)
    for arr in state.values():  # the state is a copy: mutating it does not touch the optimizer
        if isinstance(arr, np.ndarray):
            arr.fill(123.0)
    a.step(xa, f32(0.5, 1, -1))
    b.step(xb, f32(0.5, 1, -1))
    assert xa.tobytes() == xb.tobytes()
    assert a.steps == b.steps == 2


class TestFactory:
    def test_names(self):
        assert type(make_server_optimizer("sgd", 0.5)) is SGD
        m = make_server_optimizer("fedavgm", 0.5, momentum=0.7)
        assert type(m) is FedAvgM and m.momentum == 0.7
        a = make_server_optimizer("fedadam", 0.1, beta1=0.8, beta2=0.95, tau=1e-2)
        assert type(a) is FedAdam and (a.lr, a.beta1, a.beta2, a.tau) == (0.1, 0.8, 0.95, 1e-2)
        assert type(make_server_optimizer("fedyogi", 0.1)) is FedYogi
        assert type(make_server_optimizer("fedadagrad", 0.1)) is FedAdagrad

    def test_unknown_lists_allowed(self):
        with pytest.raises(ValueError, match="sgd, fedavgm, fedadagrad, fedadam, fedyogi"):
            make_server_optimizer("adam", 0.1)


class TestInsideStrategies:
    def test_fedavg_with_server_momentum(self):
        """Round 1 mean (sample-weighted, as in test_strategies) = [2, 2.5, 0.5]: m = that, x = [3, 4.5, 3.5].
        Round 2, one update [1,-1,1]: m = 0.5*[2,2.5,0.5] + [1,-1,1] = [2, 0.25, 1.25]; x = [5, 4.75, 4.75].
        """
        x = f32(1, 2, 3)
        s = FedAvg(optimizer=FedAvgM(1.0, 0.5))
        for i, (n, d) in enumerate([(1, (8, 0, -8)), (3, (0, 4, 4)), (4, (2, 2, 0))]):
            s.receive(x, 0, Update(i, 0, n, f32(*d)))
        assert s.end_round(x) is True
        close(x, [3.0, 4.5, 3.5])
        s.receive(x, 1, Update(0, 1, 2, f32(1, -1, 1)))
        assert s.end_round(x) is True
        close(x, [5.0, 4.75, 4.75])

    def test_fedbuff_with_fedadam(self):
        """K=2, p=0: mean([6,-2,2], [8,0,0]) = [7,-1,1], then FedAdam's step 1 above: [1+7/12, 1.75, 3.25].
        server_lr=100 is ignored once an optimizer is given.
        """
        x = f32(1, 2, 3)
        s = FedBuff(2, 100.0, 0.0, optimizer=FedAdam(1.0, beta1=0.5, beta2=0.5, tau=1.0))
        assert s.receive(x, 0, Update(0, 0, 1, f32(6, -2, 2))).status == "buffered"
        assert s.receive(x, 0, Update(1, 0, 1, f32(8, 0, 0))).status == "applied"
        close(x, [1.5833333333333333, 1.75, 3.25])

    def test_default_optimizer_is_sgd_with_server_lr(self):
        s = FedBuff(2, 0.7, 0.5)
        assert type(s.optimizer) is SGD and s.optimizer.lr == 0.7
        a = FedAvg(0.25)
        assert type(a.optimizer) is SGD and a.optimizer.lr == 0.25

    def test_empty_vectors_for_dry_runs(self):
        """Dry runs aggregate float32[0] vectors: every optimizer must accept them."""
        for opt in (SGD(1.0), FedAvgM(1.0, 0.9), FedAdam(0.1), FedYogi(0.1), FedAdagrad(0.1)):
            x = np.zeros(0, np.float32)
            opt.step(x, np.zeros(0, np.float32))
            assert x.shape == (0,)
