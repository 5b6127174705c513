"""What each client holds: a per-client class-count table and its picture, for the run folder.

A skewed split is the experiment's main knob, so a run should show the split it actually used rather
than only the beta or k that produced it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Union

import numpy as np
import pandas as pd

HEATMAP_ABOVE = 50  # clients: more bars than this are unreadable, so draw a heatmap instead


def class_counts(parts: Sequence[np.ndarray], labels: np.ndarray, num_classes: int) -> pd.DataFrame:
    """One row per client: ``client_id``, ``n`` (its samples), then ``c0 .. c{K-1}`` (its samples per class)."""
    counts = np.zeros((len(parts), num_classes), dtype=np.int64)
    for k, idx in enumerate(parts):
        counts[k] = np.bincount(labels[idx], minlength=num_classes)[:num_classes]
    df = pd.DataFrame(counts, columns=[f"c{c}" for c in range(num_classes)])
    df.insert(0, "n", np.array([len(p) for p in parts], dtype=np.int64))
    df.insert(0, "client_id", np.arange(len(parts), dtype=np.int64))
    return df


def plot_partition(df: pd.DataFrame, path: Union[str, Path], title: str = "Samples per client and class") -> Path:
    """Save a PNG of ``class_counts``' table: stacked horizontal bars per client, a heatmap above 50 clients.

    Uses matplotlib's Figure with the Agg canvas directly, so no pyplot state or GUI backend is touched
    (this runs inside a driver that may also be a notebook).
    """
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    cols = [c for c in df.columns if c.startswith("c") and c[1:].isdigit()]
    counts = df[cols].to_numpy()
    n_clients, n_classes = counts.shape
    bars = n_clients <= HEATMAP_ABOVE
    fig = Figure(figsize=(8, max(3.0, 0.22 * n_clients + 1.5) if bars else 6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if bars:
        cmap = matplotlib.colormaps["tab10" if n_classes <= 10 else "tab20" if n_classes <= 20 else "viridis"]
        left = np.zeros(n_clients)
        y = df["client_id"].to_numpy()
        for c in range(n_classes):
            color = cmap(c if n_classes <= 20 else c / max(1, n_classes - 1))
            ax.barh(y, counts[:, c], left=left, color=color, label=f"class {c}", height=0.8)
            left += counts[:, c]
        ax.invert_yaxis()
        ax.set_xlabel("samples")
        ax.set_ylabel("client")
        if n_classes <= 20:
            ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small", frameon=False)
    else:
        im = ax.imshow(counts, aspect="auto", interpolation="nearest", cmap="viridis")
        fig.colorbar(im, ax=ax, label="samples")
        ax.set_xlabel("class")
        ax.set_ylabel("client")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # client ids, classes: no 2.5
    if not bars:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(f"{title} ({n_clients} clients, {n_classes} classes)")
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    return out
