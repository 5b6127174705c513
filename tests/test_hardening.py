"""Issue 18: every bad input is exit 2 with one paragraph (never a traceback), every number finite and in range,
strict JSON, failures that keep the folder (a client's exception is exit 1 naming client, job and traceback; a
non-finite model stops the run), and lost actors named by type. In-process CLI calls and dry runs: fast."""

from __future__ import annotations

import json
import math
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import raydiff
from raydiff.cli import main
from raydiff.errors import ClientJobError, ModelNotFinite

DRY = {
    "clients": {"num_clients": 8, "dropout": 0.1},
    "strategy": {"name": "fedbuff", "concurrency": 4, "buffer_size": 2},
    "run": {"dry_run": True, "max_updates": 10},
}


def _scenario(tmp_path: Path, data=DRY, name: str = "s.yaml") -> str:
    p = tmp_path / name
    if isinstance(data, bytes):
        p.write_bytes(data)
    else:
        p.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return str(p)


def _exit2(capsys, args: list[str], needle: str) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "raydiff: error: " in err and "Traceback" not in err, err
    err = err[err.index("raydiff: error: ") :]  # after the progress bar, when one is drawn
    flat = " ".join(err.split())
    assert needle in flat, flat
    return flat


@pytest.mark.parametrize(
    "override, needle",
    [
        ("strategy.over_selection=.inf", "strategy.over_selection: must be a finite number in [0, 100], got inf"),
        ("strategy.server_lr=.inf", "strategy.server_lr: must be a finite number in (0, 1000000], got inf"),
        ("strategy.server_tau=.nan", "strategy.server_tau: must be a finite number"),
        ("strategy.dp.noise_multiplier=.inf", "strategy.dp.noise_multiplier: must be a finite number in [0, 1000000]"),
        ("strategy.dp.clip_norm=-1", "strategy.dp.clip_norm: must be a finite number in (0, 1e+12], got -1"),
        ("seed=-1", "seed: must be an integer in [0, 2^63-1], got -1"),
        (f"seed={2**63}", f"seed: must be an integer in [0, 2^63-1], got {2**63}"),
        ("run.num_cpus=-1", "run.num_cpus: must be an integer in [1, 100000], got -1"),
        ("data.beta=.inf", "data.partition: iid (beta: inf is refused, not read as IID)"),
        (
            "clients.network.latency_s=.inf",
            "clients.network.latency_s: must be a finite number in [0, 1000000], got inf",
        ),
        ("clients.num_clients=1.0e+30", "clients.num_clients: must be an integer in [1, 1000000]"),
        ("train.lr=1e400", "train.lr: must be a finite number in (0, 1000], got inf"),
        ("clients.speed.tier_speeds=[1, .nan]", "clients.speed.tier_speeds"),
        ("name=../escaped", "name: '../escaped' cannot be a folder name"),
        ("data.synthetic_size=100000000", "more than 2^28"),
    ],
)
def test_out_of_range_numbers_are_exit_2_naming_field_and_range(tmp_path, capsys, override, needle):
    """Issue 18: over_selection=.inf, seed < 0 or >= 2^63 and run.num_cpus=-1 gave tracebacks; server_lr=.inf,
    beta=inf and latency_s=.inf were accepted."""
    if "synthetic" in override:
        override = "data.dataset=synthetic --set data.image_size=64 --set " + override
    args = ["run", _scenario(tmp_path), "--out", str(tmp_path / "out")]
    for part in override.split(" --set "):
        args += ["--set", part]
    _exit2(capsys, args, needle)
    assert not (tmp_path / "out").exists() and not (tmp_path / "escaped").exists()


def test_non_utf8_scenario_and_trace_files_are_exit_2(tmp_path, capsys):
    """Issue 18: a non-UTF-8 scenario or trace file gave a traceback."""
    _exit2(capsys, ["run", _scenario(tmp_path, b"name: caf\xe9\nseed: 1\n")], "is not UTF-8 text")
    trace = tmp_path / "trace.csv"
    trace.write_bytes("client_id,speed,down_mbps,up_mbps,latency_s\n0,1,1,1,0.1 \xb5s\n".encode("latin-1"))
    _exit2(
        capsys,
        ["run", _scenario(tmp_path), "--set", f"clients.trace={trace}", "--out", str(tmp_path / "o")],
        "clients.trace",
    )
    _exit2(capsys, ["run", _scenario(tmp_path, "[" * 5000)], "")  # nested too deeply: no RecursionError traceback


def test_out_that_is_a_file_or_below_one_is_exit_2(tmp_path, capsys):
    """Issue 18: --out that is a file, below a file or unwritable gave tracebacks (run, sample and report)."""
    f = tmp_path / "file"
    f.write_text("x")
    sc = _scenario(tmp_path)
    _exit2(capsys, ["run", sc, "--out", str(f)], "is a file, not a folder")
    _exit2(capsys, ["run", sc, "--out", str(f / "sub")], "which is a file, not a folder")
    _exit2(capsys, ["sample", str(tmp_path), "--out", str(f / "grid.png")], "which is a file, not a folder")
    _exit2(capsys, ["sample", str(tmp_path), "--out", str(tmp_path)], "is a folder; give a file name")
    assert not (tmp_path.parent / f"{tmp_path.name}.tmp").exists()
    _exit2(capsys, ["report", str(tmp_path), "--out", str(f / "r.html")], "which is a file, not a folder")
    assert f.read_text() == "x"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_unwritable_out_is_exit_2(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        _exit2(capsys, ["run", _scenario(tmp_path), "--out", str(ro / "run")], "no permission to write")
        _exit2(capsys, ["sample", str(tmp_path), "--out", str(ro / "g.png")], "no permission to write")
    finally:
        ro.chmod(0o700)


def test_a_failed_atomic_write_leaves_no_temporary_file(tmp_path):
    """Issue 18: `raydiff sample --out DIR` left DIR.tmp behind."""
    from raydiff.outputs import write_grid

    d = tmp_path / "grid"
    d.mkdir()
    with pytest.raises(OSError):
        write_grid(d, np.zeros((4, 1, 8, 8), np.float32))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid"]


def test_json_output_is_strict(tmp_path):
    """Issue 18: latency_s=.inf wrote Infinity into summary.json, which strict JSON parsers reject."""
    from raydiff.outputs import write_json

    write_json(tmp_path / "s.json", {"a": math.inf, "b": [math.nan, 1.5], "c": np.float32("-inf"), "d": np.int64(3)})
    text = (tmp_path / "s.json").read_text()
    assert "Infinity" not in text and "NaN" not in text
    assert json.loads(text) == {"a": None, "b": [None, 1.5], "c": None, "d": 3}


def test_scenario_and_sweep_names_cannot_escape_the_runs_folder(tmp_path, capsys, monkeypatch):
    """Issue 18: a scenario name with ../ wrote the run folder outside runs/."""
    monkeypatch.chdir(tmp_path)
    _exit2(capsys, ["run", _scenario(tmp_path, {**DRY, "name": "../../outside"})], "cannot be a folder name")
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(DRY))
    (tmp_path / "w.yaml").write_text(yaml.safe_dump({"name": "../up", "base": "base.yaml"}))
    _exit2(capsys, ["sweep", str(tmp_path / "w.yaml")], "sweep name: '../up' cannot be a folder name")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base.yaml", "s.yaml", "w.yaml"]


# ---------------------------------------------------------------------------------------- failures keep the folder
def test_a_client_exception_is_exit_1_naming_client_job_and_traceback(tmp_path, capsys, monkeypatch):
    """Issue 18: an exception inside a client's training is an internal error (exit 1), not exit 2; the folder
    keeps everything settled so far."""
    from raydiff.dry_run import DryExecutor

    real = DryExecutor.result

    def boom(self, ticket):
        if ticket == 9:
            raise ClientJobError(
                "client 3's job 9 (on client-actor-0) raised an exception in its training, so the "
                "run stops.\nTraceback (most recent call last):\n  ...\nValueError: bad batch"
            )
        return real(self, ticket)

    monkeypatch.setattr(DryExecutor, "result", boom)
    out = tmp_path / "out"
    assert main(["run", _scenario(tmp_path), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    msg = err[err.index("raydiff: internal error") :]  # after the progress bar, when one is drawn
    assert msg.startswith("raydiff: internal error: client 3's job 9") and "ValueError: bad batch" in msg
    st = json.loads((out / "status.json").read_text())
    assert st["status"] == "failed" and "ClientJobError" in st["reason"]
    ev = pd.read_parquet(out / "events.parquet")
    assert ev.job_id.is_unique and (ev.job_id < 9).sum() >= 8  # every job before it kept
    assert set(ev[ev.status == "rejected"].failure_reason) <= {"run_failed", "buffer_unflushed"}


def test_the_ray_executor_names_the_job_and_keeps_the_remote_traceback(monkeypatch):
    pytest.importorskip("ray")
    from ray.exceptions import ActorDiedError, ObjectLostError, RayTaskError

    from raydiff.messages import JobSpec
    from raydiff.ray_exec import executor as rx
    from raydiff.ray_exec.pool import Ticket
    from raydiff.sim.executor import ActorLost

    class Pool:
        def done(self, t):
            pass

        def replace(self, t):
            pass

    ex = rx.RayExecutor(Pool(), None, None, None)
    ticket = Ticket(2, 0, "m", "p", "s", JobSpec(41, 7, 1, np.arange(3), 1, 1))

    def raising(err):
        def get(ref):
            raise err

        return get

    bug = RayTaskError(
        "train",
        'Traceback (most recent call last):\n  File "client.py"\nZeroDivisionError: x',
        ZeroDivisionError("x"),
        proctitle="w",
        pid=1,
        ip="127.0.0.1",
    ).as_instanceof_cause()
    monkeypatch.setattr(rx.ray, "get", raising(bug))
    with pytest.raises(ClientJobError, match=r"client 7's job 41 \(on client-actor-2\)") as e:
        ex.result(ticket)
    assert "ZeroDivisionError" in str(e.value)
    # a lost input is told by the exception's type along Ray's cause chain, never by its text
    lost = RayTaskError(
        "train",
        "could not be computed",
        ObjectLostError("00" * 28, "owner", "call"),
        proctitle="w",
        pid=1,
        ip="127.0.0.1",
    )
    monkeypatch.setattr(rx.ray, "get", raising(lost))
    with pytest.raises(ActorLost) as e2:
        ex.result(ticket)
    assert (e2.value.reason, e2.value.actor) == ("object_lost", "client-actor-2")
    wording = RayTaskError(
        "train",
        "At least one of the input arguments for this task could not be computed",
        ValueError("a bug"),
        proctitle="w",
        pid=1,
        ip="127.0.0.1",
    )
    assert not rx._lost_input(wording) and rx._lost_input(
        RayTaskError("train", "tb", ActorDiedError(), proctitle="w", pid=1, ip="127.0.0.1")
    )


def test_a_lost_actor_is_failed_actor_lost_with_its_actor(tmp_path, monkeypatch):
    """Issue 18: the reason read 'actor_lost: ActorDiedError' (README: actor_lost) and `actor` was empty."""
    from raydiff.dry_run import DryExecutor
    from raydiff.sim.executor import ActorLost

    real = DryExecutor.result

    def lose(self, ticket):
        if ticket == 4:
            raise ActorLost("actor_lost", "client-actor-1")
        if ticket == 6:
            raise ActorLost("object_lost", "client-actor-0")
        return real(self, ticket)

    monkeypatch.setattr(DryExecutor, "result", lose)
    r = raydiff.run(DRY, out=tmp_path / "r", progress=False)
    ev = pd.read_parquet(r.out_dir / "events.parquet").set_index("job_id")
    assert tuple(ev.loc[4, ["status", "failure_reason", "actor"]]) == ("failed", "actor_lost", "client-actor-1")
    assert tuple(ev.loc[6, ["status", "failure_reason", "actor"]]) == ("failed", "object_lost", "client-actor-0")


def test_a_non_finite_model_stops_the_run_and_keeps_its_folder(tmp_path, capsys, monkeypatch):
    """Issue 18, defect 6: server_lr=.inf left the run at version 2 for 600 s, and Ctrl-C then lost it."""
    from raydiff.dry_run import DryExecutor

    real = DryExecutor.submit

    def diverge(self, spec, *a):
        reply, handle = real(self, spec, *a)
        return (replace(reply, finite=False) if reply.version == 3 else reply), handle

    monkeypatch.setattr(DryExecutor, "submit", diverge)
    out = tmp_path / "out"
    flat = _exit2(capsys, ["run", _scenario(tmp_path), "--out", str(out)], "NaN or infinite values at version 3")
    assert "Lower strategy.server_lr or train.lr" in flat
    st = json.loads((out / "status.json").read_text())
    assert st["status"] == "failed" and "ModelNotFinite" in st["reason"]
    ev = pd.read_parquet(out / "events.parquet")
    assert ev.applied_version.max() == 3 and (ev.status == "applied").sum() == 6  # K=2 per version, 3 versions


def test_updates_that_are_all_nan_stop_the_run(tmp_path, monkeypatch):
    """A model that stays finite while every client's update is NaN (a too-large learning rate) would be rejected
    update after update forever; the run stops instead."""
    from raydiff.dry_run import DryExecutor
    from raydiff.messages import ServerReply

    real = DryExecutor.submit

    def nan_after(self, spec, base_version, ticket, base):
        if spec.job_id >= 12:
            return ServerReply(self.server.version, "rejected", 0, "non_finite: the update holds NaN or Inf"), None
        return real(self, spec, base_version, ticket, base)

    monkeypatch.setattr(DryExecutor, "submit", nan_after)
    cfg = {**DRY, "run": {"dry_run": True, "max_updates": 1000, "max_vtime": 10**6}}
    with pytest.raises(ModelNotFinite, match="the last 16 updates were all NaN or infinite"):
        raydiff.run(cfg, out=tmp_path / "r", progress=False)
    assert json.loads((tmp_path / "r" / "status.json").read_text())["status"] == "failed"


def test_the_server_reports_a_non_finite_version():
    from raydiff.actors.server import ParameterServer
    from raydiff.config import StrategyConfig
    from raydiff.strategies import build_strategy

    s = build_strategy(StrategyConfig(name="fedbuff", buffer_size=1, server_lr=10.0), 4)
    server = ParameterServer(np.ones(4, np.float32), s)
    reply, _ = server.submit(0, 0, 0, 1, np.full(4, 1e-3, np.float32))
    assert reply.finite
    with np.errstate(over="ignore"):  # a finite update that overflows the model
        reply, _ = server.submit(1, 0, 1, 1, np.full(4, 3e38, np.float32))
    assert reply.version == 2 and not reply.finite
