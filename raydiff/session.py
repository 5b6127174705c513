"""One run's Ray side: start (or join) Ray, spawn the server, evaluator and client pool, tear them down."""
from __future__ import annotations

import logging
from typing import Any, Callable, Optional

import numpy as np
import ray

from .actors import Evaluator, ParameterServer
from .config import Config
from .hetero import Availability, ClientProfile
from .model import initial_vector
from .progress import Progress, chain
from .ray_setup import init_ray, size_pool
from .sim.orchestrator import LoopResult, Orchestrator
from .sim.pool import ActorPool
from .sim.ray_executor import RayExecutor
from .strategies import make_strategy

log = logging.getLogger(__name__)


class Session:
    """Context manager: everything it started is gone when it exits, even on Ctrl-C or an error."""

    def __init__(self, cfg: Config, train_images: np.ndarray, heldout_images: np.ndarray) -> None:
        self.cfg = cfg
        self.train_images = train_images
        self.heldout_images = heldout_images
        self.started_ray = False
        self.pool: ActorPool | None = None
        self.handles: list[Any] = []

    def __enter__(self) -> "Session":
        self.started_ray = init_ray(self.cfg)
        try:
            self.num_actors = size_pool(self.cfg, ray.cluster_resources())
            c = self.cfg.clients
            self.x0 = initial_vector(self.cfg.model, self.train_images.shape[-1], self.train_images.shape[1],
                                     self.cfg.seed)
            self.x0_ref = ray.put(self.x0)
            images_ref = ray.put(self.train_images)  # once; every actor maps it zero-copy
            self.server = ray.remote(ParameterServer).options(num_cpus=0).remote(
                self.x0_ref, make_strategy(self.cfg.strategy), copy_on_return=False)
            # The evaluator takes one client's GPU share (size_pool reserved it) and no CPU reservation:
            # it is idle most of the time, and must never wait behind busy clients for a slot.
            self.evaluator = ray.remote(Evaluator).options(num_cpus=0, num_gpus=c.num_gpus).remote(
                self.cfg, self.heldout_images, 1.0)
            self.handles = [self.server, self.evaluator]
            self.pool = ActorPool(self.cfg, images_ref, self.num_actors)
            self.pool.wait_ready()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def run(self, profiles: list[ClientProfile], parts: list[np.ndarray], availability: Availability,
            show_progress: bool, callback: Optional[Callable[[dict[str, Any]], None]] = None) -> LoopResult:
        bar = Progress(self.cfg, enabled=show_progress)
        self.executor = RayExecutor(self.pool, self.server, self.evaluator, self.cfg)
        try:
            orch = Orchestrator(self.cfg, profiles, parts, availability, self.executor, self.x0_ref,
                                vector_bytes=int(self.x0.nbytes), on_progress=chain(bar, callback))
            return orch.run()
        finally:
            bar.close()

    def collect(self, loop: LoopResult) -> dict[str, Any]:
        """Wait for evaluations and sample the final model (the only blocking evaluation work)."""
        vector = ray.get(loop.version_handle)
        final_ref = self.evaluator.sample.remote(loop.version_handle, self.cfg.eval.num_samples, self.cfg.seed)
        evals = ray.get(self.executor.eval_refs)
        grids = [(v, ray.get(r)) for v, r in self.executor.sample_refs]
        final_samples = ray.get(final_ref)
        judge: dict[str, Any] = {}
        if self.cfg.eval.judge and self.cfg.data.dataset == "digits":
            from .judge import judge_digits

            judge = judge_digits(final_samples)
        by_version = {e["version"]: e for e in evals}  # a version may be asked twice (final == scheduled)
        return dict(vector=vector, evals=list(by_version.values()), grids=grids, final_samples=final_samples,
                    judge=judge)

    def __exit__(self, *exc: Any) -> None:
        if self.pool is not None:
            self.pool.shutdown()
        for h in self.handles:
            try:
                ray.kill(h, no_restart=True)
            except Exception:  # noqa: BLE001
                pass
        if self.started_ray:
            ray.shutdown()
