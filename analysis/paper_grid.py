"""The pre-stated analysis of the seed paper's question (docs/paper-grid.md, "Analysis plan").

The plan was written before the confirmatory runs existed; this module computes exactly what it says and
nothing chosen after seeing the data:

- paired differences ``metric(beta_b) - metric(beta 5)`` within a block (same seed, same client count and
  local epochs: same initial model and sampling noise);
- primary: ordinary least squares on slice A's differences (5 local epochs) with client count as a fixed
  effect in sum-to-zero coding. The intercept is the effect averaged over the client counts; its interval and
  its p-value come from the same t statistic (residual degrees of freedom), so "interval excludes 0" and
  "p < 0.05" always agree. Holm's step-down adjustment over the four primary tests;
- secondary: the same model on slice B (10 clients, local epochs as the fixed effect) and a paired t-test per
  cell, for every metric.

Everything is computed from the per-run CSV (``docs/results/paper-grid-confirm-runs.csv``), so a reader can
recompute every published number from it: ``python -m analysis.paper_grid --from-csv RUNS_CSV``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy import stats

from raydiff.sim.jobs import steps_for

PRIMARY_METRICS = ("final_fid_domain", "final_recall")
SECONDARY_METRICS = (
    "final_kid_domain",
    "final_precision",
    "judge_mean_confidence",
    "final_heldout_loss",
)
# Descriptive, not tested: added after the confirmatory runs (docs/paper-grid.md, "Exploratory"), to show
# how much training FedAvg's weighted average carries per round. No claim rests on it.
DESCRIPTIVE = ("fedavg_weighted_steps",)
CONTRASTS = ((5.0, 0.1), (5.0, 0.5))
RUN_COLUMNS = ("run", "seed", "num_clients", "local_epochs", "beta", "model_sha256")
LEVEL = 0.95


@dataclass(frozen=True)
class FixedEffectFit:
    """The intercept of ``d ~ 1 + C(group, Sum)``: the mean effect over the groups, with its t test."""

    estimate: float
    low: float
    high: float
    se: float
    df: int
    p_value: float
    n: int
    groups: int


def fixed_effect_intercept(d: np.ndarray, groups: Sequence[object], level: float = LEVEL) -> FixedEffectFit:
    """OLS of the differences ``d`` on an intercept and sum-coded group effects.

    Sum-to-zero coding makes the intercept the unweighted mean of the group means: the effect averaged over
    the groups (client counts), not over runs. The interval and the two-sided p-value both use
    ``t = estimate / se`` with the residual degrees of freedom, so they answer the same question.
    """
    d = np.asarray(d, dtype=float)
    levels = sorted(set(groups), key=str)
    k = len(levels)
    n = d.size
    if n <= k:
        raise ValueError(f"{n} differences for {k} groups: no residual degrees of freedom")
    x = np.ones((n, k))
    for j, lev in enumerate(levels[:-1]):
        col = np.array([1.0 if g == lev else (-1.0 if g == levels[-1] else 0.0) for g in groups])
        x[:, j + 1] = col
    beta, *_ = np.linalg.lstsq(x, d, rcond=None)
    resid = d - x @ beta
    df = n - k
    sigma2 = float(resid @ resid) / df
    cov = sigma2 * np.linalg.inv(x.T @ x)
    se = float(np.sqrt(cov[0, 0]))
    est = float(beta[0])
    q = float(stats.t.ppf(0.5 + level / 2, df))
    if se == 0.0:
        p = 0.0 if est != 0.0 else 1.0
    else:
        p = float(2 * stats.t.sf(abs(est / se), df))
    return FixedEffectFit(est, est - q * se, est + q * se, se, df, p, n, k)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (monotone, capped at 1), in the input order."""
    p = np.asarray(p_values, dtype=float)
    m = p.size
    order = np.argsort(p, kind="stable")
    adj = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adj[i] = running
    return adj.tolist()


def collect_runs(runs_dir: Path) -> pd.DataFrame:
    """One row per finished run folder under ``runs_dir``: its design factors and every final metric."""
    rows = []
    for summary_path in sorted(Path(runs_dir).rglob("summary.json")):
        folder = summary_path.parent
        summary = json.loads(summary_path.read_text())
        cfg = yaml.safe_load((folder / "config.yaml").read_text())
        row = {
            "run": folder.name,
            "seed": int(cfg["seed"]),
            "num_clients": int(cfg["clients"]["num_clients"]),
            "local_epochs": int(cfg["train"]["local_epochs"]),
            "beta": float(cfg["data"]["beta"]),
            "model_sha256": summary.get("model_sha256"),
        }
        for m in PRIMARY_METRICS + SECONDARY_METRICS:
            v = summary.get(m)
            row[m] = float(v) if v is not None else np.nan
        row["fedavg_weighted_steps"] = fedavg_weighted_steps(folder, cfg)
        rows.append(row)
    if not rows:
        raise ValueError(f"{runs_dir}: no finished run (no summary.json under it)")
    return pd.DataFrame(rows).sort_values(["local_epochs", "num_clients", "beta", "seed"], ignore_index=True)


def fedavg_weighted_steps(folder: Path, cfg: dict) -> float:
    """Local optimizer steps per round, averaged with FedAvg's weights (each client's sample count).

    Why: FedAvg weighs a client by its data, and a client with more data also takes more steps
    (``local_epochs`` passes), so a skewed split (a few large clients) moves the average further per round
    than an even one with the same total work. NaN where the run folder has no ``partition.parquet``.
    """
    part = folder / "partition.parquet"
    if not part.is_file():
        return float("nan")
    n = pd.read_parquet(part, columns=["n"])["n"].to_numpy()
    tr = cfg["train"]
    steps = np.array([steps_for(int(k), int(tr["batch_size"]), tr.get("local_steps"), tr["local_epochs"]) for k in n])
    return float((n * steps).sum() / n.sum())


def with_metrics_from(runs: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with its endpoint columns replaced by those of ``scores`` (``analysis.reevaluate``'s CSV: the
    same final models scored under other evaluation settings), matched by run. A run missing from
    ``scores`` is dropped, so every table is computed on one evaluation setting only."""
    metrics = [m for m in PRIMARY_METRICS + SECONDARY_METRICS if m in scores.columns]
    if not metrics or "run" not in scores.columns:
        raise ValueError("the scores CSV needs a 'run' column and at least one endpoint column")
    keep = runs.drop(columns=metrics).merge(scores[["run", *metrics]], on="run", how="inner")
    return keep[list(runs.columns)]


def _differences(runs: pd.DataFrame, metric: str, a: float, b: float) -> pd.DataFrame:
    keys = ["num_clients", "local_epochs", "seed"]
    wide = runs.pivot_table(index=keys, columns="beta", values=metric, aggfunc="first")
    if a not in wide.columns or b not in wide.columns:
        return pd.DataFrame(columns=[*keys, "d"])
    d = (wide[b] - wide[a]).dropna().rename("d").reset_index()
    return d


def _fit_row(slice_: str, factor: str, d: pd.DataFrame, metric: str, a: float, b: float) -> dict:
    fit = fixed_effect_intercept(d["d"].to_numpy(), d[factor].tolist())
    return {
        "slice": slice_,
        "metric": metric,
        "a": a,
        "b": b,
        "n_pairs": fit.n,
        "fixed_effect": factor,
        "groups": fit.groups,
        "diff": fit.estimate,
        "diff_low": fit.low,
        "diff_high": fit.high,
        "se": fit.se,
        "df": fit.df,
        "p_value": fit.p_value,
        "test": f"OLS t-test of the intercept, d ~ 1 + C({factor}, Sum), two-sided",
    }


def _levels(values: pd.Series) -> str:
    """The factor levels a slice was fitted on, as its label says them: ``{10,30,50}``."""
    return "{" + ",".join(str(int(v)) for v in sorted(set(values))) + "}"


def analyze(runs: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Every table the plan names, from the per-run frame alone."""
    slice_a = runs[runs["local_epochs"] == 5]
    slice_b = runs[runs["num_clients"] == 10]
    primary, secondary, cells = [], [], []
    for metric in PRIMARY_METRICS + SECONDARY_METRICS:
        for a, b in CONTRASTS:
            da = _differences(slice_a, metric, a, b)
            # a slice is the plan's only with its factor's levels (a subset such as the sampler check's
            # slice A has no slice B: its 10-client runs are all at 5 epochs)
            if da["num_clients"].nunique() > 1 and len(da) > da["num_clients"].nunique():
                row = _fit_row(f"A: clients {_levels(da['num_clients'])} at 5 epochs", "num_clients", da, metric, a, b)
                (primary if metric in PRIMARY_METRICS else secondary).append(row)
            db = _differences(slice_b, metric, a, b)
            if db["local_epochs"].nunique() > 1 and len(db) > db["local_epochs"].nunique():
                secondary.append(
                    _fit_row(f"B: epochs {_levels(db['local_epochs'])} at 10 clients", "local_epochs", db, metric, a, b)
                )
            for (clients, epochs), g in _differences(runs, metric, a, b).groupby(["num_clients", "local_epochs"]):
                if len(g) < 2:
                    continue
                res = stats.ttest_1samp(g["d"], 0.0)
                ci = res.confidence_interval(LEVEL)
                cells.append(
                    {
                        "num_clients": clients,
                        "local_epochs": epochs,
                        "metric": metric,
                        "a": a,
                        "b": b,
                        "n_pairs": len(g),
                        "diff": float(g["d"].mean()),
                        "diff_low": float(ci.low),
                        "diff_high": float(ci.high),
                        "df": len(g) - 1,
                        "p_value": float(res.pvalue),
                        "test": "paired t-test on the differences, two-sided",
                    }
                )
    prim = pd.DataFrame(primary)
    if len(prim):
        prim["p_holm"] = holm(prim["p_value"].tolist())
    described = [c for c in DESCRIPTIVE if c in runs.columns]
    arms = (
        runs.groupby(["num_clients", "local_epochs", "beta"])[list(PRIMARY_METRICS + SECONDARY_METRICS) + described]
        .mean()
        .reset_index()
    )
    counts = runs.groupby(["num_clients", "local_epochs", "beta"]).size().rename("n").reset_index()
    arms = arms.merge(counts, on=["num_clients", "local_epochs", "beta"])
    return {
        "primary": prim,
        "secondary": pd.DataFrame(secondary),
        "cells": pd.DataFrame(cells),
        "arm-means": arms,
    }


def write_tables(runs: pd.DataFrame, out_prefix: Path) -> dict[str, Path]:
    """Write the runs CSV and every analysis table as ``<prefix>-<name>.csv``."""
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    paths = {"runs": out_prefix.with_name(out_prefix.name + "-runs.csv")}
    runs.to_csv(paths["runs"], index=False)  # full precision: the tables are recomputable from it exactly
    for name, table in analyze(read_runs_csv(paths["runs"])).items():
        paths[name] = out_prefix.with_name(f"{out_prefix.name}-{name}.csv")
        table.to_csv(paths[name], index=False, float_format="%.6g")
    return paths


def read_runs_csv(path: Path) -> pd.DataFrame:
    """The per-run CSV as written by :func:`write_tables` (types restored)."""
    return pd.read_csv(path)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis.paper_grid", description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("runs_dir", nargs="?", help="the sweep folder (runs/paper-grid-confirm)")
    src.add_argument("--from-csv", help="recompute the tables from a published per-run CSV instead")
    ap.add_argument("--out", default="docs/results/paper-grid-confirm", help="prefix of the CSVs to write")
    ap.add_argument(
        "--metrics-from",
        help="take the endpoints from this analysis.reevaluate CSV (a sensitivity check; runs it lacks are left out)",
    )
    args = ap.parse_args(argv)
    runs = read_runs_csv(Path(args.from_csv)) if args.from_csv else collect_runs(Path(args.runs_dir))
    if args.metrics_from:
        runs = with_metrics_from(runs, pd.read_csv(args.metrics_from))
    paths = write_tables(runs, Path(args.out))
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(pd.read_csv(paths["primary"]).to_string(index=False))
    for p in paths.values():
        print("wrote", p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
