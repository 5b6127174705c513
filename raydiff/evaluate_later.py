"""``raydiff eval RUN``: compute what a stopped run's bounded wind-down skipped (summary.json's ``not_computed``).

A run stopped by SIGINT/SIGTERM/SIGHUP writes its model, records and summary within ``run.stop_grace_s`` and
skips what does not fit: the final evaluation (held-out loss and FID of the final global model), the final
samples (samples/final.png, the digit judge), the per-class evaluation and the privacy audit. This computes
them afterwards, in this process and without Ray, with the same evaluator code and seeds a run uses, so the
numbers are the ones the run would have written; it updates evals.parquet, samples/final.png and summary.json.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from .errors import RunFolderError

log = logging.getLogger(__name__)


def eval_command(run_dir: str | Path) -> dict[str, Any]:
    """Compute ``not_computed`` for the run folder; returns what was computed (summary.json's new fields)."""
    from .run_folder import FolderLock

    folder = Path(run_dir)
    summary_path = folder / "summary.json"
    if not summary_path.is_file() or not (folder / "config.yaml").is_file():
        raise RunFolderError(f"{str(folder)!r} holds no summary.json and config.yaml: not a run folder that ended")
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    todo = list(summary.get("not_computed") or [])
    if not todo:
        return {"run": str(folder), "computed": [], "note": "nothing to compute: the run skipped nothing"}
    if not (folder / "model" / "model_index.json").is_file():
        raise RunFolderError(f"{str(folder)!r} holds no model/: nothing to evaluate")
    lock = FolderLock(folder)
    lock.acquire()  # no run may be writing this folder meanwhile
    try:
        return _compute(folder, summary, todo)
    finally:
        lock.release()


def _compute(folder: Path, summary: dict[str, Any], todo: list[str]) -> dict[str, Any]:
    import pyarrow.parquet as pq
    from diffusers import UNet2DModel

    from .actors.evaluator import Evaluator
    from .config_load import load_config
    from .data import federated_split
    from .model import FlatModel
    from .outputs import write_evals, write_grid, write_json
    from .runner import (
        CLASS_EVALUATION,
        EVALUATIONS,
        FINAL_SAMPLES,
        GLOBAL_VECTOR,
        PRIVACY_AUDIT,
        audit_privacy,
        privacy_evals,
    )

    cfg = load_config(folder / "config.yaml")
    train, held, _, parts = federated_split(cfg)
    fm = FlatModel(UNet2DModel.from_pretrained(str(folder / "model" / "unet")))
    exported = fm.vector()
    gpath = folder / "model" / GLOBAL_VECTOR
    vector = np.load(gpath, allow_pickle=False) if gpath.is_file() else exported
    ev = Evaluator(
        cfg, held.images, 1.0, heldout_labels=held.labels, train_images=train.images, train_labels=train.labels
    )
    version = int(summary["final_version"])
    done: list[str] = []
    new: dict[str, Any] = {}
    samples = None
    if EVALUATIONS in todo:
        row = ev.evaluate(version, float(summary.get("virtual_time") or 0.0), vector, fid=True)
        rows = pq.read_table(folder / "evals.parquet").to_pylist() if (folder / "evals.parquet").is_file() else []
        events = pq.read_table(folder / "events.parquet").to_pylist()
        from types import SimpleNamespace

        from .strategies import build_strategy

        sch = build_strategy(cfg.strategy, cfg.clients.num_clients, rng=np.random.default_rng(0)).schedule()
        row = privacy_evals(cfg, SimpleNamespace(rows=events), [row], sch)[0]  # type: ignore[arg-type]
        rows = [r for r in rows if r.get("version") != version] + [row]
        write_evals(folder / "evals.parquet", rows)
        from .metrics.suite import DOMAIN_COLUMNS

        new["final_heldout_loss"] = row["heldout_loss"]
        new.update({f"final_{k}": row[k] for k in (*DOMAIN_COLUMNS, "fid_inception") if k in row})
        done.append(EVALUATIONS)
    if FINAL_SAMPLES in todo or CLASS_EVALUATION in todo or PRIVACY_AUDIT in todo:
        samples = ev.sample(exported, cfg.eval.num_samples, cfg.seed)
    if FINAL_SAMPLES in todo and samples is not None:
        (folder / "samples").mkdir(exist_ok=True)
        write_grid(folder / "samples" / "final.png", samples)
        if cfg.eval.judge and cfg.data.dataset == "digits":
            from .digit_judge import judge_digits

            new.update(judge_digits(samples))
        done.append(FINAL_SAMPLES)
    if CLASS_EVALUATION in todo and samples is not None:
        from .hetero import class_share, sample_profiles
        from .utility import write_class_outputs

        slow = class_share(parts, train.labels, cfg.clients.slow_classes) if cfg.clients.slow_classes else None
        profiles = sample_profiles(cfg.clients, np.random.default_rng([cfg.seed, 4]), slow_score=slow)
        classes = ev.class_evaluate(exported, version)
        new.update(write_class_outputs(cfg, folder, classes, samples, train, held, parts, profiles))
        done.append(CLASS_EVALUATION)
    if PRIVACY_AUDIT in todo and samples is not None:
        fm.load(exported)
        new.update(audit_privacy(cfg, fm.module, train, held, parts, samples, folder))
        done.append(PRIVACY_AUDIT)
    summary.update(new)
    left = [n for n in todo if n not in done]
    if left:
        summary["not_computed"] = left
    else:
        summary.pop("not_computed", None)
    if EVALUATIONS in done and gpath.is_file():
        gpath.unlink()
    write_json(folder / "summary.json", summary)
    log.info("raydiff eval: computed %s for %s", ", ".join(done), folder)
    return {"run": str(folder), "computed": done, "not_computed": left, **new}


__all__ = ["eval_command"]
