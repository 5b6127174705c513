"""The analysis package on run folders written by hand (README schema), so no Ray and no training.

Expected numbers are computed by hand in the comments next to each assertion.
"""
from __future__ import annotations

import base64
import io
import json
import math
import re

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from analysis import (evals, events, final_quality, find_runs, gini, load_runs, participation, participation_gini,
                      staleness_stats, summary_table, time_to_target, wasted_work)
from analysis.plots import plot_gantt, plot_metric_vs_vtime, plot_participation, plot_staleness_hist, save_png
from analysis.report import write_report


def job(job_id, client, status, t0, t1, staleness=None, samples=100, compute=1.0, download=0.5, reason=None):
    applied = status == "applied"
    return dict(job_id=job_id, client_id=client, actor="a0", node_id="n0", dispatch_vtime=t0, finish_vtime=t1,
                status=status, failure_reason=reason, base_version=0, applied_version=1 if applied else None,
                staleness=staleness, num_samples=50, samples_trained=samples, train_loss=0.1, wall_seconds=0.01,
                download_s=download, compute_s=compute, upload_s=0.5, download_bytes=10, upload_bytes=10)


def make_run(folder, strategy, jobs, evals_rows=None, num_clients=4, dry=False, samples=False):
    folder.mkdir(parents=True)
    pd.DataFrame(jobs).to_parquet(folder / "events.parquet")
    if evals_rows is not None:
        pd.DataFrame(evals_rows).to_parquet(folder / "evals.parquet")
    cfg = {"name": folder.name, "seed": 0,
           "data": {"dataset": "synthetic", "partition": "dirichlet", "beta": 0.5},
           "clients": {"num_clients": num_clients, "dropout": 0.1, "slow_classes": [0, 1],
                       "speed": {"dist": "lognormal", "mean": 100.0}},
           "strategy": {"name": strategy}, "run": {"dry_run": dry, "max_updates": 3}}
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    summary = {"name": folder.name, "strategy": strategy, "final_version": 3, "dry_run": dry,
               "jobs_dispatched": len(jobs), "virtual_time": 9.0, "judge_class_counts": [1, 2]}
    (folder / "summary.json").write_text(json.dumps(summary))
    if samples:
        (folder / "samples").mkdir()
        Image.new("L", (16, 16), 128).save(folder / "samples" / "final.png")
    return folder


def loss_rows(losses):
    return [dict(version=v, vtime=10.0 * v, heldout_loss=l, eval_seconds=0.1) for v, l in enumerate(losses)]


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "sweep"
    make_run(root / "fedavg-0", "fedavg", [job(0, 0, "applied", 0, 2, 0), job(1, 1, "applied", 0, 3, 0),
                                           job(2, 2, "dropped", 0, 1, reason="dropout_compute")],
             loss_rows([1.0, 0.5]), samples=True)
    make_run(root / "fedbuff-0", "fedbuff", [job(i, i % 2, "applied", i, i + 2, i) for i in range(4)],
             loss_rows([1.0, 0.7, 0.3]))
    make_run(root / "nested" / "dry-0", "fedasync", [job(0, 3, "applied", 0, 1, 1), job(1, 3, "rejected", 1, 2)],
             dry=True)
    return root


# ---- load ------------------------------------------------------------------------------------------------------

def test_load_runs_long_frame(sweep):
    df = load_runs(sweep)
    assert sorted(df["run"].unique()) == ["dry-0", "fedavg-0", "fedbuff-0"]
    counts = df.groupby(["run", "table"]).size().to_dict()
    assert counts == {("fedavg-0", "events"): 3, ("fedavg-0", "evals"): 2, ("fedbuff-0", "events"): 4,
                      ("fedbuff-0", "evals"): 3, ("dry-0", "events"): 2}
    assert {"run_dir", "summary.final_version", "summary.dry_run", "cfg.strategy.name",
            "cfg.clients.speed.dist", "cfg.data.beta"} <= set(df.columns)
    assert "summary.judge_class_counts" not in df  # not a scalar
    row = df[df["run"] == "fedbuff-0"].iloc[0]
    assert row["cfg.strategy.name"] == "fedbuff" and row["cfg.clients.slow_classes"] == "[0, 1]"
    assert row["cfg.clients.num_clients"] == 4 and row["summary.final_version"] == 3
    ev, el = events(df), evals(df)
    assert len(ev) == 9 and len(el) == 5
    assert "heldout_loss" not in ev and "client_id" not in el and "cfg.strategy.name" in el


def test_find_runs(sweep, tmp_path):
    assert [p.name for p in find_runs(sweep)] == ["fedavg-0", "fedbuff-0", "dry-0"]
    assert find_runs(sweep / "fedavg-0") == [sweep / "fedavg-0"]
    assert len(find_runs([sweep, sweep / "fedavg-0"])) == 3  # no duplicates
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty"):
        find_runs(tmp_path / "empty")
    with pytest.raises(ValueError, match="missing"):
        load_runs([sweep, tmp_path / "missing"])


def test_duplicate_run_names_use_relative_paths(tmp_path):
    for sub in ("a", "b"):
        make_run(tmp_path / sub / "run1", "fedbuff", [job(0, 0, "applied", 0, 1, 0)])
    df = load_runs(tmp_path)
    assert sorted(df["run"].unique()) == ["a/run1", "b/run1"]


def test_old_run_missing_columns(tmp_path):
    run = make_run(tmp_path / "old", "fedasync", [job(0, 0, "applied", 0, 1, 2), job(1, 1, "failed", 0, 1)])
    ev = pd.read_parquet(run / "events.parquet").drop(columns=["download_s", "compute_s", "node_id"])
    ev.to_parquet(run / "events.parquet")
    df = load_runs(run)
    assert wasted_work(events(df)).loc["old", "wasted_samples_share"] == 0.5
    assert math.isnan(wasted_work(events(df)).loc["old", "wasted_compute_share"])
    assert staleness_stats(events(df)).loc["old", "staleness_max"] == 2


# ---- metrics ---------------------------------------------------------------------------------------------------

def test_gini():
    assert gini([0, 0, 0, 4]) == pytest.approx(0.75)  # (n-1)/n
    assert gini([3, 3, 3]) == 0.0 and gini([0, 0]) == 0.0
    assert gini([1, 2, 3, 4]) == pytest.approx(0.25)  # sum|xi-xj| = 20 over 2 * 16 * 2.5
    assert math.isnan(gini([]))
    with pytest.raises(ValueError):
        gini([1, -1])


def test_time_to_target_and_final_quality():
    el = pd.DataFrame({"run": ["x"] * 4 + ["y"] * 2, "version": [3, 0, 2, 1, 0, 1],
                       "vtime": [30.0, 0.0, 20.0, 10.0, 0.0, 5.0],
                       "heldout_loss": [0.45, 1.0, 0.4, 0.6, 1.0, 0.9], "acc": [0.9, 0.1, 0.7, 0.5, 0.0, 0.2]})
    ttt = time_to_target(el, 0.5)
    assert ttt["x"] == 20.0 and math.isnan(ttt["y"])  # y never reaches 0.5
    assert time_to_target(el, 0.4)["x"] == 20.0  # reaching means <=
    assert time_to_target(el, 0.6)["x"] == 10.0
    assert time_to_target(el, 0.7, metric="acc", lower_is_better=False)["x"] == 20.0
    assert math.isnan(time_to_target(el, 0.1)["x"])
    assert final_quality(el, "heldout_loss").to_dict() == {"x": 0.45, "y": 0.9}  # last version, not best


def test_staleness_stats():
    ev = pd.DataFrame([job(i, 0, "applied", 0, 1, s) for i, s in enumerate([4, 0, 2, 1, 3])]
                      + [job(9, 0, "rejected", 0, 1, 9)]).assign(run="r")
    st = staleness_stats(ev).loc["r"]
    # [0, 1, 2, 3, 4]: p90 at position 0.9 * 4 = 3.6 -> 3.6; the rejected 9 does not count
    assert (st["applied_jobs"], st["staleness_mean"], st["staleness_median"], st["staleness_max"]) == (5, 2, 2, 4)
    assert st["staleness_p90"] == pytest.approx(3.6)


def test_participation_counts_idle_clients():
    ev = pd.DataFrame([job(i, 3, "applied", 0, 1, 0) for i in range(4)] + [job(4, 0, "dropped", 0, 1)])
    p = participation(ev.assign(run="r", **{"cfg.clients.num_clients": 4}))
    assert p["applied"].tolist() == [0, 0, 0, 4] and p["dispatched"].tolist() == [1, 0, 0, 4]
    assert participation_gini(ev.assign(run="r", **{"cfg.clients.num_clients": 4}))["r"] == pytest.approx(0.75)
    # Without the config only the clients seen count: [0, 4] -> 2 * 4 / (2 * 4) - 3/2 = 0.5
    assert participation_gini(ev.assign(run="r"))["r"] == pytest.approx(0.5)


def test_wasted_work():
    ev = pd.DataFrame([
        job(0, 0, "applied", 0, 5, 0, compute=2.0, download=1.0),
        job(1, 1, "dropped", 0, 0.5, compute=2.0, download=1.0, reason="dropout_download"),  # 0.5-1 < 0: 0
        job(2, 1, "dropped", 10, 12, compute=4.0, download=1.0, reason="dropout_compute"),  # 12-10-1 = 1
        job(3, 2, "failed", 20, 30, compute=3.0, download=1.0, reason="offline_upload"),  # 9 > 3: all 3
        job(4, 3, "rejected", 0, 1, compute=2.0, reason="run_stopped"),  # rejected: all of it
    ]).assign(run="w")
    w = wasted_work(ev).loc["w"]
    assert w["wasted_samples"] == 400 and w["wasted_samples_share"] == pytest.approx(0.8)
    assert w["total_compute_s"] == pytest.approx(8.0) and w["wasted_compute_s"] == pytest.approx(6.0)
    assert w["wasted_compute_share"] == pytest.approx(0.75)


def test_summary_table(sweep):
    t = summary_table(load_runs(sweep), target=0.6)
    assert list(t.index) == ["dry-0", "fedavg-0", "fedbuff-0"]  # by strategy: fedasync, fedavg, fedbuff
    assert {"strategy", "num_clients", "dropout", "speed_dist", "partition", "beta", "final_heldout_loss",
            "time_to_target", "staleness_mean", "participation_gini", "wasted_compute_share"} <= set(t.columns)
    assert t.loc["fedbuff-0", "final_heldout_loss"] == 0.3 and t.loc["fedbuff-0", "time_to_target"] == 20.0
    assert math.isnan(t.loc["dry-0", "final_heldout_loss"])
    assert t.loc["fedbuff-0", "staleness_mean"] == 1.5  # [0, 1, 2, 3]
    assert t.loc["dry-0", "participation_gini"] == pytest.approx(0.75)  # client 3 of 4 holds all
    assert "run.dry_run" in t.columns  # a config field that differs between runs is shown


# ---- plots -----------------------------------------------------------------------------------------------------

def png_ok(fig, path=None):
    img = Image.open(io.BytesIO(save_png(fig, path)))
    assert img.format == "PNG" and img.width > 100


def test_plots(sweep, tmp_path):
    df = load_runs(sweep)
    ev, el = events(df), evals(df)
    fig = plot_metric_vs_vtime(el, "heldout_loss")
    ax = fig.axes[0]
    assert (ax.get_title(), ax.get_xlabel(), ax.get_ylabel()) == \
        ("heldout_loss vs virtual time", "virtual time (s)", "heldout_loss")
    assert len(ax.lines) == 2 and {t.get_text() for t in ax.get_legend().get_texts()} == \
        {"fedavg: fedavg-0", "fedbuff: fedbuff-0"}
    png_ok(fig, tmp_path / "metric.png")
    with Image.open(tmp_path / "metric.png") as img:
        assert img.format == "PNG"

    ax = plot_staleness_hist(ev).axes[0]
    assert ax.get_title() == "Staleness of applied updates" and ax.get_xlabel() == "staleness (versions)"
    assert len(ax.get_legend().get_texts()) == 3

    with pytest.raises(ValueError, match="one run"):
        plot_gantt(ev)
    fig = plot_gantt(ev, run="fedavg-0")
    ax = fig.axes[0]
    assert ax.get_title() == "Client jobs over virtual time: fedavg-0" and ax.get_ylabel() == "client"
    assert {t.get_text() for t in ax.get_legend().get_texts()} == {"applied (2)", "dropped (1)"}
    png_ok(fig)

    fig = plot_participation(ev)
    ax = fig.axes[0]
    assert ax.get_title() == "Applied jobs per client" and ax.get_ylabel() == "applied jobs per run"
    assert any("fedasync (Gini 0.75)" == t.get_text() for t in ax.get_legend().get_texts())
    png_ok(fig)
    assert plot_participation(ev, run="fedbuff-0").axes[0].get_title() == "Applied jobs per client: fedbuff-0"


def test_gantt_caps_large_runs():
    rng = np.random.default_rng(0)
    ev = pd.DataFrame([job(i, int(rng.integers(80)), "applied", i * 0.1, i * 0.1 + 1, 0) for i in range(4000)])
    ax = plot_gantt(ev.assign(run="big"), max_clients=50, max_jobs=2000).axes[0]
    notes = [t.get_text() for t in ax.texts]
    assert any(n.startswith("showing 50 of\n80 clients with jobs,\n2000 of 4000 jobs") for n in notes)
    assert sum(len(c) for c in ax.containers) == 2000


# ---- report ----------------------------------------------------------------------------------------------------

B64 = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


def test_write_report(sweep, tmp_path):
    out = write_report(sweep, tmp_path / "out" / "report.html", title="Study A")
    text = out.read_text()
    for ident in ("plot-metric", "plot-staleness", "plot-gantt", "plot-participation"):
        assert f'id="{ident}"' in text
    assert '<table' in text and 'class="dataframe comparison"' in text and "fedbuff-0" in text
    assert "<title>Study A</title>" in text
    images = B64.findall(text)
    assert len(images) == 5  # four plots and fedavg-0's sample grid
    for b64 in images:
        Image.open(io.BytesIO(base64.b64decode(b64, validate=True))).verify()
    stripped = B64.sub("", text)
    assert "http" not in stripped and "<link" not in stripped and "<script src" not in stripped
    assert 'setAttribute("data-images-loaded"' in stripped  # the page's own inline image check
    assert 'href="../sweep/fedavg-0/"' in text
    assert write_report(sweep, tmp_path / "out") == tmp_path / "out" / "report.html"


def test_write_report_dry_runs_only(sweep, tmp_path):
    out = write_report(sweep / "nested" / "dry-0", tmp_path / "dry.html")
    text = out.read_text()
    assert re.search(r'<p class="note" id="plot-metric">No evaluations', text)
    assert '<img id="plot-metric"' not in text
    for ident in ("plot-staleness", "plot-gantt", "plot-participation"):
        assert f'<img id="{ident}"' in text
    assert len(B64.findall(text)) == 3
