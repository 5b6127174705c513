"""Checkpoint and resume of a run: everything the future of the run depends on, and nothing else.

A checkpoint is taken between events, right after a new version: the server's whole state, the
orchestrator's clock, heap, in-flight jobs, rows, RNG and availability states, the base vectors
in-flight jobs started from, and each client's state. In-flight jobs are re-submitted on resume;
their training is a pure function of (base vector, data, job seed), so a resumed run ends
bit-identical to one that was never stopped. Written atomically (temp file, fsync, rename).
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

from .jobs import Job

CHECKPOINT = "checkpoint.pkl"
FORMAT = 1


def snapshot(orch: Any) -> dict[str, Any]:
    """The orchestrator's state with object-store handles replaced by their contents."""
    ex = orch.ex
    inflight = []
    for job in orch.inflight.values():
        inflight.append(dict(spec=job.spec, plan=job.plan, base_version=job.base_version,
                             dispatch_vtime=job.dispatch_vtime, round=job.round, row=dict(job.row),
                             trained=job.ticket is not None))
    bases = sorted({j["base_version"] for j in inflight if j["trained"]})
    if orch.needs_base:
        bases = sorted(set(bases) | {j.base_version for j in orch.pending_rows.values()})
    events = [(t, seq, item if not hasattr(item, "spec") else ("job", item.spec.job_id))
              for t, seq, item in orch.queue.entries()]
    return dict(
        format=FORMAT, version=orch.version, now=orch.now, next_job=orch.next_job, round=orch.round,
        round_received=orch.round_received, wake_at=orch.wake_at, counts=dict(orch.counts),
        recent_loss=list(orch.recent_loss), rows=dict(orch.rows),
        pending=[dict(spec=j.spec, plan=j.plan, base_version=j.base_version, dispatch_vtime=j.dispatch_vtime,
                      round=j.round, row=dict(j.row)) for j in orch.pending_rows.values()],
        inflight=inflight, events=events, queue_seq=orch.queue.seq, idle=orch.idle,
        select_rng=orch.select_rng.bit_generator.state, plan_rng=orch.plan_rng.bit_generator.state,
        availability=orch.avail, base_vectors={v: ex.fetch(orch.handles[v]) for v in bases},
        client_state={c: ex.fetch(h) for c, h in orch.client_state.items()},
        server=ex.server_state(), evals=ex.finished_evals(), eval_state=orch.eval_state(),
    )


def write(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        pickle.dump(state, fh, protocol=5)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read(path: Path) -> dict[str, Any]:
    from ..errors import ConfigError

    if not path.is_file():
        raise ConfigError(f"--resume: {str(path.parent)!r} holds no {CHECKPOINT}; was run.checkpoint_every set?")
    with open(path, "rb") as fh:
        state = pickle.load(fh)
    if state.get("format") != FORMAT:
        raise ConfigError(f"--resume: {str(path)!r} has checkpoint format {state.get('format')}, expected {FORMAT}")
    return state


def restore(orch: Any, state: dict[str, Any]) -> None:
    """Put ``state`` back into a freshly built orchestrator (same config) and re-submit in-flight jobs."""

    ex = orch.ex
    for key in ("version", "now", "next_job", "round", "round_received", "wake_at", "counts", "recent_loss",
                "rows"):
        setattr(orch, key, state[key])
    orch.idle = state["idle"]
    orch.avail = state["availability"]
    orch.select_rng.bit_generator.state = state["select_rng"]
    orch.plan_rng.bit_generator.state = state["plan_rng"]
    ex.restore_server(state["server"])
    orch.current = ex.put(ex.server_vector())
    orch.handles = {orch.version: orch.current}
    for v, vec in state["base_vectors"].items():
        if v != orch.version:
            orch.handles[v] = ex.put(vec)
    orch.client_state = {c: ex.put(s) for c, s in state["client_state"].items()}
    orch.base_count = {}
    orch.pending_rows = {}
    for p in state["pending"]:
        orch.pending_rows[p["spec"].job_id] = Job(p["spec"], p["plan"], p["base_version"], p["dispatch_vtime"],
                                                  p["round"], row=p["row"])
    jobs = {}
    for j in state["inflight"]:
        job = Job(j["spec"], j["plan"], j["base_version"], j["dispatch_vtime"], j["round"], row=j["row"])
        if j["trained"]:
            job.ticket = ex.train(job.spec, orch.handles[job.base_version],
                                  orch.client_state.get(job.spec.client_id))
            orch.base_count[job.base_version] = orch.base_count.get(job.base_version, 0) + 1
        jobs[job.spec.job_id] = job
    orch.inflight = jobs
    orch.queue.restore([(t, seq, jobs[item[1]] if isinstance(item, tuple) and item[0] == "job" else item)
                        for t, seq, item in state["events"]], state["queue_seq"])
    ex.restore_evals(state["evals"])
    orch.restore_eval_state(state["eval_state"])
