"""Checkpoint and resume: a run killed with SIGKILL and resumed ends bit-identical to an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

import raydiff
from raydiff.outputs import EXECUTION_COLUMNS
from raydiff.sim import checkpoint

CFG = {
    "seed": 11,
    "clients": {
        "num_clients": 6,
        "num_cpus": 1,
        "dropout": 0.2,
        "speed": {"dist": "lognormal", "mean": 1000, "sigma": 0.8},
    },
    "train": {"local_steps": 2, "batch_size": 8},
    "strategy": {
        "name": "fedbuff",
        "concurrency": 4,
        "buffer_size": 2,
        "ema_decay": 0.9,
        "compression": {"name": "topk", "fraction": 0.2},
    },
    "eval": {"every_versions": 3, "num_heldout": 16, "num_samples": 4, "judge": False},
    "model": {"num_train_timesteps": 20},
    "run": {"max_updates": 12, "checkpoint_every": 3, "num_cpus": 2},
}


def _cli(*args, **kw):
    env = dict(os.environ, RAYDIFF_NO_PROGRESS="1")
    return subprocess.Popen(
        [sys.executable, "-m", "raydiff", "run", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        **kw,
    )


# FedAvg with client-level DP (the noise stream's state) and a server optimizer's moments
CFG_DP = dict(
    CFG,
    strategy={
        "name": "fedavg",
        "clients_per_round": 3,
        "server_optimizer": "fedadam",
        "server_lr": 0.01,
        "dp": {"enabled": True, "noise_multiplier": 0.5, "clip_norm": 1.0},
    },
)


# grouped training (issue 16): the checkpoint holds the waiting jobs and the groups still training
CFG_G4 = dict(CFG, train={"local_steps": 2, "batch_size": 8, "group_size": 4})


@pytest.mark.slow
@pytest.mark.parametrize("cfg", [CFG, CFG_DP, CFG_G4], ids=["fedbuff-ema-topk", "fedavg-dp-fedadam", "fedbuff-topk-g4"])
def test_sigkill_then_resume_gives_the_same_model(tmp_path, cfg):
    sc = tmp_path / "s.yaml"
    sc.write_text(yaml.safe_dump(cfg))
    full = _cli(str(sc), "--out", str(tmp_path / "full"))
    out, _ = full.communicate(timeout=600)
    assert full.returncode == 0, out

    killed = _cli(str(sc), "--out", str(tmp_path / "killed"))
    ckpt = tmp_path / "killed" / checkpoint.CHECKPOINT
    deadline = time.time() + 300
    version = 0
    while time.time() < deadline and killed.poll() is None:
        if ckpt.is_file():
            try:
                version = checkpoint.read_header(ckpt)["version"]
            except Exception:  # noqa: BLE001 - being replaced right now
                pass
            if version >= 6:
                break
        time.sleep(0.2)
    assert killed.poll() is None and version >= 6, "the run ended before it could be killed"
    os.killpg(killed.pid, signal.SIGKILL)  # the driver and the Ray it started, no clean-up at all
    killed.wait(timeout=60)
    assert not (tmp_path / "killed" / "summary.json").exists()
    assert json.loads((tmp_path / "killed" / "status.json").read_text())["status"] == "running"  # killed mid-run

    resumed = _cli("--resume", str(tmp_path / "killed"))
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out

    a = json.loads((tmp_path / "full" / "summary.json").read_text())
    b = json.loads((tmp_path / "killed" / "summary.json").read_text())
    assert a["model_sha256"] == b["model_sha256"] and a["ema_sha256"] == b["ema_sha256"]
    assert json.loads((tmp_path / "killed" / "status.json").read_text())["status"] == "finished"
    ea = pd.read_parquet(tmp_path / "full" / "events.parquet")
    eb = pd.read_parquet(tmp_path / "killed" / "events.parquet")
    sim = [c for c in ea.columns if c not in EXECUTION_COLUMNS]
    pd.testing.assert_frame_equal(ea[sim], eb[sim])
    va = pd.read_parquet(tmp_path / "full" / "evals.parquet")
    vb = pd.read_parquet(tmp_path / "killed" / "evals.parquet")
    assert list(va.version) == list(vb.version)
    pd.testing.assert_series_equal(va.heldout_loss, vb.heldout_loss)


@pytest.mark.parametrize(
    "strategy, availability",
    [
        ({"name": "fedbuff", "concurrency": 5, "buffer_size": 3}, "onoff"),
        ({"name": "fedasync", "concurrency": 5}, "onoff"),
        ({"name": "fedavg", "clients_per_round": 4, "over_selection": 0.5, "deadline_s": 3.0}, "onoff"),
        # wrappers and optimizer state: EMA, DP's noise stream (one update per client), FedAdam's moments
        (
            {
                "name": "fedbuff",
                "concurrency": 5,
                "buffer_size": 3,
                "ema_decay": 0.9,
                "server_optimizer": "fedadam",
                "dp": {"enabled": True},
            },
            "bernoulli",
        ),
        ({"name": "fedavg", "clients_per_round": 4, "ema_decay": 0.5, "dp": {"enabled": True}}, "always"),
        (
            {
                "name": "fedasync",
                "concurrency": 5,
                "ema_decay": 0.99,
                "norm_bound": 1.0,
                "compression": {"name": "topk", "fraction": 0.1},
            },
            "bernoulli",
        ),
    ],
)
def test_dry_run_resume_is_identical(tmp_path, strategy, availability):
    """Interrupt (Ctrl-C via the callback) after a checkpoint, resume, compare with an uninterrupted run."""
    base = {
        "clients": {
            "num_clients": 12,
            "dropout": 0.2,
            "availability": {"mode": availability, "mean_on_s": 2.0, "mean_off_s": 1.0, "p": 0.6},
        },
        "strategy": strategy,
        "run": {"dry_run": True, "max_updates": 30, "checkpoint_every": 7},
    }
    a = raydiff.run(base, out=tmp_path / "a", progress=False)

    def stop(info):
        if info["version"] == 16:
            raise KeyboardInterrupt

    b = raydiff.run(base, out=tmp_path / "b", progress=False, callback=stop)
    assert b.summary["interrupted"] and b.summary["final_version"] == 16
    c = raydiff.run(resume=tmp_path / "b", progress=False)
    assert c.summary["final_version"] == a.summary["final_version"] == 30
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "a" / "events.parquet"), pd.read_parquet(tmp_path / "b" / "events.parquet")
    )
    assert json.loads((tmp_path / "b" / "status.json").read_text())["status"] == "finished"


def test_resume_of_a_folder_that_is_no_run_is_a_clear_error(tmp_path):
    from raydiff.errors import RunFolderError

    with pytest.raises(RunFolderError, match=r"holds no config\.yaml: not a run folder"):
        raydiff.run(resume=tmp_path, progress=False)
    with pytest.raises(RunFolderError, match="no such run folder"):
        raydiff.run(resume=tmp_path / "nope", progress=False)
