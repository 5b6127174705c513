"""The event loop: dispatch jobs at virtual times, apply their results in (virtual time, seq) order.

Real training of every in-flight job runs in parallel on the actor pool; the loop only ever waits
for the job whose virtual finish time is earliest. Results therefore depend on the seed alone, not
on how many actors there are or which finished first in real time (ARCHITECTURE.md).
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, RayTaskError

from ..actors import JobSpec
from ..config import Config
from ..diffusion import steps_for
from ..errors import RaydiffError
from ..hetero import ClientProfile, JobPlan, plan_job
from .clock import EventQueue
from .pool import ActorPool, Ticket
from .selection import IdleSet

log = logging.getLogger(__name__)

_ACTOR_LOST = (RayActorError, ActorDiedError, ActorUnavailableError)


@dataclass
class Job:
    spec: JobSpec
    plan: JobPlan
    base_version: int
    dispatch_vtime: float
    ticket: Optional[Ticket] = None
    row: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoopResult:
    rows: list[dict[str, Any]]
    version: int
    vtime: float
    interrupted: bool
    version_ref: Any
    eval_refs: list[Any]
    sample_refs: list[tuple[int, Any]]
    actors_replaced: int


class Orchestrator:
    """Owns the virtual clock, the event heap and job bookkeeping; talks to actors through refs only."""

    def __init__(self, cfg: Config, profiles: list[ClientProfile], parts: list[np.ndarray], pool: ActorPool,
                 server: Any, evaluator: Any, x0_ref: Any, vector_bytes: int,
                 on_progress: Optional[Callable[[dict[str, Any]], None]] = None) -> None:
        self.cfg = cfg
        self.profiles = profiles
        self.parts = parts
        self.pool = pool
        self.server = server
        self.evaluator = evaluator
        self.vector_bytes = vector_bytes
        self.on_progress = on_progress or (lambda info: None)
        self.sync = cfg.strategy.name == "fedavg"
        self.needs_base = cfg.strategy.name == "fedasync"
        self.width = cfg.strategy.clients_per_round if self.sync else cfg.strategy.concurrency
        self.select_rng = np.random.default_rng([cfg.seed, 2])
        self.plan_rng = np.random.default_rng([cfg.seed, 3])
        self.idle = IdleSet(len(profiles))
        self.queue: EventQueue[Job] = EventQueue()
        self.rows: dict[int, dict[str, Any]] = {}
        self.pending_rows: dict[int, dict[str, Any]] = {}  # buffered in the server, not yet in a version
        self.version = 0
        self.now = 0.0
        self.current_ref = x0_ref
        self.version_refs: dict[int, Any] = {0: x0_ref}  # bases still referenced by in-flight jobs
        self.base_count: dict[int, int] = {}
        self.next_job = 0
        self.round_open = 0
        self.eval_refs: list[Any] = []
        self.sample_refs: list[tuple[int, Any]] = []
        self.recent_loss: list[float] = []
        self.counts = dict(applied=0, dropped=0, failed=0, rejected=0)
        self.active: Optional[Job] = None  # popped, not yet settled (matters on Ctrl-C)

    # ------------------------------------------------------------------ dispatch
    def _dispatch(self) -> None:
        client = self.idle.pick(self.select_rng)
        n = len(self.parts[client])
        steps = steps_for(n, self.cfg.train.batch_size, self.cfg.train.local_steps, self.cfg.train.local_epochs)
        samples = steps * self.cfg.train.batch_size
        plan = plan_job(self.profiles[client], samples, self.vector_bytes, self.vector_bytes, self.plan_rng)
        job_id = self.next_job
        self.next_job += 1
        seed = int(np.random.SeedSequence([self.cfg.seed, 1, job_id]).generate_state(1, np.uint64)[0] >> 1)
        spec = JobSpec(job_id, client, seed, self.parts[client], steps, self.cfg.train.batch_size)
        job = Job(spec, plan, self.version, self.now)
        job.row = dict(job_id=job_id, client_id=client, actor="", node_id="", dispatch_vtime=self.now,
                       finish_vtime=self.now + plan.end_s, status="", reason=plan.failure_reason,
                       base_version=self.version, applied_version=None, staleness=None, num_samples=n,
                       samples_trained=samples, train_loss=math.nan, wall_seconds=math.nan,
                       download_s=plan.download_s, compute_s=plan.compute_s, upload_s=plan.upload_s,
                       upload_bytes=self.vector_bytes, download_bytes=self.vector_bytes)
        if not plan.fails:  # a job doomed to drop out is not trained for real: its result is never used
            job.ticket = self.pool.submit(spec, self.current_ref)
            self.base_count[self.version] = self.base_count.get(self.version, 0) + 1
        self.queue.push(self.now + plan.end_s, job)

    def _refill(self) -> None:
        if self.sync:
            if self.round_open == 0:
                k = min(self.width, len(self.idle))
                for _ in range(k):
                    self._dispatch()
                self.round_open = k
            return
        while len(self.queue) < self.width and len(self.idle):
            self._dispatch()

    # ------------------------------------------------------------------ results
    def _release_base(self, base_version: int) -> None:
        c = self.base_count[base_version] - 1
        if c:
            self.base_count[base_version] = c
            return
        del self.base_count[base_version]
        if base_version != self.version:
            self.version_refs.pop(base_version, None)

    def _final(self, row: dict[str, Any], status: str, reason: str = "") -> None:
        row["status"] = status
        if reason:
            row["reason"] = reason
        self.counts[status] += 1
        self.rows[row["job_id"]] = row

    def _finish(self, job: Job) -> None:
        row = job.row
        self.idle.release(job.spec.client_id)
        if job.ticket is None:
            self._final(row, "dropped")
            return
        self.pool.done(job.ticket)
        try:
            metrics = ray.get(job.ticket.metrics_ref)
        except _ACTOR_LOST as exc:
            self._release_base(job.base_version)
            self.pool.replace(job.ticket)
            self._final(row, "failed", f"actor_lost: {type(exc).__name__}")
            return
        except RayTaskError as exc:
            raise RaydiffError(f"a client job raised an error, so the run stops:\n{exc}") from None
        row.update(actor=metrics["actor"], node_id=metrics["node_id"], train_loss=metrics["train_loss"],
                   wall_seconds=metrics["wall_seconds"])
        self.recent_loss = (self.recent_loss + [metrics["train_loss"]])[-20:]
        base_ref = self.version_refs[job.base_version] if self.needs_base else None
        out_ref, vec_ref = self.server.submit.options(num_returns=2).remote(
            job.spec.job_id, job.spec.client_id, job.base_version, len(job.spec.indices), job.ticket.delta_ref,
            base_ref)
        out = ray.get(out_ref)
        self._release_base(job.base_version)
        row["staleness"] = out["staleness"]
        if out["status"] == "rejected":
            self._final(row, "rejected", out["reason"])
        else:
            self.pending_rows[job.spec.job_id] = row
        self._after_server(out, vec_ref)

    def _after_server(self, out: dict[str, Any], vec_ref: Any) -> None:
        """Mark the jobs a new version absorbed as applied, adopt the new vector, schedule evaluations."""
        if out["version"] == self.version:
            return
        if self.base_count.get(self.version, 0) == 0:
            self.version_refs.pop(self.version, None)
        self.version = out["version"]
        self.current_ref = vec_ref
        self.version_refs[self.version] = vec_ref
        for jid in out["applied_jobs"]:
            row = self.pending_rows.pop(jid)
            row["applied_version"] = self.version
            self._final(row, "applied")
        if self.version % self.cfg.eval.every_versions == 0:
            self.eval_refs.append(self.evaluator.evaluate.remote(self.version, self.now, vec_ref))
        every = self.cfg.eval.sample_every_versions
        if every and self.version % every == 0:
            self.sample_refs.append((self.version, self.evaluator.sample.remote(
                vec_ref, self.cfg.eval.num_samples, self.cfg.seed)))
        self.on_progress(dict(version=self.version, vtime=self.now,
                              loss=float(np.mean(self.recent_loss)) if self.recent_loss else math.nan,
                              **self.counts))

    def _close_round(self) -> None:
        out_ref, vec_ref = self.server.end_round.options(num_returns=2).remote()
        self._after_server(ray.get(out_ref), vec_ref)

    # ------------------------------------------------------------------ loop
    def _done(self) -> bool:
        r = self.cfg.run
        if r.max_updates is not None and self.version >= r.max_updates:
            return True
        return r.max_vtime is not None and len(self.queue) > 0 and self.queue.peek_time() > r.max_vtime

    def run(self) -> LoopResult:
        interrupted = False
        self.eval_refs.append(self.evaluator.evaluate.remote(0, 0.0, self.current_ref))
        try:
            self._refill()
            while len(self.queue) and not self._done():
                self.now, self.active = self.queue.pop()
                self._finish(self.active)
                self.active = None
                if self.sync:
                    self.round_open -= 1
                    if self.round_open == 0:
                        self._close_round()
                if not self._done():
                    self._refill()
        except KeyboardInterrupt:
            interrupted = True
            log.warning("interrupted: writing a consistent run folder for version %d", self.version)
        self._wind_down(interrupted)
        if self.version % self.cfg.eval.every_versions:
            self.eval_refs.append(self.evaluator.evaluate.remote(self.version, self.now, self.current_ref))
        return LoopResult([self.rows[k] for k in sorted(self.rows)], self.version, self.now, interrupted,
                          self.current_ref, self.eval_refs, self.sample_refs, self.pool.replaced)

    def _wind_down(self, interrupted: bool) -> None:
        """Give every dispatched job its one final status: in flight -> rejected; buffered -> rejected."""
        reason = "interrupted" if interrupted else "run_stopped"
        if self.active is not None:
            jid = self.active.spec.job_id
            if jid not in self.rows and jid not in self.pending_rows:
                self._final(self.active.row, "rejected", reason)
        for _, job in self.queue.drain():
            self.idle.release(job.spec.client_id)
            if job.ticket is not None:
                ray.cancel(job.ticket.metrics_ref, force=False)
            self._final(job.row, "rejected", reason)
        try:
            leftover = ray.get(self.server.discard_pending.remote())
        except KeyboardInterrupt:
            leftover = list(self.pending_rows)
        for jid in leftover:
            self._final(self.pending_rows.pop(jid), "rejected", "buffer_unflushed")
        for jid in list(self.pending_rows):  # defensive: nothing may stay without a final status
            self._final(self.pending_rows.pop(jid), "rejected", "buffer_unflushed")
