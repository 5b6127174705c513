"""Figures for heterogeneity studies, built on ``matplotlib.figure.Figure`` with an Agg canvas.

No ``pyplot``: its global figure registry leaks memory in long report loops, and it is not safe
when a notebook, a test and a report writer each make figures. Every function returns a Figure;
``save_png`` writes one (without matplotlib's URL metadata, so reports stay free of links).
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .metrics import gini, participation

STATUS_COLORS = {"applied": "#2ca02c", "dropped": "#ff7f0e", "failed": "#d62728",
                 "rejected": "#7f7f7f", "pending": "#1f77b4"}
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
    return by[len("cfg."):] if by and by.startswith("cfg.") else by


def _colors(labels: list[str]) -> dict[str, str]:
    return {g: PALETTE[i % len(PALETTE)] for i, g in enumerate(sorted(labels))}


def plot_metric_vs_vtime(evals: pd.DataFrame, metric: str = "heldout_loss",
                         by: str | None = "cfg.strategy.name") -> Figure:
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
    app = events[events["status"] == "applied"].dropna(subset=["staleness"]) \
        if {"status", "staleness"} <= set(events.columns) else events.iloc[:0]
    if app.empty:
        ax.text(0.5, 0.5, "no applied jobs with staleness", ha="center", va="center", transform=ax.transAxes)
    else:
        groups = _groups(app, by)
        colors = _colors(list(groups.unique()))
        top = int(app["staleness"].max())
        bins = np.arange(-0.5, top + 1.5, 1.0)
        for g in sorted(groups.unique()):
            s = app.loc[groups == g, "staleness"].to_numpy(dtype=float)
            ax.hist(s, bins=bins, weights=np.full(s.size, 1.0 / s.size), histtype="step", lw=2,
                    color=colors[g], label=f"{g} (n={s.size}, mean={s.mean():.2f})")
        ax.legend(title=_legend_title(by) if by in app else None, fontsize="small")
    ax.set_xlabel("staleness (versions)")
    ax.set_ylabel("share of applied jobs")
    ax.set_title("Staleness of applied updates")
    ax.grid(alpha=0.3)
    return fig


def plot_gantt(events: pd.DataFrame, run: str | None = None, max_clients: int = 50,
               max_jobs: int = 2000) -> Figure:
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
        ax.barh(y, (grp["finish_vtime"] - grp["dispatch_vtime"]).to_numpy(), left=grp["dispatch_vtime"].to_numpy(),
                height=0.8, color=STATUS_COLORS.get(status, "#bcbd22"), edgecolor="white", lw=0.3,
                label=f"{status} ({len(grp)})")
    if len(clients) <= 25:
        ax.set_yticks(range(len(clients)), [str(int(c)) for c in clients])
    if len(clients) < n_clients or len(ev) < n_jobs:
        ax.text(1.02, 0.0, f"showing {len(clients)} of\n{n_clients} clients with jobs,\n{len(ev)} of {n_jobs} jobs",
                ha="left", va="bottom", fontsize="small", transform=ax.transAxes)
    if len(ev):
        ax.legend(title="status", fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_xlabel("virtual time (s)")
    ax.set_ylabel("client")
    ax.set_title(f"Client jobs over virtual time: {run}")
    return fig


def plot_participation(events: pd.DataFrame, run: str | None = None,
                       by: str | None = "cfg.strategy.name", max_bars: int = 100) -> Figure:
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
        per_group = {g: grp.groupby("client_id")["applied"].sum() / grp["run"].nunique()
                     for g, grp in p.groupby("group", sort=True)}
        table = pd.DataFrame(per_group).fillna(0.0).sort_index()
        colors = _colors(list(table.columns))
        width = 0.8 / len(table.columns)
        for k, g in enumerate(table.columns):
            vals = table[g].to_numpy(dtype=float)
            own = per_group[g].to_numpy(dtype=float)
            label = f"{g} (Gini {gini(own):.2f})" if g != "all" else f"Gini {gini(own):.2f}"
            if len(table) <= max_bars:
                ax.bar(np.arange(len(table)) + (k - (len(table.columns) - 1) / 2) * width, vals, width=width,
                       color=colors[g], label=label)
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


__all__ = ["new_figure", "save_png", "plot_metric_vs_vtime", "plot_staleness_hist", "plot_gantt",
           "plot_participation", "STATUS_COLORS"]
