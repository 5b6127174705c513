"""Live trackers (issue 23): TensorBoard event files and an MLflow run, read back with each library's own reader,
and a real TensorBoard server on 127.0.0.1 serving the scalars. Dry runs for the fast tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

import raydiff
from raydiff.cli import main

pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")

DRY = {
    "name": "tracked",
    "clients": {"num_clients": 8, "dropout": 0.3},
    "strategy": {"name": "fedbuff", "concurrency": 4, "buffer_size": 2},
    "run": {"dry_run": True, "max_updates": 12, "log": ["tensorboard", "mlflow"]},
}


def _scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_and_mlflow_get_one_point_per_version(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    r = raydiff.run(DRY, out=tmp_path / "r", progress=False)
    tb = _scalars(r.out_dir / "tensorboard")
    assert [s for s, _ in tb["version/dropped"]] == list(range(1, 13))
    dropped = [x for _, x in tb["version/dropped"]]
    assert dropped == sorted(dropped) and 0 < dropped[-1] <= r.summary["jobs_dropped"]  # a running count
    assert "vtime/dropped" in tb and "version/staleness" in tb

    from mlflow import MlflowClient

    from raydiff.trackers import mlflow_uri

    client = MlflowClient(tracking_uri=mlflow_uri(r.out_dir))
    exp = client.get_experiment_by_name("tracked")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["run.max_updates"] == "12"
    hist = client.get_metric_history(run.info.run_id, "version/dropped")
    assert sorted(m.step for m in hist) == list(range(1, 13))
    arts = [a.path for a in client.list_artifacts(run.info.run_id, "run")]
    assert "run/summary.json" in arts and "run/events.parquet" in arts


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_tensorboard_server_serves_the_scalars(tmp_path):
    r = raydiff.run(dict(DRY, run=dict(DRY["run"], log=["tensorboard"])), out=tmp_path / "r", progress=False)
    port = _free_port()
    tb = Path(sys.executable).with_name("tensorboard")
    proc = subprocess.Popen(
        [str(tb), "--logdir", str(r.out_dir / "tensorboard"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        q = urllib.parse.urlencode({"tag": "version/dropped", "run": "."})
        url = f"http://127.0.0.1:{port}/data/plugin/scalars/scalars?{q}"
        data = None
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(url, timeout=5) as resp:
                    data = json.loads(resp.read())
                if data:
                    break
            except OSError:
                pass
            time.sleep(1)
        assert data, f"no scalars from the tensorboard server (exit {proc.poll()})"
        assert [int(step) for _, step, _ in data] == list(range(1, 13))  # [wall_time, step, value] rows
    finally:
        os.kill(proc.pid, signal.SIGTERM)  # by its PID: only the server this test started
        proc.wait(timeout=30)


def test_a_missing_tracker_library_is_refused_before_anything_runs(tmp_path, monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    sc = tmp_path / "s.yaml"
    sc.write_text(yaml.safe_dump(dict(DRY, run={"dry_run": True, "max_updates": 3})))
    assert main(["run", str(sc), "--out", str(tmp_path / "r"), "--log", "mlflow"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "run.log: mlflow needs the 'mlflow' package" in err and "raydiff[track]" in err
    assert not (tmp_path / "r").exists()


def test_a_failing_tracker_never_loses_the_run(tmp_path, monkeypatch):
    from raydiff.trackers import TensorBoardSink

    def boom(self, info):
        raise OSError("disk of the tracker is full")

    monkeypatch.setattr(TensorBoardSink, "version", boom)
    r = raydiff.run(dict(DRY, run=dict(DRY["run"], log=["tensorboard"])), out=tmp_path / "r", progress=False)
    assert json.loads((r.out_dir / "status.json").read_text())["status"] == "finished"
    assert not r.summary["interrupted"] and (r.out_dir / "events.parquet").is_file()


@pytest.mark.slow
def test_a_real_run_logs_losses_and_the_final_grid(tmp_path, monkeypatch):
    """Acceptance: each reader returns at least one loss point per version and the final sample grid."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    qs = Path(__file__).resolve().parents[1] / "scenarios" / "quickstart.yaml"
    sets = ["run.max_updates=6", "eval.num_samples=16", "eval.fid=false", "run.num_cpus=2", "eval.every_versions=2"]
    sets += ["eval.privacy_audit.enabled=false", "run.log=[tensorboard, mlflow]"]
    r = raydiff.run(str(qs), sets, out=tmp_path / "r", progress=False)
    tb = _scalars(r.out_dir / "tensorboard")
    assert sorted(s for s, _ in tb["version/train_loss"]) == list(range(1, 7))
    assert len(tb["version/heldout_loss"]) >= 3
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(r.out_dir / "tensorboard"), size_guidance={"images": 0})
    acc.Reload()
    assert "samples/final" in acc.Tags()["images"]

    from mlflow import MlflowClient

    from raydiff.trackers import mlflow_uri

    client = MlflowClient(tracking_uri=mlflow_uri(r.out_dir))
    (run,) = client.search_runs([client.get_experiment_by_name("quickstart").experiment_id])
    hist = client.get_metric_history(run.info.run_id, "version/train_loss")
    assert sorted(m.step for m in hist) == list(range(1, 7))
    images = [a.path for a in client.list_artifacts(run.info.run_id, "images")]
    assert any("final_samples" in p for p in images), images
