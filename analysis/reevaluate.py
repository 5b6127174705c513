"""Score finished runs' final models again under other evaluation settings: a sensitivity check.

A study fixes its evaluation settings before the runs (docs/paper-grid.md scores FID samples with 100 DDIM
steps to keep 75 runs cheap). Whether an answer depends on that choice is a fair reviewer's question, and
answering it must not mean training again: this loads each run's final model, applies ``--set eval.*``
overrides to the run's own config and scores it with the evaluator the run used (same held-out subset, same
noise, same sampling seed), so the only thing that changes is the setting overridden.

It writes one CSV row per run (``run`` as ``analysis.paper_grid`` names it, the model hash, every final
endpoint, the settings) and nothing into the run folders: ``python -m analysis.paper_grid RUNS
--metrics-from CSV`` then recomputes the study's tables on the new scores. Only ``eval.*`` keys may be
overridden: anything else would describe a run that was never trained.

    python -m analysis.reevaluate runs/paper-grid-confirm --set eval.sampler=ddpm \\
        --set eval.sample_steps=null --out ddpm1000.csv
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

SETTINGS = ("sampler", "sample_steps", "num_samples", "fid_num_samples")


class ReevaluateError(ValueError):
    """A bad argument or a folder that cannot be re-scored: printed as one line, exit status 2."""


def check_overrides(overrides: Iterable[str]) -> list[str]:
    """Only ``eval.*`` settings: they change how a model is scored, not what was trained."""
    out = list(overrides)
    for o in out:
        key = o.split("=", 1)[0].strip()
        if "=" not in o or not key.startswith("eval.") or key == "eval.":
            raise ReevaluateError(
                f"--set {o!r}: only eval.<key>=<value> settings can be changed after training (the model is fixed)"
            )
    return out


def run_folders(root: Path, pattern: str = "*") -> list[Path]:
    """Finished run folders under ``root`` (a folder with summary.json, config.yaml and model/), sorted; a
    run folder given directly is its own list. ``pattern`` filters by folder name (fnmatch)."""
    import fnmatch

    if not root.is_dir():
        raise ReevaluateError(f"{str(root)!r} is not a folder")
    found = [p.parent for p in root.rglob("summary.json")]
    keep = [
        f
        for f in found
        if (f / "config.yaml").is_file() and (f / "model" / "model_index.json").is_file()
        if fnmatch.fnmatch(f.name, pattern)
    ]
    if not keep:
        raise ReevaluateError(f"no finished run folder under {str(root)!r} matches {pattern!r}")
    return sorted(keep)


def _vectors(folder: Path, summary: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(the global model the run's final evaluation scored, the exported model its final samples came from).
    They are one model unless the run exported an EMA; then the global one must have been kept."""
    from diffusers import UNet2DModel

    from raydiff.model import FlatModel, model_sha256
    from raydiff.runner import GLOBAL_VECTOR

    exported = FlatModel(UNet2DModel.from_pretrained(str(folder / "model" / "unet"))).vector()
    gpath = folder / "model" / GLOBAL_VECTOR
    if gpath.is_file():
        vector = np.load(gpath, allow_pickle=False)
    elif summary.get("exported_model") == "ema":
        raise ReevaluateError(
            f"{folder.name}: model/ holds the EMA, not the global model its final metrics score; re-scoring it would "
            "compare different models"
        )
    else:
        vector = exported
    want = summary.get("model_sha256")
    if want and model_sha256(vector) != want:
        raise ReevaluateError(f"{folder.name}: the stored model's hash differs from summary.json's model_sha256")
    return vector, exported


def rescore(folder: Path, overrides: Sequence[str], threads: float = 1.0) -> dict[str, Any]:
    """One run's final model, scored with its own config plus ``overrides`` (``eval.*`` only)."""
    from raydiff.actors.evaluator import Evaluator
    from raydiff.config_load import load_config
    from raydiff.data import federated_split
    from raydiff.metrics.suite import DOMAIN_COLUMNS

    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    cfg = load_config(folder / "config.yaml", check_overrides(overrides))
    t0 = time.perf_counter()
    train, held, _, _ = federated_split(cfg)
    vector, exported = _vectors(folder, summary)
    ev = Evaluator(
        cfg, held.images, threads, heldout_labels=held.labels, train_images=train.images, train_labels=train.labels
    )
    version = int(summary.get("final_version") or 0)
    row = ev.evaluate(version, float(summary.get("virtual_time") or 0.0), vector, fid=True)
    out: dict[str, Any] = {"run": folder.name, "path": str(folder), "model_sha256": summary.get("model_sha256")}
    out["final_heldout_loss"] = float(row["heldout_loss"])
    out.update({f"final_{k}": float(row[k]) for k in (*DOMAIN_COLUMNS, "fid_inception") if k in row})
    if cfg.eval.judge and cfg.data.dataset == "digits":
        from raydiff.digit_judge import judge_digits

        # the run judged its final samples: the exported model's num_samples, drawn with the run seed
        out.update(judge_digits(ev.sample(exported, cfg.eval.num_samples, cfg.seed)))
    out.update({f"eval_{k}": getattr(cfg.eval, k) for k in SETTINGS})
    out["eval_sample_steps_used"] = ev.steps
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return out


def reevaluate(
    root: Path, overrides: Sequence[str], pattern: str = "*", threads: float = 1.0, progress: bool = True
) -> pd.DataFrame:
    """Every finished run under ``root`` re-scored (see :func:`rescore`); one row per run."""
    from tqdm import tqdm

    overrides = check_overrides(overrides)
    folders = run_folders(root, pattern)
    rows = []
    for folder in tqdm(folders, desc="re-scoring", unit="run", disable=not progress):
        rows.append(rescore(folder, overrides, threads))
    return pd.DataFrame(rows)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis.reevaluate", description=__doc__.splitlines()[0])
    ap.add_argument("runs", help="a sweep folder (every finished run under it) or one run folder")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="eval.KEY=VALUE")
    ap.add_argument("--glob", default="*", help="only run folders whose name matches (fnmatch), e.g. 'c10*'")
    ap.add_argument("--out", required=True, help="the CSV to write (never inside a run folder)")
    ap.add_argument("--threads", type=float, default=float(os.cpu_count() or 1), help="torch threads")
    args = ap.parse_args(argv)
    from raydiff.errors import RaydiffError

    out = Path(args.out)
    try:
        root = Path(args.runs)
        folders = run_folders(root, args.glob)  # before any work: a bad path or glob fails at once
        if any(out.resolve().is_relative_to(f.resolve()) for f in folders):
            raise ReevaluateError(f"--out {str(out)!r} lies inside a run folder: write it elsewhere")
        table = reevaluate(
            root, args.overrides, args.glob, args.threads, progress=not os.environ.get("RAYDIFF_NO_PROGRESS")
        )
    except (ReevaluateError, RaydiffError) as exc:
        print(f"analysis.reevaluate: {exc}", file=sys.stderr)
        return 2
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    cols = [c for c in ("run", "final_heldout_loss", "final_fid_domain", "final_recall", "seconds") if c in table]
    print(table[cols].to_string(index=False))
    print(f"wrote {out} ({len(table)} runs)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
