"""Utility and per-class quality of a generator: what a hospital's downstream classifier gets from its samples.

- **Utility** (train-synthetic-test-real): a classifier of one fixed, seeded recipe (the domain classifier's
  architecture and training loop, :func:`raydiff.metrics.domain.train_net`) trained on
  ``eval.utility_samples_per_class`` generated images per class, and tested on the real held-out images;
  beside it the same recipe trained on as many real training images (cached on disk: it depends on the data
  alone); ``utility_ratio`` is their quotient. A conditional model's samples carry the class they were asked
  for; an unconditional model's samples are labelled by the domain classifier (pseudo-labels,
  ``utility_labels: pseudo``).
- **Fidelity per class**: ``label_fidelity`` (the share of class-k samples the domain classifier calls k),
  and per class the domain FID, precision, recall, density and coverage against the real held-out images of
  that class (``evals_per_class.parquet``); per client, the same weighted by the client's class shares
  (``evals_per_client.parquet``): are the classes of slow clients worse served?

Torch and numpy, no Ray: the evaluator actor calls :func:`class_evaluation`; the runner writes the tables.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

log = logging.getLogger(__name__)

UTILITY_STREAM = 0x7711  # np.random.default_rng([seed, UTILITY_STREAM]): the samples' seed, the real subset
PER_CLASS_COLUMNS = (
    "version",
    "class",
    "n",
    "fid",
    "precision",
    "recall",
    "density",
    "coverage",
    "label_fidelity",
    "utility_accuracy",
    "utility_accuracy_real",
    "num_real",
)
SUMMARY_FIELDS = (
    "utility_accuracy",
    "utility_accuracy_real",
    "utility_ratio",
    "utility_labels",
    "utility_samples",
    "label_fidelity",
    "utility_seconds",
)


def stratified_subset(labels: np.ndarray, per_class: int, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``per_class`` indices of each class (all of a class that has fewer), drawn by ``rng``, sorted."""
    labels = np.asarray(labels)
    out = []
    for k in range(num_classes):
        idx = np.flatnonzero(labels == k)
        out.append(rng.permutation(idx)[:per_class])
    return np.sort(np.concatenate(out)) if out else np.zeros(0, np.int64)


def class_recall(pred: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Per class k: the share of images of class k predicted k (NaN for a class with no image)."""
    out = np.full(num_classes, math.nan)
    for k in range(num_classes):
        sel = labels == k
        if sel.any():
            out[k] = float((pred[sel] == k).mean())
    return out


def real_baseline(
    train_images: np.ndarray,
    train_labels: np.ndarray,
    per_class: int,
    num_classes: int,
    seed: int,
    cache_dir: Optional[str],
    device: Any = "cpu",
):
    """The recipe trained on ``per_class`` real training images per class (a seeded stratified subset).

    Cached by :func:`~raydiff.metrics.domain.domain_classifier` under a hash of that subset: the baseline
    depends on the data and seed alone, so every run (and version) after the first loads it.
    """
    from .metrics.domain import domain_classifier

    pick = stratified_subset(train_labels, per_class, num_classes, np.random.default_rng([seed, UTILITY_STREAM, 1]))
    return domain_classifier(train_images[pick], train_labels[pick], cache_dir, seed, device, num_classes=num_classes)


def sample_labels(num_classes: int, per_class: int) -> np.ndarray:
    """The labels of a conditional batch: ``per_class`` of each class, class by class."""
    return np.repeat(np.arange(num_classes, dtype=np.int64), per_class)


def class_evaluation(
    samples: np.ndarray,
    sample_labels: Optional[np.ndarray],
    judge: Any,
    real_images: np.ndarray,
    real_labels: np.ndarray,
    real_features: np.ndarray,
    baseline: Any,
    num_classes: int,
    seed: int,
    version: int,
    device: Any = "cpu",
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(summary fields, evals_per_class rows) of one batch of samples.

    ``sample_labels``: the classes a conditional model was asked for; None: an unconditional model's samples,
    labelled by ``judge`` (the domain classifier). ``real_*``: the held-out images (the utility test set and
    the per-class reference), ``real_features`` their ``judge`` features; ``baseline``: :func:`real_baseline`.
    """
    from .metrics.distances import density_coverage, frechet_distance, precision_recall
    from .metrics.domain import DomainClassifier, train_net
    from .metrics.suite import DC_K, PR_K

    t0 = time.perf_counter()
    predicted = judge.predict(samples)
    conditional = sample_labels is not None
    labels = np.asarray(sample_labels if conditional else predicted, dtype=np.int64)
    net = train_net(samples, labels, num_classes, seed, device)
    util = DomainClassifier(net, "utility", judge.device)
    pred_syn = util.predict(real_images)
    pred_real = baseline.predict(real_images)
    acc_syn = float((pred_syn == real_labels).mean())
    acc_real = float((pred_real == real_labels).mean())
    fidelity = class_recall(predicted, labels, num_classes) if conditional else np.full(num_classes, math.nan)
    util_k, real_k = class_recall(pred_syn, real_labels, num_classes), class_recall(pred_real, real_labels, num_classes)
    fake_features = judge.features(samples)
    rows = []
    for k in range(num_classes):
        f, r = fake_features[labels == k], real_features[real_labels == k]
        pr = precision_recall(r, f, PR_K) if len(r) > PR_K and len(f) > PR_K else (math.nan, math.nan)
        dc = density_coverage(r, f, DC_K) if len(r) > DC_K and len(f) else (math.nan, math.nan)
        rows.append(
            dict(
                version=version,
                **{"class": k},
                n=len(f),
                fid=frechet_distance(r, f) if len(r) >= 2 and len(f) >= 2 else math.nan,
                precision=pr[0],
                recall=pr[1],
                density=dc[0],
                coverage=dc[1],
                label_fidelity=float(fidelity[k]),
                utility_accuracy=float(util_k[k]),
                utility_accuracy_real=float(real_k[k]),
                num_real=len(r),
            )
        )
    summary = dict(
        utility_accuracy=acc_syn,
        utility_accuracy_real=acc_real,
        utility_ratio=acc_syn / acc_real if acc_real > 0 else math.nan,
        utility_labels="conditional" if conditional else "pseudo",
        utility_samples=len(samples),
        label_fidelity=float((predicted == labels).mean()) if conditional else None,
        utility_seconds=time.perf_counter() - t0,
    )
    return summary, rows


def per_client_rows(
    parts: list[np.ndarray],
    train_labels: np.ndarray,
    per_class: list[dict[str, Any]],
    num_classes: int,
    speeds: Optional[list[float]] = None,
    slow_classes: tuple[int, ...] = (),
) -> list[dict[str, Any]]:
    """evals_per_client.parquet: per client its class shares and the per-class quality weighted by them.

    A client is served as well as the classes it holds: ``label_fidelity``, ``utility_accuracy`` (the share
    of its classes' real held-out images the synthetic-trained classifier gets right), ``fid``, ``precision``,
    ``recall``, each the share-weighted mean over classes (NaN classes left out, weights renormalised).
    ``speed`` (samples per virtual second) and ``slow_share`` (its share of ``clients.slow_classes``) let a
    study ask whether slow clients are worse served.
    """
    table = {m: np.array([r[m] for r in per_class], dtype=np.float64) for m in PER_CLIENT_METRICS}
    rows = []
    for c, idx in enumerate(parts):
        counts = np.bincount(np.asarray(train_labels)[np.asarray(idx, dtype=np.int64)], minlength=num_classes)
        share = counts[:num_classes] / max(counts.sum(), 1)
        row: dict[str, Any] = dict(client_id=c, num_samples=len(idx))
        row.update({f"share_{k}": float(share[k]) for k in range(num_classes)})
        row["slow_share"] = float(share[list(slow_classes)].sum()) if slow_classes else math.nan
        row["speed"] = float(speeds[c]) if speeds is not None else math.nan
        for m, v in table.items():
            ok = np.isfinite(v) & (share > 0)
            row[m] = float((share[ok] * v[ok]).sum() / share[ok].sum()) if ok.any() else math.nan
        rows.append(row)
    return rows


PER_CLIENT_METRICS = ("label_fidelity", "utility_accuracy", "fid", "precision", "recall", "density", "coverage")


def class_grid(images: np.ndarray, labels: np.ndarray, num_classes: int, per_row: int) -> np.ndarray:
    """(num_classes * per_row, C, H, W): row k holds up to ``per_row`` images of class k, blank (-1) cells after."""
    c, h, w = images.shape[1:]
    out = np.full((num_classes, per_row, c, h, w), -1.0, dtype=np.float32)
    for k in range(num_classes):
        sel = images[np.asarray(labels) == k][:per_row]
        out[k, : len(sel)] = sel
    return out.reshape(num_classes * per_row, c, h, w)


def write_class_grid(path: str | Path, images: np.ndarray, labels: np.ndarray, num_classes: int, per_row: int) -> None:
    """A PNG with one row per class (row k: class k), tiles upscaled as :func:`raydiff.outputs.grid_image`."""
    import os

    from PIL import Image

    cells = class_grid(images, labels, num_classes, per_row)
    c, h, w = cells.shape[1:]
    pad = 1
    canvas = np.ones((c, num_classes * (h + pad) + pad, per_row * (w + pad) + pad), dtype=np.float32)
    for i, img in enumerate(cells):
        r, q = divmod(i, per_row)
        canvas[:, pad + r * (h + pad) : pad + r * (h + pad) + h, pad + q * (w + pad) : pad + q * (w + pad) + w] = (
            img + 1
        ) / 2
    arr = (np.clip(canvas, 0, 1) * 255).round().astype(np.uint8)
    pil = Image.fromarray(arr[0] if c == 1 else arr.transpose(1, 2, 0))
    scale = max(1, int(np.ceil(48 / h)))
    pil = pil.resize((pil.width * scale, pil.height * scale), Image.Resampling.NEAREST)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    pil.save(tmp, format="PNG")
    os.replace(tmp, path)


__all__ = [
    "PER_CLASS_COLUMNS",
    "SUMMARY_FIELDS",
    "class_evaluation",
    "class_grid",
    "class_recall",
    "per_client_rows",
    "real_baseline",
    "sample_labels",
    "stratified_subset",
    "write_class_grid",
]


def write_class_outputs(
    cfg: Any,
    out_dir: Path,
    classes: dict[str, Any],
    final_samples: np.ndarray,
    train: Any,
    held: Any,
    parts: list[np.ndarray],
    profiles: Any,
) -> dict[str, Any]:
    """The run folder's class-level files; returns the summary.json fields (README, "Class-conditional models").

    samples/by_class.png (one row per class: a conditional model's final samples, which come class by class;
    an unconditional model's utility samples grouped by the domain classifier's label), samples/real_by_class.png
    (held-out images, same layout), evals_per_class.parquet and evals_per_client.parquet.
    """
    import pandas as pd

    from .model import num_classes_of

    k = num_classes_of(train.labels) if len(np.unique(train.labels)) >= 2 else 0
    if k < 2:
        return {}
    samples_dir = Path(out_dir) / "samples"
    samples_dir.mkdir(exist_ok=True)
    if cfg.model.conditional:
        per = max(1, len(final_samples) // k)
        write_class_grid(samples_dir / "by_class.png", final_samples, sample_labels(k, per), k, per)
    elif classes:
        per = max(1, cfg.eval.num_samples // k)
        write_class_grid(samples_dir / "by_class.png", classes["samples"], classes["labels"], k, per)
    else:
        per = max(1, cfg.eval.num_samples // k)
    real_pick = np.random.default_rng([cfg.seed, 7]).permutation(len(held.images))
    write_class_grid(samples_dir / "real_by_class.png", held.images[real_pick], held.labels[real_pick], k, per)
    if not classes:
        return {}
    _parquet(Path(out_dir) / "evals_per_class.parquet", pd.DataFrame(classes["per_class"], columns=PER_CLASS_COLUMNS))
    speeds = [p.speed for p in profiles] if profiles is not None else None
    rows = per_client_rows(parts, train.labels, classes["per_class"], k, speeds, tuple(cfg.clients.slow_classes))
    _parquet(Path(out_dir) / "evals_per_client.parquet", pd.DataFrame(rows))
    return dict(classes["summary"])


def _parquet(path: Path, frame: Any) -> None:
    import os

    tmp = path.with_name(path.name + ".tmp")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)
