"""ClientWorker: one model replica that trains jobs for any simulated client it is handed."""
from __future__ import annotations

import time
from typing import Any, Optional

import numpy as np
import torch

from ..config import Config
from ..diffusion import batch_stream, data_tensor, job_generator, train_local
from ..exchange import make_exchange
from ..messages import JobMetrics, JobSpec
from ..model import FlatModel, build_scheduler, build_unet
from .device import node_id, setup_torch


class ClientWorker:
    """Holds the training set (zero-copy from the object store, or once on its GPU) and a UNet on its device."""

    def __init__(self, cfg: Config, images: np.ndarray, name: str) -> None:
        self.device = setup_torch(cfg.clients.num_cpus, cfg.train.device)
        self.images = data_tensor(images, self.device, cfg.train.data_on_device)
        self.lr = cfg.train.lr
        self.prox_mu = cfg.train.prox_mu
        self.name = name
        self.fm = FlatModel(build_unet(cfg.model, images.shape[-1], images.shape[1]), self.device)
        self.scheduler = build_scheduler(cfg.model)
        self.exchange = make_exchange(cfg, self.fm.module)
        self.bf16 = cfg.train.precision == "bf16"
        self.channels_last = cfg.train.channels_last
        if cfg.train.compile:  # same parameters (still views into fm.flat), a compiled forward
            self.fm.module = torch.compile(self.fm.module)
        self.node = node_id()

    def train(self, job: JobSpec, base: np.ndarray, state: Optional[dict[str, Any]] = None
              ) -> tuple[JobMetrics, Any, Optional[dict[str, Any]]]:
        """Train from ``base``; return (metrics, payload, the client's new state).

        The payload is the delta x_local - x_start (float32), or its compressed form. ``state`` is
        what this simulated client kept from its previous job: an error-feedback residual, and with
        partial exchange its private copy of the parameters that are never sent.
        """
        t0 = time.perf_counter()
        state = state or {}
        xch = self.exchange
        start = base
        if xch.mask is not None and state.get("local") is not None:
            start = np.where(xch.mask, base, state["local"])
        self.fm.load(start)
        rng = np.random.default_rng(job.seed)
        gen = job_generator(int(rng.integers(2**63 - 1)), self.device)
        batches = batch_stream(job.indices, job.batch_size, job.steps, rng)
        loss, seen = train_local(self.fm, self.scheduler, self.images, batches, self.lr, gen, self.prox_mu,
                                 autocast_bf16=self.bf16, channels_last=self.channels_last)
        local = self.fm.vector()
        delta = local - start
        new_state = None
        if xch.compressor is None:
            payload = delta
        else:
            payload, _, residual = xch.compressor.encode(delta, state.get("residual"))
            if xch.stateful:
                new_state = dict(residual=residual, local=local if xch.mask is not None else None)
        metrics = JobMetrics(job.job_id, loss, seen, self.name, self.node, time.perf_counter() - t0)
        return metrics, payload, new_state

    def ping(self) -> str:
        return self.node
