"""Evaluation inside runs: the schedule (dry, no Ray), evaluation off the training path (real Ray run),
FID columns in evals.parquet, grids with the configured sampler, and ``raydiff sample``."""

from __future__ import annotations

import copy
import json
import math
import time

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import raydiff
from raydiff.dry_run import DryExecutor
from raydiff.outputs import grid_image

DRY = {
    "name": "dry-eval",
    "seed": 0,
    "clients": {"num_clients": 10},
    "strategy": {"name": "fedbuff", "concurrency": 4, "buffer_size": 2},
    "run": {"dry_run": True, "max_updates": 40},
}


def _dry_schedule(monkeypatch, tmp_path, **ev):
    """(evaluate calls as (version, vtime, fid), every version's vtime) of a dry run with ``eval`` = ev."""
    calls, versions = [], {0: 0.0}
    monkeypatch.setattr(
        DryExecutor, "evaluate", lambda self, v, t, h, fid=False: calls.append((v, t, fid)), raising=True
    )
    cfg = dict(DRY, eval=ev)
    raydiff.run(
        cfg,
        out=tmp_path / "dry",
        progress=False,
        callback=lambda info: versions.__setitem__(info["version"], info["vtime"]),
    )
    return calls, versions


def test_schedule_by_versions_and_fid(monkeypatch, tmp_path):
    calls, _ = _dry_schedule(monkeypatch, tmp_path, every_versions=10, fid_every_versions=20)
    assert [(v, fid) for v, _, fid in calls] == [(0, False), (10, False), (20, True), (30, False), (40, True)]


def test_schedule_by_vtime_takes_the_first_version_at_or_after_each_multiple(monkeypatch, tmp_path):
    calls, versions = _dry_schedule(monkeypatch, tmp_path, every_versions=0, every_vtime=0.5)
    evaluated = [v for v, _, _ in calls]
    assert evaluated[0] == 0 and calls[-1][2] is True  # version 0, and the final one with FID
    assert evaluated[-1] == max(versions)
    expected = []
    k = 1
    for v in sorted(versions)[1:]:
        t = versions[v]
        if t >= k * 0.5:
            expected.append(v)
            k = math.floor(t / 0.5) + 1  # multiples jumped over give one evaluation, not several
    assert 3 <= len(expected) < len(versions) - 1, versions  # several multiples crossed, not every version
    assert evaluated[1:-1] == expected
    assert all(fid is False for _, _, fid in calls[:-1])


@pytest.fixture(scope="module")
def slow_eval_run(ray_session, tmp_path_factory):
    """A tiny run whose every version gets an FID of 400 DDIM samples: evaluation far slower than training."""
    from conftest import TINY

    cfg = copy.deepcopy(TINY)
    cfg["eval"].update(
        every_versions=1,
        fid_every_versions=1,
        fid_num_samples=400,
        sampler="ddim",
        sample_steps=10,
        sample_every_versions=3,
        num_samples=9,
        cache_dir=str(tmp_path_factory.mktemp("judges")),
    )
    arrivals: list[tuple[int, float]] = []
    t0 = time.perf_counter()
    res = raydiff.run(
        cfg,
        out=tmp_path_factory.mktemp("slow") / "run",
        progress=False,
        callback=lambda info: arrivals.append((info["version"], time.perf_counter())),
    )
    return res, arrivals, time.perf_counter() - t0


def test_evaluation_does_not_block_training(slow_eval_run):
    res, arrivals, _ = slow_eval_run
    evals = pd.read_parquet(res.out_dir / "evals.parquet")
    total_eval = float(evals.eval_seconds.sum())
    loop = res.summary["loop_seconds"]
    assert [v for v, _ in arrivals] == list(range(1, 7))
    span = arrivals[-1][1] - arrivals[0][1]
    # Had each version waited for its evaluation, the loop would take at least total_eval seconds.
    # Measured here (2 cores): loop 0.9 s, versions over 0.8 s, evaluations 10.3 s in all.
    print(f"loop {loop:.2f} s, versions over {span:.2f} s, evaluations {total_eval:.2f} s in all")
    assert loop < 0.5 * total_eval, (loop, total_eval)
    assert span < 0.5 * total_eval, (span, total_eval)


def test_fid_columns_and_sampler_grids(slow_eval_run):
    res, _, _ = slow_eval_run
    evals = pd.read_parquet(res.out_dir / "evals.parquet")
    assert list(evals.version) == list(range(7))
    scored = evals[evals.version > 0]
    for col in ("fid_domain", "kid_domain", "precision", "recall", "domain_classifier_accuracy", "fid_seconds"):
        assert scored[col].notna().all() and np.isfinite(scored[col]).all(), col
    assert evals.loc[0, ["fid_domain"]].isna().all()  # version 0 is pure noise: loss only
    assert (scored.fid_num_samples == 400).all()
    assert (scored.domain_classifier_accuracy > 0.9).all()
    assert (scored.fid_domain >= 0).all() and scored.precision.between(0, 1).all()
    assert "fid_inception" not in evals.columns  # no weights given: skipped, silently
    s = json.loads((res.out_dir / "summary.json").read_text())
    assert s["final_fid_domain"] == pytest.approx(scored.fid_domain.iloc[-1])
    for v in (3, 6):  # grids use the configured sampler (DDIM, 10 steps) like the final samples
        assert (res.out_dir / "samples" / f"v{v:06d}.png").is_file()
    cfg = raydiff.load_config(res.out_dir / "config.yaml")
    assert cfg.eval.sampler == "ddim" and cfg.eval.sample_steps == 10


def test_sample_cli_writes_grid_of_the_right_size(slow_eval_run, tmp_path, capsys):
    from raydiff.cli import main

    res, _, _ = slow_eval_run
    out = tmp_path / "grid.png"
    args = [
        "sample",
        str(res.out_dir),
        "--n",
        "10",
        "--out",
        str(out),
        "--sampler",
        "ddim",
        "--steps",
        "5",
        "--seed",
        "1",
    ]
    assert main(args) == 0
    expected = grid_image(np.zeros((10, 1, 8, 8), np.float32)).size  # 4 x 3 tiles of 8 px, upscaled
    with Image.open(out) as img:
        assert img.size == expected
        first = np.asarray(img).copy()
    assert main([*args[:5], str(tmp_path / "again.png"), *args[6:]]) == 0
    with Image.open(tmp_path / "again.png") as img:
        np.testing.assert_array_equal(np.asarray(img), first)  # seeded
    capsys.readouterr()
    assert main(["sample", str(tmp_path), "--out", str(tmp_path / "x.png")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "holds no saved model" in err and "Traceback" not in err
    assert not (tmp_path / "x.png").exists()


def test_sample_cli_defaults_to_the_runs_own_sampler(slow_eval_run, tmp_path):
    """The run sampled with DDIM at 10 steps: `raydiff sample` without --sampler does the same."""
    from raydiff.cli import main

    res, _, _ = slow_eval_run
    common = ["--n", "6", "--seed", "2"]
    assert main(["sample", str(res.out_dir), "--out", str(tmp_path / "default.png"), *common]) == 0
    assert (
        main(
            [
                "sample",
                str(res.out_dir),
                "--out",
                str(tmp_path / "ddim10.png"),
                "--sampler",
                "ddim",
                "--steps",
                "10",
                *common,
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "sample",
                str(res.out_dir),
                "--out",
                str(tmp_path / "ddim5.png"),
                "--sampler",
                "ddim",
                "--steps",
                "5",
                *common,
            ]
        )
        == 0
    )
    grids = {}
    for name in ("default", "ddim10", "ddim5"):
        with Image.open(tmp_path / f"{name}.png") as img:
            grids[name] = np.asarray(img).copy()
    np.testing.assert_array_equal(grids["default"], grids["ddim10"])
    assert not np.array_equal(grids["default"], grids["ddim5"])  # the comparison can tell samplers apart


def test_run_sampler_reads_the_config_and_falls_back_to_ddpm(tmp_path):
    from raydiff.metrics.sampling import run_sampler

    assert run_sampler(tmp_path) == ("ddpm", None)  # a bare pipeline folder has no config.yaml
    (tmp_path / "config.yaml").write_text("eval: {sampler: ddim, sample_steps: 20}\n")
    assert run_sampler(tmp_path) == ("ddim", 20)
    (tmp_path / "config.yaml").write_text("eval: {num_samples: 4}\n")
    assert run_sampler(tmp_path) == ("ddpm", None)
