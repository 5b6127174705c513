"""DDPM training and sampling in plain torch (no Ray): what a client does with its data.

Every random draw comes from generators seeded by the caller, so a job's result depends on
(base vector, data, seed) only, not on which actor or process ran it.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .model import FlatModel


def batch_stream(indices: np.ndarray, batch_size: int, steps: int, rng: np.random.Generator) -> np.ndarray:
    """``steps`` batches drawn epoch by epoch (a fresh permutation per pass): shape (steps, batch)."""
    need = steps * batch_size
    passes = math.ceil(need / len(indices))
    stream = np.concatenate([rng.permutation(indices) for _ in range(passes)])[:need]
    return stream.reshape(steps, batch_size)


def denoising_loss(
    model: torch.nn.Module,
    scheduler,
    x0: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    class_labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """The DDPM epsilon-prediction loss of Ho et al. at given timesteps and noise (conditional on
    ``class_labels`` for a class-conditional UNet; None: the unconditional call, unchanged)."""
    noisy = scheduler.add_noise(x0, noise, t)
    out = model(noisy, t) if class_labels is None else model(noisy, t, class_labels=class_labels)
    return F.mse_loss(out.sample, noise)


def drop_labels(y: torch.Tensor, generator: torch.Generator, p: float, null: int) -> torch.Tensor:
    """Classifier-free guidance training (Ho and Salimans 2022): each label becomes the "no label" class
    ``null`` with probability ``p``. One uniform per label from the job's own generator (drawn after the
    step's noise and timesteps), so a job's labels depend on its seed alone, never on the actor."""
    drop = torch.rand(y.shape, generator=generator, device=generator.device).to(y.device) < p
    return torch.where(drop, torch.full_like(y, null), y)


def label_tensor(labels: np.ndarray | None, device: torch.device | str) -> np.ndarray | torch.Tensor | None:
    """The training labels as int64 where the images live (see :func:`data_tensor`): numpy on the CPU."""
    if labels is None:
        return None
    y = np.ascontiguousarray(labels, dtype=np.int64)
    return y if torch.device(device).type == "cpu" else torch.from_numpy(y).to(device)


def add_prox_grad(grad: torch.Tensor, w: torch.Tensor, w0: torch.Tensor, mu: float) -> None:
    """grad += mu * (w - w0): the gradient of FedProx's term mu/2 * ||w - w0||^2, added in place.

    Adding the gradient directly (instead of the term to the loss) costs no autograd graph over
    every parameter and gives the same update: the term's gradient is exactly mu * (w - w0). On
    flat vectors it is two elementwise ops for the whole model.
    """
    with torch.no_grad():
        grad.add_((w - w0).mul_(mu))


def data_tensor(
    images: np.ndarray, device: torch.device | str, policy: str = "auto", limit_bytes: int = 2 << 30
) -> np.ndarray | torch.Tensor:
    """The training set as a client's device should hold it.

    On a GPU, a set on the device lets a step index, noise and train without any host copy, and a
    host-to-device copy from pageable memory waits for the GPU to drain: one per step would stop
    the CPU from queueing work ahead, which is what a launch-bound small UNet lives on. ``policy``:
    ``always``, ``never``, or ``auto`` (on the device when it takes at most ``limit_bytes``). On the
    CPU the numpy array itself is used (zero-copy from Ray's object store).
    """
    device = torch.device(device)
    if device.type == "cpu" or policy == "never" or (policy == "auto" and images.nbytes > limit_bytes):
        return images
    with warnings.catch_warnings():  # an object-store array is read-only; it is only read, then copied
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(images).to(device)


def job_generator(seed: int, device: torch.device | str) -> torch.Generator:
    """The generator of a job's noise and timesteps, on the device that trains (no per-step copies).

    A CPU job draws exactly what it always did; a CUDA job draws a different (but seeded) stream.
    """
    return torch.Generator(device=torch.device(device)).manual_seed(seed)


def train_local(
    fm: FlatModel,
    scheduler,
    images: np.ndarray | torch.Tensor,
    batches: np.ndarray,
    lr: float,
    generator: torch.Generator,
    prox_mu: float = 0.0,
    autocast_bf16: bool = False,
    channels_last: bool = False,
    labels: np.ndarray | torch.Tensor | None = None,
    label_dropout: float = 0.0,
    null_label: int = -1,
) -> tuple[float, int]:
    """Run Adam over the given index batches in place on ``fm``. Returns (mean loss, samples seen).

    A fresh optimizer per job: client optimizer state does not survive between jobs, as in FedAvg.
    It steps the flat parameter vector (:meth:`FlatModel.optimizer`).
    ``prox_mu`` > 0 is FedProx (Li et al. 2020): the local objective gains mu/2 * ||w - w_start||^2,
    which keeps clients with skewed data near the model they were given. The returned loss is the
    denoising loss alone, so it stays comparable across values of mu.
    ``images``: a numpy array (indexed on the host, each batch copied to the device), or a tensor on
    ``fm.device`` (see :func:`data_tensor`). Noise and timesteps come from ``generator``, on its own
    device. Nothing in the loop waits for the device: losses are gathered there and read once.
    ``autocast_bf16`` runs the forward pass and loss under bf16 autocast (weights and optimizer stay
    fp32); ``channels_last`` feeds NHWC inputs, which GPU convolutions run faster (the weights keep
    their layout: they are views into the flat vector).
    ``labels`` (a class-conditional model only): every training image's class, indexed like ``images``;
    each step's labels are dropped to ``null_label`` with probability ``label_dropout`` (:func:`drop_labels`).
    None: the unconditional step, which draws nothing more from ``generator``.
    """
    if prox_mu < 0:
        raise ValueError(f"prox_mu must be >= 0, got {prox_mu}")
    model = fm.module
    model.train()
    fm.bind_grads()
    opt = fm.optimizer(lr)
    anchor = fm.flat.detach().clone() if prox_mu > 0 else None
    T = scheduler.config.num_train_timesteps
    on_device = isinstance(images, torch.Tensor)
    index = torch.as_tensor(batches, dtype=torch.long).to(images.device) if on_device else batches
    gdev = generator.device
    losses = torch.empty(len(batches), device=fm.device)
    for i in range(len(batches)):
        if on_device:
            x0 = images[index[i]]
        else:
            x0 = torch.from_numpy(images[index[i]]).to(fm.device, non_blocking=True)
        noise = torch.randn(x0.shape, generator=generator, device=gdev).to(fm.device)
        t = torch.randint(0, T, (x0.shape[0],), generator=generator, device=gdev).to(fm.device)
        y = None
        if labels is not None:
            yb = labels[index[i]]
            yb = yb if isinstance(yb, torch.Tensor) else torch.from_numpy(yb).to(fm.device)
            y = drop_labels(yb, generator, label_dropout, null_label)
        if channels_last:
            x0, noise = (
                x0.contiguous(memory_format=torch.channels_last),
                noise.contiguous(memory_format=torch.channels_last),
            )
        with torch.autocast(fm.device.type, dtype=torch.bfloat16, enabled=autocast_bf16):
            loss = denoising_loss(model, scheduler, x0, t, noise, y)
        loss = loss.float()
        assert fm.grad is not None  # FlatModel binds one flat gradient buffer (checked below)
        if i:
            fm.grad.zero_()
        loss.backward()
        if i == 0 and not fm.grads_bound():
            raise RuntimeError(
                "gradients did not accumulate into FlatModel.grad (a .grad was replaced); "
                "the flat optimizer would not see them"
            )
        if anchor is not None:
            add_prox_grad(fm.grad, fm.flat, anchor, prox_mu)
        opt.step()
        losses[i] = loss.detach()
    # one read for the whole job; summed in order in double, as the per-step float() sum it replaces
    return sum(losses.tolist()) / len(batches), int(batches.size)


@torch.no_grad()
def heldout_loss(
    fm: FlatModel,
    scheduler,
    images: np.ndarray,
    t: np.ndarray,
    noise: np.ndarray,
    batch_size: int = 256,
    labels: np.ndarray | None = None,
) -> float:
    """Denoising loss on held-out images at FIXED (t, noise) pairs: comparable across versions and runs.

    ``labels``: a conditional model's loss given each image's true class."""
    model = fm.module
    model.eval()
    total, n = 0.0, len(images)
    for s in range(0, n, batch_size):
        x0 = torch.from_numpy(images[s : s + batch_size]).to(fm.device)
        tt = torch.from_numpy(t[s : s + batch_size]).to(fm.device)
        eps = torch.from_numpy(noise[s : s + batch_size]).to(fm.device)
        y = None if labels is None else torch.from_numpy(np.asarray(labels[s : s + batch_size], np.int64)).to(fm.device)
        total += float(denoising_loss(model, scheduler, x0, tt, eps, y)) * len(x0)
    return total / n


def sampling_scheduler(scheduler, sampler: str = "ddpm", steps: int | None = None):
    """A FRESH scheduler for sampling, built from the training scheduler's config, its timesteps set.

    Fresh, because ``set_timesteps`` mutates a scheduler and the caller's one also serves the loss.
    DDIM (Song et al. 2021, eta = 0: deterministic given the initial noise) reuses the DDPM noise
    schedule through ``DDIMScheduler.from_config``, so the same network samples in ~50 steps instead
    of num_train_timesteps. ``steps`` None: every training timestep for DDPM, 50 for DDIM.
    """
    from diffusers import DDIMScheduler, DDPMScheduler

    if sampler not in ("ddpm", "ddim"):
        raise ValueError(f"sampler must be ddpm or ddim, got {sampler!r}")
    T = scheduler.config.num_train_timesteps
    steps = steps or (T if sampler == "ddpm" else min(50, T))
    s = (DDIMScheduler if sampler == "ddim" else DDPMScheduler).from_config(scheduler.config)
    s.set_timesteps(steps)
    return s


@torch.no_grad()
def sample_images(
    model: torch.nn.Module,
    scheduler,
    n: int,
    seed: int,
    sampler: str = "ddpm",
    steps: int | None = None,
    device: torch.device | str = "cpu",
    batch_size: int = 256,
    class_labels: np.ndarray | None = None,
    guidance_scale: float = 1.0,
) -> np.ndarray:
    """Draw ``n`` samples with DDPM (ancestral) or DDIM; returns (n, C, H, W) float32 in [-1, 1].

    One ``torch.Generator`` seeded with ``seed`` drives the initial noise and every DDPM step, so the
    same (weights, n, seed, sampler, steps) give the same images: evaluations of successive versions
    use common random numbers, and their differences are the model's, not the noise's.

    ``class_labels`` (a class-conditional UNet; one per sample, ``n`` must equal their number): sample
    those classes with classifier-free guidance, eps = eps_null + ``guidance_scale`` (eps_class - eps_null),
    both predictions from one forward pass over the doubled batch (scale 1: the conditional model alone,
    one pass). None: the unconditional model, exactly as before.
    """
    model.eval()
    cfg: Any = model.config  # a diffusers FrozenDict: in_channels, sample_size
    g = torch.Generator().manual_seed(seed)
    sched = sampling_scheduler(scheduler, sampler, steps)
    if class_labels is not None:
        if cfg.num_class_embeds is None:
            raise ValueError("class_labels given, but the UNet has no class embedding (an unconditional model)")
        if len(class_labels) != n:
            raise ValueError(f"{len(class_labels)} class labels for {n} samples")
        null = int(cfg.num_class_embeds) - 1
        all_y = torch.as_tensor(np.asarray(class_labels, dtype=np.int64))
        if len(all_y) and (int(all_y.min()) < 0 or int(all_y.max()) > null):
            raise ValueError(f"class labels must be in [0, {null}] ({null}: no label), got {class_labels}")
    out = []
    for s in range(0, n, batch_size):
        m = min(batch_size, n - s)
        x = torch.randn((m, cfg.in_channels, cfg.sample_size, cfg.sample_size), generator=g).to(device)
        y = None if class_labels is None else all_y[s : s + m].to(device)
        guided = y is not None and guidance_scale != 1.0
        yy = torch.cat([y, torch.full_like(y, null)]) if guided and y is not None else y
        for t in sched.timesteps:
            if y is None:
                eps = model(x, t.to(device)).sample
            elif guided:
                e_c, e_u = model(torch.cat([x, x]), t.to(device), class_labels=yy).sample.chunk(2)
                eps = e_u + guidance_scale * (e_c - e_u)
            else:
                eps = model(x, t.to(device), class_labels=y).sample
            x = sched.step(eps, t, x, generator=g).prev_sample
        out.append(x.clamp(-1, 1).float().cpu())
    return torch.cat(out).numpy()


def sample(
    fm: FlatModel,
    scheduler,
    n: int,
    seed: int,
    num_inference_steps: int | None = None,
    sampler: str = "ddpm",
    class_labels: np.ndarray | None = None,
    guidance_scale: float = 1.0,
) -> np.ndarray:
    """:func:`sample_images` for a FlatModel (its module, on its device)."""
    return sample_images(
        fm.module,
        scheduler,
        n,
        seed,
        sampler,
        num_inference_steps,
        fm.device,
        class_labels=class_labels,
        guidance_scale=guidance_scale,
    )
