"""Figures for heterogeneity studies, built on ``matplotlib.figure.Figure`` with an Agg canvas.

No ``pyplot``: its global figure registry leaks memory in long report loops, and it is not safe
when a notebook, a test and a report writer each make figures. Every function returns a Figure;
``save_png`` writes one (without matplotlib's URL metadata, so reports stay free of links).
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from raydiff.statuses import APPLIED, DROPPED, FAILED, REJECTED

from .metric_table import axis_label
from .metric_table import label as col_label
from .metric_table import metric as metric_info
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
    """``cfg.strategy.name`` -> ``strategy``: the reader's name of the column (``analysis.metric_table``)."""
    return col_label(by) if by else by


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
    ax.set_ylabel(axis_label(metric))
    ax.set_title(f"{col_label(metric)} vs virtual time")
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


def mean_band(
    curves: np.ndarray, level: float = 0.95, range_: str = "real"
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per column of ``curves`` (runs x times): centre, interval low/high and the number of runs with a value.

    Student t per time point (the runs are few seeds), on the scale the metric's ``range_`` calls for
    (``analysis.stats.range_ci``): a positive metric's band is the geometric mean's, so it never crosses 0;
    a share's stays in [0, 1]. NaN where fewer than two runs have a value.
    """
    from .stats import range_ci

    n = np.sum(np.isfinite(curves), axis=0)
    centre, lo, hi = (np.full(curves.shape[1], np.nan) for _ in range(3))
    for j in range(curves.shape[1]):
        if n[j] == 0:
            continue
        ci = range_ci(curves[:, j], range_, level, "t")
        centre[j], lo[j], hi[j] = ci.estimate, ci.low, ci.high
    return centre, lo, hi, n


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
    metric_name = metric
    metric_range = metric_info(metric).range
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
            mean, lo, hi, _ = mean_band(curves, level, metric_range)
            ax.plot(grid, mean, color=colors[g], lw=1.8, label=f"{g} (n={len(series)})")
            ax.fill_between(grid, lo, hi, color=colors[g], alpha=0.2, lw=0)
        if target and target in runs and len(in_panel):
            t = runs.loc[in_panel, target].dropna()
            if len(t):
                ax.axhline(float(t.iloc[0]), color="#444", ls=":", lw=1, label="target")
        ax.set_title(p if len(p) <= 60 else p[:57] + "...", fontsize="small")
        ax.set_xlabel("virtual time (s)")
        ax.set_ylabel(axis_label(metric_name))
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize="x-small", title=_legend_title(hue), title_fontsize="x-small")
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    centre = "geometric mean" if metric_range == "positive" else "mean"
    pct = round(level * 100)
    fig.suptitle(f"{col_label(metric_name)} vs virtual time\n{centre} over seeds, {pct}% CI band", fontsize="medium")
    return fig


def _log_axis(ax, which: str) -> None:
    """A log axis with plain numbers (1.5, 2, 3), not powers of ten: ratios and geometric means read as such."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    axis = ax.xaxis if which == "x" else ax.yaxis
    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    lo, hi = ax.get_xlim() if which == "x" else ax.get_ylim()
    wide = hi / lo > 30 if lo > 0 else True
    axis.set_minor_formatter(NullFormatter() if wide else FuncFormatter(lambda v, _: f"{v:g}"))


def plot_arm_intervals(summary: pd.DataFrame, hue: str = "arm", x: str = "condition") -> Figure:
    """Each arm's estimate with its interval (``seed_summary`` rows of ONE metric), per ``x`` group.

    Points and interval bars, not bars from 0: the interval is on the metric's own scale (a geometric mean
    for a positive metric), and the claim between arms is the paired one (``plot_forest``), not this.
    """
    if hue not in summary and "cfg.strategy.name" in summary:  # seed_summary's default arms
        hue = "cfg.strategy.name"
    fig = new_figure(max(7.0, 1.6 * summary[x].nunique() + 3) if x in summary else 7.0, 3.6)
    ax = fig.add_subplot()
    if summary.empty:
        ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes)
        return fig
    name = str(summary["metric"].iloc[0]) if "metric" in summary else "value"
    est_col = "estimate" if "estimate" in summary else "mean"
    xs = sorted(summary[x].astype(str).unique()) if x in summary else ["all"]
    hues = sorted(summary[hue].astype(str).unique()) if hue in summary else ["all"]
    colors = _colors(hues)
    width = 0.7 / max(len(hues), 1)
    for k, h in enumerate(hues):
        sub = summary[summary[hue].astype(str) == h] if hue in summary else summary
        sub = sub.set_index(sub[x].astype(str) if x in sub else pd.Index(["all"] * len(sub))).reindex(xs)
        est = sub[est_col].to_numpy(float)
        lo, hi = sub["ci_low"].to_numpy(float), sub["ci_high"].to_numpy(float)
        err = np.vstack([est - np.where(np.isfinite(lo), lo, est), np.where(np.isfinite(hi), hi, est) - est])
        pos = np.arange(len(xs)) + (k - (len(hues) - 1) / 2) * width
        ax.errorbar(pos, est, yerr=err, fmt="o", color=colors[h], ecolor=colors[h], capsize=3, lw=1.2, label=h)
    ax.set_xticks(
        range(len(xs)),
        [s if len(s) <= 28 else s[:25] + "..." for s in xs],
        fontsize="x-small",
        rotation=15 if len(xs) > 3 else 0,
    )
    ax.set_ylabel(axis_label(name))
    if metric_info(name).range == "positive" and np.nanmin(summary["ci_low"].to_numpy(float), initial=np.inf) > 0:
        _log_axis(ax, "y")  # the interval is the geometric mean's: symmetric on this axis
    ax.set_title(f"{col_label(name)}: per arm, 95% CI over seeds")
    ax.legend(title=_legend_title(hue) if hue != "arm" else None, fontsize="small")
    ax.grid(alpha=0.3, axis="y")
    return fig


plot_summary_bars = plot_arm_intervals  # the old name: the bars are gone, the intervals stay


def plot_forest(comparisons: pd.DataFrame, level: float = 0.95) -> Figure:
    """Every paired comparison (``analysis.compare``'s frame): one row per pair of arms and condition, the
    effect (a ratio on a log axis, or a difference) with its interval, one panel per metric and measure.

    Each row's label says which arms, how many paired seeds and, for a time to target, how many runs of
    each arm were censored; a filled marker is a comparison whose interval excludes no difference.
    """
    panels = list(dict.fromkeys(zip(comparisons["metric"], comparisons["measure"]))) if len(comparisons) else []
    sizes = [int(((comparisons.metric == m) & (comparisons.measure == k)).sum()) for m, k in panels]
    heights = [max(1.2, 0.32 * k + 0.9) for k in sizes]
    fig = new_figure(9.0, max(2.5, sum(heights) + 0.3))
    if not panels:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no paired comparisons", ha="center", va="center", transform=ax.transAxes)
        return fig
    axes = fig.subplots(len(panels), 1, squeeze=False, gridspec_kw={"height_ratios": heights}).ravel()
    for ax, (m, measure) in zip(axes, panels):
        rows = comparisons[(comparisons.metric == m) & (comparisons.measure == measure)].reset_index(drop=True)
        y = np.arange(len(rows))[::-1]
        null = 1.0 if measure == "ratio" else 0.0
        for yi, (_, r) in zip(y, rows.iterrows()):
            ok = np.isfinite(r["low"]) and np.isfinite(r["high"])
            color = "#1f77b4" if r["significant"] else "#777777"
            if ok:
                ax.plot([r["low"], r["high"]], [yi, yi], color=color, lw=1.6)
            ax.plot([r["estimate"]], [yi], "o", color=color, mfc=color if r["significant"] else "white", ms=5)
        labels = []
        for _, r in rows.iterrows():
            lab = f"{r['condition']}: {r['b']} vs {r['a']} (n={int(r['n_pairs'])}"
            if str(m).startswith("ttt_"):
                lab += f", cens. {int(r['n_censored_b'])}/{int(r['n_censored_a'])}"
            labels.append(lab + ")")
        ax.set_yticks(y, labels, fontsize="x-small")
        ax.axvline(null, color="#444", ls=":", lw=1)
        if measure == "ratio":
            _log_axis(ax, "x")
            ax.set_xlabel(f"ratio b / a of {col_label(m)} (geometric mean of per-seed ratios)", fontsize="small")
        else:
            unit = metric_info(m).unit
            what = "restricted mean time (RMST)" if str(m).startswith("ttt_") else col_label(m)
            ax.set_xlabel(f"difference b - a of {what}" + (f" ({unit})" if unit else ""), fontsize="small")
        pct = round(level * 100)
        ax.set_title(f"{col_label(m)}: {measure}, {pct}% CI (filled: excludes {null:g})", fontsize="small")
        ax.grid(alpha=0.3, axis="x")
        ax.set_ylim(-0.7, len(rows) - 0.3)
    return fig


def plot_km(frame: pd.DataFrame, ttt: str = "ttt_heldout_loss", hue: str = "arm", panel: str = "condition") -> Figure:
    """Kaplan-Meier curves of "reached the target by virtual time t", one per arm, one panel per condition,
    with the pointwise 95% band and a tick at each censored run (it never reached the target by then).

    ``frame`` is a runs frame (``analysis.study.runs_frame``): ``ttt`` times, its ``censored`` flags and the
    runs' ``budget``; the x axis ends at the condition's budget, the dotted line.
    """
    from .survival import km_curve

    cens_col = "censored" + ttt[len("ttt_heldout_loss") :] if ttt.startswith("ttt_heldout_loss") else "censored"
    panels = sorted(frame[panel].astype(str).unique()) if panel in frame else ["all"]
    cols = min(2, len(panels))
    rows_n = math.ceil(len(panels) / cols)
    fig = new_figure(7.0 if cols == 1 else 11.0, 3.4 * rows_n)
    axes = fig.subplots(rows_n, cols, squeeze=False).ravel()
    colors = _colors(list(frame[hue].astype(str).unique())) if hue in frame else {"all": PALETTE[0]}
    for ax, p in zip(axes, panels):
        sub = frame[frame[panel].astype(str) == p] if panel in frame else frame
        sub = sub[sub[ttt].notna()]
        tau = float(pd.to_numeric(sub["budget"]).min()) if "budget" in sub and len(sub) else math.nan
        for arm, grp in sub.groupby(sub[hue].astype(str) if hue in sub else "all", sort=True):
            t = grp[ttt].to_numpy(float)
            reached = ~grp[cens_col].astype(bool).to_numpy() if cens_col in grp else np.ones(len(grp), bool)
            if math.isfinite(tau):
                reached &= t <= tau
                t = np.minimum(t, tau)
            c = km_curve(t, reached)
            col = colors.get(arm, PALETTE[0])
            n_cens = int((~reached).sum())
            ax.step(c.time, c.reached, where="post", color=col, lw=1.8, label=f"{arm} (n={c.n}, {n_cens} censored)")
            ax.fill_between(c.time, c.low, c.high, step="post", color=col, alpha=0.15, lw=0)
            if len(c.censored_at):
                at = np.searchsorted(c.time, c.censored_at, side="right") - 1
                ax.plot(c.censored_at, c.reached[np.clip(at, 0, None)], "|", color=col, ms=12, mew=2)
        if math.isfinite(tau):
            ax.axvline(tau, color="#444", ls=":", lw=1)
            ax.set_xlim(0, tau * 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(p if len(p) <= 60 else p[:57] + "...", fontsize="small")
        ax.set_xlabel("virtual time (s)")
        ax.set_ylabel("share of runs at target")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize="x-small", loc="upper left")
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    how = "Kaplan-Meier, 95% band; ticks: censored runs; dotted: the budget"
    fig.suptitle(f"{col_label(ttt)}\n{how}", fontsize="medium")
    return fig


def plot_final_metrics(runs: pd.DataFrame, metrics: tuple[str, ...] = ()) -> Figure:
    """Each run's final quality numbers (domain FID, judge confidence, ...), one panel per metric, a dot per
    run: the numbers behind the report's tables, readable at a glance."""
    metrics = metrics or tuple(
        m
        for m in ("final_fid_domain", "final_kid_domain", "final_precision", "final_recall", "judge_mean_confidence")
        if m in runs and runs[m].notna().any()
    )
    fig = new_figure(min(3.0 * max(len(metrics), 1) + 1.5, 12.0), max(2.4, 0.28 * len(runs) + 1.4))
    if not metrics:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no final quality numbers", ha="center", va="center", transform=ax.transAxes)
        return fig
    axes = fig.subplots(1, len(metrics), squeeze=False, sharey=True).ravel()
    names = [str(r) for r in runs.index]
    y = np.arange(len(names))[::-1]
    for ax, m in zip(axes, metrics):
        ax.plot(runs[m].to_numpy(float), y, "o", color=PALETTE[0])
        ax.set_xlabel(axis_label(m), fontsize="small")
        lo = metric_info(m).bounds[0]
        if metric_info(m).range == "unit":
            ax.set_xlim(-0.02, 1.02)
        elif np.isfinite(lo) and np.nanmin(runs[m].to_numpy(float)) >= lo:
            ax.set_xlim(left=lo)
        ax.grid(alpha=0.3, axis="x")
    axes[0].set_yticks(y, [n if len(n) <= 40 else n[:37] + "..." for n in names], fontsize="x-small")
    fig.suptitle("Final quality of each run")
    return fig


__all__ = [
    "STATUS_COLORS",
    "mean_band",
    "new_figure",
    "plot_arm_intervals",
    "plot_final_metrics",
    "plot_forest",
    "plot_gantt",
    "plot_km",
    "plot_metric_ci",
    "plot_metric_vs_vtime",
    "plot_participation",
    "plot_staleness_hist",
    "plot_summary_bars",
    "save_png",
]
