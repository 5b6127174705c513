"""A study's results with confidence intervals, as Markdown and CSV: ``python -m analysis.study RUNS``.

    python -m analysis.study runs/async-study --csv docs/results/async-study.csv
    python -m analysis.study runs/paper-grid --between cfg.data.beta --csv docs/results/paper-grid.csv

Prints one table per metric (mean and 95% CI over seeds, per condition and arm of ``--between``) and the
comparisons in words; ``--csv`` writes the same numbers (one row per condition, arm and metric), and
``<csv stem>-comparisons.csv`` the paired comparisons. Conditions come from the runs' ``cfg.*`` columns
and the sweep's record (``analysis.seeds``), never from folder names.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from .compare import LABELS, comparisons, comparisons_frame
from .load import load_runs
from .seeds import DEFAULT_SLACK, STRATEGY, add_time_to_target, run_table, seed_summary

METRICS = (
    "ttt_heldout_loss",
    "final_heldout_loss",
    "final_fid_domain",
    "final_kid_domain",
    "final_precision",
    "final_recall",
    "judge_mean_confidence",
    "versions",
    "staleness_mean",
    "participation_gini",
    "wasted_compute_share",
)


def study_runs(paths: Sequence[str] | str, between: str = STRATEGY, slack: float = DEFAULT_SLACK) -> pd.DataFrame:
    """``run_table`` of the runs under ``paths`` with time to a held-out-loss target (``slack`` above the
    best arm's mean final loss in each condition)."""
    df = load_runs(paths)
    runs = run_table(df, between=(between,))
    if "final_heldout_loss" in runs and runs["final_heldout_loss"].notna().any():
        runs = add_time_to_target(runs, df, "heldout_loss", slack=slack, between=between)
    return runs


def study_summary(runs: pd.DataFrame, between: str = STRATEGY, metrics: Sequence[str] = METRICS) -> pd.DataFrame:
    """``seed_summary`` of every metric present, stacked: one row per condition, arm and metric."""
    by = ["condition"] + ([between] if between in runs else [])
    parts = [seed_summary(runs, m, by=by) for m in metrics if m in runs and runs[m].notna().any()]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def _cell(row: pd.Series, digits: int = 3) -> str:
    if not math.isfinite(row["mean"]):
        return "n/a"
    m = f"{row['mean']:.{digits}g}"
    if not math.isfinite(row["ci_low"]):
        return m
    cell = f"{m} [{row['ci_low']:.{digits}g}, {row['ci_high']:.{digits}g}]"
    if row.get("n_censored", 0) and row["n_censored"] > 0:
        cell += f" ({int(row['n_censored'])} cens.)"
    return cell


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub table without the optional ``tabulate`` dependency."""
    cells = [[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row] for row in table.itertuples(index=False)]
    lines = ["| " + " | ".join(str(c) for c in table.columns) + " |", "|" + "---|" * len(table.columns)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in cells])


def summary_markdown(summary: pd.DataFrame, between: str = STRATEGY) -> str:
    """One wide table: a row per condition and arm, a column per metric, cells ``mean [CI low, high]``."""
    if summary.empty:
        return "(no runs)"
    keys = ["condition"] + ([between] if between in summary else [])
    wide = summary.assign(cell=summary.apply(_cell, axis=1)).pivot_table(
        index=keys, columns="metric", values="cell", aggfunc="first", sort=True
    )
    order = [m for m in METRICS if m in wide.columns]
    n = summary.groupby(keys)["n"].max()
    wide = wide[order].assign(n=n).reset_index()
    wide[keys] = wide[keys].astype(str)  # arms such as beta 0.1 as written, not as 0.100
    wide.columns = [LABELS.get(c, c[len("cfg.") :] if str(c).startswith("cfg.") else c) for c in wide.columns]
    return to_markdown(wide)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis.study", description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="+", help="run or sweep folders")
    ap.add_argument("--between", default=STRATEGY, help="the config column compared within each condition")
    ap.add_argument(
        "--slack",
        type=float,
        default=DEFAULT_SLACK,
        help="time-to-target threshold: this fraction above the best arm's mean final held-out loss",
    )
    ap.add_argument("--csv", help="write the per-condition statistics here, and the comparisons next to it")
    args = ap.parse_args(argv if argv is not None else sys.argv[1:])
    runs = study_runs(args.paths, args.between, args.slack)
    summary = study_summary(runs, args.between)
    print(summary_markdown(summary, args.between))
    items = comparisons(runs, between=args.between)
    print()
    for c in items:
        print(f"- [{c.condition}] {c.sentence}")
    if args.csv:
        out = Path(args.csv)
        out.parent.mkdir(parents=True, exist_ok=True)
        summary.to_csv(out, index=False, float_format="%.6g")
        comparisons_frame(items).to_csv(out.with_name(out.stem + "-comparisons.csv"), index=False, float_format="%.6g")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
