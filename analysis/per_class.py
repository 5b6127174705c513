"""Quality per class and per client (issue 22): reads each run's ``evals_per_class.parquet`` and
``evals_per_client.parquet`` (written by raydiff.utility at the end of a run with labelled data).

``class_frame``/``client_frame``: every row of every run, with the run's strategy, seed and label skew;
``gap_table``: one row per run with the slow classes' quality against the other classes' (the question "does
asynchrony starve the slow clients' classes?"), ready for ``analysis.paired_diff``; ``per_class_section``: the
report's per-class panel.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .load import PathLike, find_runs, read_run

STRATEGY, SEED = "cfg.strategy.name", "cfg.seed"
CLASS_METRICS = ("label_fidelity", "utility_accuracy", "fid", "precision", "recall", "coverage")
RUN_COLUMNS = (STRATEGY, SEED, "cfg.data.beta", "cfg.model.conditional", "cfg.clients.slow_classes")


def classes_of(value: Any) -> tuple[int, ...]:
    """A run's ``clients.slow_classes`` as load_runs flattens it (a JSON string such as "[0, 1, 2]")."""
    import json

    if isinstance(value, str):
        value = json.loads(value) if value.strip() else []
    return tuple(int(c) for c in (value or ()))


def _frames(paths: PathLike | Iterable[PathLike], name: str) -> pd.DataFrame:
    rows = []
    for run_dir in find_runs(paths):
        f = run_dir / name
        if not f.is_file():
            continue
        meta, _ = read_run(run_dir)
        t = pd.read_parquet(f)
        for c in RUN_COLUMNS:
            t[c] = [meta.get(c)] * len(t)
        t["run"], t["run_dir"] = run_dir.name, str(run_dir)
        t["utility_labels"] = meta.get("summary.utility_labels")
        rows.append(t)
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


def class_frame(paths: PathLike | Iterable[PathLike]) -> pd.DataFrame:
    """Every evals_per_class.parquet row of the runs under ``paths``, with run, strategy, seed, beta."""
    return _frames(paths, "evals_per_class.parquet")


def client_frame(paths: PathLike | Iterable[PathLike]) -> pd.DataFrame:
    """Every evals_per_client.parquet row of the runs under ``paths``, with run, strategy, seed, beta."""
    return _frames(paths, "evals_per_client.parquet")


def _mean(values: pd.Series, weights: pd.Series | None = None) -> float:
    v = values.to_numpy(float)
    w = np.ones(len(v)) if weights is None else weights.to_numpy(float)
    ok = np.isfinite(v) & (w > 0)
    return float((v[ok] * w[ok]).sum() / w[ok].sum()) if ok.any() else math.nan


def gap_table(
    paths: PathLike | Iterable[PathLike], slow_classes: Sequence[int] | None = None, condition: str = "cfg.data.beta"
) -> pd.DataFrame:
    """One row per run: ``<metric>_slow`` (mean over the slow classes), ``<metric>_fast`` (the other classes),
    ``<metric>_gap`` (slow - fast) for each of CLASS_METRICS, and ``<metric>_slow_clients`` (the share-weighted
    quality of the clients holding mostly slow classes, ``slow_share`` > 0.5); ``condition`` names the run's
    condition column (copied to ``condition``) for ``analysis.paired_diff``.

    ``slow_classes`` None: each run's own ``clients.slow_classes``.
    """
    per_class, per_client = class_frame(paths), client_frame(paths)
    if per_class.empty:
        return pd.DataFrame()
    rows = []
    for run, grp in per_class.groupby("run", sort=True):
        first = grp.iloc[0]
        slow = set(slow_classes if slow_classes is not None else classes_of(first["cfg.clients.slow_classes"]))
        is_slow = grp["class"].isin(slow)
        row: dict[str, Any] = {"run": run, **{c: first[c] for c in RUN_COLUMNS}}
        row["condition"] = f"{condition.split('.')[-1]}={first[condition]}" if condition in grp else "all"
        summary = read_run(Path(first["run_dir"]))[0]
        for key in ("utility_accuracy", "utility_accuracy_real", "utility_ratio", "label_fidelity", "final_fid_domain"):
            row[key] = summary.get(f"summary.{key}")
        for m in CLASS_METRICS:
            row[f"{m}_slow"] = _mean(grp.loc[is_slow, m])
            row[f"{m}_fast"] = _mean(grp.loc[~is_slow, m])
            row[f"{m}_gap"] = row[f"{m}_slow"] - row[f"{m}_fast"]
        cl = per_client[per_client["run"] == run] if not per_client.empty else pd.DataFrame()
        if len(cl) and "slow_share" in cl:
            mostly = cl["slow_share"] > 0.5
            for m in ("label_fidelity", "utility_accuracy", "fid"):
                row[f"{m}_slow_clients"] = _mean(cl.loc[mostly, m])
                row[f"{m}_other_clients"] = _mean(cl.loc[~mostly, m])
        rows.append(row)
    return pd.DataFrame(rows)


def plot_per_class(frame: pd.DataFrame, metrics: Sequence[str] = ("label_fidelity", "utility_accuracy", "fid")):
    """One panel per metric: its mean per class over runs, one line per arm (strategy, and beta when it varies);
    slow classes shaded."""
    from .plots import new_figure

    fig = new_figure(4.2 * len(metrics), 3.6)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    arm = frame[STRATEGY].astype(str)
    if "cfg.data.beta" in frame and frame["cfg.data.beta"].nunique() > 1:
        arm = arm + ", beta " + frame["cfg.data.beta"].astype(str)
    slow = {c for v in frame["cfg.clients.slow_classes"].dropna() for c in classes_of(v)}
    for ax, m in zip(axes, metrics):
        for c in sorted(slow):
            ax.axvspan(c - 0.5, c + 0.5, color="#f3d9a4", lw=0)
        for name, grp in frame.assign(arm=arm).groupby("arm", sort=True):
            mean = grp.groupby("class")[m].mean()
            ax.plot(mean.index, mean.to_numpy(), marker="o", ms=3, label=f"{name} ({grp['run'].nunique()} runs)")
        ax.set(xlabel="class (shaded: slow clients' classes)", title=m.replace("_", " "))
        ax.set_xticks(sorted(frame["class"].unique()))
    axes[0].legend(fontsize=7)
    return fig


def per_class_section(df: pd.DataFrame) -> str:
    """The report's per-class panel ("" when no run has evals_per_class.parquet)."""
    import base64

    from .plots import save_png

    dirs = sorted(d for d in set(df["run_dir"]) if Path(d).is_dir()) if "run_dir" in df else []
    frame = class_frame([Path(d) for d in dirs]) if dirs else pd.DataFrame()
    if frame.empty:
        return ""
    png = base64.b64encode(save_png(plot_per_class(frame))).decode("ascii")
    pseudo = (frame["utility_labels"] == "pseudo").any()
    note = (
        "Per class, from each run's evals_per_class.parquet: label fidelity (share of class-k samples the domain "
        "classifier calls k), the utility classifier's accuracy on real held-out images of class k (trained on "
        "generated images only), and the domain FID of class k against real class k (lower is better)."
        + (
            " Unconditional runs use the domain classifier's labels (pseudo-labels): no label fidelity."
            if pseudo
            else ""
        )
    )
    alt = "per-class label fidelity, utility accuracy and FID, one line per strategy"
    return (
        '<section><h2 id="per-class">Quality per class</h2>'
        f'<p class="note">{html.escape(note)}</p>'
        f'<figure><img id="plot-per-class" alt="{html.escape(alt)}" src="data:image/png;base64,{png}">'
        "<figcaption>Quality per class (mean over runs).</figcaption></figure></section>"
    )


__all__ = ["class_frame", "classes_of", "client_frame", "gap_table", "per_class_section", "plot_per_class"]
