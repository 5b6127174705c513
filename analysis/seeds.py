"""Per-run numbers, conditions and seed statistics: ``seed_summary`` and ``paired_diff``.

A study is a set of runs that differ in a *condition* (what the sweep's cases and grid varied), in the
strategy compared (``between``) and in the seed. Conditions are read from the flattened ``cfg.*``
columns: every config field that differs between runs, except the seed, the run name and ``between``.
The sweep's own record (``sweep.yaml`` in its folder: each run's name and overrides) supplies the readable
label of a condition: its case name (``sweep_case``) and the grid values that are not compared.

Time-to-target is right-censored: a run that never reaches the target within its budget enters with
its budget as its censoring time and is counted in ``n_censored``. Each arm is then summarised by its
Kaplan-Meier restricted mean time to target up to the condition's budget (RMST, ``analysis.survival``),
and arms are compared on restricted times ``min(T, tau)``; dropping censored runs instead would make
the strategy that fails most often look fastest.
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
from .metric_table import metric as metric_info
from .metrics import final_quality, participation_gini, staleness_stats, wasted_work
from .stats import Method, paired_ci, range_ci
from .survival import restricted, rmst

STRATEGY = "cfg.strategy.name"
SEED = "cfg.seed"
NOT_CONDITIONS = ("cfg.seed", "cfg.name")
# evals.parquet columns whose final value is a per-run metric (final_<column>).
FINAL_METRICS = ("heldout_loss", "fid_domain", "kid_domain", "precision", "recall", "fid_inception")
# Default time-to-target threshold: 20% above the best arm's mean final value. In the async study 10% left up to
# 3 of 5 runs of an arm censored (their loss still falls at the budget) and 20% none; docs/study.md shows 5-30%.
DEFAULT_SLACK = 0.2
# Metrics where higher is better (analysis.metric_table decides; this set is kept for callers).
HIGHER_IS_BETTER = {"precision", "recall", "judge_mean_confidence", "final_precision", "final_recall"}
Frame = Union[pd.DataFrame, str, "os.PathLike[str]", Iterable[Any]]


def _long(df: Frame) -> pd.DataFrame:
    return df if isinstance(df, pd.DataFrame) else load_runs(df)


def _is_long(df: pd.DataFrame) -> bool:
    return "table" in df.columns


# ---- the sweep's record ---------------------------------------------------------------------------------------


def _records(run_dirs: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Each run folder's entry in its sweep's record (``<sweep>/sweep.yaml``), keyed by ``run_dir``, with the
    sweep's ``name`` added as ``sweep``. Runs not in a recorded sweep (picked by hand) are absent."""
    out: dict[str, dict[str, Any]] = {}
    records: dict[Path, dict[str, dict[str, Any]]] = {}
    for rd in run_dirs:
        root = Path(rd).parent
        if root not in records:
            f = root / "sweep.yaml"
            rec: dict[str, dict[str, Any]] = {}
            if f.is_file():
                spec = yaml.safe_load(f.read_text()) or {}
                for r in spec.get("runs") or []:
                    if isinstance(r, dict) and "name" in r:
                        rec[str(r["name"])] = dict(r, sweep=str(spec.get("name") or root.name))
            records[root] = rec
        hit = records[root].get(Path(rd).name)
        if hit is not None:
            out[str(rd)] = hit
    return out


def sweep_overrides(run_dirs: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """Each run folder's overrides as its sweep recorded them (``<sweep>/sweep.yaml``), keyed by ``run_dir``.

    Runs that are not in a recorded sweep (picked by hand, or a sweep still running) are absent.
    """
    return {d: tuple(str(o) for o in r.get("overrides") or ()) for d, r in _records(run_dirs).items()}


def sweep_case(record: dict[str, Any]) -> tuple[Optional[str], tuple[str, ...]]:
    """The sweep case of a recorded run and the overrides its grid set, from the record alone.

    A record that names its ``case`` says it. Otherwise the run's recorded name is matched against the way
    ``raydiff sweep`` builds it (``<case>-<grid key>=<value>...-seed<N>``, raydiff.sweep): the longest run
    of trailing overrides (before ``seed=`` and ``name=``) that spells the name's tail is the grid, and the
    rest of the name is the case. ``(None, ())`` when the name does not follow that pattern.
    """
    from raydiff.sweep import _short, _slug  # the naming rule lives in one place

    over = [str(o) for o in record.get("overrides") or () if not str(o).startswith("name=")]
    seeds = [o.split("=", 1)[1] for o in over if o.startswith("seed=")]
    rest = [o for o in over if not o.startswith("seed=") and "=" in o]
    tail = [f"seed{seeds[-1]}"] if seeds else []
    name = str(record.get("name", ""))
    found: tuple[Optional[str], tuple[str, ...]] = (None, ())
    for g in range(len(rest) + 1):
        grid = rest[len(rest) - g :]
        parts = [f"{_short(o.split('=', 1)[0])}={o.split('=', 1)[1]}" for o in grid] + tail
        suffix = _slug("-".join(parts))
        if suffix and name == suffix:
            found = ("", tuple(grid))
        elif suffix and name.endswith("-" + suffix):
            found = (name[: -len(suffix) - 1], tuple(grid))
        elif not suffix and name:
            found = (name, ())
    if "case" in record and record["case"] is not None:
        return str(record["case"]), found[1]
    return found


# ---- one row per run ------------------------------------------------------------------------------------------


def condition_columns(runs: pd.DataFrame, between: Sequence[str] = (STRATEGY,)) -> list[str]:
    """The ``cfg.*`` columns that vary between runs, except the seed, the name and ``between``."""
    skip = set(NOT_CONDITIONS) | set(between)
    cols = [c for c in runs.columns if c.startswith("cfg.") and c not in skip]
    return sorted(c for c in cols if runs[c].map(str).nunique(dropna=False) > 1)


def _label_from_cfg(row: pd.Series, cols: list[str]) -> str:
    return ", ".join(f"{c[len('cfg.') :]}={row[c]}" for c in cols) or "all"


def _record_label(rec: dict[str, Any], drop_keys: set[str], common: set[str], several: bool) -> str:
    """A run's condition in the sweep's own words: its case, then the grid values that are not compared
    (``between``), not the seed and not shared by every run. Without a recognisable case: the overrides
    that make the condition; a condition with none is "base" beside other conditions, and the sweep's name
    when it is the only one (a stragglers-only sweep is not "base")."""
    case, grid = sweep_case(rec)
    if case is not None:
        extra = [o for o in grid if o not in common and o.split("=", 1)[0] not in drop_keys]
        label = ", ".join(([case] if case else []) + extra)
        if label:
            return label
    over = [str(o) for o in rec.get("overrides") or ()]
    keep = [o for o in over if o not in common and o.split("=", 1)[0] not in drop_keys]
    return ", ".join(keep) or ("base" if several else str(rec.get("sweep", "base")))


def _condition_labels(runs: pd.DataFrame, cols: list[str], between: Sequence[str]) -> pd.Series:
    """A readable label per run from the sweep's record (``_record_label``) when every run of the condition
    is recorded and they agree; otherwise its ``cfg.*`` values."""
    recorded = _records(runs["run_dir"]) if "run_dir" in runs else {}
    drop = {"seed", "name"} | {b[len("cfg.") :] for b in between}
    dirs = list(runs.get("run_dir", []))
    all_over = [set(str(o) for o in recorded[d].get("overrides") or ()) for d in dirs if d in recorded]
    common = set.intersection(*all_over) if all_over and len(all_over) == len(runs) else set()
    # map(str): a field missing from older runs' configs is NaN, and astype(str) may keep NaN as a float
    key = runs[cols].map(str).agg("|".join, axis=1) if cols else pd.Series("", index=runs.index)
    several = key.nunique() > 1
    labels = pd.Series("", index=runs.index, dtype=object)
    for _, idx in runs.groupby(key, sort=False).groups.items():
        rows = runs.loc[idx]
        rdirs = list(rows.get("run_dir", []))
        cands = {_record_label(recorded[d], drop, common, several) for d in rdirs if d in recorded}
        if len(cands) == 1 and rdirs and all(d in recorded for d in rdirs):
            labels.loc[idx] = cands.pop()
        else:
            labels.loc[idx] = _label_from_cfg(rows.iloc[0], cols)
    if labels.nunique() < key.nunique():  # two conditions under one label: their cfg values tell them apart
        for _, idx in runs.groupby(key, sort=False).groups.items():
            labels.loc[idx] = _label_from_cfg(runs.loc[idx].iloc[0], cols)
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
    low = metric_info(metric).better != "higher" if lower_is_better is None else lower_is_better
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
    low = metric_info(metric).better != "higher" if lower_is_better is None else lower_is_better
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


def _time_columns(metric: str) -> tuple[str, str]:
    """The reached flag and target columns of a ``ttt_<m>`` column of ``add_time_to_target``."""
    return f"{metric}_reached", f"target_{metric[len('ttt_') :]}"


def condition_budget(grp: pd.DataFrame) -> float:
    """The budget ``tau`` of a condition's time-to-target: the smallest budget of its runs, so every run is
    followed up to ``tau`` (a common ``tau`` is what makes arms' restricted times comparable)."""
    b = pd.to_numeric(grp["budget"], errors="coerce") if "budget" in grp else pd.Series(dtype=float)
    return float(b.min()) if b.notna().any() else float("nan")


def time_summary(
    df: Frame, metric: str = "ttt_heldout_loss", by: Optional[Sequence[str]] = None, level: float = 0.95
) -> pd.DataFrame:
    """Time to target as survival data, one row per arm (``by``): ``rmst, rmst_low, rmst_high, budget, n,
    n_censored, method`` and the ``target`` (``analysis.survival``). The budget is the condition's
    (``condition_budget``), so arms of one condition share it."""
    runs = _per_run(df, metric)
    by = list(by) if by is not None else _default_by(runs)
    reached, tcol = _time_columns(metric)
    cond = [c for c in by if c == "condition"]
    taus = runs.groupby(cond)["budget"].transform("min") if cond else pd.Series(runs["budget"].min(), runs.index)
    rows = []
    for key, grp in runs.groupby(by, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        tau = float(taus.loc[grp.index].iloc[0])
        ok = grp[metric].notna()
        t = grp.loc[ok, metric].to_numpy(float)
        hit = grp.loc[ok, reached].astype(bool).to_numpy() & (t <= tau)  # reached after tau: censored at tau
        r = rmst(np.where(hit, t, np.maximum(t, tau)), hit, tau, level)
        row = dict(zip(by, key), metric=metric)
        if tcol in grp:
            row["target"] = float(grp[tcol].iloc[0])
        row.update(rmst=r.rmst, rmst_low=r.low, rmst_high=r.high, budget=r.budget, n=r.n, n_censored=r.n_censored)
        row["method"] = r.method
        rows.append(row)
    return pd.DataFrame(rows)


def seed_summary(
    df: Frame, metric: str, by: Optional[Sequence[str]] = None, level: float = 0.95, method: Method = "auto"
) -> pd.DataFrame:
    """One row per condition (the ``by`` columns): ``n, mean, estimate, std, ci_low, ci_high, ci_method``.

    ``df``: a per-run frame (``run_table``, ``add_time_to_target``), ``load_runs``' frame or a sweep
    folder. ``by`` defaults to the condition and the strategy. CIs are over runs (seeds), made on the
    scale the metric's range calls for (``analysis.stats.range_ci``, ``analysis.metric_table``): ``estimate``
    is the centre of that interval (the geometric mean for a positive metric), ``mean`` the plain mean.
    A time-to-target metric ``ttt_<m>`` is survival data: its rows are ``time_summary``'s.
    """
    if metric.startswith("ttt_"):
        return time_summary(df, metric, by, level)
    runs = _per_run(df, metric)
    by = list(by) if by is not None else _default_by(runs)
    rng = metric_info(metric).range
    rows = []
    for key, grp in runs.groupby(by, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        ci = range_ci(grp[metric].to_numpy(dtype=float), rng, level, method)
        rows.append(
            dict(
                zip(by, key),
                metric=metric,
                n=ci.n,
                mean=ci.mean,
                estimate=ci.estimate,
                std=ci.std,
                ci_low=ci.low,
                ci_high=ci.high,
                ci_method=ci.method,
            )
        )
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

    Per row: ``n_pairs``, ``mean_a``, ``mean_b``; ``diff`` (mean of ``b - a``) with ``diff_low, diff_high``
    and the p-value ``p_diff`` of the test ``test_diff`` whose inversion that interval is; ``ratio`` (the
    geometric mean of ``b / a``) with ``ratio_low, ratio_high``, ``p_ratio`` and ``test_ratio``, all on
    log ratios (``analysis.stats``). For ``ttt_<m>`` the values are restricted times ``min(T, tau)`` with
    the condition's budget ``tau`` (so ``mean_a``/``mean_b`` are the arms' RMSTs over the pairs and ``diff``
    their RMST difference), plus ``n_censored_a, n_censored_b`` and ``budget``. Seeds present in one arm
    only are left out. Two runs of one arm sharing a seed in one condition raise: ``by`` then misses a
    column that tells them apart.
    """
    runs = _per_run(df, metric)
    by = list(by) if by is not None else ["condition"]
    if between in by:
        raise ValueError(f"by must not contain {between!r}: it is the column compared (a vs b)")
    reached, _ = _time_columns(metric)
    timed = metric.startswith("ttt_") and reached in runs
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
        va, vb = xa[metric].to_numpy(dtype=float), xb[metric].to_numpy(dtype=float)
        tau = condition_budget(grp) if timed else float("nan")
        if timed:
            va, vb = restricted(va, tau), restricted(vb, tau)
        cmp = paired_ci(va, vb, level, method)
        # a difference of two values in [0, tau] (or [0, 1]) lies in [-tau, tau]: the interval is cut there, which
        # cannot change whether it holds 0
        span = tau if timed else (1.0 if metric_info(metric).range == "unit" else float("inf"))
        d_low, d_high = max(cmp.diff.low, -span), min(cmp.diff.high, span)
        row = dict(
            zip(by, key),
            metric=metric,
            a=a,
            b=b,
            n_pairs=cmp.n,
            mean_a=cmp.mean_a,
            mean_b=cmp.mean_b,
            diff=cmp.diff.estimate,
            diff_low=d_low,
            diff_high=d_high,
            p_diff=cmp.diff.p_value,
            test_diff=cmp.diff.method,
            ratio=cmp.ratio,
            ratio_low=cmp.ratio_low,
            ratio_high=cmp.ratio_high,
            p_ratio=cmp.log_ratio.p_value,
            test_ratio=cmp.log_ratio.method + (", log ratios" if cmp.log_ratio.method != "none" else ""),
        )
        if timed:  # censored at tau: not reached by the condition's budget
            row["n_censored_a"] = int((~(xa[reached].astype(bool) & (xa[metric] <= tau))).sum())
            row["n_censored_b"] = int((~(xb[reached].astype(bool) & (xb[metric] <= tau))).sum())
            row["budget"] = tau
        rows.append(row)
    return pd.DataFrame(rows)


__all__ = [
    "FINAL_METRICS",
    "HIGHER_IS_BETTER",
    "add_time_to_target",
    "condition_budget",
    "condition_columns",
    "first_reach",
    "horizon",
    "paired_diff",
    "run_table",
    "seed_summary",
    "sweep_case",
    "sweep_overrides",
    "targets_relative",
    "time_summary",
]
