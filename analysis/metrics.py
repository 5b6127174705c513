"""Heterogeneity metrics over ``load_runs`` frames: pure pandas/numpy, one row (or Series entry) per run.

Each function states its formula, because "staleness" or "wasted work" mean different things in
different papers, and a comparison table is only useful when the reader knows what was counted.
All functions take the events or evals selection of ``load_runs`` (``analysis.events(df)``,
``analysis.evals(df)``); any frame with a ``run`` column and the README's columns works.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from raydiff.statuses import APPLIED, DROPPED, FAILED, REJECTED

NOT_APPLIED = (DROPPED, FAILED, REJECTED)
# Config columns a heterogeneity comparison is about, and their short names in the table.
KEY_CONFIG = {
    "cfg.strategy.name": "strategy",
    "cfg.clients.num_clients": "num_clients",
    "cfg.clients.dropout": "dropout",
    "cfg.clients.speed.dist": "speed_dist",
    "cfg.data.partition": "partition",
    "cfg.data.beta": "beta",
}
KEY_SUMMARY = {
    "summary.final_version": "final_version",
    "summary.virtual_time": "virtual_time",
    "summary.updates_applied": "updates_applied",
    "summary.jobs_dispatched": "jobs_dispatched",
    "summary.judge_mean_confidence": "judge_mean_confidence",
}


def _runs(frame: pd.DataFrame) -> pd.Index:
    return pd.Index(pd.unique(frame["run"]), name="run") if "run" in frame else pd.Index([], name="run")


def _in_order(evals: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Evaluations with a value for ``metric``, in (run, version, vtime) order, whichever exist."""
    keys = ["run"] + [c for c in ("version", "vtime") if c in evals]
    return evals.dropna(subset=[metric]).sort_values(keys, kind="stable")


def time_to_target(
    evals: pd.DataFrame, target: float, metric: str = "heldout_loss", lower_is_better: bool = True
) -> pd.Series:
    """Per run, the first virtual time at which ``metric`` reaches ``target``; NaN if it never does.

    ``min {vtime_i : m_i <= target}`` (``>=`` when higher is better), over the run's evaluations in
    version order. It is the standard "time-to-accuracy" comparison: an asynchronous strategy may
    end worse yet reach a usable model far sooner on the virtual clock.
    """
    out = pd.Series(np.nan, index=_runs(evals), name="time_to_target", dtype=float)
    if evals.empty or metric not in evals:
        return out
    ev = _in_order(evals, metric)
    hit = ev[metric] <= target if lower_is_better else ev[metric] >= target
    first = ev[hit].groupby("run", sort=False)["vtime"].first()
    out.loc[first.index] = first.astype(float)
    return out


def final_quality(evals: pd.DataFrame, metric: str = "heldout_loss") -> pd.Series:
    """Per run, ``metric`` at the run's last evaluated version (``m`` at ``argmax version``).

    The run always evaluates its final version, so this is the quality the run ends with, not the
    best one seen along the way.
    """
    out = pd.Series(np.nan, index=_runs(evals), name=f"final_{metric}", dtype=float)
    if evals.empty or metric not in evals:
        return out
    ev = _in_order(evals, metric)
    last = ev.groupby("run", sort=False)[metric].last()
    out.loc[last.index] = last.astype(float)
    return out


def staleness_stats(events: pd.DataFrame) -> pd.DataFrame:
    """Per run: mean, median, 90th percentile (linear interpolation) and max of ``staleness``
    over applied jobs, plus their count.

    ``staleness = applied_version - 1 - base_version`` as the server logs it: how many versions the
    model moved while the client trained. Only applied jobs count; a rejected update's staleness
    never touched the model.
    """
    cols = ["applied_jobs", "staleness_mean", "staleness_median", "staleness_p90", "staleness_max"]
    out = pd.DataFrame(np.nan, index=_runs(events), columns=cols, dtype=float)
    if events.empty or "staleness" not in events:
        out["applied_jobs"] = 0.0
        return out
    app = events[events["status"] == APPLIED].dropna(subset=["staleness"])
    g = app.groupby("run", sort=False)["staleness"]
    stats = pd.DataFrame(
        {
            "applied_jobs": g.size(),
            "staleness_mean": g.mean(),
            "staleness_median": g.median(),
            "staleness_p90": g.quantile(0.9),
            "staleness_max": g.max(),
        }
    ).astype(float)
    out.loc[stats.index, cols] = stats[cols]
    out["applied_jobs"] = out["applied_jobs"].fillna(0.0)
    return out


def _num_clients(events: pd.DataFrame) -> dict[str, int]:
    col = "cfg.clients.num_clients"
    if col not in events:
        return {}
    n = events.dropna(subset=[col]).groupby("run", sort=False)[col].first()
    return {r: int(v) for r, v in n.items()}


def participation(events: pd.DataFrame) -> pd.DataFrame:
    """Per run and client: ``dispatched`` jobs and ``applied`` jobs (rows with status "applied").

    Clients that never got a job still appear with zeros when the run's config says how many
    clients there were (``cfg.clients.num_clients``, ids ``0..n-1``): leaving them out would make
    a skewed run look fair.
    """
    cols = ["run", "client_id", "dispatched", "applied"]
    if events.empty or "client_id" not in events:
        return pd.DataFrame(columns=cols)
    ev = events.dropna(subset=["client_id"]).assign(
        client_id=lambda f: f["client_id"].astype(int), _applied=lambda f: f["status"] == APPLIED
    )
    g = ev.groupby(["run", "client_id"], sort=False)["_applied"]
    counts = pd.DataFrame({"dispatched": g.size(), "applied": g.sum()})
    n_clients = _num_clients(events)
    parts = []
    for run in _runs(events):
        c = counts.loc[run] if run in counts.index.get_level_values(0) else counts.iloc[:0].droplevel(0)
        ids = c.index.union(pd.RangeIndex(n_clients.get(run, 0)))
        c = c.reindex(ids, fill_value=0).rename_axis("client_id").reset_index()
        parts.append(c.assign(run=run))
    out = pd.concat(parts, ignore_index=True)[cols]
    return out.astype({"client_id": int, "dispatched": int, "applied": int})


def gini(values: Iterable[float]) -> float:
    """Gini coefficient of non-negative ``values``: 0 when all are equal, ``(n-1)/n`` when one holds all.

    ``G = sum_i sum_j |x_i - x_j| / (2 n^2 mean(x))``, computed as
    ``G = 2 sum_i i x_(i) / (n sum x) - (n + 1) / n`` with ``x_(1) <= ... <= x_(n)`` (1-based ``i``).
    No small-sample correction, so the maximum for ``n`` holders is ``(n-1)/n`` (0.75 for
    ``[0, 0, 0, 4]``). All zeros (nobody participated) give 0; an empty input gives NaN.
    """
    x = np.sort(np.asarray(list(values), dtype=float))
    if x.size == 0:
        return float("nan")
    if np.any(x < 0) or not np.all(np.isfinite(x)):
        raise ValueError("gini: values must be finite and non-negative")
    total = x.sum()
    if total == 0:
        return 0.0
    n = x.size
    i = np.arange(1, n + 1)
    return float(2.0 * np.sum(i * x) / (n * total) - (n + 1.0) / n)


def participation_gini(events: pd.DataFrame) -> pd.Series:
    """Per run, ``gini`` of applied jobs per client over ALL clients (zeros included, see ``participation``).

    Measures how unequally the global model hears from its clients: fast clients dominate
    asynchronous strategies, and an unheard client's data is effectively missing from the model.
    """
    p = participation(events)
    out = pd.Series(np.nan, index=_runs(events), name="participation_gini", dtype=float)
    for run, grp in p.groupby("run", sort=False):
        out.loc[run] = gini(grp["applied"])
    return out


def wasted_work(events: pd.DataFrame) -> pd.DataFrame:
    """Per run, the work spent on jobs that were not applied (dropped, failed or rejected).

    Per job, the compute actually spent is ``compute_s`` for applied and rejected jobs, and for
    dropped/failed jobs only the part before the failure point:
    ``clip(min(compute_s, finish_vtime - dispatch_vtime - download_s), 0)``: a job that failed
    during download computed nothing, one that failed during upload computed all of it.
    ``wasted_compute_share = sum(spent over not applied) / sum(spent over all jobs)``.
    ``wasted_samples_share = sum(samples_trained over not applied) / sum(samples_trained)``, with
    ``samples_trained`` as logged (the job's planned samples, not pro-rated).
    """
    cols = [
        "wasted_samples",
        "total_samples",
        "wasted_samples_share",
        "wasted_compute_s",
        "total_compute_s",
        "wasted_compute_share",
    ]
    out = pd.DataFrame(np.nan, index=_runs(events), columns=cols, dtype=float)
    if events.empty or "status" not in events:
        return out
    ev = events
    zero = pd.Series(0.0, index=ev.index)
    compute = ev["compute_s"].astype(float) if "compute_s" in ev else zero
    samples = ev["samples_trained"].astype(float).fillna(0.0) if "samples_trained" in ev else zero
    before_fail = compute
    if {"finish_vtime", "dispatch_vtime"} <= set(ev.columns):
        download = ev["download_s"].astype(float).fillna(0.0) if "download_s" in ev else zero
        before_fail = (ev["finish_vtime"] - ev["dispatch_vtime"] - download).astype(float)
    failed = ev["status"].isin([DROPPED, FAILED])
    spent = compute.where(~failed, np.minimum(compute, before_fail.fillna(compute))).clip(lower=0).fillna(0.0)
    waste = ev["status"] != APPLIED
    f = pd.DataFrame(
        {"run": ev["run"], "ws": samples.where(waste, 0.0), "ts": samples, "wc": spent.where(waste, 0.0), "tc": spent}
    )
    s = f.groupby("run", sort=False).sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        res = pd.DataFrame(
            {
                "wasted_samples": s["ws"],
                "total_samples": s["ts"],
                "wasted_samples_share": s["ws"] / s["ts"].where(s["ts"] > 0),
                "wasted_compute_s": s["wc"],
                "total_compute_s": s["tc"],
                "wasted_compute_share": s["wc"] / s["tc"].where(s["tc"] > 0),
            }
        )
    out.loc[res.index, cols] = res[cols].astype(float)
    return out


def summary_table(
    df: pd.DataFrame, metric: str = "heldout_loss", target: float | None = None, lower_is_better: bool = True
) -> pd.DataFrame:
    """One row per run of ``load_runs``' frame: key config, summary, and every metric above.

    Columns: the key config (strategy, num_clients, dropout, speed_dist, partition, beta) plus any
    other ``cfg.*`` column that differs between runs (what a sweep varied), the run's summary
    numbers, ``final_<metric>``, ``time_to_target`` (when ``target`` is given), staleness stats,
    ``participation_gini`` and the wasted-work shares. Sorted by strategy, then run.
    """
    from .load import evals as sel_evals
    from .load import events as sel_events

    runs = _runs(df)
    meta = df.groupby("run", sort=False).first().reindex(runs)
    keep = {c: n for c, n in KEY_CONFIG.items() if c in meta}
    varying = [
        c
        for c in meta.columns
        if c.startswith("cfg.") and c not in keep and c != "cfg.name" and meta[c].astype(str).nunique(dropna=False) > 1
    ]
    keep.update({c: c[len("cfg.") :] for c in varying})
    keep.update({c: n for c, n in KEY_SUMMARY.items() if c in meta and meta[c].notna().any()})
    table = meta[list(keep)].rename(columns=keep)
    ev, el = sel_events(df), sel_evals(df)
    parts = [table, final_quality(el, metric).reindex(runs)]
    if target is not None:
        parts.append(time_to_target(el, target, metric, lower_is_better).reindex(runs))
    parts += [
        staleness_stats(ev).reindex(runs),
        participation_gini(ev).reindex(runs),
        wasted_work(ev)[["wasted_samples_share", "wasted_compute_share"]].reindex(runs),
    ]
    out = pd.concat(parts, axis=1)
    order = ["strategy"] if "strategy" in out else []
    return out.rename_axis("run").reset_index().sort_values([*order, "run"], kind="stable").set_index("run")


__all__ = [
    "NOT_APPLIED",
    "final_quality",
    "gini",
    "participation",
    "participation_gini",
    "staleness_stats",
    "summary_table",
    "time_to_target",
    "wasted_work",
]
