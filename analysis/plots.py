"""Figures for heterogeneity studies, built on ``matplotlib.figure.Figure`` with an Agg canvas.

No ``pyplot``: its global figure registry leaks memory in long report loops, and it is not safe
when a notebook, a test and a report writer each make figures. Every function returns a Figure;
``save_png`` writes one (without matplotlib's URL metadata, so reports stay free of links).
"""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from raydiff.statuses import APPLIED, DROPPED, FAILED, REJECTED

from .metrics import gini, participation

STATUS_COLORS = {
    APPLIED: "#2ca02c",
    DROPPED: "#ff7f0e",
    FAILED: "#d62728",
    REJECTED: "#7f7f7f",
    "pending": "#1f77b4",
}
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


def new_figure(width: float = 7.0, height: float = 4.0) -> Figure:
    """A Figure attached to its own Agg canvas (renderable and savable without pyplot)."""
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, path: Path | str | None = None) -> bytes:
    """Render ``fig`` to PNG bytes, and write them to ``path`` when given."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    data = buf.getvalue()
    if path is not None:
        Path(path).write_bytes(data)
    return data


def _groups(frame: pd.DataFrame, by: str | None) -> pd.Series:
    """The label of each row's group, as strings ("all" when ``by`` is absent)."""
    if by is None or by not in frame:
        return pd.Series("all", index=frame.index)
    return frame[by].astype(object).where(frame[by].notna(), "n/a").astype(str)


def _legend_title(by: str | None) -> str | None:
    """``cfg.strategy.name`` -> ``strategy.name``: the config path without the column prefix."""
    return by[len("cfg.") :] if by and by.startswith("cfg.") else by


def _colors(labels: list[str]) -> dict[str, str]:
    return {g: PALETTE[i % len(PALETTE)] for i, g in enumerate(sorted(labels))}


def plot_metric_vs_vtime(
    evals: pd.DataFrame, metric: str = "heldout_loss", by: str | None = "cfg.strategy.name"
) -> Figure:
    """``metric`` against virtual time, one line per run, one color per value of ``by``.

    Virtual time, not versions, on x: the point of heterogeneity studies is how fast a strategy
    gets somewhere on the clock the clients live on.
    """
    fig = new_figure()
    ax = fig.add_subplot()
    label_runs = evals["run"].nunique() <= 10 if "run" in evals else False
    if evals.empty or metric not in evals:
        ax.text(0.5, 0.5, f"no '{metric}' evaluations", ha="center", va="center", transform=ax.transAxes)
    else:
        groups = _groups(evals, by)
        colors = _colors(list(groups.unique()))
        seen: set[str] = set()
        for run, ev in evals.groupby("run", sort=True):
            ev = ev.dropna(subset=[metric]).sort_values("vtime")
            g = groups.loc[ev.index[0]] if len(ev) else "all"
            label = f"{g}: {run}" if label_runs else (g if g not in seen else None)
            seen.add(g)
            ax.plot(ev["vtime"], ev[metric], marker="o", ms=3, color=colors.get(g), label=label)
        ax.legend(title=_legend_title(by) if by in evals else None, fontsize="small")
    ax.set_xlabel("virtual time (s)")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} vs virtual time")
    ax.grid(alpha=0.3)
    return fig


def plot_staleness_hist(events: pd.DataFrame, by: str | None = "cfg.strategy.name") -> Figure:
    """Distribution of staleness over applied jobs, one step histogram per value of ``by``.

    Shown as the share of each group's applied jobs, so groups with more runs or longer runs
    stay comparable.
    """
    fig = new_figure()
    ax = fig.add_subplot()
    app = (
        events[events["status"] == APPLIED].dropna(subset=["staleness"])
        if {"status", "staleness"} <= set(events.columns)
        else events.iloc[:0]
    )
    if app.empty:
        ax.text(0.5, 0.5, "no applied jobs with staleness", ha="center", va="center", transform=ax.transAxes)
    else:
        groups = _groups(app, by)
        colors = _colors(list(groups.unique()))
        top = int(app["staleness"].max())
        bins = np.arange(-0.5, top + 1.5, 1.0)
        for g in sorted(groups.unique()):
            s = app.loc[groups == g, "staleness"].to_numpy(dtype=float)
            ax.hist(
                s,
                bins=bins,
                weights=np.full(s.size, 1.0 / s.size),
                histtype="step",
                lw=2,
                color=colors[g],
                label=f"{g} (n={s.size}, mean={s.mean():.2f})",
            )
        ax.legend(title=_legend_title(by) if by in app else None, fontsize="small")
    ax.set_xlabel("staleness (versions)")
    ax.set_ylabel("share of applied jobs")
    ax.set_title("Staleness of applied updates")
    ax.grid(alpha=0.3)
    return fig


def plot_gantt(events: pd.DataFrame, run: str | None = None, max_clients: int = 50, max_jobs: int = 2000) -> Figure:
    """Timeline of ONE run's client jobs: a row per client, a bar from dispatch to finish, colored by status.

    Capped at the first ``max_clients`` client ids and the first ``max_jobs`` jobs (by dispatch
    time) among them, with a note, because a 10,000-client dry run would render as a black block.
    """
    runs = list(pd.unique(events["run"])) if "run" in events else []
    if run is None:
        if len(runs) > 1:
            raise ValueError(f"plot_gantt shows one run; pass run= one of {runs}")
        run = runs[0] if runs else "?"
    ev = events[events["run"] == run] if "run" in events else events
    fig = new_figure(8.0, 4.5)
    ax = fig.add_subplot()
    n_clients, n_jobs = ev["client_id"].nunique() if len(ev) else 0, len(ev)
    clients = np.sort(ev["client_id"].dropna().unique())[:max_clients] if len(ev) else []
    ev = ev[ev["client_id"].isin(clients)].sort_values("dispatch_vtime").head(max_jobs) if len(ev) else ev
    row = {c: i for i, c in enumerate(clients)}
    for status, grp in ev.groupby("status", sort=True):
        y = grp["client_id"].map(row).to_numpy()
        ax.barh(
            y,
            (grp["finish_vtime"] - grp["dispatch_vtime"]).to_numpy(),
            left=grp["dispatch_vtime"].to_numpy(),
            height=0.8,
            color=STATUS_COLORS.get(status, "#bcbd22"),
            edgecolor="white",
            lw=0.3,
            label=f"{status} ({len(grp)})",
        )
    if len(clients) <= 25:
        ax.set_yticks(range(len(clients)), [str(int(c)) for c in clients])
    if len(clients) < n_clients or len(ev) < n_jobs:
        ax.text(
            1.02,
            0.0,
            f"showing {len(clients)} of\n{n_clients} clients with jobs,\n{len(ev)} of {n_jobs} jobs",
            ha="left",
            va="bottom",
            fontsize="small",
            transform=ax.transAxes,
        )
    if len(ev):
        ax.legend(title="status", fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_xlabel("virtual time (s)")
    ax.set_ylabel("client")
    ax.set_title(f"Client jobs over virtual time: {run}")
    return fig


def plot_participation(
    events: pd.DataFrame, run: str | None = None, by: str | None = "cfg.strategy.name", max_bars: int = 100
) -> Figure:
    """Applied jobs per client, for one run or, with several runs, averaged per run within each ``by`` group.

    Bars per client id (grouped side by side) up to ``max_bars`` clients; beyond that, each group
    is one curve of clients ranked by participation, which still shows the skew of 10,000 clients.
    Each legend entry carries the Gini coefficient of its counts.
    """
    if run is not None:
        events = events[events["run"] == run]
    p = participation(events)
    fig = new_figure()
    ax = fig.add_subplot()
    title = f"Applied jobs per client: {run}" if run is not None else "Applied jobs per client"
    if p.empty:
        ax.text(0.5, 0.5, "no jobs", ha="center", va="center", transform=ax.transAxes)
    else:
        group_of = events.groupby("run", sort=False).first().pipe(_groups, by if run is None else None)
        p = p.assign(group=p["run"].map(group_of))
        # Mean applied jobs per client over the runs of each group; Gini over the group's own clients.
        per_group = {
            g: grp.groupby("client_id")["applied"].sum() / grp["run"].nunique()
            for g, grp in p.groupby("group", sort=True)
        }
        table = pd.DataFrame(per_group).fillna(0.0).sort_index()
        colors = _colors(list(table.columns))
        width = 0.8 / len(table.columns)
        for k, g in enumerate(table.columns):
            vals = table[g].to_numpy(dtype=float)
            own = per_group[g].to_numpy(dtype=float)
            label = f"{g} (Gini {gini(own):.2f})" if g != "all" else f"Gini {gini(own):.2f}"
            if len(table) <= max_bars:
                ax.bar(
                    np.arange(len(table)) + (k - (len(table.columns) - 1) / 2) * width,
                    vals,
                    width=width,
                    color=colors[g],
                    label=label,
                )
            else:
                ax.plot(np.arange(1, len(own) + 1), np.sort(own)[::-1], color=colors[g], label=label)
        if len(table) <= max_bars:
            ax.set_xlabel("client")
            if len(table) <= 30:
                ax.set_xticks(range(len(table)), [str(c) for c in table.index])
        else:
            ax.set_xlabel("client rank (most applied jobs first)")
        ax.legend(title=_legend_title(by) if run is None and by in events else None, fontsize="small")
    if not ax.get_xlabel():
        ax.set_xlabel("client")
    several = run is None and "run" in events and events["run"].nunique() > 1
    ax.set_ylabel("applied jobs" + (" per run" if several else ""))
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="y")
    return fig


def _step_values(vt: np.ndarray, vals: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """The run's latest evaluated value at each grid time (NaN before its first evaluation).

    After its last evaluation a run holds its final value: its model no longer changes.
    """
    i = np.searchsorted(vt, grid, side="right") - 1
    return np.where(i >= 0, vals[np.clip(i, 0, None)], np.nan)


def mean_band(curves: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per column of ``curves`` (runs x times): mean, t-interval low/high and the number of runs with a value.

    Student t per time point (the runs are few seeds); NaN where fewer than two runs have a value.
    """
    from scipy import stats

    n = np.sum(np.isfinite(curves), axis=0)
    with warnings.catch_warnings():  # all-NaN columns (no run there yet) are expected: NaN is the answer
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(curves, axis=0)
        sd = np.nanstd(curves, axis=0, ddof=1)
    half = stats.t.ppf(0.5 + level / 2, np.maximum(n - 1, 1)) * sd / np.sqrt(np.maximum(n, 1))
    half = np.where(n >= 2, half, np.nan)
    return mean, mean - half, mean + half, n


def plot_metric_ci(
    evals: pd.DataFrame,
    runs: pd.DataFrame,
    metric: str = "heldout_loss",
    hue: str = "cfg.strategy.name",
    panel: str = "condition",
    level: float = 0.95,
    points: int = 200,
    target: str | None = None,
) -> Figure:
    """``metric`` over virtual time: per ``hue`` group the mean over its runs (seeds) with a ``level`` CI band,
    one panel per value of ``panel``.

    ``runs`` is ``analysis.run_table`` (it maps each run to its ``panel`` and ``hue``). Each run is read
    as a step function (its latest evaluation holds until the next, and its final one to the end), sampled
    on ``points`` times from 0 to the group's last evaluation; the band is a Student-t interval per time
    point over the runs that have a value there. With ``target`` (a ``target_<metric>`` column of
    ``runs``), each panel's target is drawn as a dotted line.
    """
    panels = sorted(runs[panel].astype(str).unique()) if panel in runs else ["all"]
    cols = min(2, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = new_figure(7.0 if cols == 1 else 11.0, 3.6 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    labels = runs[hue].astype(str) if hue in runs else pd.Series("all", index=runs.index)
    colors = _colors(list(labels.unique()))
    ev = evals.dropna(subset=[metric]) if metric in evals else evals.iloc[:0]
    for ax, p in zip(axes, panels):
        in_panel = runs.index[runs[panel].astype(str) == p] if panel in runs else runs.index
        for g in sorted(labels.loc[in_panel].unique()):
            members = [r for r in in_panel if labels.loc[r] == g]
            series = [
                (grp["vtime"].to_numpy(float), grp[metric].to_numpy(float))
                for _, grp in ev[ev["run"].isin(members)].sort_values("vtime").groupby("run")
            ]
            if not series:
                continue
            grid = np.linspace(0.0, max(vt[-1] for vt, _ in series), points)
            curves = np.vstack([_step_values(vt, v, grid) for vt, v in series])
            mean, lo, hi, _ = mean_band(curves, level)
            ax.plot(grid, mean, color=colors[g], lw=1.8, label=f"{g} (n={len(series)})")
            ax.fill_between(grid, lo, hi, color=colors[g], alpha=0.2, lw=0)
        if target and target in runs and len(in_panel):
            t = runs.loc[in_panel, target].dropna()
            if len(t):
                ax.axhline(float(t.iloc[0]), color="#444", ls=":", lw=1, label="target")
        ax.set_title(p if len(p) <= 60 else p[:57] + "...", fontsize="small")
        ax.set_xlabel("virtual time (s)")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize="x-small", title=_legend_title(hue), title_fontsize="x-small")
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle(f"{metric} vs virtual time: mean over seeds, {round(level * 100)}% CI band")
    return fig


def plot_summary_bars(summary: pd.DataFrame, hue: str = "cfg.strategy.name", x: str = "condition") -> Figure:
    """Bars of ``seed_summary``'s ``mean`` per ``x`` (grouped by ``hue``), with ``ci_low``/``ci_high`` error bars."""
    fig = new_figure(max(7.0, 1.6 * summary[x].nunique() + 3) if x in summary else 7.0, 4.0)
    ax = fig.add_subplot()
    if summary.empty:
        ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes)
        return fig
    xs = sorted(summary[x].astype(str).unique()) if x in summary else ["all"]
    hues = sorted(summary[hue].astype(str).unique()) if hue in summary else ["all"]
    colors = _colors(hues)
    width = 0.8 / len(hues)
    for k, h in enumerate(hues):
        sub = summary[summary[hue].astype(str) == h] if hue in summary else summary
        sub = sub.set_index(sub[x].astype(str) if x in sub else pd.Index(["all"] * len(sub))).reindex(xs)
        mean = sub["mean"].to_numpy(float)
        err = np.vstack([mean - sub["ci_low"].to_numpy(float), sub["ci_high"].to_numpy(float) - mean])
        pos = np.arange(len(xs)) + (k - (len(hues) - 1) / 2) * width
        ax.bar(pos, mean, width=width, color=colors[h], label=h)
        ax.errorbar(pos, mean, yerr=np.nan_to_num(err), fmt="none", ecolor="#222", capsize=3, lw=1)
    ax.set_xticks(
        range(len(xs)),
        [s if len(s) <= 28 else s[:25] + "..." for s in xs],
        fontsize="x-small",
        rotation=15 if len(xs) > 3 else 0,
    )
    metric = str(summary["metric"].iloc[0]) if "metric" in summary else "mean"
    ax.set_ylabel(metric)
    ax.set_title(f"{metric}: mean over seeds with 95% CI")
    ax.legend(title=_legend_title(hue) if hue in summary else None, fontsize="small")
    ax.grid(alpha=0.3, axis="y")
    return fig


__all__ = [
    "STATUS_COLORS",
    "mean_band",
    "new_figure",
    "plot_gantt",
    "plot_metric_ci",
    "plot_metric_vs_vtime",
    "plot_participation",
    "plot_staleness_hist",
    "plot_summary_bars",
    "save_png",
]
