"""One self-contained HTML report for a set of runs (a sweep folder, or runs picked by hand).

Self-contained means one file with every image inlined as base64, CSS and a tiny self-check
script inline: no CDN, no fonts, no external scripts. It can be mailed, attached to an issue or
opened offline years later, and it never phones home.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import os
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from .compare import LABELS, comparisons
from .load import PathLike, load_runs
from .load import evals as sel_evals
from .load import events as sel_events
from .metrics import summary_table
from .plots import (
    plot_gantt,
    plot_metric_ci,
    plot_metric_vs_vtime,
    plot_participation,
    plot_staleness_hist,
    plot_summary_bars,
    save_png,
)
from .privacy import privacy_section
from .seeds import DEFAULT_SLACK, STRATEGY, add_time_to_target, run_table, seed_summary

# Time-to-target in the report: held-out loss within 20% of the best strategy's mean final loss (per condition).
TARGET_METRIC, TARGET_SLACK = "heldout_loss", DEFAULT_SLACK
SUMMARY_METRICS = ("ttt_heldout_loss", "final_heldout_loss", "final_fid_domain", "judge_mean_confidence")

CSS = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { border-bottom: 2px solid #ccc; padding-bottom: .2em; }
section { margin: 1.5em 0; } .table-wrap { overflow-x: auto; }
table.comparison { border-collapse: collapse; font-size: 13px; }
table.comparison th, table.comparison td { border: 1px solid #ccc; padding: 3px 6px; text-align: right; }
table.comparison thead th { background: #f0f0f0; }
.note { color: #666; font-style: italic; }
figure { margin: 1em 0; } img { max-width: 100%; }
.runs li { margin: .6em 0; } .runs img { max-width: 320px; display: block; margin-top: .3em; }
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


def _run_list(df: pd.DataFrame, out_dir: Path) -> str:
    """Each run with a relative link to its folder and its final sample grid, when it has one."""
    items = []
    meta = df.groupby("run", sort=True)[["run_dir"]].first()
    for run, row in meta.iterrows():
        run_dir = Path(row["run_dir"])
        href = Path(os.path.relpath(run_dir.resolve(), out_dir.resolve())).as_posix()
        item = f'<a href="{html.escape(href)}/">{html.escape(str(run))}</a>'
        grid = run_dir / "samples" / "final.png"
        if grid.is_file():
            item += _img(grid.read_bytes(), f"samples from the final model of run {run}")
        else:
            item += " " + _note("no samples/final.png (dry run or interrupted)")
        items.append(f"<li>{item}</li>")
    return '<h2>Runs</h2>\n<ul class="runs" id="run-list">' + "\n".join(items) + "</ul>"


def _multi_seed(runs: pd.DataFrame) -> bool:
    """True when some condition x strategy cell holds two or more runs (seeds): then CIs mean something."""
    keys = [c for c in ("condition", STRATEGY) if c in runs]
    return bool(keys) and int(runs.groupby(keys).size().max()) >= 2


def _seed_tables(runs: pd.DataFrame) -> str:
    """Mean and 95% CI over seeds per condition and strategy, one table per metric, and bar charts."""
    parts = [
        "<h2>Seed statistics</h2>",
        _note(
            "Mean over seeds with a 95% confidence interval (Student t below 20 seeds, BCa bootstrap from "
            "20 on). Time to target: held-out loss within 20% of the best strategy's mean final loss in "
            "the condition; runs that never reach it count at their budget (n_censored), so the mean is "
            "the restricted mean time to target."
        ),
    ]
    for m in SUMMARY_METRICS:
        if m not in runs or runs[m].notna().sum() == 0:
            continue
        summ = seed_summary(runs, m)
        show = summ.drop(columns=["metric"]).rename(columns={STRATEGY: "strategy"})
        parts.append(
            f"<h3>{html.escape(LABELS.get(m, 'time to target (virtual s)' if m.startswith('ttt_') else m))}</h3>"
        )
        parts.append(
            '<div class="table-wrap">'
            + show.to_html(
                classes="comparison",
                index=False,
                float_format=lambda v: f"{v:.4g}",
                na_rep="",
                border=0,
                table_id=f"seeds-{m}",
            )
            + "</div>"
        )
        parts.append(
            _figure(
                plot_summary_bars(summ),
                f"plot-bars-{m}",
                f"bar chart of {m} with 95% CIs",
                f"{m}: mean over seeds, error bars the 95% CI.",
            )
        )
    return "\n".join(parts)


def _comparisons(runs: pd.DataFrame) -> str:
    """The "Comparisons" section: per condition, sentences generated from paired CIs."""
    items = comparisons(runs)
    parts = [
        '<h2 id="comparisons">Comparisons</h2>',
        _note(
            "Each strategy against the best one in its condition, paired by seed. A claim is made only when "
            "the 95% CI excludes no difference (ratio 1, difference 0); otherwise the sentence says the two "
            "cannot be told apart."
        ),
    ]
    if not items:
        parts.append(_note("Nothing to compare: each condition has a single strategy, or no paired seeds."))
        return "\n".join(parts)
    by_cond: dict[str, list] = {}
    for c in items:
        by_cond.setdefault(c.condition, []).append(c)
    for cond, cs in by_cond.items():
        parts.append(f'<h3>{html.escape(cond)}</h3><ul class="comparisons">')
        parts += [f'<li class="{"sig" if c.significant else ""}">{html.escape(c.sentence)}</li>' for c in cs]
        parts.append("</ul>")
    return "\n".join(parts)


def _uncertainty(df: pd.DataFrame) -> str:
    """Seed statistics, the Comparisons section and the CI-band curves, for studies with repeated seeds."""
    runs = run_table(df)
    if not _multi_seed(runs):
        return ""
    if f"final_{TARGET_METRIC}" in runs and runs[f"final_{TARGET_METRIC}"].notna().any():
        runs = add_time_to_target(runs, df, TARGET_METRIC, slack=TARGET_SLACK)
    el = sel_evals(df)
    parts = [_comparisons(runs), _seed_tables(runs)]
    if not el.empty and TARGET_METRIC in el:
        parts.append(
            _figure(
                plot_metric_ci(el, runs, TARGET_METRIC, target=f"target_{TARGET_METRIC}"),
                "plot-metric-ci",
                "held-out loss against virtual time, mean over seeds with a 95% CI band per strategy, "
                "one panel per condition",
                "Held-out loss vs virtual time: mean over seeds, 95% CI band (Student t per time point); "
                "dotted: the time-to-target threshold.",
            )
        )
    return f"<section>{chr(10).join(parts)}</section>"


def write_report(
    paths: PathLike | Iterable[PathLike], out: Path | str, title: str | None = None, gantt_run: str | None = None
) -> Path:
    """Write one self-contained HTML report of the runs under ``paths`` to ``out``; return its path.

    ``out`` is the HTML file, or an existing folder (then ``out/report.html``). The report holds
    the comparison table (``summary_table``); when a condition and strategy has two or more seeds, a
    "Comparisons" section (which strategy is faster to target and better at the budget, with 95% CIs,
    in words), seed statistics with bar charts and the CI-band curves; then the four plots (the metric
    plot is replaced by a note when no run has evaluations) and the run list with inlined sample grids. The timeline
    shows ``gantt_run``, by default the run with the fewest jobs (the most readable one).
    """
    out = Path(out)
    if out.is_dir():
        out = out / "report.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    df = load_runs(paths)
    runs = df["run"].nunique()
    title = title or f"raydiff heterogeneity report: {runs} run{'s' if runs != 1 else ''}"
    table = summary_table(df).dropna(axis=1, how="all")
    table_html = table.reset_index().to_html(
        classes="comparison", index=False, float_format=lambda v: f"{v:.4g}", na_rep="", border=0, table_id="comparison"
    )
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    body = "\n".join(
        [
            f"<h1>{html.escape(title)}</h1>",
            _note(
                f"{runs} runs, generated {stamp}. Staleness and participation count applied jobs only; "
                "wasted shares count dropped, failed and rejected jobs (compute only up to the failure point)."
            ),
            f'<section><h2>Comparison</h2><div class="table-wrap">{table_html}</div></section>',
            _uncertainty(df),
            f"<section>{_plots(df, gantt_run)}</section>",
            privacy_section(df),
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


__all__ = ["write_report"]
