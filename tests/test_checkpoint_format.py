"""The checkpoint file (issue 18): JSON + arrays in an .npz read without pickle, exact round trips of every
kind of state, and a clear exit 2 for every file that is not a checkpoint of this run."""

from __future__ import annotations

import json
import math
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

import raydiff
from raydiff.cli import main
from raydiff.config import DPConfig, StrategyConfig
from raydiff.errors import CheckpointError
from raydiff.hetero import BernoulliAvailability, OnOffAvailability
from raydiff.messages import JobSpec, ServerState
from raydiff.sim import checkpoint
from raydiff.sim.jobs import Deadline, Wake
from raydiff.sim.selection import IdleSet
from raydiff.strategies import Update, build_strategy

DRY = {
    "clients": {"num_clients": 10, "dropout": 0.2},
    "strategy": {"name": "fedbuff", "concurrency": 4, "buffer_size": 2},
    "run": {"dry_run": True, "max_updates": 12, "checkpoint_every": 4},
}


def _same(a, b, path="state") -> None:
    """Deep equality, bit for bit: arrays by dtype, shape and bytes (NaN equal to NaN), floats by repr."""
    assert type(a) is type(b) or (isinstance(a, np.generic) and isinstance(b, np.generic)), f"{path}: {a!r} vs {b!r}"
    if isinstance(a, (np.ndarray, np.generic)):
        a, b = np.asarray(a), np.asarray(b)
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes(), path
    elif isinstance(a, dict):
        assert list(a) == list(b), f"{path}: keys {list(a)} vs {list(b)}"
        for k in a:
            _same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{path}[{i}]")
    elif isinstance(a, float):
        assert repr(a) == repr(b), f"{path}: {a!r} vs {b!r}"
    elif hasattr(a, "__dataclass_fields__"):
        _same(vars(a), vars(b), path)
    else:
        assert a == b, f"{path}: {a!r} vs {b!r}"


def _strategy(cfg: StrategyConfig):
    return build_strategy(cfg, 8, rng=np.random.default_rng([5, 9]))


def _feed(s, x, rng, n=5, start=0):
    for i in range(n):
        delta = rng.standard_normal(x.size).astype(np.float32) * 0.1
        s.receive(x, start + i, Update(i % 3, max(0, start + i - 1), 10 + i, delta, x.copy() if s.needs_base else None))
        if s.round_based and i % 2:
            s.end_round(x)


STRATEGIES = [
    StrategyConfig(
        name="fedbuff",
        buffer_size=3,
        ema_decay=0.9,
        server_optimizer="fedadam",
        dp=DPConfig(enabled=True, noise_multiplier=0.7, clip_norm=0.5),
    ),
    StrategyConfig(
        name="fedavg", clients_per_round=3, server_optimizer="fedavgm", ema_decay=0.5, dp=DPConfig(enabled=True)
    ),
    StrategyConfig(name="fedasync", ema_decay=0.99, norm_bound=0.3),
]


def _state(server: ServerState, avail) -> checkpoint.LoopState:
    idle = IdleSet(8)
    idle.pick(np.random.default_rng(1))
    idle.pick(np.random.default_rng(2))
    spec = JobSpec(7, 3, 2**62 + 5, np.arange(4, dtype=np.int64), 2, 8)
    from raydiff.hetero import JobPlan

    plan = JobPlan(0.1, 1 / 3, 0.2, True, 0.25, "dropout_compute")
    row = dict(
        job_id=7,
        client_id=3,
        actor="",
        train_loss=math.nan,
        wall_seconds=float("inf"),
        staleness=None,
        applied_version=None,
        status="",
        loss32=np.float32(0.1),
    )
    saved = checkpoint.SavedJob(spec, plan, 2, 1.5, 0, row, trained=False)
    rng = np.random.default_rng(3)
    return checkpoint.LoopState(
        version=3,
        now=4.25,
        next_job=8,
        round=1,
        round_received=2,
        wake_at=None,
        counts=dict(applied=6, dropped=1),
        recent_loss=[0.5, math.nan],
        rows={0: dict(row, job_id=0), 5: dict(row, job_id=5)},
        pending=[saved],
        inflight=[saved],
        events=[(4.5, 9, 7), (math.inf, 10, Wake()), (5.0, 11, Deadline(2))],
        queue_seq=12,
        idle=checkpoint.object_state(idle)["attrs"],
        held=[1, 4],
        select_rng=rng.bit_generator.state,
        plan_rng=np.random.default_rng(4).bit_generator.state,
        availability=checkpoint.object_state(avail),
        base_vectors={2: np.linspace(0, 1, 6, dtype=np.float32), 3: np.full(6, -0.0, np.float32)},
        client_state={3: {"residual": np.array([np.nan, 1e-40, -np.inf, 3], np.float32), "local": None}, 5: None},
        server=server,
        evals=[dict(version=0, vtime=0.0, heldout_loss=0.25, fid_domain=math.nan, epsilon=np.float64(1.5))],
        last_eval=(3, True),
        next_eval_vtime=math.inf,
    )


@pytest.mark.parametrize("cfg", STRATEGIES, ids=lambda c: c.name)
def test_round_trip_is_exact_and_the_strategy_continues_identically(tmp_path, cfg):
    """EMA, DP noise stream, server optimizer moments, buffers, NaN/inf rows, RNG and availability states
    come back bit for bit, and a strategy loaded from them computes the same next versions."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(6).astype(np.float32)
    s = _strategy(cfg)
    s.start(x)
    _feed(s, x, rng)
    avail = OnOffAvailability(np.full(8, 2.0), np.full(8, 1.0), np.random.default_rng(8))
    for c in range(8):
        avail.is_on(c, 3.0)
    state = _state(ServerState(x.copy(), 3, [4, 5], [("ndarray", "float32", (6,))], s.state_dict()), avail)
    path = tmp_path / checkpoint.CHECKPOINT
    checkpoint.write(path, state, "sha-a")
    back = checkpoint.read(path, "sha-a")
    _same(checkpoint.to_data(state), checkpoint.to_data(back))

    # the loaded strategy and the live one make the same next versions, bit for bit
    t = _strategy(cfg)
    t.start(np.zeros(6, np.float32))
    t.load_state_dict(back.server.strategy)
    xa, xb = x.copy(), back.server.x.copy()
    _feed(s, xa, np.random.default_rng(9), start=5)
    _feed(t, xb, np.random.default_rng(9), start=5)
    assert xa.tobytes() == xb.tobytes()
    ea, eb = s.export_vector(), t.export_vector()
    assert (ea is None and eb is None) or ea.tobytes() == eb.tobytes()

    # and the availability process goes on identically
    fresh = OnOffAvailability(np.full(8, 2.0), np.full(8, 1.0), np.random.default_rng(123))
    checkpoint.load_object_state(fresh, back.availability, "availability")
    assert [avail.next_on(c, 40.0) for c in range(8)] == [fresh.next_on(c, 40.0) for c in range(8)]


def test_bernoulli_availability_state_round_trips(tmp_path):
    a = BernoulliAvailability(0.4, 1.0, np.random.default_rng(2))
    [a.is_on(0, 0.0) for _ in range(7)]
    data = json.loads(json.dumps(checkpoint._Encoder().encode(checkpoint.object_state(a), "a")))
    b = BernoulliAvailability(0.4, 1.0, np.random.default_rng(99))
    checkpoint.load_object_state(b, checkpoint._Decoder({}).decode(data, "a"), "availability")
    assert [a.is_on(0, 0.0) for _ in range(50)] == [b.is_on(0, 0.0) for _ in range(50)]


def test_the_file_is_an_npz_with_json_and_no_pickle(tmp_path):
    raydiff.run(DRY, out=tmp_path / "r", progress=False)
    path = tmp_path / "r" / checkpoint.CHECKPOINT
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        doc = json.loads(np.lib.format.read_array(z.open("state.npy"), allow_pickle=False).tobytes())
        for n in names:  # every member is a plain array: no object dtype anywhere
            assert not np.lib.format.read_array(z.open(n), allow_pickle=False).dtype.hasobject
    assert doc["kind"] == "raydiff-checkpoint" and doc["format"] == checkpoint.FORMAT and doc["version"] == 12
    from raydiff.config_load import load_config
    from raydiff.run_folder import config_sha256

    assert doc["config_sha256"] == config_sha256(load_config(tmp_path / "r" / "config.yaml"))
    assert not any(isinstance(v, float) and not math.isfinite(v) for v in _leaves(doc))


def _leaves(v):
    if isinstance(v, dict):
        for x in v.values():
            yield from _leaves(x)
    elif isinstance(v, list):
        for x in v:
            yield from _leaves(x)
    else:
        yield v


class _Boom:
    """Unpickling this creates a file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _interrupted_folder(tmp_path) -> Path:
    def stop(info):
        if info["version"] == 6:
            raise KeyboardInterrupt

    r = raydiff.run(DRY, out=tmp_path / "run", progress=False, callback=stop)
    assert r.summary["interrupted"]
    return r.out_dir


@pytest.mark.parametrize("name", [checkpoint.CHECKPOINT, checkpoint.LEGACY_CHECKPOINT])
def test_a_crafted_pickle_never_runs(tmp_path, capsys, name):
    """Issue 18, defect 1: --resume unpickled checkpoint.pkl and ran the code in it."""
    folder = _interrupted_folder(tmp_path)
    marker = tmp_path / "pwned"
    (folder / checkpoint.CHECKPOINT).unlink()
    (folder / name).write_bytes(pickle.dumps(_Boom(marker)))
    assert main(["run", "--resume", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "raydiff: error:" in err and "pickle" in err and "Traceback" not in err
    assert not marker.exists(), "the crafted pickle ran"


def test_an_object_array_inside_an_npz_is_never_unpickled(tmp_path, capsys):
    folder = _interrupted_folder(tmp_path)
    marker = tmp_path / "pwned"
    path = folder / checkpoint.CHECKPOINT
    with zipfile.ZipFile(path) as z:
        state = z.read("state.npy")
    with zipfile.ZipFile(path, "w") as z:  # a well-formed state that points at an object array
        z.writestr("state.npy", state)
        buf = __import__("io").BytesIO()
        np.lib.format.write_array(buf, np.array([_Boom(marker)], dtype=object), allow_pickle=True)
        for i in range(8):
            z.writestr(f"a{i}.npy", buf.getvalue())
    assert main(["run", "--resume", str(folder)]) == 2
    assert "raydiff: error:" in capsys.readouterr().err
    assert not marker.exists()


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _flip(p: Path) -> None:
    data = bytearray(p.read_bytes())
    with zipfile.ZipFile(p) as z:  # a byte in the middle of the state member's data: the CRC catches it
        info = z.getinfo("state.npy")
    at = info.header_offset + 30 + len(info.filename) + 200
    data[at] ^= 0xFF
    p.write_bytes(bytes(data))


def _garbage(p: Path) -> None:
    p.write_bytes(os.urandom(5000))


def _foreign(p: Path) -> None:
    np.savez(p.with_suffix(".tmp.npz"), weights=np.ones(3))
    p.with_suffix(".tmp.npz").replace(p)


def _other_format(p: Path) -> None:
    _edit(p, lambda d: d.update(format=2))


def _malformed(p: Path) -> None:
    _edit(p, lambda d: d["state"].update(version="seven"))


def _missing_key(p: Path) -> None:
    _edit(p, lambda d: d["state"].pop("events"))


def _wrong_client(p: Path) -> None:
    _edit(p, lambda d: d["state"].update(held=[99]))


def _edit(p: Path, change) -> None:
    with zipfile.ZipFile(p) as z:
        members = {n: z.read(n) for n in z.namelist()}
    doc = json.loads(np.lib.format.read_array(__import__("io").BytesIO(members["state.npy"])).tobytes())
    change(doc)
    buf = __import__("io").BytesIO()
    np.lib.format.write_array(buf, np.frombuffer(json.dumps(doc).encode(), np.uint8))
    members["state.npy"] = buf.getvalue()
    with zipfile.ZipFile(p, "w") as z:
        for n, b in members.items():
            z.writestr(n, b)


@pytest.mark.parametrize(
    "damage, needle",
    [
        (_truncate, "truncated or corrupted"),
        (_flip, "truncated or corrupted"),
        (_garbage, "not a raydiff checkpoint"),
        (_foreign, "not a raydiff checkpoint"),
        (_other_format, "has format 2; this raydiff reads format 3"),
        (_malformed, "state.version: expected an integer, got 'seven'"),
        (_missing_key, "state.events: expected a list, got None"),
        (_wrong_client, "does not fit this run: a client id is outside 0..9"),
    ],
)
def test_a_damaged_checkpoint_is_exit_2_naming_file_and_problem(tmp_path, capsys, damage, needle):
    """Issue 18: a truncated, garbage or malformed checkpoint gave a traceback (exit 1)."""
    folder = _interrupted_folder(tmp_path)
    path = folder / checkpoint.CHECKPOINT
    damage(path)
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert main(["run", "--resume", str(folder)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert needle in err and "Traceback" not in err
    assert "checkpoint.npz" in err
    after = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert before == after, "a refused resume must change nothing in the folder"


def test_a_config_edited_after_the_checkpoint_is_refused(tmp_path, capsys):
    """Issue 18, defect 5: num_clients 10 -> 12 in config.yaml was used as is (partition rewritten, exit 0)."""
    folder = _interrupted_folder(tmp_path)
    cfg = folder / "config.yaml"
    cfg.write_text(cfg.read_text().replace("num_clients: 10", "num_clients: 12"))
    part = (folder / "partition.parquet").read_bytes()
    assert main(["run", "--resume", str(folder)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "belongs to another config" in err and "config.yaml was changed" in err
    assert (folder / "partition.parquet").read_bytes() == part


def test_resuming_a_finished_run_changes_nothing(tmp_path, capsys):
    """Issue 18, defect 5: resuming a finished run re-ran the final evaluation and overwrote wall_seconds."""
    r = raydiff.run(DRY, out=tmp_path / "done", progress=False)
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in r.out_dir.iterdir() if p.is_file()}
    assert main(["run", "--resume", str(r.out_dir)]) == 0
    assert "already finished" in capsys.readouterr().out
    after = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in r.out_dir.iterdir() if p.is_file()}
    assert before == after


def test_resume_without_checkpoint_names_the_setting(tmp_path):
    r = raydiff.run(
        dict(DRY, run={"dry_run": True, "max_updates": 4}),
        out=tmp_path / "x",
        progress=False,
        callback=lambda info: (_ for _ in ()).throw(KeyboardInterrupt) if info["version"] == 2 else None,
    )
    assert r.summary["interrupted"]
    with pytest.raises(CheckpointError, match=r"holds no checkpoint\.npz; was run\.checkpoint_every set"):
        raydiff.run(resume=r.out_dir, progress=False)
