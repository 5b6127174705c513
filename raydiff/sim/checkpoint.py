"""Checkpoint and resume of a run: everything the future of the run depends on, and nothing else.

A checkpoint is taken between events, right after a new version: the server's whole state (the
strategy's part through its ``state_dict()``), the orchestrator's clock, heap, in-flight jobs, rows,
RNG and availability states, the base vectors in-flight jobs started from, and each client's state.
In-flight jobs are re-submitted on resume; their training is a pure function of (base vector,
data, job seed), so a resumed run ends bit-identical to one that was never stopped. Written
atomically (temp file, fsync, rename).
"""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

import numpy as np

from ..hetero import Availability, JobPlan
from ..messages import JobSpec, ServerState
from .jobs import Deadline, Job, Wake
from .selection import IdleSet

if TYPE_CHECKING:
    from .orchestrator import Orchestrator

CHECKPOINT = "checkpoint.pkl"
FORMAT = 2


@dataclass
class SavedJob:
    """A job as a checkpoint keeps it: in flight (``trained``: it was submitted for real) or buffered."""

    spec: JobSpec
    plan: JobPlan
    base_version: int
    dispatch_vtime: float
    round: int
    row: dict[str, Any]
    trained: bool = True

    @classmethod
    def of(cls, job: Job) -> SavedJob:
        return cls(job.spec, job.plan, job.base_version, job.dispatch_vtime, job.round, dict(job.row),
                   job.ticket is not None)

    def job(self) -> Job:
        return Job(self.spec, self.plan, self.base_version, self.dispatch_vtime, self.round, row=dict(self.row))


SavedEvent = tuple[float, int, Union[Wake, Deadline, int]]  # a job event is saved as its job id


@dataclass
class LoopState:
    """The event loop's whole state at a version boundary."""

    version: int
    now: float
    next_job: int
    round: int
    round_received: int
    wake_at: Optional[float]
    counts: dict[str, int]
    recent_loss: list[float]
    rows: dict[int, dict[str, Any]]
    pending: list[SavedJob]
    inflight: list[SavedJob]
    events: list[SavedEvent]
    queue_seq: int
    idle: IdleSet
    held: list[int]
    select_rng: dict[str, Any]
    plan_rng: dict[str, Any]
    availability: Availability
    base_vectors: dict[int, np.ndarray]
    client_state: dict[int, Any]
    server: ServerState
    evals: list[dict[str, Any]]
    last_eval: tuple[int, bool]
    next_eval_vtime: float
    format: int = field(default=FORMAT)


def snapshot(orch: Orchestrator) -> LoopState:
    """The orchestrator's state with object-store handles replaced by their contents."""
    executor = orch.executor
    inflight = [SavedJob.of(job) for job in orch.inflight.values()]
    bases = {j.base_version for j in inflight if j.trained}
    if orch.needs_base:
        bases |= {j.base_version for j in orch.pending_rows.values()}
    events: list[SavedEvent] = [(t, seq, item.spec.job_id if isinstance(item, Job) else item)
                                for t, seq, item in orch.queue.entries()]
    return LoopState(
        version=orch.version, now=orch.now, next_job=orch.next_job, round=orch.round,
        round_received=orch.round_received, wake_at=orch.wake_at, counts=dict(orch.counts),
        recent_loss=list(orch.recent_loss), rows=dict(orch.rows),
        pending=[SavedJob.of(j) for j in orch.pending_rows.values()], inflight=inflight, events=events,
        queue_seq=orch.queue.seq, idle=orch.idle, held=sorted(orch.held),
        select_rng=dict(orch.select_rng.bit_generator.state), plan_rng=dict(orch.plan_rng.bit_generator.state),
        availability=orch.avail, base_vectors={v: executor.fetch(orch.handles[v]) for v in sorted(bases)},
        client_state={c: executor.fetch(h) for c, h in orch.client_state.items()},
        server=executor.server_state(), evals=executor.finished_evals(), last_eval=orch.last_eval,
        next_eval_vtime=orch.next_eval_vtime)


def write(path: Path, state: LoopState) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        pickle.dump(state, fh, protocol=5)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read(path: Path) -> LoopState:
    from ..errors import ConfigError

    if not path.is_file():
        raise ConfigError(f"--resume: {str(path.parent)!r} holds no {CHECKPOINT}; was run.checkpoint_every set?")
    with open(path, "rb") as fh:
        state = pickle.load(fh)
    if not isinstance(state, LoopState) or state.format != FORMAT:
        found = getattr(state, "format", None) if not isinstance(state, dict) else state.get("format")
        raise ConfigError(f"--resume: {str(path)!r} has checkpoint format {found}, expected {FORMAT}")
    return state


def restore(orch: Orchestrator, state: LoopState) -> None:
    """Put ``state`` back into a freshly built orchestrator (same config) and re-submit in-flight jobs."""
    executor = orch.executor
    orch.version, orch.now, orch.next_job = state.version, state.now, state.next_job
    orch.round, orch.round_received, orch.wake_at = state.round, state.round_received, state.wake_at
    orch.counts, orch.recent_loss, orch.rows = dict(state.counts), list(state.recent_loss), dict(state.rows)
    orch.idle = state.idle
    orch.held = set(state.held)
    orch.avail = state.availability
    orch.select_rng.bit_generator.state = state.select_rng
    orch.plan_rng.bit_generator.state = state.plan_rng
    executor.restore_server(state.server)
    orch.current = executor.put(executor.server_vector())
    orch.handles = {orch.version: orch.current}
    for v, vec in state.base_vectors.items():
        if v != orch.version:
            orch.handles[v] = executor.put(vec)
    orch.client_state = {c: executor.put(s) for c, s in state.client_state.items()}
    orch.base_count = {}
    orch.pending_rows = {p.spec.job_id: p.job() for p in state.pending}
    jobs: dict[int, Job] = {}
    for saved in state.inflight:
        job = saved.job()
        if saved.trained:
            job.ticket = executor.train(job.spec, orch.handles[job.base_version], orch.client_state.get(job.spec.client_id))
            orch.base_count[job.base_version] = orch.base_count.get(job.base_version, 0) + 1
        jobs[job.spec.job_id] = job
    orch.inflight = jobs
    orch.queue.restore([(t, seq, jobs[item] if isinstance(item, int) else item) for t, seq, item in state.events],
                       state.queue_seq)
    executor.restore_evals(state.evals)
    orch.last_eval, orch.next_eval_vtime = state.last_eval, state.next_eval_vtime
