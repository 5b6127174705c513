"""Grouped client training: G jobs as ONE vectorised computation (``torch.func.vmap`` over stacked weights).

Why: the small UNets of federated studies leave a GPU launch-bound. One job at a time launches
every kernel for one small batch; packing processes on the device helps but each still launches its
own. Here a step launches each kernel once for G jobs (FedJAX's ``for_each_client`` idea, in torch).

Each job stays exactly itself:
- its own start vector, index batches and ``torch.Generator`` (noise and timesteps are drawn per job
  in :func:`~raydiff.diffusion.train_local`'s order, then stacked);
- its own Adam state: the moments are rows of stacked tensors, stepped by torch's own functional
  Adam (``torch.optim.adam.adam``, the code ``torch.optim.Adam`` runs), so no update rule is restated;
- FedProx pulls each job towards its OWN start vector.

The stacked weights live in one ``(G, N)`` float32 tensor; each row is laid out as
:class:`~raydiff.model.FlatModel`'s flat vector. Every parameter the UNet sees is a strided view
into it, and its ``.grad`` a view into a ``(G, N)`` gradient, so autograd writes the whole gradient
in place and the optimizer steps 2-D tensors: no gather, no scatter, no per-parameter copy.

Unequal step counts: rows are ordered by step count (longest first), so the jobs still training at
step ``i`` are a PREFIX of the rows; a step runs on that prefix (a view), and a finished job's row
is never touched again. With one job left, the step runs without vmap, exactly as ``train_local``.

Equivalence: a job trained in a group equals the job trained alone up to float rounding (batched
convolutions and norms sum in a different order); a group of one is bitwise ``train_local`` on the
CPU. ``tests/test_grouped.py`` states and measures the tolerance.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call, vmap
from torch.optim.adam import adam

from .diffusion import add_prox_grad, batch_stream, drop_labels, job_generator
from .model import FlatModel

log = logging.getLogger(__name__)

BETAS = (0.9, 0.999)  # torch.optim.Adam's defaults, as FlatModel.optimizer uses them
EPS = 1e-8


@dataclass(frozen=True)
class GroupJob:
    """One job of a group: what :func:`~raydiff.diffusion.train_local` gets for a single job."""

    start: np.ndarray  # float32 (N,): the vector the job starts from (and FedProx's anchor)
    batches: np.ndarray  # (steps, batch) sample indices, as batch_stream makes them
    generator: torch.Generator  # its noise and timesteps, on the training device


@dataclass(frozen=True)
class GroupOutcome:
    """What one job of a group produced; ``vector`` is its final weights (delta = vector - start)."""

    vector: np.ndarray
    loss: float  # mean denoising loss over its steps, summed in order in double as train_local does
    samples: int


def job_inputs(
    seed: int, indices: np.ndarray, batch_size: int, steps: int, device: torch.device | str
) -> tuple[np.ndarray, torch.Generator]:
    """(batches, generator) of a job from its seed: the derivation ``ClientWorker.train`` uses.

    One place for it, so that a job's random draws are the same alone and in a group.
    """
    rng = np.random.default_rng(seed)
    gen = job_generator(int(rng.integers(2**63 - 1)), device)
    return batch_stream(indices, batch_size, steps, rng), gen


def _layout(fm: FlatModel) -> list[tuple[str, int, int, torch.Size]]:
    """(name, offset, numel, shape) of each parameter in ``fm.flat``, checked against the views themselves.

    FlatModel lays parameters out in ``module.parameters()`` order; ``named_parameters()`` walks the
    same order, which gives the names ``functional_call`` needs.
    """
    module = getattr(fm.module, "_orig_mod", fm.module)  # a torch.compile'd module wraps the original
    out, offset = [], 0
    base = fm.flat.data_ptr()
    for name, p in module.named_parameters():
        k = p.numel()
        if p.data_ptr() != base + 4 * offset:
            raise RuntimeError(
                f"parameter {name} is not the view of fm.flat[{offset}:{offset + k}] "
                "that FlatModel made; grouped training would train other weights"
            )
        out.append((name, offset, k, p.shape))
        offset += k
    if offset != fm.size:
        raise RuntimeError(f"the parameters cover {offset} of fm.flat's {fm.size} values")
    return out


class GroupTrainer:
    """Trains groups of jobs on one device; holds the stacked buffers so an actor allocates them once.

    Memory: four ``(capacity, N)`` float32 tensors (weights, gradients, two Adam moments), a fifth
    with FedProx (the anchors). The module of ``fm`` supplies the architecture; its own weights are
    neither read nor changed.
    """

    def __init__(
        self, fm: FlatModel, scheduler, capacity: int = 1, autocast_bf16: bool = False, channels_last: bool = False
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.module = getattr(fm.module, "_orig_mod", fm.module)
        self.layout = _layout(fm)
        self.n = fm.size
        self.device = fm.device
        self.scheduler = scheduler
        self.bf16 = autocast_bf16
        self.channels_last = channels_last
        self.capacity = 0
        self._grow(capacity)
        self._step_vmapped = vmap(self._loss_one)
        self._step_vmapped_cond = vmap(self._loss_one_cond)  # class-conditional: labels batched like the images
        self._checked: set[int] = set()  # row counts whose gradient views were verified after a backward pass

    # ------------------------------------------------------------------ buffers and views
    def _grow(self, capacity: int) -> None:
        self.w = torch.zeros(capacity, self.n, dtype=torch.float32, device=self.device)
        self.grad = torch.zeros_like(self.w)
        self.m = torch.zeros_like(self.w)
        self.v = torch.zeros_like(self.w)
        self.anchor: Optional[torch.Tensor] = None
        # bf16: the batched forward and backward run on a bf16 copy of the weights (see _losses)
        self.w16 = torch.zeros(capacity, self.n, dtype=torch.bfloat16, device=self.device) if self.bf16 else None
        self.g16 = torch.zeros_like(self.w16) if self.w16 is not None else None
        self.capacity = capacity
        self._views: dict[tuple[int, bool], dict[str, torch.Tensor]] = {}

    def _params(self, k: int, half: bool = False) -> dict[str, torch.Tensor]:
        """The weights of rows [0, k) as autograd leaves: strided views of ``w``, their grads views of ``grad``
        (with ``half``: of the bf16 copies ``w16``, ``g16``).

        ``k == 1`` gives unbatched shapes (the step then runs without vmap). Cached: views stay valid
        as long as the buffers live, and in-place updates of the buffers show through them.
        """
        got = self._views.get((k, half))
        if got is None:
            w, grad = (self.w16, self.g16) if half else (self.w, self.grad)
            assert w is not None and grad is not None
            got = {}
            for name, o, n, shape in self.layout:
                if k == 1:
                    p, g = w[0, o : o + n].view(shape), grad[0, o : o + n].view(shape)
                else:
                    p, g = w[:k, o : o + n].view(k, *shape), grad[:k, o : o + n].view(k, *shape)
                p = p.detach().requires_grad_()
                p.grad = g
                got[name] = p
            self._views[(k, half)] = got
        return got

    @staticmethod
    def _grads_bound(params: dict[str, torch.Tensor], grad: torch.Tensor) -> bool:
        lo, hi = grad.data_ptr(), grad.data_ptr() + grad.element_size() * grad.numel()
        return all(p.grad is not None and lo <= p.grad.data_ptr() < hi for p in params.values())

    # ------------------------------------------------------------------ the step
    def _loss_one(
        self, params: dict[str, torch.Tensor], noisy: torch.Tensor, t: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        """One job's DDPM loss with weights ``params`` (what denoising_loss computes, minus add_noise)."""
        return F.mse_loss(functional_call(self.module, params, (noisy, t)).sample.float(), noise)

    def _loss_one_cond(
        self,
        params: dict[str, torch.Tensor],
        noisy: torch.Tensor,
        t: torch.Tensor,
        noise: torch.Tensor,
        y: torch.Tensor,
    ) -> torch.Tensor:
        """:meth:`_loss_one` of a class-conditional UNet given the step's (possibly dropped) labels ``y``."""
        out = functional_call(self.module, params, (noisy, t), {"class_labels": y})
        return F.mse_loss(out.sample.float(), noise)

    def _losses(
        self, k: int, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, y: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """The (k,) losses of the active jobs, their gradients written into ``grad[:k]``.

        One job: exactly ``train_local``'s step (same ops, autocast and layout). Several: one vmapped
        forward and backward. bf16 there is NOT autocast, which does not reach through ``torch.vmap``
        (measured on torch 2.14, CPU: conv2d, linear, group_norm and attention all stay fp32 inside an
        autocast region under vmap). Instead the weights are rounded to a bf16 copy (one kernel), the
        UNet runs in bf16, the loss in fp32, and the bf16 gradient is widened into ``grad`` (one
        kernel): the gradient precision autocast gives too, whose casts of fp32 weights are
        differentiable bf16 roundings.
        """
        sched = self.scheduler
        grad = self.grad
        if k == 1:
            params = self._params(1)
            x, n, tt = x0[0], noise[0], t[0]
            if self.channels_last:
                x, n = x.contiguous(memory_format=torch.channels_last), n.contiguous(memory_format=torch.channels_last)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                if y is None:
                    loss = self._loss_one(params, sched.add_noise(x, n, tt), tt, n).reshape(1)
                else:
                    loss = self._loss_one_cond(params, sched.add_noise(x, n, tt), tt, n, y[0]).reshape(1)
        else:
            noisy = sched.add_noise(x0.flatten(0, 1), noise.flatten(0, 1), t.flatten()).view_as(x0)
            if self.channels_last:
                # vmap folds the group into the channels, (k, B, C, H, W) -> (B, k*C, H, W), for a grouped
                # convolution: this layout makes the folded tensor NHWC without a copy (per-job NHWC would not)
                noisy = noisy.permute(1, 3, 4, 0, 2).contiguous().permute(3, 0, 4, 1, 2)
            params = self._params(k, half=self.bf16)
            if self.w16 is not None and self.g16 is not None:
                self.w16[:k].copy_(self.w[:k])
                noisy = noisy.to(torch.bfloat16)
                grad = self.g16
            if y is None:
                loss = self._step_vmapped(params, noisy, t, noise)
            else:
                loss = self._step_vmapped_cond(params, noisy, t, noise, y)
        grad[:k].zero_()
        loss.sum().backward()  # jobs share no weights: each row gets exactly its own job's gradient
        if k not in self._checked and not self._grads_bound(params, grad):
            raise RuntimeError(
                "gradients did not accumulate into the group's gradient buffer (a .grad "
                "was replaced); the optimizer would not see them"
            )
        self._checked.add(k)
        if grad is not self.grad:
            self.grad[:k].copy_(grad[:k])
        return loss.detach()

    def _draw(
        self,
        gens: Sequence[torch.Generator],
        shape: tuple[int, ...],
        T: int,
        y: Optional[torch.Tensor] = None,
        label_dropout: float = 0.0,
        null_label: int = -1,
    ) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """Noise and timesteps (and with labels ``y`` (k, B), each job's dropped labels) of each active job
        from its own generator, in train_local's order, stacked."""
        noises, ts, ys = [], [], []
        for r, g in enumerate(gens):
            noises.append(torch.randn(shape, generator=g, device=g.device))
            ts.append(torch.randint(0, T, (shape[0],), generator=g, device=g.device))
            if y is not None:
                ys.append(drop_labels(y[r], g, label_dropout, null_label))
        yy = torch.stack(ys).to(self.device) if y is not None else None
        return torch.stack(noises).to(self.device), torch.stack(ts).to(self.device), yy

    def train(
        self,
        jobs: Sequence[GroupJob],
        images: np.ndarray | torch.Tensor,
        lr: float,
        prox_mu: float = 0.0,
        labels: np.ndarray | torch.Tensor | None = None,
        label_dropout: float = 0.0,
        null_label: int = -1,
    ) -> list[GroupOutcome]:
        """Train every job from its start vector; returns one outcome per job, in the order given.

        A fresh Adam per job (as ``train_local``); ``prox_mu`` > 0 is FedProx around each job's start.
        ``images``: a numpy array or a tensor on the training device (see ``data_tensor``).
        ``labels``, ``label_dropout``, ``null_label``: a class-conditional model, as in ``train_local``.
        """
        self._check(jobs, lr, prox_mu)
        G = len(jobs)
        if G > self.capacity:
            self._grow(G)
        steps = [len(j.batches) for j in jobs]
        order = sorted(range(G), key=lambda j: -steps[j])  # stable: equal step counts keep their order
        row_steps = [steps[j] for j in order]
        gens = [jobs[j].generator for j in order]
        B = jobs[0].batches.shape[1]
        w, grad, m, v = self.w[:G], self.grad[:G], self.m[:G], self.v[:G]
        for r, j in enumerate(order):
            w[r].copy_(torch.as_tensor(jobs[j].start))
        m.zero_()
        v.zero_()
        anchor = None
        if prox_mu > 0:
            if self.anchor is None or self.anchor.shape[0] < self.capacity:
                self.anchor = torch.empty_like(self.w)
            anchor = self.anchor[:G]
            anchor.copy_(w)
        on_device = isinstance(images, torch.Tensor)
        index: Any
        if on_device:  # every batch index of the group in one host-to-device copy
            pad = np.zeros((G, row_steps[0], B), np.int64)
            for r, j in enumerate(order):
                pad[r, : row_steps[r]] = jobs[j].batches
            index = torch.from_numpy(pad).to(images.device)
        else:
            index = [jobs[j].batches for j in order]
        self.module.train()
        T = self.scheduler.config.num_train_timesteps
        step_t = torch.zeros((), dtype=torch.float32, device=self.device if self.device.type == "cuda" else "cpu")
        fused = True if self.device.type == "cuda" else None  # as FlatModel.optimizer
        losses = torch.empty(row_steps[0], G, device=self.device)
        self._checked.clear()
        k = G
        for i in range(row_steps[0]):
            while row_steps[k - 1] <= i:  # the jobs still training are the first k rows
                k -= 1
            yb: Optional[torch.Tensor] = None
            if on_device:
                x0 = images[index[:k, i]]
                if labels is not None:
                    yb = torch.as_tensor(labels)[index[:k, i]]
            else:
                idx = np.stack([index[r][i] for r in range(k)])
                x0 = torch.from_numpy(images[idx]).to(self.device, non_blocking=True)
                if labels is not None:
                    yb = torch.as_tensor(np.asarray(labels)[idx]).to(self.device)
            noise, t, y = self._draw(gens[:k], tuple(x0.shape[1:]), T, yb, label_dropout, null_label)
            losses[i, :k] = self._losses(k, x0, noise, t, y)
            with torch.no_grad():
                if anchor is not None:
                    add_prox_grad(grad[:k], w[:k], anchor[:k], prox_mu)
                # torch.optim.Adam's own update (one shared step count: the active jobs are all at step i)
                adam(
                    [w[:k]],
                    [grad[:k]],
                    [m[:k]],
                    [v[:k]],
                    [],
                    [step_t],
                    fused=fused,
                    amsgrad=False,
                    beta1=BETAS[0],
                    beta2=BETAS[1],
                    lr=lr,
                    weight_decay=0.0,
                    eps=EPS,
                    maximize=False,
                )
        per_step = losses.tolist()  # one read for the whole group
        final = w.detach().to("cpu", copy=True).numpy()
        out: list[Optional[GroupOutcome]] = [None] * G
        for r, j in enumerate(order):
            s = row_steps[r]
            out[j] = GroupOutcome(final[r], sum(per_step[i][r] for i in range(s)) / s, s * B)
        return [o for o in out if o is not None]

    def _check(self, jobs: Sequence[GroupJob], lr: float, prox_mu: float) -> None:
        if not jobs:
            raise ValueError("a group needs at least one job")
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if prox_mu < 0:
            raise ValueError(f"prox_mu must be >= 0, got {prox_mu}")
        B = None
        for i, j in enumerate(jobs):
            s = np.asarray(j.start)
            if s.shape != (self.n,) or s.dtype != np.float32:
                raise ValueError(f"job {i}: start must be a float32 vector of {self.n} values, got {s.dtype} {s.shape}")
            if j.batches.ndim != 2 or len(j.batches) < 1:
                raise ValueError(f"job {i}: batches must be a non-empty (steps, batch) array, got {j.batches.shape}")
            if B is None:
                B = j.batches.shape[1]
            elif j.batches.shape[1] != B:  # vmap needs one batch shape; a run has one train.batch_size
                raise ValueError(f"job {i}: batch size {j.batches.shape[1]} differs from the group's {B}")


def train_group(
    fm: FlatModel,
    scheduler,
    images: np.ndarray | torch.Tensor,
    jobs: Sequence[GroupJob],
    lr: float,
    prox_mu: float = 0.0,
    autocast_bf16: bool = False,
    channels_last: bool = False,
    labels: np.ndarray | torch.Tensor | None = None,
    label_dropout: float = 0.0,
    null_label: int = -1,
) -> list[GroupOutcome]:
    """:meth:`GroupTrainer.train` with buffers sized for this group (an actor keeps one GroupTrainer)."""
    return GroupTrainer(fm, scheduler, len(jobs), autocast_bf16, channels_last).train(
        jobs, images, lr, prox_mu, labels, label_dropout, null_label
    )
