"""Sweeps: the cartesian product of cases x grid x seeds, validated up front, resumable."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from raydiff.cli import main
from raydiff.errors import ConfigError
from raydiff.sweep import plan, run_sweep

BASE = {
    "data": {"dataset": "digits"},
    "clients": {"num_clients": 8},
    "strategy": {"name": "fedbuff", "concurrency": 4, "buffer_size": 2},
    "run": {"dry_run": True, "max_updates": 5},
}


def _files(tmp_path, sweep: dict):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(BASE))
    p = tmp_path / "sweep.yaml"
    p.write_text(yaml.safe_dump({"name": "s", "base": "base.yaml", **sweep}, sort_keys=False))
    return p


def test_two_by_two_sweep_then_resume_runs_nothing_new(tmp_path):
    p = _files(tmp_path, {"grid": {"strategy.name": ["fedasync", "fedbuff"], "clients.dropout": [0.0, 0.3]}})
    out = tmp_path / "out"
    first = run_sweep(p, out)
    assert [r["status"] for r in first] == ["ran"] * 4
    folders = sorted(d.name for d in out.iterdir() if d.is_dir())
    assert folders == [
        "strategy=fedasync-dropout=0.0",
        "strategy=fedasync-dropout=0.3",
        "strategy=fedbuff-dropout=0.0",
        "strategy=fedbuff-dropout=0.3",
    ]
    cfg = yaml.safe_load((out / "strategy=fedasync-dropout=0.3" / "config.yaml").read_text())
    assert cfg["strategy"]["name"] == "fedasync" and cfg["clients"]["dropout"] == 0.3
    ev = pd.read_parquet(out / "strategy=fedasync-dropout=0.3" / "events.parquet")
    assert (ev.status == "dropped").any()
    mtimes = {d: (out / d / "summary.json").stat().st_mtime_ns for d in folders}
    again = run_sweep(p, out)
    assert [r["status"] for r in again] == ["skipped"] * 4
    assert mtimes == {d: (out / d / "summary.json").stat().st_mtime_ns for d in folders}


def test_changed_config_or_interrupted_run_is_redone(tmp_path):
    p = _files(tmp_path, {"grid": {"clients.dropout": [0.0, 0.1]}})
    out = tmp_path / "out"
    run_sweep(p, out)
    s = out / "dropout=0.1" / "status.json"  # the status, written last, says whether a run finished
    data = json.loads(s.read_text())
    s.write_text(json.dumps(dict(data, status="interrupted")))
    status = {r["name"]: r["status"] for r in run_sweep(p, out)}
    assert status == {"dropout=0.0": "skipped", "dropout=0.1": "ran"}
    # a changed base config invalidates every run
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({**BASE, "run": {"dry_run": True, "max_updates": 6}}))
    assert {r["status"] for r in run_sweep(p, out)} == {"ran"}


def test_cases_and_seeds_and_parallel(tmp_path):
    p = _files(
        tmp_path, {"cases": {"slow": ["clients.speed.dist=lognormal"], "fast": []}, "seeds": [1, 2], "parallel": 2}
    )
    recs = run_sweep(p, tmp_path / "out")
    assert sorted(r["name"] for r in recs) == ["fast-seed1", "fast-seed2", "slow-seed1", "slow-seed2"]
    s1 = json.loads((tmp_path / "out" / "slow-seed1" / "summary.json").read_text())
    assert s1["seed"] == 1 and s1["name"] == "s-slow-seed1"


def test_bad_sweeps_fail_before_any_run(tmp_path):
    p = _files(tmp_path, {"grid": {"strategy.name": ["fedbuff", "fedsgd"]}})
    with pytest.raises(ConfigError, match="strategy.name: 'fedsgd'"):
        plan(p)
    assert not (tmp_path / "runs").exists()
    p = _files(tmp_path, {"gird": {}})
    with pytest.raises(ConfigError, match="unknown key 'gird'"):
        plan(p)


def test_cli_sweep_list(tmp_path, capsys):
    p = _files(tmp_path, {"grid": {"clients.dropout": [0.0, 0.2]}})
    assert main(["sweep", str(p), "--out", str(tmp_path / "o"), "--list"]) == 0
    assert capsys.readouterr().out.count("todo") == 2
    assert main(["sweep", str(p), "--out", str(tmp_path / "o")]) == 0
    assert "2 runs, 2 ran, 0 skipped" in capsys.readouterr().out
