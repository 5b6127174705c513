"""Run folders have a life cycle (issue 18): one writer at a time, a status written first and last, no
mixing of two runs, and signals that leave a consistent folder. Dry runs: no Ray, a second or two each."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

import raydiff
from raydiff.cli import main
from raydiff.errors import RunFolderError
from raydiff.run_folder import describe, is_finished, read_status

DRY = {
    "clients": {"num_clients": 8, "dropout": 0.1},
    "strategy": {"name": "fedbuff", "concurrency": 4, "buffer_size": 2},
    "run": {"dry_run": True, "max_updates": 8},
}
OTHER = {**DRY, "seed": 5}


def _status(folder: Path) -> dict:
    return json.loads((folder / "status.json").read_text())


def test_status_is_written_first_and_last(tmp_path):
    seen = []
    r = raydiff.run(
        DRY, out=tmp_path / "r", progress=False, callback=lambda info: seen.append(_status(tmp_path / "r")["status"])
    )
    assert seen and set(seen) == {"running"}  # while the loop runs
    st = _status(r.out_dir)
    assert st["status"] == "finished" and st["version"] == 8 and st["pid"] == os.getpid()
    from raydiff.config_load import load_config
    from raydiff.run_folder import config_sha256

    assert st["config_sha256"] == config_sha256(load_config(r.out_dir / "config.yaml"))
    assert (r.out_dir / "status.json").stat().st_mtime_ns >= (r.out_dir / "summary.json").stat().st_mtime_ns


def test_a_second_run_on_the_same_folder_is_refused_while_the_first_runs(tmp_path):
    """Issue 18, defect 3: two runs on one --out both exited 0 and left a folder mixing their files."""
    out = tmp_path / "shared"
    refused = []

    def second(info):
        if info["version"] == 3 and not refused:
            with pytest.raises(RunFolderError, match="is in use by another run") as e:
                raydiff.run(OTHER, out=out, progress=False)
            refused.append(str(e.value))

    r = raydiff.run(DRY, out=out, progress=False, callback=second)
    assert refused and f"pid {os.getpid()}" in refused[0]
    assert not r.summary["interrupted"] and _status(out)["status"] == "finished"
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["seed"] == 0 and json.loads((out / "summary.json").read_text())["seed"] == 0  # all one run's


def test_a_finished_run_of_another_config_is_kept_unless_forced(tmp_path, capsys):
    """Issue 18, defect 3: a run aimed at an old folder overwrote its config.yaml."""
    sc = tmp_path / "other.yaml"
    sc.write_text(yaml.safe_dump(OTHER))
    r = raydiff.run(DRY, out=tmp_path / "old", progress=False)
    (r.out_dir / "samples").mkdir()  # an older run's grids
    before = {p.name: p.read_bytes() for p in r.out_dir.iterdir() if p.is_file()}
    assert main(["run", str(sc), "--out", str(r.out_dir)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "holds a finished run of another config" in err and "--force" in err
    assert {p.name: p.read_bytes() for p in r.out_dir.iterdir() if p.is_file()} == before
    assert main(["run", str(sc), "--out", str(r.out_dir), "--force"]) == 0
    assert yaml.safe_load((r.out_dir / "config.yaml").read_text())["seed"] == 5
    assert not (r.out_dir / "samples").exists()  # the old run's files are gone, not mixed in
    # the same config again is a plain re-run
    assert main(["run", str(sc), "--out", str(r.out_dir)]) == 0


def test_a_folder_of_other_files_is_not_written_into(tmp_path, capsys):
    d = tmp_path / "mine"
    d.mkdir()
    (d / "notes.txt").write_text("my thesis")
    assert main(["run", _scenario(tmp_path), "--out", str(d)]) == 2
    assert "holds files that are not a raydiff run" in " ".join(capsys.readouterr().err.split())
    assert sorted(p.name for p in d.iterdir()) == ["notes.txt"]


def test_a_crashing_run_in_an_old_folder_leaves_no_old_results_under_its_config(tmp_path, monkeypatch):
    """Issue 18, defect 3: a crashing run overwrote config.yaml, so load_runs labelled the old results with it."""
    from raydiff.dry_run import DryExecutor

    old = raydiff.run(DRY, out=tmp_path / "f", progress=False)
    real = DryExecutor.submit

    def crash(self, spec, *a):
        if spec.job_id == 6:
            raise RuntimeError("a bug in the strategy")
        return real(self, spec, *a)

    monkeypatch.setattr(DryExecutor, "submit", crash)
    with pytest.raises(RuntimeError, match="a bug in the strategy"):
        raydiff.run(OTHER, out=old.out_dir, progress=False, force=True)
    st = _status(old.out_dir)
    assert st["status"] == "failed" and "RuntimeError: a bug in the strategy" in st["reason"]
    assert not (old.out_dir / "summary.json").exists()  # no summary: analysis.find_runs skips the folder
    ev = pd.read_parquet(old.out_dir / "events.parquet")  # what the failed run settled, one status per job
    assert ev.job_id.is_unique and len(ev) >= 6 and set(ev.status) <= {"applied", "dropped", "failed", "rejected"}
    from analysis.load import find_runs

    with pytest.raises(ValueError, match="holds no run folder"):
        find_runs([tmp_path])


def _scenario(tmp_path: Path, cfg: dict = DRY, name: str = "s.yaml") -> str:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(cfg))
    return str(p)


# ---------------------------------------------------------------------------------------- signals
LONG = {
    "clients": {"num_clients": 16},
    "strategy": {"name": "fedasync", "concurrency": 4},
    "run": {"dry_run": True, "max_updates": 10**9, "checkpoint_every": 500},
}


def _start(tmp_path: Path, cfg: dict, out: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, RAYDIFF_NO_PROGRESS="1")
    return subprocess.Popen(
        [sys.executable, "-m", "raydiff", "run", _scenario(tmp_path, cfg), "--out", str(out), *extra],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_for(cond, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not cond():
        time.sleep(0.2)
    assert proc.poll() is None and cond(), proc.communicate(timeout=30)[0] if proc.poll() is not None else "timeout"


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), pytest.param(signal.SIGHUP, 129, marks=pytest.mark.slow)])
def test_sigterm_and_sighup_stop_a_run_like_ctrl_c(tmp_path, sig, code):
    """Issue 18, defect 4: SIGTERM (timeout, batch schedulers, ray job stop) killed the run with nothing written."""
    out = tmp_path / "out"
    proc = _start(tmp_path, LONG, out)
    try:
        _wait_for(lambda: (out / "checkpoint.npz").is_file(), proc)  # the event loop is running
        proc.send_signal(sig)
        text, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["stop_signal"] == sig.name
    st = _status(out)
    assert st["status"] == "interrupted" and sig.name in st["reason"]
    ev = pd.read_parquet(out / "events.parquet")
    assert ev.job_id.is_unique and (ev.status == "applied").sum() == summary["updates_applied"]
    assert "Traceback" not in text


def test_a_second_signal_during_the_wind_down_is_deferred(capsys):
    """Issue 18, defect 4: a second Ctrl-C lost the folder right after the message promising one."""
    from raydiff.signals import Interrupted, SignalGuard, last_signal

    # as in a terminal: pytest started as a shell's background job inherits SIGINT ignored, which the guard keeps
    old_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        before = signal.getsignal(signal.SIGTERM)  # SIG_DFL, or Ray's own if an earlier test started Ray here
        with SignalGuard():
            with pytest.raises(Interrupted) as e:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(1)
            assert e.value.signum == signal.SIGTERM
            os.kill(os.getpid(), signal.SIGINT)  # while "writing the folder": deferred, no exception
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)
        assert last_signal() == signal.SIGTERM
        assert capsys.readouterr().err.count("deferred so that the folder is complete") == 2
        assert signal.getsignal(signal.SIGTERM) is before  # handlers restored
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, old_int)


# ---------------------------------------------------------------------------------------- sweeps
def _sweep(tmp_path: Path, base: dict, sweep: dict) -> Path:
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    p = tmp_path / "sweep.yaml"
    p.write_text(yaml.safe_dump({"name": "s", "base": "base.yaml", **sweep}, sort_keys=False))
    return p


def test_a_failed_run_is_recorded_and_the_sweep_goes_on(tmp_path, capsys):
    """Issue 18: a sweep records a failed run with its reason, runs the others, prints the failures, exits 1,
    and a rerun retries only the failed run."""
    p = _sweep(tmp_path, DRY, {"grid": {"clients.num_clients": [6, 5000, 7]}})
    out = tmp_path / "o"
    assert main(["sweep", str(p), "--out", str(out)]) == 1
    text = capsys.readouterr().out
    assert "3 runs, 2 ran, 0 skipped (already finished), 1 failed" in text
    assert "num_clients=5000  DataError: clients.num_clients=5000 is more than" in text
    index = yaml.safe_load((out / "sweep.yaml").read_text())
    status = {r["name"]: r["status"] for r in index["runs"]}
    assert status == {"num_clients=6": "ran", "num_clients=5000": "failed", "num_clients=7": "ran"}
    assert "DataError" in index["runs"][1]["reason"]
    assert main(["sweep", str(p), "--out", str(out)]) == 1
    assert "3 runs, 0 ran, 2 skipped (already finished), 1 failed" in capsys.readouterr().out


def test_sweep_parallel_must_be_a_number(tmp_path, capsys):
    p = _sweep(tmp_path, DRY, {"parallel": "two"})
    assert main(["sweep", str(p), "--out", str(tmp_path / "o")]) == 2
    assert "parallel must be a whole number of runs at once, 1 to 1024, got 'two'" in " ".join(
        capsys.readouterr().err.split()
    )


def test_list_never_calls_a_killed_rerun_with_a_changed_config_done(tmp_path, capsys):
    """Issue 18, defect 2: a re-run writes config.yaml first and summary.json last; killed in between, the
    sweep said done and reported the old run's results under the new config."""
    p = _sweep(tmp_path, DRY, {"grid": {"clients.dropout": [0.0]}})
    out = tmp_path / "o"
    assert main(["sweep", str(p), "--out", str(out)]) == 0
    capsys.readouterr()
    folder = out / "dropout=0.0"
    # the sweep's base changes, and its re-run is killed (SIGKILL: nothing is cleaned up) while it runs
    changed = {**LONG, "clients": {"num_clients": 8, "dropout": 0.0}}
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(changed))
    env = dict(os.environ, RAYDIFF_NO_PROGRESS="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "raydiff", "sweep", str(p), "--out", str(out)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_for(lambda: (folder / "checkpoint.npz").is_file(), proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (folder / "config.yaml").is_file() and read_status(folder)["status"] == "running"
    assert main(["sweep", str(p), "--out", str(out), "--list"]) == 0
    assert capsys.readouterr().out.split()[0] == "killed"


@pytest.mark.slow
def test_killed_sweep_run_is_redone_and_the_others_are_skipped(tmp_path, capsys):
    """Issue 18, acceptance: a sweep of 3 runs whose second is killed with SIGKILL, then rerun: the killed run is
    redone, the others are skipped, and --list never calls an unfinished run done."""
    base = {**DRY, "run": {"dry_run": True, "max_updates": 5, "checkpoint_every": 100}}
    long = 10_000  # the second run: seconds of dry-run events, long enough to be killed midway
    p = _sweep(tmp_path, base, {"grid": {"run.max_updates": [5, long, 6]}, "parallel": 3})
    out = tmp_path / "o"
    names = ["max_updates=5", f"max_updates={long}", "max_updates=6"]
    env = dict(os.environ, RAYDIFF_NO_PROGRESS="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "raydiff", "sweep", str(p), "--out", str(out)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )

    def first_and_third_done():
        return (
            all((read_status(out / n) or {}).get("status") == "finished" for n in (names[0], names[2]))
            and (out / names[1] / "checkpoint.npz").is_file()
        )

    try:
        _wait_for(first_and_third_done, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert read_status(out / names[1])["status"] == "running"  # killed midway
    assert main(["sweep", str(p), "--out", str(out), "--list"]) == 0
    listed = {path: word for word, path in (line.split() for line in capsys.readouterr().out.splitlines())}
    assert [listed[str(out / n)] for n in names] == ["done", "killed", "done"]
    assert main(["sweep", str(p), "--out", str(out)]) == 0
    assert "3 runs, 1 ran, 2 skipped (already finished), 0 failed" in capsys.readouterr().out
    assert read_status(out / names[1])["status"] == "finished"
    assert main(["sweep", str(p), "--out", str(out), "--list"]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == ["done"] * 3


def test_is_finished_needs_the_status(tmp_path):
    r = raydiff.run(DRY, out=tmp_path / "r", progress=False)
    from raydiff.config_load import load_config
    from raydiff.run_folder import config_sha256

    sha = config_sha256(load_config(r.out_dir / "config.yaml"))
    assert is_finished(r.out_dir, sha) and not is_finished(r.out_dir, "other")
    st = _status(r.out_dir)
    (r.out_dir / "status.json").write_text(json.dumps(dict(st, status="running")))
    assert not is_finished(r.out_dir, sha) and describe(r.out_dir, sha) == "killed"
