"""FedProx (Li et al. 2020) in local training: the proximal gradient, and its pull toward the start."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from raydiff.config import ModelConfig
from raydiff.diffusion import add_prox_grad, batch_stream, train_local
from raydiff.model import FlatModel, build_scheduler, build_unet


class TestProxGradient:
    def test_hand_made_case(self):
        """mu=2, w=[1,2], w0=[0.5,4]: mu*(w-w0) = [1,-4]; added to an existing grad [0.1,0.1] -> [1.1,-3.9]."""
        w, grad = torch.tensor([1.0, 2.0]), torch.tensor([0.1, 0.1])
        add_prox_grad(grad, w, torch.tensor([0.5, 4.0]), 2.0)
        assert grad.tolist() == pytest.approx([1.1, -3.9], rel=1e-6)
        assert w.tolist() == [1.0, 2.0]  # the weights themselves do not move

    def test_zero_grad_and_autograd_agree(self):
        """From a zero grad exactly [1,-4]; autograd of mu/2*||w-w0||^2 gives the same."""
        grad = torch.zeros(2)
        add_prox_grad(grad, torch.tensor([1.0, 2.0]), torch.tensor([0.5, 4.0]), 2.0)
        assert grad.tolist() == [1.0, -4.0]
        q = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
        (2.0 / 2 * (q - torch.tensor([0.5, 4.0])).pow(2).sum()).backward()
        assert q.grad.tolist() == [1.0, -4.0]


@functools.cache
def _train(mu: float) -> tuple[np.ndarray, np.ndarray, float]:
    """10 Adam steps of the tiny UNet on fixed random images; returns (start, end, loss). Cached: read only."""
    cfg = ModelConfig(preset="tiny", num_train_timesteps=50)
    fm = FlatModel(build_unet(cfg, 8, 1, seed=0))
    start = fm.vector()
    images = np.random.default_rng(0).uniform(-1, 1, (32, 1, 8, 8)).astype(np.float32)
    batches = batch_stream(np.arange(32), 8, 10, np.random.default_rng(1))
    loss, seen = train_local(
        fm, build_scheduler(cfg), images, batches, 2e-3, torch.Generator().manual_seed(2), prox_mu=mu
    )
    assert seen == 80
    return start, fm.vector(), loss


class TestTrainLocal:
    def test_large_mu_stays_near_the_start(self):
        s0, w0, _loss0 = _train(0.0)
        s1, w1, loss1 = _train(1e4)
        assert s0.tobytes() == s1.tobytes()
        far, near = np.linalg.norm(w0 - s0), np.linalg.norm(w1 - s1)
        assert near < 0.25 * far, (near, far)  # measured: 0.44 vs 3.39
        assert np.isfinite(loss1)

    def test_mu_zero_is_plain_training(self):
        _s, w, _ = _train(0.0)
        cfg = ModelConfig(preset="tiny", num_train_timesteps=50)
        fm = FlatModel(build_unet(cfg, 8, 1, seed=0))
        images = np.random.default_rng(0).uniform(-1, 1, (32, 1, 8, 8)).astype(np.float32)
        batches = batch_stream(np.arange(32), 8, 10, np.random.default_rng(1))
        train_local(fm, build_scheduler(cfg), images, batches, 2e-3, torch.Generator().manual_seed(2))
        assert fm.vector().tobytes() == w.tobytes()

    def test_negative_mu_raises(self):
        cfg = ModelConfig(preset="tiny", num_train_timesteps=50)
        fm = FlatModel(build_unet(cfg, 8, 1, seed=0))
        with pytest.raises(ValueError, match="prox_mu"):
            train_local(
                fm,
                build_scheduler(cfg),
                np.zeros((1, 1, 8, 8), np.float32),
                np.zeros((1, 1), np.int64),
                1e-3,
                torch.Generator(),
                prox_mu=-1.0,
            )
