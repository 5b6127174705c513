"""The GPU-path options run on the CPU too (bf16 autocast, channels_last inputs) and stay deterministic."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from raydiff.config import ModelConfig
from raydiff.data.datasets import load_digits_set
from raydiff.diffusion import train_local
from raydiff.model import FlatModel, build_scheduler, build_unet


def _train(**kw):
    fm = FlatModel(build_unet(ModelConfig(), 8, 1, seed=0))
    images = load_digits_set().images
    batches = np.random.default_rng(0).integers(0, len(images), (3, 8))
    loss, _seen = train_local(
        fm, build_scheduler(ModelConfig()), images, batches, 2e-3, torch.Generator().manual_seed(0), **kw
    )
    return loss, fm.vector()


def test_bf16_autocast_trains_and_differs_from_fp32():
    l32, v32 = _train()
    l16, v16 = _train(autocast_bf16=True)
    assert np.isfinite(l16) and np.isfinite(v16).all()
    assert abs(l16 - l32) < 0.05 * l32  # the same computation at lower precision
    assert not np.array_equal(v16, v32)  # but really in bf16
    l16b, v16b = _train(autocast_bf16=True)
    assert l16 == l16b and np.array_equal(v16, v16b)  # deterministic


def test_channels_last_inputs_give_the_same_training():
    l1, v1 = _train()
    l2, v2 = _train(channels_last=True)
    np.testing.assert_allclose(v1, v2, rtol=1e-4, atol=1e-6)
    assert abs(l1 - l2) < 1e-4


@pytest.mark.slow
def test_compiled_client_trains_the_flat_model_like_eager():
    """train.compile: the compiled UNet's parameters are still views into the flat vector and its
    gradients still land in the flat gradient (else the flat Adam would see zeros). Inductor on the
    CPU (about 80 s to compile here) stands in for the GPU."""
    from raydiff.actors.client import ClientWorker, JobSpec
    from raydiff.config_load import load_config

    images = load_digits_set().images
    base = FlatModel(build_unet(ModelConfig(), 8, 1, seed=0)).vector()
    deltas = {}
    for comp in (False, True):
        cfg = load_config(
            {
                "model": {"preset": "tiny"},
                "data": {"image_size": 8},
                "clients": {"num_cpus": 1},
                "train": {"local_steps": 3, "batch_size": 8, "device": "cpu", "compile": comp},
            }
        )
        w = ClientWorker(cfg, images, "w")
        _metrics, deltas[comp], _ = w.train(JobSpec(0, 0, 1, np.arange(100), 3, 8), base)
        assert w.fm.grads_bound()
    assert np.abs(deltas[False]).max() > 1e-3  # it trained
    gap = np.abs(deltas[True] - deltas[False])
    # Adam normalises each step to ~lr (2e-3): where a gradient is ~0, rounding in the compiled kernels
    # flips the step (measured: max 2.6e-4); a different model would differ everywhere
    assert gap.max() < 2e-3, gap.max()
    assert np.mean(gap > 1e-5) < 0.01, np.mean(gap > 1e-5)
