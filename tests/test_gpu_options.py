"""The GPU-path options run on the CPU too (bf16 autocast, channels_last inputs) and stay deterministic."""
from __future__ import annotations

import numpy as np
import torch

from raydiff.config import ModelConfig
from raydiff.data.datasets import load_digits_set
from raydiff.diffusion import train_local
from raydiff.model import FlatModel, build_scheduler, build_unet


def _train(**kw):
    fm = FlatModel(build_unet(ModelConfig(), 8, 1, seed=0))
    images = load_digits_set().images
    batches = np.random.default_rng(0).integers(0, len(images), (3, 8))
    loss, seen = train_local(fm, build_scheduler(ModelConfig()), images, batches, 2e-3,
                             torch.Generator().manual_seed(0), **kw)
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
