"""The Python API: ``raydiff.run(config_or_path, overrides) -> RunResult``. The CLI is a shell over it.

Order matters for users: everything that can be wrong with the input (config, data, partition)
is checked before Ray starts, so a typo costs milliseconds, not an actor start-up.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional

import numpy as np

from .config import Config
from .config_load import dump_yaml, load_config
from .data import load_dataset, partition, split_holdout
from .errors import ConfigError
from .hetero import class_share, make_availability, sample_profiles
from .model import FlatModel, build_scheduler, build_unet, count_params, model_sha256
from .outputs import save_pipeline, write_events, write_evals, write_grid, write_json

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunResult:
    out_dir: Path
    summary: dict[str, Any]


def check_config(cfg: Config) -> None:
    """Cross-field checks that no single dataclass can make."""
    s, n = cfg.strategy, cfg.clients.num_clients
    if s.name == "fedavg" and s.clients_per_round > n:
        raise ConfigError(f"strategy.clients_per_round={s.clients_per_round} exceeds clients.num_clients={n}")
    if s.name != "fedavg" and s.concurrency > n:
        raise ConfigError(f"strategy.concurrency={s.concurrency} exceeds clients.num_clients={n}: a client "
                          "trains one job at a time")


def default_out_dir(cfg: Config) -> Path:
    return Path("runs") / f"{cfg.name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def run(config: "str | Path | Mapping | Config | None" = None, overrides: Iterable[str] = (),
        out: "str | Path | None" = None, progress: bool = True,
        callback: Optional[Callable[[dict[str, Any]], None]] = None) -> RunResult:
    """Run one simulation and write its folder (README: "The run folder").

    ``callback(info)`` is called at every new model version with ``version, vtime, loss`` and the
    job counts so far: for live plots in a notebook, or to inject faults in tests.
    """
    wall0 = time.perf_counter()
    cfg = load_config(config, overrides)
    check_config(cfg)
    ds = load_dataset(cfg.data)
    train, held = split_holdout(ds, cfg.data.holdout_fraction, np.random.default_rng([cfg.seed, 6]))
    parts = partition(train.labels, cfg.clients.num_clients, cfg.data.partition, cfg.data.beta,
                      np.random.default_rng([cfg.seed, 5]), shards_per_client=cfg.data.shards_per_client,
                      quantity_sigma=cfg.data.quantity_sigma)
    slow = class_share(parts, train.labels, cfg.clients.slow_classes) if cfg.clients.slow_classes else None
    profiles = sample_profiles(cfg.clients, np.random.default_rng([cfg.seed, 4]), slow_score=slow)
    availability = make_availability(cfg.clients, profiles, np.random.default_rng([cfg.seed, 8]))
    out_dir = Path(out) if out is not None else default_out_dir(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(dump_yaml(cfg))
    write_partition(out_dir, parts, train.labels, max(ds.num_classes, 1))
    if cfg.run.dry_run:
        return _dry_run(cfg, train.images.shape, profiles, parts, availability, out_dir, progress, wall0, callback)
    from .session import Session  # imports Ray: only once the input is known to be good

    with Session(cfg, train.images, held.images) as session:
        loop = session.run(profiles, parts, availability, progress, callback)
        tail = session.collect(loop)
    final = tail["vector"]
    (out_dir / "samples").mkdir(exist_ok=True)
    for version, images in tail["grids"]:
        write_grid(out_dir / "samples" / f"v{version:06d}.png", images)
    write_grid(out_dir / "samples" / "final.png", tail["final_samples"])
    real = held.images[np.random.default_rng([cfg.seed, 7]).permutation(len(held.images))[:cfg.eval.num_samples]]
    write_grid(out_dir / "samples" / "real.png", real)  # held-out real images, to compare by eye
    write_events(out_dir / "events.parquet", loop.rows)
    write_evals(out_dir / "evals.parquet", tail["evals"])
    unet = build_unet(cfg.model, train.images.shape[-1], train.images.shape[1])
    FlatModel(unet).load(final)
    save_pipeline(out_dir / "model", unet, build_scheduler(cfg.model))
    summary = _summary(cfg, loop, wall0)
    summary.update(model_sha256=model_sha256(final), num_params=int(final.size), actors=session.num_actors,
                   final_heldout_loss=tail["evals"][-1]["heldout_loss"] if tail["evals"] else None, **tail["judge"])
    write_json(out_dir / "summary.json", summary)
    log.info("run folder: %s", out_dir)
    return RunResult(out_dir, summary)


def write_partition(out_dir: Path, parts, labels: np.ndarray, num_classes: int) -> None:
    """partition.parquet (per-client class counts) and partition.png: the data skew a person can see."""
    from .data.partition_report import class_counts, plot_partition

    table = class_counts(parts, labels, num_classes)
    table.to_parquet(out_dir / "partition.parquet", index=False)
    plot_partition(table, out_dir / "partition.png")


def _dry_run(cfg: Config, shape: tuple, profiles, parts, availability, out_dir: Path, progress: bool,
             wall0: float, callback) -> RunResult:
    """Schedule without training: the real strategy on empty vectors, the real update size in bytes."""
    from .progress import Progress, chain
    from .sim.executor import DryExecutor
    from .sim.orchestrator import Orchestrator
    from .strategies import make_strategy

    vector_bytes = 4 * count_params(cfg.model, shape[-1], shape[1])
    bar = Progress(cfg, enabled=progress)
    try:
        loop = Orchestrator(cfg, profiles, parts, availability, DryExecutor(make_strategy(cfg.strategy)), None,
                            vector_bytes, on_progress=chain(bar, callback)).run()
    finally:
        bar.close()
    loop_s = loop.loop_seconds
    write_events(out_dir / "events.parquet", loop.rows)
    summary = _summary(cfg, loop, wall0)
    summary.update(dry_run=True, model_sha256=None, vector_bytes=vector_bytes,
                   events_per_second=len(loop.rows) / loop_s if loop_s > 0 else None)
    write_json(out_dir / "summary.json", summary)
    log.info("dry run: %d events in %.2f s (%.0f events/s)", len(loop.rows), loop_s, summary["events_per_second"])
    return RunResult(out_dir, summary)


def _summary(cfg: Config, loop, wall0: float) -> dict[str, Any]:
    statuses = [r["status"] for r in loop.rows]
    return dict(name=cfg.name, seed=cfg.seed, strategy=cfg.strategy.name, final_version=loop.version,
                updates_applied=statuses.count("applied"), jobs_dispatched=len(loop.rows),
                jobs_dropped=statuses.count("dropped"), jobs_failed=statuses.count("failed"),
                jobs_rejected=statuses.count("rejected"), virtual_time=loop.vtime,
                wall_seconds=time.perf_counter() - wall0, loop_seconds=loop.loop_seconds, interrupted=loop.interrupted,
                actors_replaced=loop.actors_replaced)


__all__ = ["run", "RunResult", "check_config"]
