"""Issue 18 on real Ray runs (slow): SIGTERM, with a second one during the wind-down, leaves a complete folder
and exits 143 (it aborted with exit 134 and wrote nothing); a run whose clients diverge stops (it ran forever)."""

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

pytestmark = pytest.mark.slow


def _popen(tmp_path: Path, cfg: dict, out: Path) -> subprocess.Popen:
    sc = tmp_path / "s.yaml"
    sc.write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, RAYDIFF_NO_PROGRESS="1", RAY_USAGE_STATS_ENABLED="0", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    return subprocess.Popen(
        [sys.executable, "-m", "raydiff", "run", str(sc), "--out", str(out), "-v"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_sigterm_twice_on_a_ray_run_leaves_a_complete_folder(tmp_path):
    cfg = json.loads(json.dumps(TINY))
    cfg["clients"]["num_gpus"] = 0
    cfg["run"] = {"max_updates": 100000, "num_cpus": 2}
    out = tmp_path / "out"
    proc = _popen(tmp_path, cfg, out)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        deadline = time.time() + 400
        while time.time() < deadline and not any("event loop started" in ln for ln in lines):
            time.sleep(0.5)
        assert any("event loop started" in ln for ln in lines), "".join(lines)
        time.sleep(6)  # a few versions
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)  # during the wind-down: deferred, not fatal
        proc.wait(timeout=300)
        reader.join(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = "".join(lines)
    assert proc.returncode == 143, text
    assert "Traceback" not in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["stop_signal"] == "SIGTERM" and summary["final_version"] >= 1
    assert json.loads((out / "status.json").read_text())["status"] == "interrupted"
    ev = pd.read_parquet(out / "events.parquet")
    assert ev.job_id.is_unique and set(ev.status) <= {"applied", "dropped", "failed", "rejected"}
    assert (ev.status == "applied").sum() == summary["updates_applied"]
    assert (out / "model" / "model_index.json").is_file() and (out / "samples" / "final.png").is_file()


def test_clients_that_diverge_stop_the_run(tmp_path):
    """train.lr=1000: every update is NaN from the first version on; the run used to reject them forever."""
    cfg = json.loads(json.dumps(TINY))
    cfg["clients"]["num_gpus"] = 0
    cfg["train"]["lr"] = 1000.0
    cfg["run"] = {"max_updates": 40, "num_cpus": 2}
    out = tmp_path / "out"
    proc = _popen(tmp_path, cfg, out)
    text, _ = proc.communicate(timeout=600)
    assert proc.returncode == 2, text
    assert "NaN or infinite" in text and "Traceback" not in text
    st = json.loads((out / "status.json").read_text())
    assert st["status"] == "failed" and "ModelNotFinite" in st["reason"]
    ev = pd.read_parquet(out / "events.parquet")
    assert ev.failure_reason.str.startswith("non_finite").sum() >= 16
