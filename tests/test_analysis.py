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

from analysis import (
    add_time_to_target,
    evals,
    events,
    final_quality,
    find_runs,
    gini,
    load_runs,
    mean_ci,
    paired_ci,
    paired_diff,
    participation,
    participation_gini,
    run_table,
    seed_summary,
    staleness_stats,
    summary_table,
    time_to_target,
    wasted_work,
)
from analysis.compare import compare_arms
from analysis.plots import (
    mean_band,
    plot_gantt,
    plot_metric_ci,
    plot_metric_vs_vtime,
    plot_participation,
    plot_staleness_hist,
    plot_summary_bars,
    save_png,
)
from analysis.report import write_report


def job(job_id, client, status, t0, t1, staleness=None, samples=100, compute=1.0, download=0.5, reason=None):
    applied = status == "applied"
    return dict(
        job_id=job_id,
        client_id=client,
        actor="a0",
        node_id="n0",
        dispatch_vtime=t0,
        finish_vtime=t1,
        status=status,
        failure_reason=reason,
        base_version=0,
        applied_version=1 if applied else None,
        staleness=staleness,
        num_samples=50,
        samples_trained=samples,
        train_loss=0.1,
        wall_seconds=0.01,
        download_s=download,
        compute_s=compute,
        upload_s=0.5,
        download_bytes=10,
        upload_bytes=10,
    )


def make_run(folder, strategy, jobs, evals_rows=None, num_clients=4, dry=False, samples=False):
    folder.mkdir(parents=True)
    pd.DataFrame(jobs).to_parquet(folder / "events.parquet")
    if evals_rows is not None:
        pd.DataFrame(evals_rows).to_parquet(folder / "evals.parquet")
    cfg = {
        "name": folder.name,
        "seed": 0,
        "data": {"dataset": "synthetic", "partition": "dirichlet", "beta": 0.5},
        "clients": {
            "num_clients": num_clients,
            "dropout": 0.1,
            "slow_classes": [0, 1],
            "speed": {"dist": "lognormal", "mean": 100.0},
        },
        "strategy": {"name": strategy},
        "run": {"dry_run": dry, "max_updates": 3},
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    summary = {
        "name": folder.name,
        "strategy": strategy,
        "final_version": 3,
        "dry_run": dry,
        "jobs_dispatched": len(jobs),
        "virtual_time": 9.0,
        "judge_class_counts": [1, 2],
    }
    (folder / "summary.json").write_text(json.dumps(summary))
    if samples:
        (folder / "samples").mkdir()
        Image.new("L", (16, 16), 128).save(folder / "samples" / "final.png")
    return folder


def loss_rows(losses):
    return [dict(version=v, vtime=10.0 * v, heldout_loss=x, eval_seconds=0.1) for v, x in enumerate(losses)]


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "sweep"
    make_run(
        root / "fedavg-0",
        "fedavg",
        [
            job(0, 0, "applied", 0, 2, 0),
            job(1, 1, "applied", 0, 3, 0),
            job(2, 2, "dropped", 0, 1, reason="dropout_compute"),
        ],
        loss_rows([1.0, 0.5]),
        samples=True,
    )
    make_run(
        root / "fedbuff-0",
        "fedbuff",
        [job(i, i % 2, "applied", i, i + 2, i) for i in range(4)],
        loss_rows([1.0, 0.7, 0.3]),
    )
    make_run(
        root / "nested" / "dry-0", "fedasync", [job(0, 3, "applied", 0, 1, 1), job(1, 3, "rejected", 1, 2)], dry=True
    )
    return root


# ---- load ------------------------------------------------------------------------------------------------------


def test_load_runs_long_frame(sweep):
    df = load_runs(sweep)
    assert sorted(df["run"].unique()) == ["dry-0", "fedavg-0", "fedbuff-0"]
    counts = df.groupby(["run", "table"]).size().to_dict()
    assert counts == {
        ("fedavg-0", "events"): 3,
        ("fedavg-0", "evals"): 2,
        ("fedbuff-0", "events"): 4,
        ("fedbuff-0", "evals"): 3,
        ("dry-0", "events"): 2,
    }
    assert {
        "run_dir",
        "summary.final_version",
        "summary.dry_run",
        "cfg.strategy.name",
        "cfg.clients.speed.dist",
        "cfg.data.beta",
    } <= set(df.columns)
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
    el = pd.DataFrame(
        {
            "run": ["x"] * 4 + ["y"] * 2,
            "version": [3, 0, 2, 1, 0, 1],
            "vtime": [30.0, 0.0, 20.0, 10.0, 0.0, 5.0],
            "heldout_loss": [0.45, 1.0, 0.4, 0.6, 1.0, 0.9],
            "acc": [0.9, 0.1, 0.7, 0.5, 0.0, 0.2],
        }
    )
    ttt = time_to_target(el, 0.5)
    assert ttt["x"] == 20.0 and math.isnan(ttt["y"])  # y never reaches 0.5
    assert time_to_target(el, 0.4)["x"] == 20.0  # reaching means <=
    assert time_to_target(el, 0.6)["x"] == 10.0
    assert time_to_target(el, 0.7, metric="acc", lower_is_better=False)["x"] == 20.0
    assert math.isnan(time_to_target(el, 0.1)["x"])
    assert final_quality(el, "heldout_loss").to_dict() == {"x": 0.45, "y": 0.9}  # last version, not best


def test_staleness_stats():
    ev = pd.DataFrame(
        [job(i, 0, "applied", 0, 1, s) for i, s in enumerate([4, 0, 2, 1, 3])] + [job(9, 0, "rejected", 0, 1, 9)]
    ).assign(run="r")
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
    ev = pd.DataFrame(
        [
            job(0, 0, "applied", 0, 5, 0, compute=2.0, download=1.0),
            job(1, 1, "dropped", 0, 0.5, compute=2.0, download=1.0, reason="dropout_download"),  # 0.5-1 < 0: 0
            job(2, 1, "dropped", 10, 12, compute=4.0, download=1.0, reason="dropout_compute"),  # 12-10-1 = 1
            job(3, 2, "failed", 20, 30, compute=3.0, download=1.0, reason="offline_upload"),  # 9 > 3: all 3
            job(4, 3, "rejected", 0, 1, compute=2.0, reason="run_stopped"),  # rejected: all of it
        ]
    ).assign(run="w")
    w = wasted_work(ev).loc["w"]
    assert w["wasted_samples"] == 400 and w["wasted_samples_share"] == pytest.approx(0.8)
    assert w["total_compute_s"] == pytest.approx(8.0) and w["wasted_compute_s"] == pytest.approx(6.0)
    assert w["wasted_compute_share"] == pytest.approx(0.75)


def test_summary_table(sweep):
    t = summary_table(load_runs(sweep), target=0.6)
    assert list(t.index) == ["dry-0", "fedavg-0", "fedbuff-0"]  # by strategy: fedasync, fedavg, fedbuff
    assert {
        "strategy",
        "num_clients",
        "dropout",
        "speed_dist",
        "partition",
        "beta",
        "final_heldout_loss",
        "time_to_target",
        "staleness_mean",
        "participation_gini",
        "wasted_compute_share",
    } <= set(t.columns)
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
    assert (ax.get_title(), ax.get_xlabel(), ax.get_ylabel()) == (
        "held-out denoising loss vs virtual time",  # the metric table's label, not the column name
        "virtual time (s)",
        "held-out denoising loss",
    )
    assert len(ax.lines) == 2 and {t.get_text() for t in ax.get_legend().get_texts()} == {
        "fedavg: fedavg-0",
        "fedbuff: fedbuff-0",
    }
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
    assert "<table" in text and 'class="dataframe comparison"' in text and "fedbuff-0" in text
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


def test_report_shows_real_images_beside_samples_and_a_quality_chart(sweep, tmp_path):
    samples = sweep / "fedavg-0" / "samples"
    for name in ("real.png", "by_class.png", "real_by_class.png"):
        Image.new("L", (16, 16), 200).save(samples / name)
    summary = json.loads((sweep / "fedbuff-0" / "summary.json").read_text())
    (sweep / "fedbuff-0" / "summary.json").write_text(json.dumps(dict(summary, judge_mean_confidence=0.8)))
    text = write_report(sweep, tmp_path / "r.html").read_text()
    item = text.split('sweep/fedavg-0/"', 1)[1].split("</li>", 1)[0]
    captions = re.findall(r"<figcaption>([^<]*)</figcaption>", item)
    assert captions == [
        "generated: samples from the final model",
        "real: images from the training data",
        "generated, one row per class",
        "real, one row per class",
    ]
    assert 'id="plot-final"' in text  # the chart of final FID / judge numbers
    head = re.findall(r"<th>([^<]*)</th>", text.split('id="comparison"', 1)[1].split("</thead>", 1)[0])
    assert head[:4] == ["run", "held-out denoising loss", "digit-judge confidence", "versions"]


def test_privacy_section_without_dp_does_not_open_with_epsilon():
    from analysis.privacy import EXPLAIN_AUDIT, privacy_section

    df = pd.DataFrame({"run": ["a"], "run_dir": ["/nonexistent"], "summary.mia_auc": [0.51]})
    section = privacy_section(df)
    explain = section.split('id="privacy-explain">', 1)[1].split("</p>", 1)[0]
    assert explain.startswith("The audit") and "epsilon" not in explain
    assert explain == EXPLAIN_AUDIT.replace("'", "&#x27;")
    dp = privacy_section(df.assign(**{"summary.epsilon": [3.0]}))
    assert dp.split('id="privacy-explain">', 1)[1].startswith("epsilon holds")


def test_write_report_dry_runs_only(sweep, tmp_path):
    out = write_report(sweep / "nested" / "dry-0", tmp_path / "dry.html")
    text = out.read_text()
    assert re.search(r'<p class="note" id="plot-metric">No evaluations', text)
    assert '<img id="plot-metric"' not in text
    for ident in ("plot-staleness", "plot-gantt", "plot-participation"):
        assert f'<img id="{ident}"' in text
    assert len(B64.findall(text)) == 3


# ---- seed statistics: CIs, pairing, censored time-to-target ----------------------------------------------------


def test_mean_ci_t_known_answer():
    ci = mean_ci([1, 2, 3, 4, 5])
    # mean 3, s = sqrt(2.5), se = s / sqrt(5) = 0.707107, t(0.975, 4) = 2.776445: half width 1.963243
    assert (ci.n, ci.method) == (5, "t")
    assert ci.mean == 3 and ci.std == pytest.approx(math.sqrt(2.5))
    assert (ci.low, ci.high) == (pytest.approx(1.036757, abs=1e-6), pytest.approx(4.963243, abs=1e-6))
    assert mean_ci([2.0, 2.0, 2.0]).low == 2.0  # no spread: a zero-width interval
    one = mean_ci([4.0, float("nan")])  # NaN dropped; one value has no interval
    assert one.n == 1 and one.mean == 4.0 and math.isnan(one.low)
    with pytest.raises(ValueError, match="method"):
        mean_ci([1, 2], method="z")


def test_mean_ci_bootstrap_from_20_values():
    x = np.random.default_rng(7).normal(10.0, 2.0, 400)
    ci = mean_ci(x)
    assert ci.method == "bootstrap"
    # For 400 normal values the bootstrap agrees with normal theory: mean +- 1.96 s / 20 (s = 1.848: +-0.181)
    half = 1.959964 * x.std(ddof=1) / 20
    assert ci.low == pytest.approx(ci.mean - half, abs=0.02) and ci.high == pytest.approx(ci.mean + half, abs=0.02)
    assert mean_ci(x, method="t").method == "t"
    assert mean_ci(x) == ci  # seeded: the same interval every time


def test_paired_ci_known_answer():
    a = [10.0, 12.0, 14.0, 16.0, 18.0]
    cmp = paired_ci(a, [2 * v for v in a])
    # b / a = 2 for every seed: ratio 2 with a zero-width CI (p = 0); b - a = a: mean 14, s = sqrt(10), se = sqrt(2)
    assert cmp.n == 5 and cmp.ratio == pytest.approx(2.0) and cmp.ratio_low == pytest.approx(2.0)
    assert cmp.log_ratio.p_value == 0.0
    assert cmp.diff.estimate == 14.0
    assert (cmp.diff.low, cmp.diff.high) == (
        pytest.approx(14 - 3.926483, abs=1e-5),
        pytest.approx(14 + 3.926483, abs=1e-5),
    )
    assert cmp.diff.p_value < 0.001  # t = 14 / sqrt(2) = 9.90 on 4 df: p = 0.00058
    assert math.isnan(paired_ci([1.0, -1.0], [2.0, 2.0]).ratio)  # a ratio needs positive values


STEP = 10  # evaluations at vtime 0, 1, ..., 10; the budget (run.max_vtime) is 10 virtual seconds


def make_seed_run(folder, strategy, seed, dropout, reach, final=0.2):
    """A run whose held-out loss is 1.0 until vtime ``reach``, then ``final`` (never, with reach=None)."""
    folder.mkdir(parents=True)
    pd.DataFrame([job(0, 0, "applied", 0, 1, 0)]).to_parquet(folder / "events.parquet")
    rows = [
        dict(
            version=t, vtime=float(t), heldout_loss=final if reach is not None and t >= reach else 1.0, eval_seconds=0.1
        )
        for t in range(STEP + 1)
    ]
    rows[-1].update(fid_domain=5.0 + seed + (1.0 if strategy == "fedavg" else 0.0))
    pd.DataFrame(rows).to_parquet(folder / "evals.parquet")
    cfg = {
        "name": f"study-{folder.name}",
        "seed": seed,
        "clients": {"num_clients": 4, "dropout": dropout},
        "strategy": {"name": strategy},
        "run": {"max_vtime": float(STEP), "max_updates": None},
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    summary = {"final_version": STEP, "virtual_time": float(STEP), "judge_mean_confidence": 0.5 + 0.1 * seed}
    (folder / "summary.json").write_text(json.dumps(summary))


# Condition "base" (dropout 0): fedavg takes exactly 2x fedbuff's time in every seed. Condition dropout 0.3:
# fedavg reaches the target at 6 in seed 0 and never in seeds 1 and 2 (censored at the budget, 10).
REACH = {
    (0.0, "fedbuff"): [2, 3, 4],
    (0.0, "fedavg"): [4, 6, 8],
    (0.3, "fedbuff"): [2, 3, 4],
    (0.3, "fedavg"): [6, None, None],
}


@pytest.fixture
def seed_sweep(tmp_path):
    """12 runs in folders named r00..r11 (nothing to parse) and the sweep's record of their overrides."""
    root = tmp_path / "study"
    record = []
    for i, ((dropout, strategy), reaches) in enumerate((k, v) for k, v in REACH.items()):
        for seed, reach in enumerate(reaches):
            name = f"r{3 * i + seed:02d}"
            make_seed_run(root / name, strategy, seed, dropout, reach)
            over = (["clients.dropout=0.3"] if dropout else []) + [
                f"strategy.name={strategy}",
                f"seed={seed}",
                f"name=study-{name}",
            ]
            record.append(dict(name=name, overrides=over))
    (root / "sweep.yaml").write_text(yaml.safe_dump(dict(name="study", base="x.yaml", runs=record)))
    return root


def test_run_table_conditions_from_cfg_and_sweep_record(seed_sweep):
    runs = run_table(seed_sweep)
    assert len(runs) == 12 and runs.attrs["condition_columns"] == ["cfg.clients.dropout"]
    by_dropout = runs.groupby("cfg.clients.dropout")["condition"].unique().to_dict()
    assert {k: list(v) for k, v in by_dropout.items()} == {0.0: ["base"], 0.3: ["clients.dropout=0.3"]}
    (seed_sweep / "sweep.yaml").unlink()  # without the record: the label comes from the cfg.* values
    assert sorted(run_table(seed_sweep)["condition"].unique()) == ["clients.dropout=0.0", "clients.dropout=0.3"]


def test_time_to_target_censored_and_target_from_best(seed_sweep):
    df = load_runs(seed_sweep)
    runs = add_time_to_target(run_table(df), df)
    # best mean final loss per condition is fedbuff's 0.2: target 0.2 * 1.2 = 0.24
    assert runs["target_heldout_loss"].unique() == pytest.approx([0.24])
    cens = runs[(runs["cfg.clients.dropout"] == 0.3) & (runs["cfg.strategy.name"] == "fedavg")].sort_values("cfg.seed")
    assert cens["ttt_heldout_loss"].tolist() == [6.0, 10.0, 10.0]  # never reached: its censoring time, the budget
    assert cens["ttt_heldout_loss_reached"].tolist() == [True, False, False]

    s = seed_summary(runs, "ttt_heldout_loss").set_index(["condition", "cfg.strategy.name"])  # survival rows
    row = s.loc[("clients.dropout=0.3", "fedavg")]
    assert row["n"] == 3 and row["n_censored"] == 2 and row["rmst"] == pytest.approx(26 / 3)  # mean of min(T, 10)
    assert 0 <= row["rmst_low"] < row["rmst"] < row["rmst_high"] <= row["budget"] == 10
    row = s.loc[("base", "fedavg")]  # [4, 6, 8]: RMST 6; logit(0.6) +- t(0.975, 2) * (2 / sqrt 3) / (10 * 0.24)
    assert row["n_censored"] == 0 and row["target"] == pytest.approx(0.24) and row["rmst"] == 6.0
    half = 4.302653 * (2 / math.sqrt(3)) / (10 * 0.6 * 0.4)
    z = math.log(0.6 / 0.4)
    assert row["rmst_low"] == pytest.approx(10 / (1 + math.exp(-(z - half))), abs=1e-5)
    assert row["rmst_high"] == pytest.approx(10 / (1 + math.exp(-(z + half))), abs=1e-5)


def test_paired_diff_on_a_sweep_folder(seed_sweep):
    d = paired_diff(seed_sweep, "ttt_heldout_loss", "fedbuff", "fedavg").set_index("condition")
    base = d.loc["base"]  # fedavg / fedbuff = 2 in every seed; fedavg - fedbuff = [2, 3, 4]
    assert base["n_pairs"] == 3 and base["ratio"] == pytest.approx(2.0)
    assert (base["ratio_low"], base["ratio_high"]) == (pytest.approx(2.0), pytest.approx(2.0))
    assert base["diff"] == 3.0 and base["diff_low"] == pytest.approx(3 - 2.484138, abs=1e-5)
    assert base["test_diff"] == "paired t" and base["test_ratio"] == "paired t, log ratios"
    cens = d.loc["clients.dropout=0.3"]  # restricted times: ratios 6/2, 10/3, 10/4: geometric mean 25 ** (1/3)
    assert cens["ratio"] == pytest.approx(25 ** (1 / 3)) and (cens["n_censored_a"], cens["n_censored_b"]) == (0, 2)
    assert cens["mean_b"] == pytest.approx(26 / 3) and cens["budget"] == 10  # fedavg's RMST
    fid = paired_diff(seed_sweep, "final_fid_domain", "fedbuff", "fedavg").set_index("condition")
    assert fid.loc["base", "diff"] == pytest.approx(1.0) and fid.loc["base", "diff_low"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"share cfg\.seed"):  # two conditions pooled: seeds repeat per arm
        paired_diff(seed_sweep, "final_fid_domain", "fedbuff", "fedavg", by=["cfg.run.max_vtime"])
    with pytest.raises(ValueError, match="no metric 'final_nope'"):
        seed_summary(seed_sweep, "final_nope")


def test_comparisons_in_words(seed_sweep):
    df = load_runs(seed_sweep)
    runs = add_time_to_target(run_table(df), df)
    items = {
        (c.condition, c.metric, c.measure): c
        for c in compare_arms(runs, ["ttt_heldout_loss", "final_fid_domain", "judge_mean_confidence"])
    }
    fast = items[("base", "ttt_heldout_loss", "ratio")]
    assert (fast.a, fast.b) == ("fedbuff", "fedavg") and fast.significant and fast.estimate == pytest.approx(2.0)
    assert fast.sentence.startswith("fedbuff has the shorter time to held-out denoising loss target (<= 0.24)")
    # each RMST beside its own arm (the sentence's subject is not always arm a)
    assert f"RMST fedbuff {fast.value_a:.3g} vs fedavg {fast.value_b:.3g} virtual s" in fast.sentence
    rmst_diff = items[("clients.dropout=0.3", "ttt_heldout_loss", "difference")]
    assert rmst_diff.estimate == pytest.approx(26 / 3 - 3) and rmst_diff.test == "paired t"
    assert "fedavg in 2 of 3 seeds" in rmst_diff.sentence and "lower bound" not in rmst_diff.sentence
    fid = items[("base", "final_fid_domain", "ratio")]  # FID is positive: compared by its ratio
    assert fid.estimate == pytest.approx(math.exp(np.mean(np.log([6 / 5, 7 / 6, 8 / 7]))))
    judge = items[("base", "judge_mean_confidence", "difference")]
    # equal in every seed: no difference, so no claim (and p = 1, the interval [0, 0] holds 0)
    assert not judge.significant and judge.p_value == 1.0 and "cannot be told apart" in judge.sentence


def test_plot_metric_ci_band(seed_sweep):
    df = load_runs(seed_sweep)
    runs = add_time_to_target(run_table(df), df)
    fig = plot_metric_ci(evals(df), runs, "heldout_loss", target="target_heldout_loss")
    axes = [a for a in fig.axes if a.get_visible()]
    assert [a.get_title() for a in axes] == ["base", "clients.dropout=0.3"]
    assert len(axes[0].collections) == 2  # one CI band per strategy
    assert {t.get_text() for t in axes[0].get_legend().get_texts()} == {"fedavg (n=3)", "fedbuff (n=3)", "target"}
    assert axes[0].get_ylabel() == "held-out denoising loss"
    # a positive metric's band is the geometric mean's: t on log values, never below 0
    mean, lo, hi, n = mean_band(np.array([[1.0, 2.0], [3.0, np.nan]]), range_="positive")
    assert mean[0] == pytest.approx(math.sqrt(3.0)) and n.tolist() == [2, 1] and math.isnan(lo[1])
    half = 12.706205 * abs(math.log(3.0)) / math.sqrt(2) / math.sqrt(2)  # t(0.975, 1) * s / sqrt(n) on logs
    assert hi[0] == pytest.approx(math.sqrt(3.0) * math.exp(half)) and lo[0] > 0
    loss_like = np.array([[1.64, 0.85, 0.62]]).T  # a plain t band would go below 0 here
    assert mean_band(loss_like, range_="positive")[1][0] > 0 and mean_band(loss_like)[1][0] < 0
    png_ok(fig)
    png_ok(plot_summary_bars(seed_summary(runs, "final_fid_domain")))


def test_report_comparisons_section(seed_sweep, tmp_path):
    text = write_report(seed_sweep, tmp_path / "r.html").read_text()
    assert '<h2 id="comparisons">Comparisons</h2>' in text and '<h2 id="time-to-target">' in text
    for ident in ("plot-forest", "plot-km", "plot-metric-ci", "plot-arms-final_fid_domain", "comparison-claims"):
        assert f'id="{ident}"' in text
    assert "b/a 2.00x [2.00, 2.00]" in text  # fedavg / fedbuff restricted times in the base condition
    assert "8.67 [" in text and "2 of 3" in text  # fedavg's RMST under dropout, 2 of 3 runs censored


def test_report_defaults_next_to_the_runs(seed_sweep):
    from analysis.report import default_out

    assert default_out(seed_sweep) == seed_sweep / "report.html"
    assert default_out([seed_sweep / "r00", seed_sweep / "r01"]) == seed_sweep.resolve() / "report.html"
    out = write_report(seed_sweep / "r00")
    assert out == seed_sweep / "r00" / "report.html" and "<title>raydiff heterogeneity report: 1 run</title>" in (
        out.read_text()
    )
    assert "1 runs" not in out.read_text()


def test_study_cli_writes_csvs(seed_sweep, tmp_path, capsys):
    from analysis.study import main, summarize_runs_csv

    assert main([str(seed_sweep), "--csv", str(tmp_path / "res" / "s.csv"), "--extra-slacks", "0.1"]) == 0
    out = capsys.readouterr().out
    assert "| base | fedavg | time to held-out denoising loss target | 0.24 | 10 | 6 [1.59, 9.22] | 0 of 3 |" in out
    assert "- [base] fedbuff has the shorter time to held-out denoising loss target (<= 0.24)" in out
    runs = pd.read_csv(tmp_path / "res" / "s-runs.csv")
    assert len(runs) == 12 and {"run", "seed", "condition", "arm", "cfg.clients.dropout", "censored"} <= set(runs)
    assert {"ttt_heldout_loss@0.1", "censored@0.1", "target_heldout_loss@0.1", "budget"} <= set(runs)
    t = pd.read_csv(tmp_path / "res" / "s-time.csv")
    row = t[(t.metric == "ttt_heldout_loss") & (t.condition == "clients.dropout=0.3") & (t.arm == "fedavg")]
    assert row[["n", "n_censored", "budget"]].values.tolist() == [[3, 2, 10]]
    assert {"rmst", "rmst_low", "rmst_high", "budget", "n", "n_censored", "method"} <= set(t)
    c = pd.read_csv(tmp_path / "res" / "s-comparisons.csv")
    assert {"condition", "metric", "measure", "a", "b", "estimate", "low", "high", "p_value", "test"} <= set(c)
    # every table is recomputable from the runs CSV alone
    again = summarize_runs_csv(tmp_path / "res" / "s-runs.csv")
    pd.testing.assert_frame_equal(
        again["time"].reset_index(drop=True), t, check_dtype=False, rtol=1e-5, check_exact=False
    )
    # any cfg column as the compared arm (beta in the paper grid): the condition is then the rest (the strategy)
    assert main([str(seed_sweep), "--between", "cfg.clients.dropout"]) == 0
    assert "| strategy.name=fedavg | dropout=0.3 |" in capsys.readouterr().out


def test_conditions_tolerate_a_config_field_missing_from_older_runs():
    """Runs written before a config field existed have NaN in its cfg.* column; labels must still build."""
    from analysis.seeds import _condition_labels

    runs = pd.DataFrame({"cfg.train.group_size": [1.0, np.nan, 1.0], "cfg.strategy.name": ["a", "b", "a"]})
    labels = _condition_labels(runs, ["cfg.train.group_size", "cfg.strategy.name"], ())
    assert labels.tolist() == [
        "train.group_size=1.0, strategy.name=a",
        "train.group_size=nan, strategy.name=b",
        "train.group_size=1.0, strategy.name=a",
    ]
