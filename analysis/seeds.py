"""Per-run numbers, conditions and seed statistics: ``seed_summary`` and ``paired_diff``.

A study is a set of runs that differ in a *condition* (what the sweep's cases and grid varied), in the
strategy compared (``between``) and in the seed. Conditions are read from the flattened ``cfg.*``
columns: every config field that differs between runs, except the seed, the run name and ``between``.
The sweep's own record (``sweep.yaml`` in its folder: each run's overrides) only supplies the readable
label of a condition. Folder names are never split: a renamed folder changes nothing.

Time-to-target is right-censored: a run that never reaches the target within its budget enters with
the budget as its time and is counted in ``n_censored``. The mean over seeds is then the *restricted
mean* time-to-target (the mean of ``min(T, budget)``, the survival-analysis RMST): well defined for
every run, and a lower bound on the true mean of any arm that has censored runs. Dropping those runs
instead would make the strategy that fails most often look fastest.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import pandas as pd
import yaml

from .load import evals as sel_evals
from .load import events as sel_events
from .load import load_runs
from .metrics import final_quality, participation_gini, staleness_stats, wasted_work
from .stats import Method, mean_ci, paired_ci

STRATEGY = "cfg.strategy.name"
SEED = "cfg.seed"
NOT_CONDITIONS = ("cfg.seed", "cfg.name")
# evals.parquet columns whose final value is a per-run metric (final_<column>).
FINAL_METRICS = ("heldout_loss", "fid_domain", "kid_domain", "precision", "recall", "fid_inception")
# Metrics where higher is better; every other one is lower-is-better.
# Default time-to-target threshold: 20% above the best arm's mean final value. In the async study 10% left up to
# 3 of 5 runs of an arm censored (their loss still falls at the budget) and 20% none; docs/study.md shows 5-30%.
DEFAULT_SLACK = 0.2
HIGHER_IS_BETTER = {"precision", "recall", "judge_mean_confidence", "final_precision", "final_recall"}
Frame = Union[pd.DataFrame, str, "os.PathLike[str]", Iterable[Any]]


def _long(df: Frame) -> pd.DataFrame:
    return df if isinstance(df, pd.DataFrame) else load_runs(df)


def _is_long(df: pd.DataFrame) -> bool:
    return "table" in df.columns


# ---- the sweep's record ---------------------------------------------------------------------------------------


def sweep_overrides(run_dirs: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """Each run folder's overrides as its sweep recorded them (``<sweep>/sweep.yaml``), keyed by ``run_dir``.

    Runs that are not in a recorded sweep (picked by hand, or a sweep still running) are absent.
    """
    out: dict[str, tuple[str, ...]] = {}
    records: dict[Path, dict[str, tuple[str, ...]]] = {}
    for rd in run_dirs:
        root = Path(rd).parent
        if root not in records:
            f = root / "sweep.yaml"
            rec: dict[str, tuple[str, ...]] = {}
            if f.is_file():
                spec = yaml.safe_load(f.read_text()) or {}
                for r in spec.get("runs") or []:
                    if isinstance(r, dict) and "name" in r:
                        rec[str(r["name"])] = tuple(str(o) for o in r.get("overrides") or ())
            records[root] = rec
        hit = records[root].get(Path(rd).name)
        if hit is not None:
            out[str(rd)] = hit
    return out


# ---- one row per run ------------------------------------------------------------------------------------------


def condition_columns(runs: pd.DataFrame, between: Sequence[str] = (STRATEGY,)) -> list[str]:
    """The ``cfg.*`` columns that vary between runs, except the seed, the name and ``between``."""
    skip = set(NOT_CONDITIONS) | set(between)
    cols = [c for c in runs.columns if c.startswith("cfg.") and c not in skip]
    return sorted(c for c in cols if runs[c].map(str).nunique(dropna=False) > 1)


def _label_from_cfg(row: pd.Series, cols: list[str]) -> str:
    return ", ".join(f"{c[len('cfg.') :]}={row[c]}" for c in cols) or "all"


def _label_from_overrides(overrides: tuple[str, ...], drop_keys: set[str], common: set[str]) -> str:
    keep = [o for o in overrides if o not in common and o.split("=", 1)[0] not in drop_keys]
    return ", ".join(keep) or "base"


def _condition_labels(runs: pd.DataFrame, cols: list[str], between: Sequence[str]) -> pd.Series:
    """A readable label per run: the sweep's overrides that make its condition (seed, name and ``between``
    left out) when every run of the condition is recorded and agrees; otherwise its ``cfg.*`` values."""
    recorded = sweep_overrides(runs["run_dir"]) if "run_dir" in runs else {}
    drop = {"seed", "name"} | {b[len("cfg.") :] for b in between}
    all_over = [set(recorded[d]) for d in runs.get("run_dir", []) if d in recorded]
    common = set.intersection(*all_over) if all_over and len(all_over) == len(runs) else set()
    # map(str): a field missing from older runs' configs is NaN, and astype(str) may keep NaN as a float
    key = runs[cols].map(str).agg("|".join, axis=1) if cols else pd.Series("", index=runs.index)
    labels = pd.Series("", index=runs.index, dtype=object)
    for _, idx in runs.groupby(key, sort=False).groups.items():
        rows = runs.loc[idx]
        cands = {_label_from_overrides(recorded[d], drop, common) for d in rows.get("run_dir", []) if d in recorded}
        if len(cands) == 1 and all(d in recorded for d in rows.get("run_dir", [])):
            labels.loc[idx] = cands.pop()
        else:
            labels.loc[idx] = _label_from_cfg(rows.iloc[0], cols)
    return labels


def run_table(df: Frame, between: Sequence[str] = (STRATEGY,)) -> pd.DataFrame:
    """One row per run: its ``cfg.*`` and ``summary.*`` columns, its ``condition`` label, and its numbers.

    Numbers: ``final_<m>`` for each evals metric present (the run's last evaluated value of ``m``),
    ``judge_mean_confidence``, ``versions`` (the final version), ``staleness_mean``,
    ``participation_gini`` and ``wasted_compute_share``. ``df`` is ``load_runs``' frame or anything
    ``load_runs`` accepts (a sweep folder).
    """
    long = _long(df)
    meta = long.groupby("run", sort=False).first()
    keep = [c for c in meta.columns if c == "run_dir" or c.startswith(("cfg.", "summary."))]
    runs = meta[keep].copy()
    el, ev = sel_evals(long), sel_events(long)
    for m in FINAL_METRICS:
        if m in el:
            runs[f"final_{m}"] = final_quality(el, m).reindex(runs.index)
    if "summary.judge_mean_confidence" in runs:
        runs["judge_mean_confidence"] = runs["summary.judge_mean_confidence"].astype(float)
    if "summary.final_version" in runs:
        runs["versions"] = runs["summary.final_version"]
    if not ev.empty:
        runs["staleness_mean"] = staleness_stats(ev)["staleness_mean"].reindex(runs.index)
        runs["participation_gini"] = participation_gini(ev).reindex(runs.index)
        runs["wasted_compute_share"] = wasted_work(ev)["wasted_compute_share"].reindex(runs.index)
    cols = condition_columns(runs, between)
    runs.insert(0, "condition", _condition_labels(runs, cols, between))
    runs.attrs["condition_columns"] = cols
    return runs.rename_axis("run")


# ---- time to target, censored ---------------------------------------------------------------------------------


def horizon(runs: pd.DataFrame) -> pd.Series:
    """Each run's budget on the virtual clock: ``run.max_vtime`` when set, else the virtual time it reached."""
    budget = pd.Series(np.nan, index=runs.index, dtype=float)
    if "cfg.run.max_vtime" in runs:
        budget = pd.to_numeric(runs["cfg.run.max_vtime"], errors="coerce").astype(float)
    if "summary.virtual_time" in runs:
        budget = budget.fillna(pd.to_numeric(runs["summary.virtual_time"], errors="coerce").astype(float))
    return budget


def first_reach(evals: pd.DataFrame, targets: pd.Series, metric: str, lower_is_better: bool = True) -> pd.Series:
    """Per run, the first evaluated virtual time at which ``metric`` reaches that run's target (NaN: never).

    ``min {vtime_i : m_i <= target}`` (``>=`` when higher is better) over the run's evaluations.
    """
    out = pd.Series(np.nan, index=targets.index, dtype=float)
    if evals.empty or metric not in evals:
        return out
    ev = evals.dropna(subset=[metric]).sort_values(["run", "vtime"], kind="stable")
    ev = ev[ev["run"].isin(targets.index)]
    tgt = ev["run"].map(targets)
    hit = ev[ev[metric] <= tgt] if lower_is_better else ev[ev[metric] >= tgt]
    first = hit.groupby("run", sort=False)["vtime"].first()
    out.loc[first.index] = first.astype(float)
    return out


def targets_relative(
    runs: pd.DataFrame,
    metric: str = "heldout_loss",
    slack: float = DEFAULT_SLACK,
    reference: Any = "best",
    between: str = STRATEGY,
    lower_is_better: Optional[bool] = None,
) -> pd.Series:
    """Each run's target for ``metric``, set per condition from the final values of that condition's runs.

    ``reference="best"``: the best arm of ``between`` by mean final ``metric`` over seeds; a value of
    ``between`` (e.g. ``"fedavg"``): that arm; a number: that absolute target (``slack`` unused).
    Target = ``ref * (1 + slack)`` when lower is better, ``ref * (1 - slack)`` otherwise: "within 20% of
    what the best strategy ends at", reachable by the others if they are merely slower.
    """
    low = metric not in HIGHER_IS_BETTER if lower_is_better is None else lower_is_better
    if isinstance(reference, (int, float)) and not isinstance(reference, bool):
        return pd.Series(float(reference), index=runs.index, name=f"target_{metric}")
    final = runs[f"final_{metric}"]
    out = pd.Series(np.nan, index=runs.index, name=f"target_{metric}", dtype=float)
    for _, idx in runs.groupby("condition", sort=False).groups.items():
        means = final.loc[idx].groupby(runs.loc[idx, between]).mean().dropna()
        if means.empty:
            continue
        if reference == "best":
            ref = means.min() if low else means.max()
        elif reference in means.index:
            ref = means[reference]
        else:
            raise ValueError(f"reference {reference!r} is not a value of {between} (have {list(means.index)})")
        out.loc[idx] = ref * (1 + slack) if low else ref * (1 - slack)
    return out


def add_time_to_target(
    runs: pd.DataFrame,
    df: pd.DataFrame,
    metric: str = "heldout_loss",
    slack: float = DEFAULT_SLACK,
    reference: Any = "best",
    between: str = STRATEGY,
    lower_is_better: Optional[bool] = None,
) -> pd.DataFrame:
    """``runs`` with ``target_<m>``, ``ttt_<m>`` (restricted time: censored runs at their budget),
    ``ttt_<m>_reached`` (bool) and ``budget`` columns; see ``targets_relative`` for the target.

    The time resolution is the evaluation cadence: a version is only known to have reached the target
    when it is evaluated (``eval.every_vtime`` gives a resolution of that many virtual seconds).
    """
    low = metric not in HIGHER_IS_BETTER if lower_is_better is None else lower_is_better
    long = _long(df)
    out = runs.copy()
    tgt = targets_relative(out, metric, slack, reference, between, low)
    t = first_reach(sel_evals(long), tgt, metric, low)
    budget = horizon(out)
    reached = t.notna() & (t <= budget)
    out[f"target_{metric}"] = tgt
    out["budget"] = budget
    out[f"ttt_{metric}_reached"] = reached
    has_evals = tgt.notna() & out.get(f"final_{metric}", pd.Series(np.nan, index=out.index)).notna()
    out[f"ttt_{metric}"] = t.where(reached, budget).where(has_evals)
    return out


# ---- seed statistics ------------------------------------------------------------------------------------------


def _per_run(df: Frame, metric: str) -> pd.DataFrame:
    """A per-run frame that has ``metric``: ``df`` itself when it is one; else ``run_table`` of it,
    with the default time-to-target (20% above the best arm's mean final value) when ``metric`` asks."""
    frame = _long(df)
    if not _is_long(frame):
        if metric not in frame:
            raise ValueError(f"{metric!r} is not a column of the per-run frame; have {list(frame.columns)}")
        return frame
    runs = run_table(frame)
    if metric.startswith("ttt_") and metric not in runs:
        runs = add_time_to_target(runs, frame, metric[len("ttt_") :])
    if metric not in runs:
        raise ValueError(
            f"no metric {metric!r} in these runs; per-run metrics: "
            f"{[c for c in runs.columns if not c.startswith(('cfg.', 'summary.'))]}"
        )
    return runs


def _default_by(runs: pd.DataFrame, between: str = STRATEGY) -> list[str]:
    varies = between in runs and runs[between].astype(str).nunique() > 1
    return ["condition"] + ([between] if varies else [])


def seed_summary(
    df: Frame, metric: str, by: Optional[Sequence[str]] = None, level: float = 0.95, method: Method = "auto"
) -> pd.DataFrame:
    """One row per condition (the ``by`` columns): ``n, mean, std, ci_low, ci_high, ci_method`` of ``metric``.

    ``df``: a per-run frame (``run_table``, ``add_time_to_target``), ``load_runs``' frame or a sweep
    folder. ``by`` defaults to the condition and the strategy. CIs are over runs (seeds): Student t
    below 20 runs, BCa bootstrap from 20 on (``analysis.stats``). For a time-to-target metric ``ttt_<m>``
    the row also has ``n_censored`` (runs that never reached the target, counted at their budget: the
    mean is the restricted mean time-to-target) and the ``target``.
    """
    runs = _per_run(df, metric)
    by = list(by) if by is not None else _default_by(runs)
    reached = f"{metric}_reached"
    rows = []
    for key, grp in runs.groupby(by, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        ci = mean_ci(grp[metric].to_numpy(dtype=float), level, method)
        row = dict(
            zip(by, key),
            metric=metric,
            n=ci.n,
            mean=ci.mean,
            std=ci.std,
            ci_low=ci.low,
            ci_high=ci.high,
            ci_method=ci.method,
        )
        if reached in grp:
            row["n_censored"] = int((~grp[reached].astype(bool) & grp[metric].notna()).sum())
            tcol = f"target_{metric[len('ttt_') :]}"
            if tcol in grp:
                row["target"] = float(grp[tcol].iloc[0])
        rows.append(row)
    return pd.DataFrame(rows)


def paired_diff(
    df: Frame,
    metric: str,
    a: Any,
    b: Any,
    by: Optional[Sequence[str]] = None,
    between: str = STRATEGY,
    pair_on: str = SEED,
    level: float = 0.95,
    method: Method = "auto",
) -> pd.DataFrame:
    """Compare arm ``b`` with arm ``a`` of ``between`` within each condition, pairing runs by ``pair_on``.

    Per row: ``n_pairs``, ``mean_a``, ``mean_b``, ``diff`` (mean of ``b - a`` over paired seeds) with
    ``diff_low, diff_high``, ``ratio`` (geometric mean of ``b / a``) with ``ratio_low, ratio_high``, the
    paired t-test's ``p_value`` and ``ci_method``; for ``ttt_<m>`` also ``n_censored_a, n_censored_b``.
    Seeds present in one arm only are left out. Two runs of one arm sharing a seed in one condition
    raise: ``by`` then misses a column that tells them apart.
    """
    runs = _per_run(df, metric)
    by = list(by) if by is not None else ["condition"]
    if between in by:
        raise ValueError(f"by must not contain {between!r}: it is the column compared (a vs b)")
    reached = f"{metric}_reached"
    rows = []
    for key, grp in runs.groupby(by, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        arms = {}
        for name, val in (("a", a), ("b", b)):
            arm = grp[grp[between] == val]
            dup = arm[pair_on][arm[pair_on].duplicated()]
            if len(dup):
                raise ValueError(
                    f"two runs of {between}={val!r} share {pair_on}={dup.iloc[0]!r} in "
                    f"{dict(zip(by, key))}: add the column that tells them apart to by"
                )
            arms[name] = arm.set_index(pair_on)
        common = arms["a"].index.intersection(arms["b"].index)
        if not len(common):
            continue
        xa, xb = arms["a"].loc[common], arms["b"].loc[common]
        cmp = paired_ci(xa[metric].to_numpy(dtype=float), xb[metric].to_numpy(dtype=float), level, method)
        row = dict(
            zip(by, key),
            metric=metric,
            a=a,
            b=b,
            n_pairs=cmp.n,
            mean_a=cmp.mean_a,
            mean_b=cmp.mean_b,
            diff=cmp.diff.mean,
            diff_low=cmp.diff.low,
            diff_high=cmp.diff.high,
            ratio=cmp.ratio,
            ratio_low=cmp.ratio_low,
            ratio_high=cmp.ratio_high,
            p_value=cmp.p_value,
            ci_method=cmp.diff.method,
        )
        if reached in runs:
            row["n_censored_a"] = int((~xa[reached].astype(bool)).sum())
            row["n_censored_b"] = int((~xb[reached].astype(bool)).sum())
        rows.append(row)
    return pd.DataFrame(rows)


__all__ = [
    "FINAL_METRICS",
    "HIGHER_IS_BETTER",
    "add_time_to_target",
    "condition_columns",
    "first_reach",
    "horizon",
    "paired_diff",
    "run_table",
    "seed_summary",
    "sweep_overrides",
    "targets_relative",
]
