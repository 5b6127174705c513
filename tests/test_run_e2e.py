"""Real Ray runs of a tiny config, end to end: the folder, the pipeline, determinism, dropouts, FedAvg rounds."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import raydiff
from raydiff.model import FlatModel, model_sha256
from raydiff.outputs import EVENT_SCHEMA, EXECUTION_COLUMNS

FINAL = {"applied", "dropped", "failed", "rejected"}


def _events(out):
    return pd.read_parquet(out / "events.parquet")


def _check_statuses(ev: pd.DataFrame) -> None:
    """Every dispatched job has exactly one final status, and no job is applied twice."""
    assert ev.job_id.is_unique
    assert list(ev.job_id) == list(range(len(ev)))
    assert set(ev.status) <= FINAL
    applied = ev[ev.status == "applied"]
    assert applied.applied_version.notna().all()
    assert ev[ev.status != "applied"].applied_version.isna().all()
    assert (applied.applied_version > applied.base_version).all()


def test_tiny_run_writes_complete_folder(ray_session, tiny_cfg, tmp_path):
    res = raydiff.run(tiny_cfg, out=tmp_path / "run", progress=False)
    out = res.out_dir
    for name in (
        "config.yaml",
        "events.parquet",
        "evals.parquet",
        "summary.json",
        "samples/final.png",
        "samples/real.png",
        "model/model_index.json",
    ):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    for key in ("final_version", "updates_applied", "virtual_time", "wall_seconds", "model_sha256"):
        assert key in summary
    assert summary["final_version"] == 6

    ev = _events(out)
    assert list(ev.columns) == EVENT_SCHEMA.names
    _check_statuses(ev)
    # FedBuff with K=2: each version absorbs exactly two updates.
    assert (ev.status == "applied").sum() == 2 * 6 == summary["updates_applied"]
    assert ev.groupby("applied_version").size().eq(2).all()
    # Events are applied in virtual-time order: versions grow with finish time.
    applied = ev[ev.status == "applied"].sort_values("finish_vtime")
    assert applied.applied_version.is_monotonic_increasing
    assert applied.actor.str.startswith("client-actor-").all()
    assert (applied.node_id.str.len() > 0).all()

    evals = pd.read_parquet(out / "evals.parquet")
    assert list(evals.version) == [0, 3, 6]
    assert evals.heldout_loss.notna().all()
    assert evals.vtime.is_monotonic_increasing

    # The saved model is the final global vector, and diffusers loads and samples it.
    import torch
    from diffusers import DDPMPipeline

    pipe = DDPMPipeline.from_pretrained(str(out / "model"))
    assert model_sha256(FlatModel(pipe.unet).vector()) == summary["model_sha256"]
    img = pipe(batch_size=1, num_inference_steps=5, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert img.shape == (1, 8, 8, 1) and np.isfinite(img).all()

    cfg = raydiff.load_config(out / "config.yaml")
    assert cfg.clients.num_gpus == 0.25 and cfg.strategy.buffer_size == 2


@pytest.mark.parametrize("strategy", ["fedbuff", pytest.param("fedasync", marks=pytest.mark.slow)])
def test_same_seed_same_run_whatever_the_actor_count(ray_session, tiny_cfg, tmp_path, strategy):
    tiny_cfg["strategy"]["name"] = strategy
    runs = []
    for actors in (1, 2):
        tiny_cfg["run"]["actors"] = actors
        res = raydiff.run(tiny_cfg, out=tmp_path / f"a{actors}", progress=False)
        runs.append((res.summary, _events(res.out_dir)))
    (s1, e1), (s2, e2) = runs
    assert s1["model_sha256"] == s2["model_sha256"]
    assert s1["actors"] == 1 and s2["actors"] == 2
    assert set(e2.actor[e2.status == "applied"]) == {"client-actor-0", "client-actor-1"}
    sim = [c for c in e1.columns if c not in EXECUTION_COLUMNS]
    pd.testing.assert_frame_equal(e1[sim], e2[sim])


def test_dropout_gives_each_job_one_final_status(ray_session, tiny_cfg, tmp_path):
    tiny_cfg["clients"]["dropout"] = 0.5
    tiny_cfg["run"]["max_updates"] = 4
    res = raydiff.run(tiny_cfg, out=tmp_path / "drop", progress=False)
    ev = _events(res.out_dir)
    _check_statuses(ev)
    dropped = ev[ev.status == "dropped"]
    assert len(dropped) > 0
    assert dropped.failure_reason.str.startswith("dropout_").all()
    duration = dropped.download_s + dropped.compute_s + dropped.upload_s
    assert ((dropped.finish_vtime - dropped.dispatch_vtime) < duration + 1e-9).all()
    assert dropped.train_loss.isna().all()  # a doomed job is never trained for real
    assert res.summary["jobs_dropped"] == len(dropped)
    assert res.summary["jobs_dispatched"] == len(ev)


def test_fedavg_rounds(ray_session, tiny_cfg, tmp_path):
    tiny_cfg["strategy"] = {"name": "fedavg", "clients_per_round": 3}
    tiny_cfg["clients"]["dropout"] = 0.0
    tiny_cfg["run"]["max_updates"] = 2
    res = raydiff.run(tiny_cfg, out=tmp_path / "avg", progress=False)
    ev = _events(res.out_dir)
    _check_statuses(ev)
    assert len(ev) == 6 and (ev.status == "applied").all()
    for version, rnd in ev.groupby("applied_version"):
        assert rnd.client_id.is_unique  # a client trains once per round
        assert rnd.dispatch_vtime.nunique() == 1  # all start together
        assert (rnd.base_version == version - 1).all()
    r1, r2 = ev[ev.applied_version == 1], ev[ev.applied_version == 2]
    assert r2.dispatch_vtime.iloc[0] == pytest.approx(r1.finish_vtime.max())  # next round waits for the slowest


@pytest.mark.slow  # 15-60 s: keeps the default run under 7 minutes; CI runs it
def test_fedavg_over_selection_on_ray(ray_session, tiny_cfg, tmp_path):
    """Stragglers beyond the first m reports are discarded on real actors too (their tickets released)."""
    tiny_cfg["strategy"] = {"name": "fedavg", "clients_per_round": 2, "over_selection": 0.5}
    tiny_cfg["clients"]["dropout"] = 0.0
    tiny_cfg["run"]["max_updates"] = 3
    res = raydiff.run(tiny_cfg, out=tmp_path / "over", progress=False)
    ev = _events(res.out_dir)
    _check_statuses(ev)
    assert len(ev) == 9
    assert (ev.status == "applied").sum() == 6
    late = ev[ev.status == "rejected"]
    assert (late.failure_reason == "over_selected").all() and len(late) == 3


@pytest.mark.slow  # 15-60 s: keeps the default run under 7 minutes; CI runs it
def test_killed_actor_fails_its_jobs_and_the_run_goes_on(ray_session, tiny_cfg, tmp_path):
    """Fault injection: kill a client actor mid-run. Its jobs fail at their virtual times, a fresh
    actor takes its slot, the run completes, and no job is applied twice."""
    import ray

    tiny_cfg["run"] = {"max_updates": 8, "actors": 2}
    tiny_cfg["clients"]["dropout"] = 0.0
    killed = []

    def kill_at_version_2(info):
        if info["version"] == 2 and not killed:
            names = [
                n["name"] for n in ray.util.list_named_actors(all_namespaces=True) if n["name"].endswith("-client-0-g0")
            ]
            assert len(names) == 1
            ray.kill(ray.get_actor(names[0]), no_restart=True)
            killed.append(names[0])

    res = raydiff.run(tiny_cfg, out=tmp_path / "kill", progress=False, callback=kill_at_version_2)
    assert killed
    ev = _events(res.out_dir)
    _check_statuses(ev)
    failed = ev[ev.status == "failed"]
    assert len(failed) >= 1 and (failed.failure_reason == "actor_lost").all()  # as README says (issue 18)
    assert failed.actor.str.startswith("client-actor-").all()  # the actor it ran on, as on other rows
    assert res.summary["actors_replaced"] == 1
    assert res.summary["final_version"] == 8
    assert (ev.status == "applied").sum() == 2 * 8
