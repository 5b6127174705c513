"""One run's Ray side: start (or join) Ray, spawn the server, evaluator and client pool, tear them down."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import ray

from .actors import Evaluator, ParameterServer
from .config import Config
from .exchange import Exchange
from .hetero import Availability, ClientProfile
from .progress import Progress, chain
from .ray_exec.executor import RayExecutor
from .ray_exec.pool import ActorPool
from .ray_setup import init_ray, server_placement, shutdown_ray, size_pool
from .records import Records
from .sim.checkpoint import LoopState
from .sim.jobs import LoopResult
from .sim.orchestrator import Orchestrator
from .strategies import Schedule, Strategy

log = logging.getLogger(__name__)


@dataclass
class Collected:
    """What a finished run hands to the run folder, gathered from the actors phase by phase (runner._finish)."""

    vector: np.ndarray  # the final global vector
    export_vector: Optional[np.ndarray]  # what the strategy offers instead (the EMA), or None
    exported: np.ndarray  # what model/ holds: export_vector when eval.export_ema allows, else vector
    server_received: list[list[str]]  # the server's audit: kinds of data clients sent
    evals: list[dict[str, Any]]  # evals.parquet rows, one per version (a repeated version: the later row)
    grids: list[tuple[int, np.ndarray]]  # (version, samples) for samples/vNNNNNN.png
    final_samples: Optional[np.ndarray]  # samples/final.png, from the exported model (None: not computed)
    judge: dict[str, Any]  # summary.json additions: the digit judge's scores and the final_* sample metrics
    classes: dict[str, Any] = field(default_factory=dict)  # Evaluator.class_evaluate: utility, per-class quality


def send_by_value(strategy: Strategy) -> None:
    """Let Ray's workers unpickle a user's strategy whose module they cannot import (a file next to
    the user, a test module): cloudpickle then ships the class itself, not a reference to it."""
    from ray import cloudpickle

    s: Optional[Strategy] = strategy
    while s is not None:
        mod = type(s).__module__
        if mod != "__main__" and mod.split(".")[0] != "raydiff" and mod in sys.modules:
            cloudpickle.register_pickle_by_value(sys.modules[mod])
        s = getattr(s, "inner", None)


class Session:
    """Context manager: everything it started is gone when it exits, even on Ctrl-C or an error."""

    def __init__(
        self,
        cfg: Config,
        strategy: Strategy,
        train_images: np.ndarray,
        heldout_images: np.ndarray,
        x0: np.ndarray,
        exchange: Exchange,
        train_labels: Optional[np.ndarray] = None,
        heldout_labels: Optional[np.ndarray] = None,
    ) -> None:
        self.cfg = cfg
        self.strategy = strategy
        self.schedule: Schedule = strategy.schedule()
        self.train_labels, self.heldout_labels = train_labels, heldout_labels  # for the domain classifier (FID)
        self.x0 = x0
        self.exchange = exchange
        self.train_images = train_images
        self.heldout_images = heldout_images
        self.started_ray = False
        self.pool: ActorPool | None = None
        self.handles: list[Any] = []
        self.server: Any = None  # Ray actor handles (Ray's generic hints do not type .remote on methods)
        self.evaluator: Any = None
        self.records = Records(None)
        self.eval_rows: list[dict[str, Any]] = []  # evaluations back so far, in the order asked
        self.evals_seen = 0
        self.grid_images: list[tuple[int, np.ndarray]] = []
        self.grids_seen = 0

    def __enter__(self) -> Session:
        self.started_ray = init_ray(self.cfg)
        try:
            self.num_actors = size_pool(self.cfg, ray.cluster_resources(), self.schedule.jobs_in_flight)
            c = self.cfg.clients
            self.x0_ref = ray.put(self.x0)
            images_ref = ray.put(self.train_images)  # once; every actor maps it zero-copy
            place = server_placement(self.cfg)
            send_by_value(self.strategy)
            self.server = (
                ray.remote(ParameterServer)
                .options(num_cpus=0, **place)
                .remote(self.x0_ref, self.strategy, copy_on_return=False, compressor=self.exchange.compressor)
            )
            # The evaluator takes one client's GPU share (size_pool reserved it) and no CPU reservation:
            # it is idle most of the time, and must never wait behind busy clients for a slot.
            # (with GPU clients it needs a GPU node, which the head may not be: then Ray places it)
            self.evaluator = (
                ray.remote(Evaluator)
                .options(num_cpus=0, num_gpus=c.num_gpus, **(place if c.num_gpus == 0 else {}))
                .remote(
                    self.cfg,
                    self.heldout_images,
                    1.0,
                    heldout_labels=self.heldout_labels,
                    train_images=images_ref,
                    train_labels=self.train_labels,
                )
            )  # training set: for FID's domain classifier
            self.handles = [self.server, self.evaluator]
            # model.conditional: the labels travel as data beside the images (strategies never see them)
            labels_ref = ray.put(self.train_labels) if self.cfg.model.conditional else None
            self.pool = ActorPool(self.cfg, images_ref, self.num_actors, labels_ref)
            self.pool.wait_ready()
            # the server and evaluator too: their start-up (imports, a model) must not share the
            # loop's first seconds with the clients, nor count in the loop's time
            ray.get([self.server.get_version.remote(), self.evaluator.ready.remote()])
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def run(
        self,
        profiles: list[ClientProfile],
        parts: list[np.ndarray],
        availability: Availability,
        show_progress: bool,
        callback: Optional[Callable[[dict[str, Any]], None]] = None,
        on_checkpoint: Optional[Callable[[LoopState], None]] = None,
        resume: Optional[LoopState] = None,
        records: Optional[Records] = None,
    ) -> LoopResult:
        """The event loop. ``records``: where every settled job, evaluation row and sample grid goes as it
        happens (evaluations and grids are picked up at each new version, without waiting for them)."""
        bar = Progress(self.cfg, enabled=show_progress)
        assert self.pool is not None, "Session.run outside its with-block"
        self.executor = RayExecutor(self.pool, self.server, self.evaluator, self.cfg)
        self.records = records if records is not None else Records(None)
        if resume is not None:  # the checkpoint's evaluations are in the records already
            self.eval_rows = [dict(e) for e in resume.evals]
            self.evals_seen = len(resume.evals)

        def on_version(info: dict[str, Any]) -> None:
            self.poll()
            self.records.version(info)

        try:
            orch = Orchestrator(
                self.cfg,
                self.schedule,
                profiles,
                parts,
                availability,
                self.executor,
                self.x0_ref,
                self.exchange.down_bytes(self.x0.size),
                self.exchange.up_bytes(self.x0.size),
                stateful_clients=self.exchange.stateful,
                on_progress=chain(bar, on_version, callback),
                on_checkpoint=on_checkpoint,
                resume=resume,
                on_row=self.records.job,
            )
            self.orchestrator = orch
            log.info("event loop started with %d client actors", self.num_actors)
            return orch.run()
        finally:
            bar.close()

    # ------------------------------------------------------------------ after the loop, phase by phase
    def poll(self) -> None:
        """Hand the evaluations and sample grids that are back (in the order they were asked) to the records."""
        ex = self.executor
        while self.evals_seen < len(ex.eval_refs):
            ref = ex.eval_refs[self.evals_seen]
            if not ray.wait([ref], timeout=0)[0]:
                break
            row = ray.get(ref)
            self.eval_rows.append(row)
            self.evals_seen += 1
            self.records.evaluation(row)
        while self.grids_seen < len(ex.sample_refs):
            v, ref = ex.sample_refs[self.grids_seen]
            if not ray.wait([ref], timeout=0)[0]:
                break
            images = ray.get(ref)
            self.grid_images.append((v, images))
            self.grids_seen += 1
            self.records.grid(v, images)

    def essentials(self, loop: LoopResult, timeout: Optional[float] = None) -> Collected:
        """What the run folder cannot do without: the final vector, what model/ holds, the server's audit.
        Queues the final samples and the per-class evaluation on the evaluator (behind the final evaluation),
        to be picked up by :meth:`wait_final` if there is time. Raises GetTimeoutError after ``timeout`` s."""
        vector: np.ndarray = ray.get(loop.version_handle, timeout=timeout)
        export: Optional[np.ndarray] = ray.get(self.server.export_vector.remote(), timeout=timeout)
        received = [list(map(str, k)) for k in ray.get(self.server.audit.remote(), timeout=timeout)]
        exported = export if export is not None and self.cfg.eval.export_ema else vector
        self.final_ref = self.evaluator.sample.remote(exported, self.cfg.eval.num_samples, self.cfg.seed)
        # utility and per-class quality of the exported model (raydiff.utility; {} when off or unlabelled)
        self.classes_ref = self.evaluator.class_evaluate.remote(exported, loop.version)
        self.poll()
        return Collected(
            vector=vector,
            export_vector=export,
            exported=exported,
            server_received=received,
            evals=self.evals_by_version(),
            grids=list(self.grid_images),
            final_samples=None,
            judge={},
        )

    def evals_by_version(self) -> list[dict[str, Any]]:
        """The evaluation rows so far, one per version (a version asked twice: the later row, with FID, wins)."""
        return list({e["version"]: e for e in self.eval_rows}.values())

    def wait_evals(self, tail: Collected, loop: LoopResult, timeout: Optional[float] = None) -> None:
        """Every evaluation asked for (the final version's with FID among them) and every sample grid."""
        ex = self.executor
        ray.get(ex.eval_refs[self.evals_seen :] + [r for _, r in ex.sample_refs[self.grids_seen :]], timeout=timeout)
        self.poll()
        tail.evals = self.evals_by_version()
        tail.grids = list(self.grid_images)
        final_row = {e["version"]: e for e in tail.evals}.get(loop.version, {})
        from .metrics.suite import DOMAIN_COLUMNS

        tail.judge.update(
            {f"final_{k}": final_row[k] for k in (*DOMAIN_COLUMNS, "fid_inception") if k in final_row}
        )  # into summary.json, next to the digit judge's scores

    def wait_final(self, tail: Collected, timeout: Optional[float] = None) -> None:
        """The exported model's final samples (the grid, the digit judge's scores)."""
        final_samples: np.ndarray = ray.get(self.final_ref, timeout=timeout)
        tail.final_samples = final_samples
        if self.cfg.eval.judge and self.cfg.data.dataset == "digits":
            from .digit_judge import judge_digits

            tail.judge.update(judge_digits(final_samples))
        self.records.grid(-1, final_samples, final=True)

    def wait_classes(self, tail: Collected, timeout: Optional[float] = None) -> None:
        tail.classes = ray.get(self.classes_ref, timeout=timeout)

    def __exit__(self, *exc: Any) -> None:
        import time

        t0 = time.perf_counter()
        if self.pool is not None:
            self.pool.shutdown()
        for h in self.handles:
            try:
                ray.kill(h, no_restart=True)
            except Exception:  # noqa: BLE001
                pass
        if self.started_ray:
            shutdown_ray()  # and the reaper told, and our signal handlers re-armed
        log.info("Ray session torn down in %.1f s", time.perf_counter() - t0)
