"""Checkpoint and resume of a run: everything the future of the run depends on, and nothing else.

A checkpoint is taken between events, right after a new version: the server's whole state (the
strategy's part through its ``state_dict()``), the orchestrator's clock, heap, in-flight jobs, rows,
RNG and availability states, the base vectors in-flight jobs started from, and each client's state.
In-flight jobs are re-submitted on resume; their training is a pure function of (base vector,
data, job seed), so a resumed run ends bit-identical to one that was never stopped.

The file (``checkpoint.npz``) can be read without running code: run folders are shared between
colleagues and downloaded with papers, and unpickling one would run whatever it holds. It is a
NumPy ``.npz`` archive read with ``allow_pickle=False``: every array is a member (numeric dtypes
only), and one more member, ``state``, holds the rest as UTF-8 JSON: a kind tag, the format
version, the sha256 of the config it belongs to, and the state tree, in which arrays are
``{"$array": name}``, non-finite floats ``{"$float": "nan"}``, tuples ``{"$tuple": [...]}`` and
mappings with non-string keys ``{"$items": [[key, value], ...]}``. Why ``.npz`` rather than
safetensors: one file (so one atomic rename), no cap on the JSON's size (safetensors keeps metadata
in a header limited to 100 MB, and a 10,000-client dry run's rows are bigger), and its reader is
NumPy's own. Written atomically (temp file, fsync, rename); the zip's CRC-32 catches flipped bits.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

import numpy as np

from ..errors import CheckpointError
from ..hetero import JobPlan
from ..messages import JobSpec, ServerState
from ..strategies.base import Strategy
from .grouping import WAITING, Member
from .jobs import Deadline, Job, Wake
from .selection import IdleSet

if TYPE_CHECKING:
    from .orchestrator import Orchestrator

CHECKPOINT = "checkpoint.npz"
LEGACY_CHECKPOINT = "checkpoint.pkl"  # formats 1-2: pickles, never read again
FORMAT = 3
KIND = "raydiff-checkpoint"
STATE_MEMBER = "state"


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
        return cls(
            job.spec, job.plan, job.base_version, job.dispatch_vtime, job.round, dict(job.row), job.ticket is not None
        )

    def job(self) -> Job:
        return Job(self.spec, self.plan, self.base_version, self.dispatch_vtime, self.round, row=dict(self.row))


SavedEvent = tuple[float, int, Union[Wake, Deadline, int]]  # a job event is saved as its job id


@dataclass
class SavedMember:
    """A job of a group (``train.group_size`` > 1) as the group trains it; see :mod:`raydiff.sim.grouping`.

    ``clients_state``: its client's state is the one saved in ``LoopState.client_state`` (the job is in
    flight, so it is its client's latest); else ``state`` holds the contents it started with.
    """

    spec: JobSpec
    base_version: int
    state: Any = None
    clients_state: bool = False


@dataclass
class LoopState:
    """The event loop's whole state at a version boundary, as plain data (no live objects)."""

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
    idle: dict[str, Any]  # the IdleSet's attributes
    held: list[int]
    select_rng: dict[str, Any]
    plan_rng: dict[str, Any]
    availability: dict[str, Any]  # {"class": name, "attrs": {...}}: the Availability object's attributes
    base_vectors: dict[int, np.ndarray]
    client_state: dict[int, Any]
    server: ServerState
    evals: list[dict[str, Any]]
    last_eval: tuple[int, bool]
    next_eval_vtime: float
    # grouped training: the groups still training (members in their order, settled ones too, so that a resumed
    # run trains every job with the same mates), the jobs waiting for a group, and the base vectors of members
    # that base_vectors lacks
    groups: list[list[SavedMember]] = field(default_factory=list)
    waiting: list[SavedMember] = field(default_factory=list)
    group_bases: dict[int, np.ndarray] = field(default_factory=dict)
    format: int = field(default=FORMAT)


# ---------------------------------------------------------------------------------------- live objects <-> data
def object_state(obj: object) -> dict[str, Any]:
    """An object's attributes as data; a NumPy Generator becomes its bit generator's state."""
    attrs: dict[str, Any] = {}
    for name, value in vars(obj).items():
        attrs[name] = {"$rng": value.bit_generator.state} if isinstance(value, np.random.Generator) else value
    return {"class": type(obj).__name__, "attrs": attrs}


def load_object_state(obj: object, state: Mapping[str, Any], what: str) -> None:
    """Put :func:`object_state`'s output back into a freshly built object of the same class."""
    if state.get("class") != type(obj).__name__:
        raise CheckpointError(
            f"{what}: the checkpoint holds a {state.get('class')!r}, this run builds a "
            f"{type(obj).__name__!r} (was the config changed?)"
        )
    current = vars(obj)
    attrs = _dict(state.get("attrs"), f"{what}.attrs")
    if set(attrs) != set(current):
        raise CheckpointError(f"{what}: attributes {sorted(attrs)} do not match {sorted(current)}")
    for name, value in attrs.items():
        old = current[name]
        if isinstance(old, np.random.Generator):
            _set_rng(old, _dict(value, f"{what}.{name}").get("$rng"), f"{what}.{name}")
            continue
        if isinstance(old, np.ndarray):
            if not isinstance(value, np.ndarray) or value.shape != old.shape or value.dtype != old.dtype:
                raise CheckpointError(f"{what}.{name}: expected a {old.dtype} array of shape {old.shape}")
            value = value.copy()
        elif type(value) is not type(old) and not (isinstance(old, float) and isinstance(value, int)):
            raise CheckpointError(f"{what}.{name}: expected {type(old).__name__}, got {type(value).__name__}")
        setattr(obj, name, value)


def _set_rng(rng: np.random.Generator, state: Any, what: str) -> None:
    try:
        rng.bit_generator.state = state
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{what}: not a random generator state ({exc})") from None


def snapshot(orch: Orchestrator) -> LoopState:
    """The orchestrator's state with object-store handles replaced by their contents."""
    executor = orch.executor
    inflight = [SavedJob.of(job) for job in orch.inflight.values()]
    bases = {j.base_version for j in inflight if j.trained}
    if orch.needs_base:
        bases |= {j.base_version for j in orch.pending_rows.values()}
    events: list[SavedEvent] = [
        (t, seq, item.spec.job_id if isinstance(item, Job) else item) for t, seq, item in orch.queue.entries()
    ]
    state = LoopState(
        version=orch.version,
        now=orch.now,
        next_job=orch.next_job,
        round=orch.round,
        round_received=orch.round_received,
        wake_at=orch.wake_at,
        counts=dict(orch.counts),
        recent_loss=list(orch.recent_loss),
        rows=dict(orch.rows),
        pending=[SavedJob.of(j) for j in orch.pending_rows.values()],
        inflight=inflight,
        events=events,
        queue_seq=orch.queue.seq,
        idle=object_state(orch.idle)["attrs"],
        held=sorted(orch.held),
        select_rng=dict(orch.select_rng.bit_generator.state),
        plan_rng=dict(orch.plan_rng.bit_generator.state),
        availability=object_state(orch.avail),
        base_vectors={v: executor.fetch(orch.handles[v]) for v in sorted(bases)},
        client_state={c: executor.fetch(h) for c, h in orch.client_state.items()},
        server=executor.server_state(),
        evals=executor.finished_evals(),
        last_eval=orch.last_eval,
        next_eval_vtime=orch.next_eval_vtime,
    )
    if orch.groups is not None:
        _snapshot_groups(orch, state)
    return state


def _snapshot_groups(orch: Orchestrator, state: LoopState) -> None:
    """Grouped training: the groups still training and the waiting jobs, with what each member starts from."""
    assert orch.groups is not None
    executor = orch.executor

    def saved(m: Member) -> SavedMember:
        v = m.base_version
        if v != orch.version and v not in state.base_vectors and v not in state.group_bases:
            vec = executor.fetch(m.base)  # None only in a dry run's version 0, whose vectors are empty
            state.group_bases[v] = np.zeros(0, np.float32) if vec is None else vec
        if m.state is None:
            return SavedMember(m.spec, v)
        if m.spec.job_id in orch.inflight and orch.client_state.get(m.spec.client_id) is m.state:
            return SavedMember(m.spec, v, clients_state=True)  # saved once, in client_state
        return SavedMember(m.spec, v, executor.fetch(m.state))

    state.groups = [[saved(m) for m in g] for g in orch.groups.live(orch.inflight)]
    state.waiting = [saved(m) for m in orch.groups.waiting]


# ---------------------------------------------------------------------------------------- the data tree
class _Encoder:
    """A tree of Python and NumPy values -> JSON-able data plus a dict of arrays."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}

    def array(self, a: np.ndarray, path: str) -> str:
        if a.dtype.hasobject:
            raise CheckpointError(f"{path}: an array of Python objects cannot go into a checkpoint")
        name = f"a{len(self.arrays)}"
        self.arrays[name] = a if a.flags.c_contiguous else a.copy(order="C")  # (ascontiguousarray makes 0-d 1-d)
        return name

    def encode(self, v: Any, path: str) -> Any:
        if isinstance(v, np.generic):  # a NumPy scalar keeps its dtype (np.float64 is also a float)
            return {"$scalar": self.array(np.asarray(v), path)}
        if v is None or isinstance(v, (bool, str, int)):
            return v
        if isinstance(v, float):
            return v if math.isfinite(v) else {"$float": repr(v)}  # 'nan', 'inf', '-inf'
        if isinstance(v, np.ndarray):
            return {"$array": self.array(v, path)}
        if isinstance(v, tuple):
            return {"$tuple": [self.encode(x, f"{path}[{i}]") for i, x in enumerate(v)]}
        if isinstance(v, list):
            return [self.encode(x, f"{path}[{i}]") for i, x in enumerate(v)]
        if isinstance(v, Mapping):
            if all(isinstance(k, str) and not k.startswith("$") for k in v):
                return {k: self.encode(x, f"{path}.{k}") for k, x in v.items()}
            return {
                "$items": [[self.encode(k, f"{path}<key>"), self.encode(x, f"{path}[{k!r}]")] for k, x in v.items()]
            }
        raise CheckpointError(
            f"{path}: a {type(v).__name__} cannot go into a checkpoint; state_dict() values must "
            "be numbers, strings, None, lists, tuples, dicts or numpy arrays"
        )


class _Decoder:
    """The inverse of :class:`_Encoder`; every malformed node is a CheckpointError naming its path."""

    def __init__(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.arrays = arrays

    def array(self, name: Any, path: str) -> np.ndarray:
        if not isinstance(name, str) or name not in self.arrays:
            raise CheckpointError(f"{path}: refers to array {name!r}, which the file does not hold")
        return self.arrays[name]

    def decode(self, v: Any, path: str) -> Any:
        if v is None or isinstance(v, (bool, str, int, float)):
            return v
        if isinstance(v, list):
            return [self.decode(x, f"{path}[{i}]") for i, x in enumerate(v)]
        if not isinstance(v, dict):
            raise CheckpointError(f"{path}: unexpected {type(v).__name__}")
        if len(v) == 1:
            ((tag, inner),) = v.items()
            if tag == "$array":
                return self.array(inner, path)
            if tag == "$scalar":
                return self.array(inner, path)[()]
            if tag == "$float":
                if inner not in ("nan", "inf", "-inf"):
                    raise CheckpointError(f"{path}: {inner!r} is not nan, inf or -inf")
                return float(inner)
            if tag == "$tuple":
                return tuple(self.decode(_list(inner, path), path))
            if tag == "$items":
                out = {}
                for i, pair in enumerate(_list(inner, path)):
                    if not isinstance(pair, list) or len(pair) != 2:
                        raise CheckpointError(f"{path}[{i}]: expected a [key, value] pair")
                    key = self.decode(pair[0], f"{path}<key>")
                    try:
                        out[key] = self.decode(pair[1], f"{path}[{key!r}]")
                    except TypeError:  # an unhashable key
                        raise CheckpointError(f"{path}: key {key!r} cannot be a dictionary key") from None
                return out
        bad = [k for k in v if k.startswith("$")]
        if bad:
            raise CheckpointError(f"{path}: unknown tag {bad[0]!r}")
        return {k: self.decode(x, f"{path}.{k}") for k, x in v.items()}


def _type_error(path: str, expected: str, got: Any) -> CheckpointError:
    shown = repr(got) if len(repr(got)) < 60 else type(got).__name__
    return CheckpointError(f"{path}: expected {expected}, got {shown}")


def _int(v: Any, path: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise _type_error(path, "an integer", v)
    return int(v)


def _float(v: Any, path: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)):
        raise _type_error(path, "a number", v)
    return float(v)


def _bool(v: Any, path: str) -> bool:
    if not isinstance(v, (bool, np.bool_)):
        raise _type_error(path, "true or false", v)
    return bool(v)


def _str(v: Any, path: str) -> str:
    if not isinstance(v, str):
        raise _type_error(path, "a string", v)
    return v


def _list(v: Any, path: str) -> list[Any]:
    if not isinstance(v, list):
        raise _type_error(path, "a list", v)
    return v


def _dict(v: Any, path: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise _type_error(path, "a mapping", v)
    return v


def _array(v: Any, path: str, dtype: Optional[type] = None) -> np.ndarray:
    if not isinstance(v, np.ndarray):
        raise _type_error(path, "an array", v)
    if dtype is not None and not np.issubdtype(v.dtype, dtype):
        raise CheckpointError(f"{path}: expected an array of {np.dtype(dtype).name}, got {v.dtype}")
    return v


# ---------------------------------------------------------------------------------------- typed parts
def _spec_to_data(s: JobSpec) -> dict[str, Any]:
    return dict(
        job_id=s.job_id, client_id=s.client_id, seed=s.seed, indices=s.indices, steps=s.steps, batch_size=s.batch_size
    )


def _spec_from_data(d: Any, path: str) -> JobSpec:
    s = _dict(d, path)
    return JobSpec(
        _int(s.get("job_id"), f"{path}.job_id"),
        _int(s.get("client_id"), f"{path}.client_id"),
        _int(s.get("seed"), f"{path}.seed"),
        _array(s.get("indices"), f"{path}.indices", np.integer),
        _int(s.get("steps"), f"{path}.steps"),
        _int(s.get("batch_size"), f"{path}.batch_size"),
    )


def _member_to_data(m: SavedMember) -> dict[str, Any]:
    return dict(spec=_spec_to_data(m.spec), base_version=m.base_version, state=m.state, clients_state=m.clients_state)


def _member_from_data(d: Any, path: str) -> SavedMember:
    d = _dict(d, path)
    return SavedMember(
        _spec_from_data(d.get("spec"), f"{path}.spec"),
        _int(d.get("base_version"), f"{path}.base_version"),
        d.get("state"),
        _bool(d.get("clients_state"), f"{path}.clients_state"),
    )


def _job_to_data(j: SavedJob) -> dict[str, Any]:
    s, p = j.spec, j.plan
    return dict(
        spec=_spec_to_data(s),
        plan=dict(
            download_s=p.download_s,
            compute_s=p.compute_s,
            upload_s=p.upload_s,
            fails=p.fails,
            end_s=p.end_s,
            failure_reason=p.failure_reason,
        ),
        base_version=j.base_version,
        dispatch_vtime=j.dispatch_vtime,
        round=j.round,
        row=j.row,
        trained=j.trained,
    )


def _job_from_data(d: Any, path: str) -> SavedJob:
    d = _dict(d, path)
    spec, p = _spec_from_data(d.get("spec"), f"{path}.spec"), _dict(d.get("plan"), f"{path}.plan")
    plan = JobPlan(
        _float(p.get("download_s"), f"{path}.plan.download_s"),
        _float(p.get("compute_s"), f"{path}.plan.compute_s"),
        _float(p.get("upload_s"), f"{path}.plan.upload_s"),
        _bool(p.get("fails"), f"{path}.plan.fails"),
        _float(p.get("end_s"), f"{path}.plan.end_s"),
        _str(p.get("failure_reason"), f"{path}.plan.failure_reason"),
    )
    return SavedJob(
        spec,
        plan,
        _int(d.get("base_version"), f"{path}.base_version"),
        _float(d.get("dispatch_vtime"), f"{path}.dispatch_vtime"),
        _int(d.get("round"), f"{path}.round"),
        _dict(d.get("row"), f"{path}.row"),
        _bool(d.get("trained"), f"{path}.trained"),
    )


def _event_to_data(e: SavedEvent) -> list[Any]:
    t, seq, item = e
    what: dict[str, Any] = (
        {"wake": True}
        if isinstance(item, Wake)
        else {"deadline": item.round}
        if isinstance(item, Deadline)
        else {"job": item}
    )
    return [t, seq, what]


def _event_from_data(e: Any, path: str) -> SavedEvent:
    e = _list(e, path)
    if len(e) != 3:
        raise CheckpointError(f"{path}: expected [vtime, seq, event]")
    what = _dict(e[2], f"{path}[2]")
    item: Union[Wake, Deadline, int]
    if "wake" in what:
        item = Wake()
    elif "deadline" in what:
        item = Deadline(_int(what["deadline"], f"{path}.deadline"))
    elif "job" in what:
        item = _int(what["job"], f"{path}.job")
    else:
        raise CheckpointError(f"{path}: an event is a wake, a deadline or a job, got {sorted(what)}")
    return _float(e[0], f"{path}[0]"), _int(e[1], f"{path}[1]"), item


def to_data(state: LoopState) -> dict[str, Any]:
    """A LoopState as a plain tree (dicts, lists, numbers, arrays), ready for the encoder."""
    srv = state.server
    return dict(
        version=state.version,
        now=state.now,
        next_job=state.next_job,
        round=state.round,
        round_received=state.round_received,
        wake_at=state.wake_at,
        counts=state.counts,
        recent_loss=state.recent_loss,
        rows=state.rows,
        pending=[_job_to_data(j) for j in state.pending],
        inflight=[_job_to_data(j) for j in state.inflight],
        events=[_event_to_data(e) for e in state.events],
        queue_seq=state.queue_seq,
        idle=state.idle,
        held=state.held,
        select_rng=state.select_rng,
        plan_rng=state.plan_rng,
        availability=state.availability,
        base_vectors=state.base_vectors,
        client_state=state.client_state,
        server=dict(
            x=srv.x, version=srv.version, buffered_jobs=srv.buffered_jobs, received=srv.received, strategy=srv.strategy
        ),
        evals=state.evals,
        last_eval=list(state.last_eval),
        next_eval_vtime=state.next_eval_vtime,
        groups=[[_member_to_data(m) for m in g] for g in state.groups],
        waiting=[_member_to_data(m) for m in state.waiting],
        group_bases=state.group_bases,
    )


def from_data(d: Any, path: str = "state") -> LoopState:
    """The inverse of :func:`to_data`, checking every field's type (a CheckpointError names the first bad one)."""
    d = _dict(d, path)

    def p(k: str) -> str:
        return f"{path}.{k}"

    srv = _dict(d.get("server"), p("server"))
    rows = _dict(d.get("rows"), p("rows"))
    for k, row in rows.items():
        _int(k, f"{p('rows')} key")
        _dict(row, f"{p('rows')}[{k}]")
    bases = _dict(d.get("base_vectors"), p("base_vectors"))
    clients = _dict(d.get("client_state"), p("client_state"))
    last = _list(d.get("last_eval"), p("last_eval"))
    if len(last) != 2:
        raise CheckpointError(f"{p('last_eval')}: expected [version, fid]")
    wake_at = d.get("wake_at")
    return LoopState(
        version=_int(d.get("version"), p("version")),
        now=_float(d.get("now"), p("now")),
        next_job=_int(d.get("next_job"), p("next_job")),
        round=_int(d.get("round"), p("round")),
        round_received=_int(d.get("round_received"), p("round_received")),
        wake_at=None if wake_at is None else _float(wake_at, p("wake_at")),
        counts={
            _str(k, p("counts")): _int(v, f"{p('counts')}.{k}") for k, v in _dict(d.get("counts"), p("counts")).items()
        },
        recent_loss=[_float(x, p("recent_loss")) for x in _list(d.get("recent_loss"), p("recent_loss"))],
        rows={int(k): v for k, v in rows.items()},
        pending=[
            _job_from_data(j, f"{p('pending')}[{i}]") for i, j in enumerate(_list(d.get("pending"), p("pending")))
        ],
        inflight=[
            _job_from_data(j, f"{p('inflight')}[{i}]") for i, j in enumerate(_list(d.get("inflight"), p("inflight")))
        ],
        events=[_event_from_data(e, f"{p('events')}[{i}]") for i, e in enumerate(_list(d.get("events"), p("events")))],
        queue_seq=_int(d.get("queue_seq"), p("queue_seq")),
        idle=_dict(d.get("idle"), p("idle")),
        held=[_int(c, p("held")) for c in _list(d.get("held"), p("held"))],
        select_rng=_dict(d.get("select_rng"), p("select_rng")),
        plan_rng=_dict(d.get("plan_rng"), p("plan_rng")),
        availability=_dict(d.get("availability"), p("availability")),
        base_vectors={
            _int(k, f"{p('base_vectors')} key"): _array(v, f"{p('base_vectors')}[{k}]", np.floating)
            for k, v in bases.items()
        },
        client_state={_int(k, f"{p('client_state')} key"): v for k, v in clients.items()},
        server=ServerState(
            _array(srv.get("x"), f"{p('server')}.x", np.floating),
            _int(srv.get("version"), f"{p('server')}.version"),
            [
                _int(j, f"{p('server')}.buffered_jobs")
                for j in _list(srv.get("buffered_jobs"), f"{p('server')}.buffered_jobs")
            ],
            [k if isinstance(k, tuple) else (k,) for k in _list(srv.get("received"), f"{p('server')}.received")],
            _dict(srv.get("strategy"), f"{p('server')}.strategy"),
        ),
        evals=[_dict(e, p("evals")) for e in _list(d.get("evals"), p("evals"))],
        last_eval=(_int(last[0], p("last_eval")), _bool(last[1], p("last_eval"))),
        next_eval_vtime=_float(d.get("next_eval_vtime"), p("next_eval_vtime")),
        groups=[
            [_member_from_data(m, f"{p('groups')}[{i}][{k}]") for k, m in enumerate(_list(g, f"{p('groups')}[{i}]"))]
            for i, g in enumerate(_list(d.get("groups", []), p("groups")))
        ],
        waiting=[
            _member_from_data(m, f"{p('waiting')}[{i}]")
            for i, m in enumerate(_list(d.get("waiting", []), p("waiting")))
        ],
        group_bases={
            _int(k, f"{p('group_bases')} key"): _array(v, f"{p('group_bases')}[{k}]", np.floating)
            for k, v in _dict(d.get("group_bases", {}), p("group_bases")).items()
        },
    )


# ---------------------------------------------------------------------------------------- the file
def write(path: Path, state: LoopState, config_sha256: str) -> None:
    """Write ``state`` atomically: a crash mid-write leaves the previous checkpoint in place."""
    enc = _Encoder()
    tree = enc.encode(to_data(state), "state")
    doc = dict(
        kind=KIND, format=FORMAT, config_sha256=config_sha256, version=state.version, vtime=state.now, state=tree
    )
    text = json.dumps(doc, allow_nan=False, separators=(",", ":")).encode("utf-8")
    members = {STATE_MEMBER: np.frombuffer(text, dtype=np.uint8), **enc.arrays}
    from ..outputs import _atomic  # a fresh temporary (never a planted link), renamed over the old checkpoint

    def dump(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            savez: Any = np.savez  # (its stubs type **kwds as if a member could be called allow_pickle)
            savez(fh, **members)
            fh.flush()
            os.fsync(fh.fileno())

    _atomic(path, dump)


def _load(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The document and arrays of a checkpoint file; nothing in the file is ever executed."""
    what = f"checkpoint {str(path)!r}"
    try:
        with np.load(path, allow_pickle=False) as npz:
            files = set(npz.files)
            if STATE_MEMBER not in files:
                raise CheckpointError(
                    f"{what} is not a raydiff checkpoint: it is a NumPy archive without a {STATE_MEMBER!r} member"
                )
            raw = npz[STATE_MEMBER]
            doc = json.loads(raw.tobytes().decode("utf-8"))
            arrays = {k: npz[k] for k in files if k != STATE_MEMBER}
    except CheckpointError:
        raise
    except AttributeError:  # np.load gave a plain array (a .npy file), which has no context manager
        raise CheckpointError(f"{what} is not a raydiff checkpoint (a single NumPy array)") from None
    except ValueError as exc:
        if "pickled" in str(exc):  # np.load refused to unpickle: not an .npz, and never run
            raise CheckpointError(
                f"{what} is not a raydiff checkpoint (not a NumPy .npz archive; it was not "
                "loaded, since reading it could run code)"
            ) from None
        raise CheckpointError(f"{what} is truncated or corrupted ({exc})") from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error, UnicodeDecodeError, KeyError) as exc:
        raise CheckpointError(f"{what} is truncated or corrupted ({type(exc).__name__}: {exc})") from None
    if not isinstance(doc, dict) or doc.get("kind") != KIND:
        raise CheckpointError(f"{what} is not a raydiff checkpoint (its state member has no kind {KIND!r})")
    return doc, arrays


def read_header(path: Path) -> dict[str, Any]:
    """The checkpoint's kind, format, config sha256, version and virtual time (no state decoded)."""
    doc, _ = _load(path)
    return {k: v for k, v in doc.items() if k != "state"}


def read(path: Path, config_sha256: Optional[str] = None) -> LoopState:
    """The state in ``path``; a missing, legacy, corrupted, foreign, other-format or other-config file is a
    CheckpointError (exit code 2) naming the file and what is wrong."""
    if not path.is_file():
        legacy = path.with_name(LEGACY_CHECKPOINT)
        if legacy.is_file():
            raise CheckpointError(
                f"--resume: {str(legacy)!r} was written by an older raydiff as a Python pickle; "
                "raydiff no longer reads pickles, since loading one can run any code. Start the "
                "run again (or resume it with the raydiff version that wrote it)"
            )
        raise CheckpointError(f"--resume: {str(path.parent)!r} holds no {CHECKPOINT}; was run.checkpoint_every set?")
    doc, arrays = _load(path)
    what = f"checkpoint {str(path)!r}"
    if doc.get("format") != FORMAT:
        raise CheckpointError(f"{what} has format {doc.get('format')!r}; this raydiff reads format {FORMAT}")
    if config_sha256 is not None and doc.get("config_sha256") != config_sha256:
        raise CheckpointError(
            f"{what} belongs to another config (sha256 {str(doc.get('config_sha256'))[:12]}..., "
            f"config.yaml now {config_sha256[:12]}...): config.yaml was changed after the "
            "checkpoint was taken. Put the original config.yaml back, or start a new run"
        )
    try:
        state = from_data(_Decoder(arrays).decode(doc.get("state"), "state"))
    except CheckpointError as exc:
        raise CheckpointError(f"{what} is malformed: {exc}") from None
    except RecursionError:
        raise CheckpointError(f"{what} is malformed: nested too deeply") from None
    return state


# ---------------------------------------------------------------------------------------- resume
def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise CheckpointError(f"the checkpoint does not fit this run: {msg}")


def check_fits(
    state: LoopState,
    parts: list[np.ndarray],
    availability: object,
    vector_size: int,
    strategy: Optional[Strategy] = None,
    path: Optional[Path] = None,
) -> None:
    """What a well-formed file could still get wrong against the run it is resumed into, checked before
    the run changes anything (a CheckpointError, exit code 2, naming ``path``): sizes, client ids, job
    references, and that the saved idle set, availability, generator and strategy states load into this
    run's objects."""
    try:
        _fits(state, parts, availability, vector_size, strategy)
    except CheckpointError as exc:
        if path is None:
            raise
        raise CheckpointError(f"checkpoint {str(path)!r}: {exc}") from None


def _fits(
    state: LoopState,
    parts: list[np.ndarray],
    availability: object,
    vector_size: int,
    strategy: Optional[Strategy],
) -> None:
    import copy

    n = len(parts)
    _check(
        state.server.x.ndim == 1 and state.server.x.size == vector_size,
        f"the model vector has {state.server.x.size} values, the run's model {vector_size}",
    )
    _check(
        all(v.shape == state.server.x.shape for v in state.base_vectors.values()),
        "a base vector's size differs from the model's",
    )
    jobs = state.inflight + state.pending
    _check(all(0 <= j.spec.client_id < n for j in jobs), f"a job's client id is outside 0..{n - 1}")
    _check(all(0 <= c < n for c in [*state.held, *state.client_state]), f"a client id is outside 0..{n - 1}")
    _check(
        all(np.array_equal(j.spec.indices, parts[j.spec.client_id]) for j in jobs),
        "a job's sample indices are not its client's partition (another data set or partition?)",
    )
    ids = {j.spec.job_id for j in state.inflight}
    _check(
        all(item in ids for _, _, item in state.events if isinstance(item, int)),
        "an event refers to a job that is not in flight",
    )
    _check(
        all(
            j.base_version in state.base_vectors or j.base_version == state.version for j in state.inflight if j.trained
        ),
        "an in-flight job's base vector is missing",
    )
    _check(state.version == state.server.version, "the loop's and the server's versions differ")
    if state.groups or state.waiting:
        _check_groups(state, parts)
    try:
        _idle_set(state, n)
        load_object_state(copy.deepcopy(availability), state.availability, "availability")
        _set_rng(np.random.default_rng(), state.select_rng, "select_rng")
        _set_rng(np.random.default_rng(), state.plan_rng, "plan_rng")
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
        raise CheckpointError(f"the checkpoint's client state is malformed: {exc}") from None
    if strategy is not None:
        try:
            copy.deepcopy(strategy).load_state_dict(state.server.strategy)
        except Exception as exc:  # noqa: BLE001 - any failure to load is the file's problem, named
            raise CheckpointError(
                f"the strategy's saved state does not load into {type(strategy).__name__}: {type(exc).__name__}: {exc}"
            ) from None


def _check_groups(state: LoopState, parts: list[np.ndarray]) -> None:
    """Grouped training: every member names a client and its partition, and has a base vector and a state;
    every in-flight job that is to be trained is in exactly one place (waiting, or in one group)."""
    n = len(parts)
    members = [m for g in state.groups for m in g] + state.waiting
    _check(all(0 <= m.spec.client_id < n for m in members), f"a grouped job's client id is outside 0..{n - 1}")
    _check(
        all(np.array_equal(m.spec.indices, parts[m.spec.client_id]) for m in members),
        "a grouped job's sample indices are not its client's partition",
    )
    _check(
        all(
            m.base_version == state.version
            or m.base_version in state.base_vectors
            or m.base_version in state.group_bases
            for m in members
        ),
        "a grouped job's base vector is missing",
    )
    _check(
        all(m.spec.client_id in state.client_state for m in members if m.clients_state),
        "a grouped job's client state is missing",
    )
    trained = {j.spec.job_id for j in state.inflight if j.trained}
    placed = [m.spec.job_id for m in members if m.spec.job_id in trained]
    _check(
        len(placed) == len(set(placed)) and set(placed) == trained,
        "the in-flight jobs are not each waiting or in one group",
    )
    _check(all(m.spec.job_id in trained for m in state.waiting), "a waiting job is not in flight")


def _idle_set(state: LoopState, n: int) -> IdleSet:
    idle = IdleSet(n)
    load_object_state(idle, {"class": "IdleSet", "attrs": state.idle}, "idle")
    items, pos = idle.items(), list(vars(idle)["_pos"])
    _check(
        len(pos) == n
        and len(set(items)) == len(items)
        and all(isinstance(c, int) and 0 <= c < n and pos[c] == i for i, c in enumerate(items))
        and sum(q != -1 for q in pos) == len(items),
        "the idle set is not a set of client ids",
    )
    return idle


def restore(orch: Orchestrator, state: LoopState) -> None:
    """Put ``state`` back into a freshly built orchestrator (same config) and re-submit in-flight jobs."""
    executor = orch.executor
    check_fits(state, orch.parts, orch.avail, int(np.shape(executor.server_vector())[0]))
    idle = _idle_set(state, len(orch.profiles))
    load_object_state(orch.avail, state.availability, "availability")
    _set_rng(orch.select_rng, state.select_rng, "select_rng")
    _set_rng(orch.plan_rng, state.plan_rng, "plan_rng")
    orch.version, orch.now, orch.next_job = state.version, state.now, state.next_job
    orch.round, orch.round_received, orch.wake_at = state.round, state.round_received, state.wake_at
    orch.counts, orch.recent_loss, orch.rows = dict(state.counts), list(state.recent_loss), dict(state.rows)
    orch.idle = idle
    orch.held = set(state.held)
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
            if orch.groups is None:
                job.ticket = executor.train(
                    job.spec, orch.handles[job.base_version], orch.client_state.get(job.spec.client_id)
                )
            else:
                job.ticket = WAITING  # until _restore_groups sends its group again (or it waits again)
            orch.base_count[job.base_version] = orch.base_count.get(job.base_version, 0) + 1
        jobs[job.spec.job_id] = job
    orch.inflight = jobs
    if orch.groups is not None:
        _restore_groups(orch, state)
    orch.queue.restore(
        [(t, seq, jobs[item] if isinstance(item, int) else item) for t, seq, item in state.events], state.queue_seq
    )
    executor.restore_evals(state.evals)
    orch.last_eval, orch.next_eval_vtime = state.last_eval, state.next_eval_vtime


def _restore_groups(orch: Orchestrator, state: LoopState) -> None:
    """Send the saved groups again, each whole and in its order: a member settled before the checkpoint trains
    again (its result discarded), so that every job still in flight trains with the same mates as before."""
    assert orch.groups is not None
    executor = orch.executor
    put: dict[int, Any] = {}

    def member(m: SavedMember) -> Member:
        v = m.base_version
        if v in orch.handles:
            base = orch.handles[v]
        else:
            base = put[v] = put[v] if v in put else executor.put(state.group_bases[v])
        st = (
            orch.client_state.get(m.spec.client_id)
            if m.clients_state
            else None
            if m.state is None
            else executor.put(m.state)
        )
        return Member(m.spec, v, base, st)

    groups = [[member(m) for m in g] for g in state.groups]
    orch.groups.restore([member(m) for m in state.waiting], groups)
    for group in groups:
        tickets = executor.train_group([m.spec for m in group], [m.base for m in group], [m.state for m in group])
        for m, ticket in zip(group, tickets):
            job = orch.inflight.get(m.spec.job_id)
            if job is not None:
                job.ticket = ticket
            else:
                executor.discard(ticket)


def check_encodable(value: Any, path: str) -> None:
    """Raise the CheckpointError that writing ``value`` into a checkpoint would raise, naming ``path``: a
    strategy's state_dict() is checked before a run starts, not at its first checkpoint."""
    _Encoder().encode(value, path)
