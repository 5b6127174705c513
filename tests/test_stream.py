"""Issue 23: settled jobs are streamed to the run folder as they happen, so kill -9 loses at most the last flush,
and the compacted events.parquet is what it always was. Dry runs: no Ray, seconds each."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

import raydiff
from raydiff.cli import main
from raydiff.outputs import write_events
from raydiff.records import STREAM_DIR, StreamSink, has_stream, read_stream, stream_rows

DRY = {
    "clients": {"num_clients": 12, "dropout": 0.2},
    "strategy": {"name": "fedbuff", "concurrency": 4, "buffer_size": 2},
    "run": {"dry_run": True, "max_updates": 300},
}
FROZEN = Path("/work/frozen")


def test_compacted_events_are_the_streamed_rows_byte_for_byte(tmp_path, monkeypatch):
    """The stream holds every settled job once; compacting it gives events.parquet's very bytes."""
    monkeypatch.setattr(StreamSink, "remove", lambda self: None)  # keep the stream to compare
    r = raydiff.run(DRY, out=tmp_path / "r", progress=False)
    assert has_stream(r.out_dir)
    table, evals = read_stream(r.out_dir)
    assert evals == [] and table.num_rows == r.summary["jobs_dispatched"]
    write_events(tmp_path / "again.parquet", stream_rows(r.out_dir))
    assert (tmp_path / "again.parquet").read_bytes() == (r.out_dir / "events.parquet").read_bytes()


def test_a_finished_run_leaves_no_stream(tmp_path):
    r = raydiff.run(DRY, out=tmp_path / "r", progress=False)
    assert not (r.out_dir / STREAM_DIR).exists()
    assert json.loads((r.out_dir / "status.json").read_text())["status"] == "finished"


@pytest.mark.skipif(not (FROZEN / "raydiff").is_dir(), reason="needs the pre-change tree in /work/frozen")
def test_events_parquet_is_what_the_previous_release_wrote(tmp_path):
    """Same schema, same rows, same order as a run made before streaming (the frozen tree): every column that
    release had is equal, with the same types (columns added since by other features are left aside)."""
    sc = tmp_path / "s.yaml"
    sc.write_text(yaml.safe_dump(DRY))
    env = dict(os.environ, PYTHONPATH=str(FROZEN), RAYDIFF_NO_PROGRESS="1")
    old = subprocess.run(
        [sys.executable, "-m", "raydiff", "run", str(sc), "--out", str(tmp_path / "old")],
        cwd=FROZEN,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert old.returncode == 0, old.stderr
    new = raydiff.run(DRY, out=tmp_path / "new", progress=False)
    a = pq.read_table(tmp_path / "old" / "events.parquet")
    b = pq.read_table(new.out_dir / "events.parquet")
    assert b.select(a.column_names).schema.equals(a.schema)
    pd.testing.assert_frame_equal(b.select(a.column_names).to_pandas(), a.to_pandas())  # NaN == NaN here


def _start(tmp_path: Path, cfg: dict, out: Path, *extra: str) -> subprocess.Popen:
    sc = tmp_path / "s.yaml"
    sc.write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, RAYDIFF_NO_PROGRESS="1")
    return subprocess.Popen(
        [sys.executable, "-m", "raydiff", "run", str(sc), "--out", str(out), *extra],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own group: the SIGKILL below reaches nothing of pytest's
    )


LONG = {
    "clients": {"num_clients": 16},
    "strategy": {"name": "fedasync", "concurrency": 4},
    "run": {"dry_run": True, "max_updates": 10**9},
}


def test_sigkill_keeps_every_job_settled_before_the_last_flush(tmp_path):
    """Acceptance (issue 23): a run killed with SIGKILL and no checkpoint keeps its settled jobs; `raydiff
    status` and analysis.load_runs call it killed and still read them."""
    out = tmp_path / "out"
    proc = _start(tmp_path, LONG, out)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and (not has_stream(out) or read_stream(out)[0].num_rows < 1000):
            time.sleep(0.2)
        seen = read_stream(out)[0].num_rows  # on disk now; more is settled in memory
        assert seen >= 1000, proc.poll()
        time.sleep(1.5)  # over one flush period: what settled before this point must survive the kill
        before = read_stream(out)[0].num_rows
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    table, _ = read_stream(out)
    assert table.num_rows >= before > seen
    ev = table.to_pandas()
    assert ev.job_id.is_unique and ev.job_id.is_monotonic_increasing
    assert set(ev.status) <= {"applied", "dropped", "failed", "rejected"}
    assert json.loads((out / "status.json").read_text())["status"] == "running"  # what the kill left

    from raydiff.records import folder_state

    assert folder_state(out) == "killed"
    assert main(["status", str(out)]) == 0

    from analysis.load import events, load_runs

    df = load_runs([out])
    ev2 = events(df)
    assert len(ev2) == table.num_rows and set(df["state"]) == {"killed"}


def test_status_command_names_the_state(tmp_path, capsys):
    r = raydiff.run(DRY, out=tmp_path / "r", progress=False)
    assert main(["status", str(r.out_dir), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["state"] == "finished" and info["jobs_settled"] == r.summary["jobs_dispatched"]
    assert main(["status", str(tmp_path)]) == 2
    assert "not a run folder" in " ".join(capsys.readouterr().err.split())


CKPT = {
    "clients": {"num_clients": 16, "dropout": 0.2},
    "strategy": {"name": "fedasync", "concurrency": 4},
    "run": {"dry_run": True, "max_updates": 12000, "checkpoint_every": 1000},
}


@pytest.mark.slow  # two dry runs of 12,000 versions and a resumed one: ~30 s on a quiet machine
def test_resume_after_sigkill_does_not_count_streamed_rows_twice(tmp_path):
    """kill -9 after a checkpoint, with rows streamed after it; --resume rewinds the stream to the checkpoint
    and ends with the uninterrupted run's events."""
    from raydiff.sim import checkpoint

    out = tmp_path / "killed"
    proc = _start(tmp_path, CKPT, out)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None and not (out / checkpoint.CHECKPOINT).is_file():
            time.sleep(0.05)
        sha = json.loads((out / "status.json").read_text())["config_sha256"]
        # kill only once rows settled after the checkpoint are on disk (the stream flushes at least every second;
        # a fixed sleep raced it under load)
        while time.time() < deadline and proc.poll() is None:
            ckpt = len(checkpoint.read(out / checkpoint.CHECKPOINT, sha).rows)
            if has_stream(out) and read_stream(out)[0].num_rows > ckpt:
                break
            time.sleep(0.1)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    streamed = read_stream(out)[0].num_rows
    saved = len(
        checkpoint.read(
            out / checkpoint.CHECKPOINT, json.loads((out / "status.json").read_text())["config_sha256"]
        ).rows
    )
    assert streamed > saved  # rows after the checkpoint were on disk
    assert main(["run", "--resume", str(out)]) == 0
    full = raydiff.run(CKPT, out=tmp_path / "full", progress=False)
    pd.testing.assert_frame_equal(
        pd.read_parquet(full.out_dir / "events.parquet"), pd.read_parquet(out / "events.parquet")
    )
    assert not has_stream(out)
