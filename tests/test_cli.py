"""The command line: bad input gives one clear paragraph and exit code 2; Ctrl-C leaves a consistent folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import TINY

from raydiff.records import has_stream, read_stream


def _cli(args, cwd, timeout=120, **kw):
    env = dict(os.environ, RAYDIFF_NO_PROGRESS="1", RAY_USAGE_STATS_ENABLED="0", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    return subprocess.run(
        [sys.executable, "-m", "raydiff", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,
    )


def _scenario(tmp_path: Path, data, name="s.yaml") -> Path:
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return p


@pytest.mark.parametrize(
    "content, overrides, needle",
    [
        ("strategy: {name: fedbuff\n  buffer_size: [", [], "is not valid YAML"),
        ({"strategy": {"name": "fedsgd"}}, [], "strategy.name: 'fedsgd' is not one of fedavg, fedasync, fedbuff"),
        ({}, ["data.beta=0"], "data.beta"),
        ({}, ["data.beta=-1"], "data.beta"),
        ({}, ["clients.num_clients=5000", "strategy.concurrency=2"], "clients.num_clients=5000 is more than"),
        ({"strategy": {"bufer_size": 3}}, [], "strategy.bufer_size: unknown key"),
        ({}, ["train.batch_size=big"], "train.batch_size: expected an integer"),
        ({}, ["strategy.concurrency=20"], "strategy.concurrency=20 exceeds clients.num_clients=10"),
        ({}, ["clients.num_gpus=1.5"], "clients.num_gpus"),
        ({}, ["nonsense"], "expected KEY=VALUE"),
    ],
)
def test_bad_input_is_one_paragraph_and_exit_2(tmp_path, content, overrides, needle):
    sc = _scenario(tmp_path, content)
    args = ["run", str(sc), "--out", str(tmp_path / "out")]
    for o in overrides:
        args += ["--set", o]
    r = _cli(args, tmp_path)
    assert r.returncode == 2, r.stderr
    assert needle in " ".join(r.stderr.split())
    assert "Traceback" not in r.stderr
    assert r.stderr.startswith("raydiff: error: ")
    assert not (tmp_path / "out" / "events.parquet").exists()


def test_missing_scenario_file(tmp_path):
    r = _cli(["run", str(tmp_path / "nope.yaml")], tmp_path)
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow  # 15-60 s: keeps the default run under 7 minutes; CI runs it
def test_gpus_the_cluster_lacks(tmp_path):
    """This machine has no GPU: a local Ray started by the CLI has none, and the run refuses clearly."""
    sc = _scenario(tmp_path, {"clients": {"num_gpus": 0.5}, "run": {"num_cpus": 1}})
    r = _cli(["run", str(sc), "--out", str(tmp_path / "out")], tmp_path)
    assert r.returncode == 2, r.stderr
    assert "clients.num_gpus=0.5 asks for GPUs, but the Ray cluster has none" in " ".join(r.stderr.split())
    assert "Traceback" not in r.stderr


@pytest.mark.slow  # 15-60 s: keeps the default run under 7 minutes; CI runs it
def test_ctrl_c_leaves_a_consistent_folder(tmp_path):
    cfg = json.loads(json.dumps(TINY))
    cfg["clients"]["num_gpus"] = 0
    cfg["run"] = {"max_updates": 100000, "num_cpus": 2}
    sc = _scenario(tmp_path, cfg)
    out = tmp_path / "out"
    env = dict(os.environ, RAYDIFF_NO_PROGRESS="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "raydiff", "run", str(sc), "--out", str(out), "-v"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # a shell's background job (`pytest ... &`) inherits SIGINT ignored, and so would this child: Ctrl-C
        # must reach it as it reaches a run started from a terminal
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        deadline = time.time() + 300  # actor start-up can be slow on a loaded machine
        while time.time() < deadline and not any("event loop started" in ln for ln in lines):
            time.sleep(0.5)
        assert any("event loop started" in ln for ln in lines), "".join(lines)
        # a few versions: the first streamed evaluation after version 0 (every 3 versions), not a fixed sleep
        # that a loaded machine can outrun
        while time.time() < deadline and proc.poll() is None:
            if has_stream(out) and any(r["version"] >= 1 for r in read_stream(out)[1]):
                break
            time.sleep(0.5)
        assert proc.poll() is None, "".join(lines)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=180)
        reader.join(timeout=10)
        stdout = "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True
    assert summary["final_version"] >= 1
    ev = pd.read_parquet(out / "events.parquet")
    assert ev.job_id.is_unique and set(ev.status) <= {"applied", "dropped", "failed", "rejected"}
    assert (ev.status == "applied").sum() == summary["updates_applied"] == 2 * summary["final_version"]
    assert (out / "model" / "model_index.json").is_file()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["overhead", "--repeats", "0"], "argument --repeats: must be >= 1, got 0"),
        (["overhead", "--actors", "two"], "argument --actors: expected a whole number, got 'two'"),
        (["overhead", "--preset", "huge"], "invalid choice: 'huge' (choose from 'tiny', 'small', 'ddpm-cifar10')"),
        (["engine", "--clients", "-5"], "argument --clients: must be >= 1, got -5"),
    ],
)
def test_bench_bad_arguments_are_usage_errors(tmp_path, args, needle):
    r = _cli(["bench", *args], tmp_path, timeout=60)
    assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a GPU is present")
def test_bench_on_cuda_without_a_gpu_says_so(tmp_path):
    r = _cli(["bench", "overhead", "--device", "cuda"], tmp_path, timeout=60)
    assert r.returncode == 2 and "no CUDA device is visible" in r.stderr and "Traceback" not in r.stderr
