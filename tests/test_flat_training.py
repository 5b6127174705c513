"""The hot path of a client: one flat gradient, one flat Adam, the training set on the device.

Each trick must leave training exactly what it was: same weights bit for bit on the CPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from raydiff.config import ModelConfig
from raydiff.data.datasets import load_digits_set
from raydiff.diffusion import data_tensor, denoising_loss, job_generator, train_local
from raydiff.model import FlatModel, build_scheduler, build_unet

CFG = ModelConfig(preset="tiny", num_train_timesteps=50)


def _images() -> np.ndarray:
    return load_digits_set().images


def _batches(n_images: int, steps: int = 6, batch: int = 8) -> np.ndarray:
    return np.random.default_rng(4).integers(0, n_images, (steps, batch))


def _per_parameter_adam(images: np.ndarray, batches: np.ndarray, lr: float = 2e-3) -> tuple[float, np.ndarray]:
    """The textbook loop: torch's Adam over the module's parameters, one .grad per parameter."""
    fm = FlatModel(build_unet(CFG, 8, 1, seed=0))
    model, sched, gen = fm.module, build_scheduler(CFG), torch.Generator().manual_seed(9)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    total = 0.0
    for idx in batches:
        x0 = torch.from_numpy(images[idx])
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, 50, (len(idx),), generator=gen)
        loss = denoising_loss(model, sched, x0, t, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += float(loss.detach())
    return total / len(batches), fm.vector()


def _flat(images, batches, **kw) -> tuple[float, np.ndarray, FlatModel]:
    fm = FlatModel(build_unet(CFG, 8, 1, seed=0))
    loss, _ = train_local(fm, build_scheduler(CFG), images, batches, 2e-3, torch.Generator().manual_seed(9), **kw)
    return loss, fm.vector(), fm


def test_flat_adam_is_bitwise_the_per_parameter_adam():
    images = _images()
    batches = _batches(len(images))
    l_ref, w_ref = _per_parameter_adam(images, batches)
    l_flat, w_flat, fm = _flat(images, batches)
    assert l_flat == l_ref
    assert w_flat.tobytes() == w_ref.tobytes()
    assert fm.grads_bound()  # the gradients stayed views into fm.grad through every step
    assert not np.array_equal(w_flat, FlatModel(build_unet(CFG, 8, 1, seed=0)).vector())  # it did train


def test_training_set_as_a_tensor_trains_exactly_as_the_numpy_array():
    images = _images()
    batches = _batches(len(images))
    l1, w1, _ = _flat(images, batches)
    l2, w2, _ = _flat(torch.from_numpy(images.copy()), batches)
    assert l1 == l2 and w1.tobytes() == w2.tobytes()


def test_grads_are_rebound_after_something_set_them_to_none():
    fm = FlatModel(build_unet(CFG, 8, 1, seed=0))
    assert fm.grad is None and not fm.grads_bound()  # nothing allocated until a model trains
    fm.bind_grads()
    assert fm.grads_bound()
    fm.module.zero_grad(set_to_none=True)
    assert not fm.grads_bound()
    images = _images()
    loss, w, _ = _flat(images, _batches(len(images)))
    l2, _ = train_local(fm, build_scheduler(CFG), images, _batches(len(images)), 2e-3, torch.Generator().manual_seed(9))
    assert l2 == loss and fm.vector().tobytes() == w.tobytes()


def test_a_replaced_gradient_is_an_error_not_silent_non_training(monkeypatch):
    """If autograd ever stopped accumulating in place, the flat optimizer would see zeros: refuse."""
    fm = FlatModel(build_unet(CFG, 8, 1, seed=0))
    monkeypatch.setattr(FlatModel, "grads_bound", lambda self: False)
    images = _images()
    with pytest.raises(RuntimeError, match="FlatModel.grad"):
        train_local(fm, build_scheduler(CFG), images, _batches(len(images)), 2e-3, torch.Generator())


def test_fused_adam_on_the_flat_vector_matches(monkeypatch):
    """CUDA uses torch's fused Adam on the flat vector (one kernel a step); its CPU kernel runs the same
    code path here, on a tensor that does not itself require grad, and must agree to rounding."""
    images = _images()
    batches = _batches(len(images))
    _, w_ref, _ = _flat(images, batches)
    monkeypatch.setattr(FlatModel, "optimizer", lambda self, lr: torch.optim.Adam([self.flat], lr=lr, fused=True))
    _, w_fused, _ = _flat(images, batches)
    gap = np.abs(w_fused - w_ref)
    # Adam moves a weight by up to lr (2e-3) a step; where a gradient is ~0 the update is eps-dominated
    # and rounding shows (measured: 75 of 176,849 weights differ by up to 1.1e-4), everywhere else ~1e-7
    assert gap.max() < 0.1 * 2e-3
    assert np.mean(gap > 1e-6) < 0.001


def test_data_placement_policy():
    """The CPU keeps the numpy array (zero-copy); a device gets a tensor unless too big or told never.
    'meta' stands in for a GPU: a real device type, no memory."""
    images = np.zeros((10, 1, 8, 8), np.float32)  # 2,560 bytes
    assert data_tensor(images, "cpu", "always") is images
    on = data_tensor(images, "meta", "auto")
    assert isinstance(on, torch.Tensor) and on.device.type == "meta" and on.shape == images.shape
    assert data_tensor(images, "meta", "never") is images
    assert data_tensor(images, "meta", "auto", limit_bytes=1000) is images
    assert isinstance(data_tensor(images, "meta", "always", limit_bytes=1000), torch.Tensor)


def test_job_generator_on_cpu_draws_what_a_plain_generator_draws():
    a = torch.randn(5, generator=job_generator(7, "cpu"))
    b = torch.randn(5, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_loading_a_version_is_one_copy_into_the_same_storage():
    """No per-job state_dict: load() copies into the flat tensor the parameters already view, from a
    read-only array (as Ray's object store hands them out) without copying it first."""
    fm = FlatModel(build_unet(CFG, 8, 1, seed=0))
    ptr, n = fm.flat.data_ptr(), fm.size
    v = np.arange(n, dtype=np.float32) / n
    v.setflags(write=False)
    fm.load(v)
    assert fm.flat.data_ptr() == ptr
    lo, hi = ptr, ptr + 4 * n
    assert all(lo <= p.data_ptr() < hi for p in fm.module.parameters())
    first = next(fm.module.parameters())
    assert first.detach().reshape(-1)[:3].tolist() == pytest.approx(v[:3].tolist())
    out = fm.vector()
    assert out.tobytes() == v.tobytes() and out.flags.writeable
    out[:] = 0  # a copy: the model is untouched
    assert fm.flat[1].item() == pytest.approx(1 / n)


def test_server_hands_its_vector_to_the_object_store_without_a_copy():
    """Under Ray (copy_on_return=False) a new version is returned as the server's own array: Ray
    serialises it into the object store once, the only copy of that version."""
    from raydiff.actors import ParameterServer
    from raydiff.strategies import FedBuff

    ps = ParameterServer(np.zeros(3, np.float32), FedBuff(1, 1.0, 0.5), copy_on_return=False)
    out, vec = ps.submit(0, 0, 0, 5, np.ones(3, np.float32))
    assert out.status == "applied" and vec is ps.x
