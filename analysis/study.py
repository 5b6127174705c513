"""A study's per-run data and every number computed from it: ``python -m analysis.study RUNS``.

    python -m analysis.study runs/async-study --runs-csv docs/results/async-study-runs.csv \\
        --csv docs/results/async-study.csv --extra-slacks 0.05 0.1 0.3
    python -m analysis.study runs/paper-grid --between cfg.data.beta --runs-csv docs/results/paper-grid-runs.csv
    python -m analysis.study --from-runs-csv docs/results/async-study-runs.csv   # the same tables, no runs

The **runs CSV** holds one row per run: ``run, seed, condition, arm_field, arm``, the config columns the
sweep varied, every final metric, and per time-to-target target (``--slack``, and each ``--extra-slacks``
as ``...@<slack>``) the ``target_<m>``, the time ``ttt_<m>`` (a censored run: its censoring time, the run's
budget) and the ``censored`` flag, with the run's ``budget``. Every other table is computed **from that
CSV alone** (``summarize_runs_csv``), and the CLI writes them from the CSV it has just written, so a reader
can recompute every published number:

- ``<stem>.csv``: per condition, arm and metric, ``n, mean, estimate, std, ci_low, ci_high, ci_method``
  (the interval on the metric's own scale, ``analysis.stats.range_ci``);
- ``<stem>-time.csv``: per condition, arm and target, ``rmst, rmst_low, rmst_high, budget, n, n_censored,
  method`` (Kaplan-Meier restricted mean time to target, ``analysis.survival``);
- ``<stem>-comparisons.csv``: every pair of arms on every metric, with the interval and the p-value of
  one test and its name (``analysis.compare``).

Conditions come from the runs' ``cfg.*`` columns and the sweep's record (``analysis.seeds``), never from
folder names.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import pandas as pd

from .compare import compare_arms, comparisons_frame
from .load import load_runs
from .metric_table import label as col_label
from .metric_table import metric as metric_info
from .seeds import DEFAULT_SLACK, STRATEGY, add_time_to_target, run_table, seed_summary, time_summary

METRICS = (
    "final_heldout_loss",
    "final_fid_domain",
    "final_kid_domain",
    "final_precision",
    "final_recall",
    "final_fid_inception",
    "judge_mean_confidence",
    "versions",
    "staleness_mean",
    "participation_gini",
    "wasted_compute_share",
)
ID_COLUMNS = ("run", "seed", "condition", "arm_field", "arm")
TARGET_METRIC = "heldout_loss"
# The tables a runs CSV gives, by the suffix of their file name (``<stem><suffix>.csv``).
TABLES = {"summary": "", "time": "-time", "comparisons": "-comparisons"}
RUNS_SUFFIX = "-runs"


def arm_name(between: str, value: Any) -> str:
    """Strategy names read as themselves; any other arm as ``field=value`` (``beta=0.1``, not ``0.1``)."""
    if isinstance(value, str):
        return value
    short = between.rsplit(".", 1)[-1]
    return f"{short}={value}"


def _suffix(slack: float, primary: float) -> str:
    return "" if slack == primary else f"@{slack:g}"


def runs_frame(
    paths: Sequence[str] | str,
    between: str = STRATEGY,
    slack: float = DEFAULT_SLACK,
    extra_slacks: Sequence[float] = (),
) -> pd.DataFrame:
    """One row per run: the runs CSV (module doc). Time to target: held-out loss ``slack`` above the best
    arm's mean final loss in each condition, and the same for each of ``extra_slacks``."""
    return frame_from_long(load_runs(paths), between, slack, extra_slacks)


def frame_from_long(
    df: pd.DataFrame, between: str = STRATEGY, slack: float = DEFAULT_SLACK, extra_slacks: Sequence[float] = ()
) -> pd.DataFrame:
    """``runs_frame`` of a ``load_runs`` frame already in memory (the report has one)."""
    runs = run_table(df, between=(between,))
    out = pd.DataFrame(index=runs.index)
    out["run"] = runs.index.astype(str)
    out["seed"] = runs["cfg.seed"] if "cfg.seed" in runs else pd.NA
    out["condition"] = runs["condition"].astype(str)
    out["arm_field"] = between[len("cfg.") :] if between.startswith("cfg.") else between
    out["arm"] = runs[between].map(lambda v: arm_name(between, v)) if between in runs else "all"
    for c in [*runs.attrs.get("condition_columns", []), between]:
        if c in runs and c not in out:
            out[c] = runs[c]
    for m in METRICS:
        if m in runs and runs[m].notna().any():
            out[m] = runs[m].astype(float)
    if f"final_{TARGET_METRIC}" in runs and runs[f"final_{TARGET_METRIC}"].notna().any():
        for s in [slack, *[x for x in extra_slacks if x != slack]]:
            t = add_time_to_target(runs, df, TARGET_METRIC, slack=s, between=between)
            sfx = _suffix(s, slack)
            out["budget"] = t["budget"]
            out[f"target_{TARGET_METRIC}{sfx}"] = t[f"target_{TARGET_METRIC}"]
            out[f"ttt_{TARGET_METRIC}{sfx}"] = t[f"ttt_{TARGET_METRIC}"]
            reached = t[f"ttt_{TARGET_METRIC}_reached"].astype(bool)
            out[f"censored{sfx}"] = (~reached).where(t[f"ttt_{TARGET_METRIC}"].notna())
    out = out.reset_index(drop=True)
    return out.sort_values(["condition", "arm", "seed", "run"], kind="stable").reset_index(drop=True)


def time_columns(frame: pd.DataFrame) -> list[str]:
    """The ``ttt_*`` columns of a runs frame (one per target)."""
    return [c for c in frame.columns if c.startswith("ttt_") and not c.endswith("_reached")]


def metric_columns(frame: pd.DataFrame) -> list[str]:
    """The per-run metrics of a runs frame, in ``METRICS`` order, then any other ``final_*`` column."""
    known = [m for m in METRICS if m in frame]
    return known + [c for c in frame.columns if c.startswith("final_") and c not in known]


def _censored_column(ttt: str) -> str:
    return "censored" + ttt[len(f"ttt_{TARGET_METRIC}") :] if ttt.startswith(f"ttt_{TARGET_METRIC}") else ""


def _internal(frame: pd.DataFrame) -> pd.DataFrame:
    """The runs frame in ``analysis.seeds``' per-run form: ``ttt_<m>_reached`` flags from ``censored``."""
    f = frame.copy()
    for t in time_columns(f):
        cens = f[_censored_column(t)]
        f[f"{t}_reached"] = ~cens.fillna(True).astype(bool)
    return f


def summarize(frame: pd.DataFrame, level: float = 0.95) -> dict[str, pd.DataFrame]:
    """Every table of a study (``TABLES``), from its runs frame alone (``runs_frame`` or the runs CSV)."""
    f = _internal(frame)
    by = ["condition", "arm"]
    metrics = [m for m in metric_columns(f) if f[m].notna().any()]
    times = [t for t in time_columns(f) if f[t].notna().any()]
    parts = [seed_summary(f, m, by=by, level=level) for m in metrics]
    summary = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    tparts = [time_summary(f, t, by=by, level=level) for t in times]
    time = pd.concat(tparts, ignore_index=True) if tparts else pd.DataFrame()
    comps = comparisons_frame(compare_arms(f, [*times, *metrics], between="arm", pair_on="seed", level=level))
    return {"summary": summary, "time": time, "comparisons": comps}


def read_runs_csv(path: str | Path) -> pd.DataFrame:
    """A runs CSV as written by ``write_study`` (labels kept as text: ``beta=5.0`` stays what it was).

    A per-run CSV written another way (``cfg.seed``, ``cfg.strategy.name`` columns) is read with ``seed``
    and ``arm`` taken from those, so the same tables can be computed from it."""
    frame = pd.read_csv(path, dtype={c: str for c in ("run", "condition", "arm_field", "arm")})
    if "seed" not in frame and "cfg.seed" in frame:
        frame.insert(0, "seed", frame["cfg.seed"])
    if "arm" not in frame and STRATEGY in frame:
        frame.insert(0, "arm", frame[STRATEGY].astype(str))
    if "condition" not in frame:
        frame.insert(0, "condition", "all")
    return frame


def summarize_runs_csv(path: str | Path, level: float = 0.95) -> dict[str, pd.DataFrame]:
    """``summarize`` of a runs CSV: every published table of its study, recomputed from it alone."""
    return summarize(read_runs_csv(path), level)


def table_paths(runs_csv: str | Path) -> dict[str, Path]:
    """Where the tables of ``<stem>-runs.csv`` live: ``<stem>.csv``, ``<stem>-time.csv``, ..."""
    p = Path(runs_csv)
    if not p.name.endswith(f"{RUNS_SUFFIX}.csv"):
        raise ValueError(f"{p}: a runs CSV is named <study>{RUNS_SUFFIX}.csv")
    stem = p.name[: -len(f"{RUNS_SUFFIX}.csv")]
    return {k: p.with_name(f"{stem}{sfx}.csv") for k, sfx in TABLES.items()}


def write_study(frame: pd.DataFrame, runs_csv: str | Path, level: float = 0.95) -> dict[str, Path]:
    """Write the runs CSV, then every table computed from the file just written (``table_paths``)."""
    runs_csv = Path(runs_csv)
    paths = table_paths(runs_csv)
    runs_csv.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(runs_csv, index=False)  # full precision: the tables below are recomputable from it exactly
    tables = summarize_runs_csv(runs_csv, level)
    for name, table in tables.items():
        table.to_csv(paths[name], index=False, float_format="%.6g")
    return {"runs": runs_csv, **paths}


# ---- backwards-compatible helpers (run_table-based) ------------------------------------------------------------


def study_runs(paths: Sequence[str] | str, between: str = STRATEGY, slack: float = DEFAULT_SLACK) -> pd.DataFrame:
    """``run_table`` of the runs under ``paths`` with time to a held-out-loss target (``slack`` above the
    best arm's mean final loss in each condition)."""
    df = load_runs(paths)
    runs = run_table(df, between=(between,))
    if "final_heldout_loss" in runs and runs["final_heldout_loss"].notna().any():
        runs = add_time_to_target(runs, df, "heldout_loss", slack=slack, between=between)
    return runs


def study_summary(runs: pd.DataFrame, between: str = STRATEGY, metrics: Sequence[str] = METRICS) -> pd.DataFrame:
    """``seed_summary`` of every (non-time) metric present, stacked: one row per condition, arm and metric."""
    by = ["condition"] + ([between] if between in runs else [])
    parts = [seed_summary(runs, m, by=by) for m in metrics if m in runs and runs[m].notna().any()]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


# ---- Markdown ---------------------------------------------------------------------------------------------------


def _g(v: float, digits: int = 3) -> str:
    return f"{v:.{digits}g}" if math.isfinite(v) else "n/a"


def _cell(row: pd.Series, digits: int = 3) -> str:
    est = row["estimate"] if "estimate" in row else row["mean"]
    if not math.isfinite(est):
        return "n/a"
    if not math.isfinite(row["ci_low"]):
        return _g(est, digits)
    return f"{_g(est, digits)} [{_g(row['ci_low'], digits)}, {_g(row['ci_high'], digits)}]"


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub table without the optional ``tabulate`` dependency."""
    cells = [[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row] for row in table.itertuples(index=False)]
    lines = ["| " + " | ".join(str(c) for c in table.columns) + " |", "|" + "---|" * len(table.columns)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in cells])


def summary_markdown(summary: pd.DataFrame, between: Optional[str] = None) -> str:
    """One wide table: a row per condition and arm, a column per metric, cells ``estimate [CI low, high]``.

    ``between``: the arm column (default ``arm``, else the strategy column of ``study_summary``)."""
    if summary.empty:
        return "(no runs)"
    between = between or ("arm" if "arm" in summary else STRATEGY)
    keys = ["condition"] + ([between] if between in summary else [])
    wide = summary.assign(cell=summary.apply(_cell, axis=1)).pivot_table(
        index=keys, columns="metric", values="cell", aggfunc="first", sort=True
    )
    order = [m for m in METRICS if m in wide.columns] + [m for m in wide.columns if m not in METRICS]
    n = summary.groupby(keys)["n"].max()
    wide = wide[order].assign(n=n).reset_index()
    wide[keys] = wide[keys].astype(str)  # arms such as beta 0.1 as written, not as 0.100
    wide.columns = [col_label(c) if c != "n" else "n" for c in wide.columns]
    return to_markdown(wide)


def time_markdown(time: pd.DataFrame) -> str:
    """The RMST table: a row per condition, arm and target."""
    if time.empty:
        return "(no time to target)"
    rows = []
    for _, r in time.iterrows():
        cell = f"{_g(r['rmst'])} [{_g(r['rmst_low'])}, {_g(r['rmst_high'])}]"
        what = metric_info(r["metric"]).label
        cens = f"{int(r['n_censored'])} of {int(r['n'])}"
        rows.append([r["condition"], r["arm"], what, _g(r["target"], 4), _g(r["budget"]), cell, cens])
    cols = ["condition", "arm", "target", "target loss", "budget (virtual s)", "RMST (virtual s)", "censored"]
    return to_markdown(pd.DataFrame(rows, columns=cols))


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis.study", description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="*", help="run or sweep folders")
    ap.add_argument("--between", default=STRATEGY, help="the config column compared within each condition")
    ap.add_argument(
        "--slack",
        type=float,
        default=DEFAULT_SLACK,
        help="time-to-target threshold: this fraction above the best arm's mean final held-out loss",
    )
    ap.add_argument("--extra-slacks", type=float, nargs="*", default=[], help="more targets (columns ...@<slack>)")
    ap.add_argument("--runs-csv", help="write the runs CSV here (<study>-runs.csv) and the tables beside it")
    ap.add_argument("--csv", help="the summary CSV (<study>.csv); the runs CSV defaults to <study>-runs.csv")
    ap.add_argument("--from-runs-csv", help="recompute every table from this runs CSV (no run folders needed)")
    args = ap.parse_args(argv if argv is not None else sys.argv[1:])
    if args.from_runs_csv:
        frame = read_runs_csv(args.from_runs_csv)
        tables = summarize(frame)
        if args.csv:
            for name, path in table_paths(Path(args.csv).with_name(Path(args.csv).stem + "-runs.csv")).items():
                tables[name].to_csv(path, index=False, float_format="%.6g")
    else:
        if not args.paths:
            ap.error("give run or sweep folders, or --from-runs-csv")
        frame = runs_frame(args.paths, args.between, args.slack, args.extra_slacks)
        runs_csv = args.runs_csv or (
            str(Path(args.csv).with_name(Path(args.csv).stem + f"{RUNS_SUFFIX}.csv")) if args.csv else None
        )
        if runs_csv and args.csv and table_paths(runs_csv)["summary"] != Path(args.csv):
            ap.error(f"--csv must be {table_paths(runs_csv)['summary']} for --runs-csv {runs_csv} (<study>.csv)")
        if runs_csv:
            written = write_study(frame, runs_csv)
            tables = summarize_runs_csv(written["runs"])
            for name, path in written.items():
                print(f"wrote {name}: {path}", file=sys.stderr)
        else:
            tables = summarize(frame)
    print(summary_markdown(tables["summary"]))
    print()
    print(time_markdown(tables["time"]))
    print()
    for _, c in tables["comparisons"].iterrows():
        print(f"- [{c['condition']}] {c['sentence']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
