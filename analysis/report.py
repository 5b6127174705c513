"""One self-contained HTML report for a set of runs (a sweep folder, or runs picked by hand).

Self-contained means one file with every image inlined as base64, CSS and a tiny self-check
script inline: no CDN, no fonts, no external scripts. It can be mailed, attached to an issue or
opened offline years later, and it never phones home.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import math
import os
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from .load import PathLike, find_runs, load_runs
from .load import evals as sel_evals
from .load import events as sel_events
from .metric_table import label
from .metrics import KEY_CONFIG, summary_table
from .per_class import per_class_section
from .plots import (
    plot_arm_intervals,
    plot_final_metrics,
    plot_forest,
    plot_gantt,
    plot_km,
    plot_metric_ci,
    plot_metric_vs_vtime,
    plot_participation,
    plot_staleness_hist,
    save_png,
)
from .privacy import privacy_section
from .seeds import DEFAULT_SLACK, STRATEGY, add_time_to_target, run_table
from .study import frame_from_long, summarize, time_columns

# Time-to-target in the report: held-out loss within 20% of the best strategy's mean final loss (per condition).
TARGET_METRIC, TARGET_SLACK = "heldout_loss", DEFAULT_SLACK
SUMMARY_METRICS = ("final_heldout_loss", "final_fid_domain", "final_recall", "judge_mean_confidence")
# The paired comparisons the report lists (the CSVs of analysis.study hold every metric).
KEY_METRICS = ("ttt_heldout_loss", *SUMMARY_METRICS, "final_precision", "final_kid_domain")

CSS = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { border-bottom: 2px solid #ccc; padding-bottom: .2em; }
section { margin: 1.5em 0; } .table-wrap { overflow-x: auto; }
table.comparison { border-collapse: collapse; font-size: 12px; }
table.comparison th, table.comparison td { border: 1px solid #ccc; padding: 3px 5px; text-align: right; }
table.comparison th { white-space: normal; max-width: 8em; vertical-align: bottom; }
table.comparison td:first-child { text-align: left; max-width: 22em; overflow-wrap: anywhere; }
.samples { display: flex; flex-wrap: wrap; gap: 1em; } .samples figure { margin: .3em 0; }
table.comparison thead th { background: #f0f0f0; }
.note { color: #666; font-style: italic; }
figure { margin: 1em 0; } img { max-width: 100%; }
.runs li { margin: .6em 0; } .runs img { max-width: 320px; display: block; }
.comparisons li { margin: .3em 0; } .sig { font-weight: bold; }
"""


# The page's own self-check, inline like everything else: once loaded, <body> records how many
# images decoded, so a headless browser (``--dump-dom``) can prove every plot renders.
CHECK_JS = """
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute("data-images-loaded", String(ok));
  document.body.setAttribute("data-images-total", String(imgs.length));
  var wraps = Array.prototype.slice.call(document.querySelectorAll(".table-wrap"));
  var wide = wraps.filter(function (w) { return w.scrollWidth > w.clientWidth + 1; }).length;
  document.body.setAttribute("data-tables-overflowing", String(wide));
  document.body.setAttribute("data-page-width", String(document.documentElement.scrollWidth));
});
"""


def _img(png: bytes, alt: str, id_: str | None = None) -> str:
    """An <img> with the PNG inlined as a data URI."""
    ident = f' id="{html.escape(id_)}"' if id_ else ""
    b64 = base64.b64encode(png).decode("ascii")
    return f'<img{ident} alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def _figure(fig, id_: str, alt: str, caption: str) -> str:
    return f"<figure>{_img(save_png(fig), alt, id_)}<figcaption>{html.escape(caption)}</figcaption></figure>"


def _note(text: str, id_: str | None = None) -> str:
    ident = f' id="{id_}"' if id_ else ""
    return f'<p class="note"{ident}>{html.escape(text)}</p>'


def _gantt_run(ev: pd.DataFrame) -> str:
    """The run the timeline shows: the one with the fewest jobs, so its bars stay readable."""
    return str(ev.groupby("run").size().sort_values(kind="stable").index[0])


def _plots(df: pd.DataFrame, gantt_run: str | None) -> str:
    ev, el = sel_events(df), sel_evals(df)
    parts = ["<h2>Plots</h2>"]
    if not el.empty and "heldout_loss" in el:
        parts.append(
            _figure(
                plot_metric_vs_vtime(el, "heldout_loss"),
                "plot-metric",
                "held-out denoising loss against virtual time, one line per run, colored by strategy",
                "Held-out loss vs virtual time (lower is better).",
            )
        )
    else:
        parts.append(_note("No evaluations (dry runs only): the quality-vs-time plot is skipped.", "plot-metric"))
    if ev.empty:
        parts.append(_note("No events: staleness, timeline and participation plots are skipped."))
        return "\n".join(parts)
    parts.append(
        _figure(
            plot_staleness_hist(ev),
            "plot-staleness",
            "histogram of staleness over applied jobs, one step curve per strategy",
            "Staleness of applied updates (versions the model moved while the client trained).",
        )
    )
    run = gantt_run or _gantt_run(ev)
    parts.append(
        _figure(
            plot_gantt(ev, run=run),
            "plot-gantt",
            f"timeline of client jobs of run {run}, bars colored by job status",
            f"Client jobs of run {run}, colored by final status.",
        )
    )
    parts.append(
        _figure(
            plot_participation(ev),
            "plot-participation",
            "applied jobs per client, grouped by strategy, with Gini coefficients",
            "Applied jobs per client (per run, averaged within each strategy); zeros included.",
        )
    )
    return "\n".join(parts)


SAMPLE_IMAGES = (
    ("final.png", "generated: samples from the final model"),
    ("real.png", "real: images from the training data"),
    ("by_class.png", "generated, one row per class"),
    ("real_by_class.png", "real, one row per class"),
)


def _run_list(df: pd.DataFrame, out_dir: Path) -> str:
    """Each run with a relative link to its folder, its final sample grid and, beside it, the real images
    (``samples/real.png``; per class when the run is class-conditional), when the run folder has them."""
    items = []
    meta = df.groupby("run", sort=True)[["run_dir"]].first()
    for run, row in meta.iterrows():
        run_dir = Path(row["run_dir"])
        href = Path(os.path.relpath(run_dir.resolve(), out_dir.resolve())).as_posix()
        item = f'<a href="{html.escape(href)}/">{html.escape(str(run))}</a>'
        figs = []
        for name, caption in SAMPLE_IMAGES:
            f = run_dir / "samples" / name
            if f.is_file():
                img = _img(f.read_bytes(), f"{caption}, run {run}")
                figs.append(f"<figure>{img}<figcaption>{html.escape(caption)}</figcaption></figure>")
        if figs:
            item += '<div class="samples">' + "".join(figs) + "</div>"
        else:
            item += " " + _note("no samples/final.png (dry run or interrupted)")
        items.append(f"<li>{item}</li>")
    return '<h2>Runs</h2>\n<ul class="runs" id="run-list">' + "\n".join(items) + "</ul>"


def _multi_seed(runs: pd.DataFrame) -> bool:
    """True when some condition x strategy cell holds two or more runs (seeds): then CIs mean something."""
    keys = [c for c in ("condition", STRATEGY) if c in runs]
    return bool(keys) and int(runs.groupby(keys).size().max()) >= 2


def _table(frame: pd.DataFrame, table_id: str, digits: int = 4) -> str:
    return (
        '<div class="table-wrap">'
        + frame.to_html(
            classes="comparison",
            index=False,
            float_format=lambda v: f"{v:.{digits}g}",
            na_rep="",
            border=0,
            table_id=table_id,
        )
        + "</div>"
    )


def _ci(est: float, lo: float, hi: float, ratio: bool = False) -> str:
    if not math.isfinite(est):
        return ""
    if ratio:
        return f"{est:.2f}x [{lo:.2f}, {hi:.2f}]" if math.isfinite(lo) else f"{est:.2f}x"
    return f"{est:.3g} [{lo:.3g}, {hi:.3g}]" if math.isfinite(lo) else f"{est:.3g}"


def _seed_tables(tables: dict[str, pd.DataFrame]) -> str:
    """Per arm: each key metric's estimate and 95% CI on its own scale, as a table and a point-interval plot."""
    summary = tables["summary"]
    parts = [
        "<h2>Seed statistics</h2>",
        _note(
            "Per arm, over seeds: the estimate and 95% CI on the metric's own scale, so no interval leaves the "
            "metric's range (a positive metric: geometric mean, log scale; a share: logit scale; ci_method "
            "names it). Student t below 20 seeds, BCa bootstrap from 20 on."
        ),
    ]
    for m in SUMMARY_METRICS:
        summ = summary[summary["metric"] == m] if len(summary) else summary
        if summ.empty:
            continue
        show = pd.DataFrame(
            {
                "condition": summ["condition"],
                "arm": summ["arm"],
                "n": summ["n"],
                "estimate [95% CI]": [_ci(e, lo, hi) for e, lo, hi in zip(summ.estimate, summ.ci_low, summ.ci_high)],
                "mean": summ["mean"],
                "interval": summ["ci_method"],
            }
        )
        parts.append(f"<h3>{html.escape(label(m))}</h3>")
        parts.append(_table(show, f"seeds-{m}"))
        parts.append(
            _figure(
                plot_arm_intervals(summ),
                f"plot-arms-{m}",
                f"{label(m)} per arm with its 95% CI",
                f"{label(m)}: estimate per arm and its 95% CI over seeds.",
            )
        )
    return "\n".join(parts)


def _time_section(frame: pd.DataFrame, tables: dict[str, pd.DataFrame]) -> str:
    """Time to target as survival data: Kaplan-Meier curves with censoring ticks and the RMST table."""
    time = tables["time"]
    ttt = f"ttt_{TARGET_METRIC}"
    if time.empty or ttt not in frame:
        return ""
    t = time[time["metric"] == ttt]
    show = pd.DataFrame(
        {
            "condition": t["condition"],
            "arm": t["arm"],
            "target loss": t["target"],
            "budget (virtual s)": t["budget"],
            "RMST [95% CI] (virtual s)": [_ci(e, lo, hi) for e, lo, hi in zip(t.rmst, t.rmst_low, t.rmst_high)],
            "censored": [f"{int(c)} of {int(n)}" for c, n in zip(t.n_censored, t.n)],
        }
    )
    return "\n".join(
        [
            '<h2 id="time-to-target">Time to target</h2>',
            _note(
                "Held-out loss within 20% of the best arm's mean final loss in the condition. A run that never "
                "reaches it within the budget is censored: its time is only known to exceed the budget. The "
                "curves are Kaplan-Meier estimates of the share of runs at target by each virtual time (ticks: "
                "censored runs); the RMST is the mean time to target with every time capped at the budget (the "
                "area above the curve up to the budget), with a 95% CI that stays in [0, budget]. An arm whose "
                "runs are all censored has RMST = budget: it did not reach the target within the budget."
            ),
            _figure(
                plot_km(frame, ttt),
                "plot-km",
                "Kaplan-Meier curves of reaching the target per arm, with censoring ticks, a panel per condition",
                "Share of runs at the target by virtual time (Kaplan-Meier, 95% band); ticks: censored runs.",
            ),
            _table(show, "time-to-target-table"),
        ]
    )


def _comparisons(tables: dict[str, pd.DataFrame]) -> str:
    """The "Comparisons" section: the forest plot of every pair of arms, and the claims as a table."""
    comps = tables["comparisons"]
    keys = [m for m in KEY_METRICS if len(comps) and (comps["metric"] == m).any()]
    comps = comps[comps["metric"].isin(keys)] if len(comps) else comps
    parts = [
        '<h2 id="comparisons">Comparisons</h2>',
        _note(
            "Every pair of arms within a condition, paired by seed; a is the better arm of the pair. Positive "
            "metrics by the geometric mean of per-seed ratios b/a (paired t-test on log ratios), shares by the "
            "difference b - a (paired t-test); time to target by the difference of restricted mean times and "
            "the ratio of restricted times. Each interval is the inversion of the test whose p-value sits "
            "beside it, so a claim (bold) is made exactly when p < 0.05 and the 95% CI excludes no difference."
        ),
    ]
    if comps.empty:
        parts.append(_note("Nothing to compare: each condition has a single arm, or no paired seeds."))
        return "\n".join(parts)
    parts.append(
        _figure(
            plot_forest(comps),
            "plot-forest",
            "forest plot: every paired comparison of arms with its 95% CI, one panel per metric",
            "Every paired comparison with its 95% CI (filled: the CI excludes no difference).",
        )
    )
    rows = []
    for _, c in comps.iterrows():
        est = _ci(c["estimate"], c["low"], c["high"], ratio=c["measure"] == "ratio")
        p = c["p_value"]
        cls = ' class="sig"' if c["significant"] else ""
        cells = [
            html.escape(str(c["condition"])),
            html.escape(label(str(c["metric"]))),
            html.escape(f"{c['b']} vs {c['a']}"),
            html.escape(("b/a " if c["measure"] == "ratio" else "b - a ") + est),
            "" if not math.isfinite(p) else ("&lt; 0.001" if p < 0.001 else f"{p:.3f}"),
            html.escape(str(c["test"])),
            str(int(c["n_pairs"])),
            (f"{int(c['n_censored_b'])} / {int(c['n_censored_a'])}" if str(c["metric"]).startswith("ttt_") else ""),
        ]
        rows.append(f"<tr{cls}>" + "".join(f"<td>{x}</td>" for x in cells) + "</tr>")
    head = ["condition", "metric", "arms", "effect [95% CI]", "p", "test", "pairs", "censored b / a"]
    parts.append(
        '<div class="table-wrap"><table class="comparison" id="comparison-claims"><thead><tr>'
        + "".join(f"<th>{h}</th>" for h in head)
        + "</tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table></div>"
    )
    return "\n".join(parts)


def _multi_seed(runs: pd.DataFrame) -> bool:
    """True when some condition x strategy cell holds two or more runs (seeds): then CIs mean something."""
    keys = [c for c in ("condition", STRATEGY) if c in runs]
    return bool(keys) and int(runs.groupby(keys).size().max()) >= 2


def _uncertainty(df: pd.DataFrame) -> str:
    """Comparisons (forest plot), time to target (KM), seed statistics and CI-band curves, for studies with
    repeated seeds. Every number comes from ``analysis.study.summarize`` of the runs frame, as in the CSVs."""
    runs = run_table(df)
    if not _multi_seed(runs):
        return ""
    frame = frame_from_long(df, STRATEGY, TARGET_SLACK)
    tables = summarize(frame)
    parts = [_comparisons(tables), _time_section(frame, tables), _seed_tables(tables)]
    el = sel_evals(df)
    if not el.empty and TARGET_METRIC in el:
        if time_columns(frame):
            runs = add_time_to_target(runs, df, TARGET_METRIC, slack=TARGET_SLACK)
        parts.append(
            _figure(
                plot_metric_ci(el, runs, TARGET_METRIC, target=f"target_{TARGET_METRIC}"),
                "plot-metric-ci",
                "held-out loss against virtual time, geometric mean over seeds with a 95% CI band per strategy, "
                "one panel per condition",
                "Held-out loss vs virtual time: geometric mean over seeds, 95% CI band (t on the log scale per "
                "time point, so it stays above 0); dotted: the time-to-target threshold.",
            )
        )
    return f"<section>{chr(10).join(p for p in parts if p)}</section>"


def _overview(df: pd.DataFrame) -> str:
    """Two tables that fit a 1280 px page: each run's setup, and each run's results (loss, FID and judge
    first), with readable headers."""
    table = summary_table(df).dropna(axis=1, how="all")
    runs = run_table(df)
    for m in ("final_fid_domain", "judge_mean_confidence", "final_recall"):
        if m in runs and m not in table:
            table[m] = runs[m].reindex(table.index)
    setup_cols = [c for c in table.columns if c in KEY_CONFIG.values() or "." in c]
    first = [
        c for c in ("final_heldout_loss", "final_fid_domain", "judge_mean_confidence", "final_recall") if c in table
    ]
    later = ("final_version", "virtual_time", "staleness_mean", "staleness_max", "participation_gini")
    rest = [c for c in (*later, "wasted_compute_share") if c in table]
    heads = {
        "final_version": "versions",
        "virtual_time": "virtual time (s)",
        "staleness_mean": "mean staleness",
        "staleness_max": "max staleness",
        "num_clients": "clients",
        "speed_dist": "speed distribution",
    }

    def named(cols: list[str]) -> pd.DataFrame:
        t = table[cols].reset_index()
        t.columns = ["run"] + [heads.get(c, label(c)) for c in cols]
        return t

    parts = ['<section><h2>Comparison</h2><h3 id="setup">Setup</h3>']
    parts.append(_table(named(setup_cols), "setup"))
    parts.append("<h3>Results</h3>")
    parts.append(_table(named(first + rest), "comparison"))
    if runs.filter(items=["final_fid_domain", "judge_mean_confidence"]).notna().any().any():
        parts.append(
            _figure(
                plot_final_metrics(runs),
                "plot-final",
                "each run's final domain FID, KID, precision, recall and judge confidence",
                "Final quality of each run (domain FID and KID: lower is better; precision, recall, judge "
                "confidence: higher is better).",
            )
        )
    return "\n".join(parts) + "</section>"


def default_out(paths: PathLike | Iterable[PathLike]) -> Path:
    """Where the report goes when no ``out`` is given: ``report.html`` inside the folder given (a sweep or
    a run), or inside the folder that holds all of them when several are given; never the current folder."""
    given = [Path(paths)] if isinstance(paths, (str, os.PathLike)) else [Path(p) for p in paths]
    if not given:
        raise ValueError("no run folders given")
    if len(given) == 1:
        base = given[0] if given[0].is_dir() else given[0].parent
    else:
        base = Path(os.path.commonpath([str(p.resolve()) for p in given]))
    return base / "report.html"


def write_report(
    paths: PathLike | Iterable[PathLike],
    out: Path | str | None = None,
    title: str | None = None,
    gantt_run: str | None = None,
) -> Path:
    """Write one self-contained HTML report of the runs under ``paths``; return its path.

    ``out`` is the HTML file, or an existing folder (then ``out/report.html``); by default the report goes
    next to the runs (``default_out``). The report holds each run's setup and results, a chart of the final
    quality numbers; when a condition and strategy has two or more seeds, a "Comparisons" section (the
    forest plot of every pair of arms and the claims with their tests), time to target (Kaplan-Meier curves
    with censoring ticks, RMST), seed statistics and the CI-band curves; then the four plots (the metric
    plot is replaced by a note when no run has evaluations), the privacy section and the run list with the
    sample grids beside real images. The timeline shows ``gantt_run``, by default the run with the fewest
    jobs (the most readable one).
    """
    find_runs(paths)  # a typo fails here, before anything is written
    out = default_out(paths) if out is None else Path(out)
    if out.is_dir():
        out = out / "report.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    df = load_runs(paths)
    runs = df["run"].nunique()
    plural = "run" if runs == 1 else "runs"
    title = title or f"raydiff heterogeneity report: {runs} {plural}"
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    body = "\n".join(
        [
            f"<h1>{html.escape(title)}</h1>",
            _note(
                f"{runs} {plural}, generated {stamp}. Staleness and participation count applied jobs only; "
                "wasted shares count dropped, failed and rejected jobs (compute only up to the failure point)."
            ),
            _overview(df),
            _uncertainty(df),
            f"<section>{_plots(df, gantt_run)}</section>",
            privacy_section(df),
            per_class_section(df),  # quality per class (issue 22; analysis/per_class.py)
            f"<section>{_run_list(df, out.parent)}</section>",
        ]
    )
    doc = (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
        f"<style>{CSS}</style>\n</head>\n<body>\n{body}\n<script>{CHECK_JS}</script>\n</body>\n</html>\n"
    )
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(doc, encoding="utf-8")
    os.replace(tmp, out)
    return out


__all__ = ["default_out", "write_report"]
