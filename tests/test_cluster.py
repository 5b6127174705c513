"""Clusters: cluster.yaml checked with Ray's own schema; a multi-node run that loses a node and finishes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from raydiff.cluster import main as cluster_main
from raydiff.cluster import validate_cluster_yaml
from raydiff.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_cluster_yaml_is_valid():
    cfg = validate_cluster_yaml(ROOT / "cluster.yaml")
    types = cfg["available_node_types"]
    assert types["gpu_worker"]["resources"]["GPU"] == 1
    for key in ("head_setup_commands", "worker_setup_commands"):  # Ray merged setup_commands into both
        assert any("pip install" in c and "raydiff-" in c and ".whl[cluster]" in c for c in cfg[key])
        assert any("uv venv --seed --python 3.11" in c for c in cfg[key])


@pytest.mark.parametrize(
    "old, new, needle",
    [
        ("head_node_type: head", "head_node_type: headd", "head_node_type"),
        ("max_workers: 8\nupscaling_speed", "max_workers: many\nupscaling_speed", "max_workers: 'many' is not of type"),
        ("idle_timeout_minutes: 10", "idle_timout_minutes: 10", "idle_timout_minutes"),
    ],
)
def test_broken_cluster_yaml_is_rejected_clearly(tmp_path, capsys, old, new, needle):
    text = (ROOT / "cluster.yaml").read_text()
    assert old in text
    bad = tmp_path / "cluster.yaml"
    bad.write_text(text.replace(old, new, 1))
    with pytest.raises(ConfigError, match="cluster file"):
        validate_cluster_yaml(bad)
    assert cluster_main([str(bad)]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


@pytest.mark.slow  # a real second raylet: ~55 s of the default run
def test_multinode_run_survives_losing_a_node(tmp_path):
    r = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "scripts" / "multinode.py"), str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=480,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]  # Ray may log after it
    assert lines, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads(lines[-1][len("RESULT ") :])
    s = res["summary"]
    assert res["killed"], "the worker node was never removed"
    assert s["final_version"] == 8 and not s["interrupted"]
    assert res["applied"] == 16 and res["unique_jobs"]
    assert set(res["statuses"]) <= {"applied", "failed", "rejected", "dropped"}
    assert set(res["nodes_used"]) == set(res["workers"])  # clients spread over both workers, never the head
    assert res["failed"] >= 1 and s["actors_replaced"] >= 1  # the lost node's jobs failed, its actor was replaced
