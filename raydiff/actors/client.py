"""ClientWorker: one model replica that trains jobs for any simulated client it is handed."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..config import Config
from ..diffusion import batch_stream, train_local
from ..model import FlatModel, build_scheduler, build_unet
from .device import node_id, setup_torch


@dataclass(frozen=True)
class JobSpec:
    """Everything a job needs besides the base vector; small, so client state travels with the job."""

    job_id: int
    client_id: int
    seed: int
    indices: np.ndarray  # this client's sample indices into the training set
    steps: int
    batch_size: int


class ClientWorker:
    """Holds the training set (zero-copy from the object store) and a UNet on its device."""

    def __init__(self, cfg: Config, images: np.ndarray, name: str) -> None:
        self.device = setup_torch(cfg.clients.num_cpus, cfg.train.device)
        self.images = images
        self.lr = cfg.train.lr
        self.name = name
        self.fm = FlatModel(build_unet(cfg.model, images.shape[-1], images.shape[1]), self.device)
        self.scheduler = build_scheduler(cfg.model)
        self.node = node_id()

    def train(self, job: JobSpec, base: np.ndarray) -> tuple[dict[str, Any], np.ndarray]:
        """Train from ``base``; return (metrics, delta = x_local - x_base as float32)."""
        t0 = time.perf_counter()
        self.fm.load(base)
        rng = np.random.default_rng(job.seed)
        gen = torch.Generator().manual_seed(int(rng.integers(2**63 - 1)))
        batches = batch_stream(job.indices, job.batch_size, job.steps, rng)
        loss, seen = train_local(self.fm, self.scheduler, self.images, batches, self.lr, gen)
        delta = self.fm.vector()
        delta -= base
        metrics = dict(job_id=job.job_id, train_loss=loss, samples_trained=seen, actor=self.name,
                       node_id=self.node, wall_seconds=time.perf_counter() - t0)
        return metrics, delta

    def ping(self) -> str:
        return self.node
