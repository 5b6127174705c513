"""ClientWorker: one model replica that trains jobs for any simulated client it is handed."""

from __future__ import annotations

import time
import warnings
from typing import Any, Optional, cast

import numpy as np
import torch

from ..config import Config
from ..diffusion import data_tensor, label_tensor, train_local
from ..exchange import make_exchange
from ..grouped import GroupJob, GroupTrainer, job_inputs
from ..messages import JobMetrics, JobSpec
from ..model import FlatModel, build_scheduler, build_unet, num_classes_of
from .device import node_id, setup_torch


class ClientWorker:
    """Holds the training set (zero-copy from the object store, or once on its GPU) and a UNet on its device."""

    def __init__(self, cfg: Config, images: np.ndarray, name: str, labels: Optional[np.ndarray] = None) -> None:
        self.device = setup_torch(cfg.clients.num_cpus, cfg.train.device)
        self.images = data_tensor(images, self.device, cfg.train.data_on_device)
        self.lr = cfg.train.lr
        self.prox_mu = cfg.train.prox_mu
        self.name = name
        # model.conditional: the training set's labels travel as data beside the images (the object store);
        # a job trains on its own images' labels, with classifier-free label dropout from its own generator
        self.conditional = cfg.model.conditional
        if self.conditional and labels is None:
            raise ValueError("model.conditional: the client actor needs the training labels")
        k = num_classes_of(labels) if self.conditional else None
        self.labels = label_tensor(labels, self.device) if self.conditional else None
        self.label_dropout, self.null_label = cfg.train.label_dropout, (k if k is not None else -1)
        self.fm = FlatModel(build_unet(cfg.model, images.shape[-1], images.shape[1], num_classes=k), self.device)
        self.scheduler = build_scheduler(cfg.model)
        self.exchange = make_exchange(cfg, self.fm.module)
        self.bf16 = cfg.train.precision == "bf16"
        self.channels_last = cfg.train.channels_last
        if cfg.train.compile:  # same parameters (still views into fm.flat), a compiled forward
            self.fm.module = cast(torch.nn.Module, torch.compile(self.fm.module))
        # train.group_size > 1: groups of jobs train as one vmapped computation (raydiff/grouped.py); the
        # trainer keeps its stacked buffers between groups (config refuses compile with groups)
        self.grouper = (
            GroupTrainer(self.fm, self.scheduler, cfg.train.group_size, self.bf16, self.channels_last)
            if cfg.train.group_size > 1
            else None
        )
        self.node = node_id()

    def train(
        self, job: JobSpec, base: np.ndarray, state: Optional[dict[str, Any]] = None
    ) -> tuple[JobMetrics, Any, Optional[dict[str, Any]]]:
        """Train from ``base``; return (metrics, payload, the client's new state).

        The payload is the delta x_local - x_start (float32), or its compressed form. ``state`` is
        what this simulated client kept from its previous job: an error-feedback residual, and with
        partial exchange its private copy of the parameters that are never sent.
        """
        t0 = time.perf_counter()
        start = self._start(base, state)
        self.fm.load(start)
        batches, gen = job_inputs(job.seed, job.indices, job.batch_size, job.steps, self.device)
        loss, seen = train_local(
            self.fm,
            self.scheduler,
            self.images,
            batches,
            self.lr,
            gen,
            self.prox_mu,
            autocast_bf16=self.bf16,
            channels_last=self.channels_last,
            labels=self.labels,
            label_dropout=self.label_dropout,
            null_label=self.null_label,
        )
        return self._finish(job, start, self.fm.vector(), loss, seen, state, t0)

    def train_group(self, specs: list[JobSpec], *refs: Any) -> tuple[Any, ...]:
        """Train ``k = len(specs)`` jobs as ONE vectorised computation (:class:`~raydiff.grouped.GroupTrainer`).

        ``refs``: the k base vectors, then the k client states (separate arguments, because Ray resolves
        only top-level ObjectRefs). Returns ``train``'s three results per job, flat: (m0, p0, s0, m1, ...),
        so that each job keeps its own object-store refs. A group of one is an ordinary job.
        Each job's ``wall_seconds`` is its share (1/k) of the group's wall time.
        """
        k = len(specs)
        if len(refs) != 2 * k:
            raise ValueError(f"train_group: {k} jobs need {k} bases and {k} states, got {len(refs)} values")
        bases, states = refs[:k], refs[k:]
        if k == 1:
            return self.train(specs[0], bases[0], states[0])
        if self.grouper is None:
            raise RuntimeError("train_group with several jobs on an actor built with train.group_size 1")
        t0 = time.perf_counter()
        starts = [self._start(b, s) for b, s in zip(bases, states)]
        jobs = [
            GroupJob(x, *job_inputs(j.seed, j.indices, j.batch_size, j.steps, self.device))
            for j, x in zip(specs, starts)
        ]
        with warnings.catch_warnings():  # the group's parameters are strided views on purpose (grouped.py)
            warnings.filterwarnings("ignore", message="grad and param do not obey the gradient layout contract")
            outcomes = self.grouper.train(
                jobs, self.images, self.lr, self.prox_mu, self.labels, self.label_dropout, self.null_label
            )
        out: list[Any] = []
        for j, x, o, s in zip(specs, starts, outcomes, states):
            out.extend(self._finish(j, x, o.vector, o.loss, o.samples, s, t0, k))
        return tuple(out)

    def _start(self, base: np.ndarray, state: Optional[dict[str, Any]]) -> np.ndarray:
        """The vector a job starts from: the base, with partial exchange the client's private parts restored."""
        local = (state or {}).get("local")
        if self.exchange.mask is not None and local is not None:
            return np.where(self.exchange.mask, base, local)
        return base

    def _finish(
        self,
        job: JobSpec,
        start: np.ndarray,
        local: np.ndarray,
        loss: float,
        seen: int,
        state: Optional[dict[str, Any]],
        t0: float,
        share: int = 1,
    ) -> tuple[JobMetrics, Any, Optional[dict[str, Any]]]:
        """(metrics, payload, new state) of a job that trained from ``start`` to ``local``; its wall time is
        1/``share`` of the time since ``t0`` (a group's jobs share its time)."""
        xch = self.exchange
        delta = local - start
        new_state = None
        if xch.compressor is None:
            payload = delta
        else:
            payload, _, residual = xch.compressor.encode(delta, (state or {}).get("residual"))
            if xch.stateful:
                new_state = dict(residual=residual, local=local if xch.mask is not None else None)
        wall = (time.perf_counter() - t0) / share
        return JobMetrics(job.job_id, loss, seen, self.name, self.node, wall), payload, new_state

    def ping(self) -> str:
        return self.node
