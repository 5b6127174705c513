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
from .exchange import make_exchange
from .model import FlatModel, build_scheduler, build_unet, model_sha256
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
    from .metrics import check_eval

    check_eval(cfg)  # sampling steps, Inception weights: before Ray, as every input check


def default_out_dir(cfg: Config) -> Path:
    return Path("runs") / f"{cfg.name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def run(config: "str | Path | Mapping | Config | None" = None, overrides: Iterable[str] = (),
        out: "str | Path | None" = None, progress: bool = True,
        callback: Optional[Callable[[dict[str, Any]], None]] = None,
        resume: "str | Path | None" = None) -> RunResult:
    """Run one simulation and write its folder (README: "The run folder").

    ``callback(info)`` is called at every new model version with ``version, vtime, loss`` and the
    job counts so far: for live plots in a notebook, or to inject faults in tests.
    ``resume``: a run folder holding a checkpoint (``run.checkpoint_every``); the run continues
    from it, with the folder's own config, and ends as if it had never stopped.
    """
    wall0 = time.perf_counter()
    from .sim import checkpoint

    state = None
    if resume is not None:
        if config is not None or list(overrides):
            raise ConfigError("--resume continues a run with its own config.yaml: give no scenario or --set")
        out = Path(resume)
        state = checkpoint.read(out / checkpoint.CHECKPOINT)
        config = out / "config.yaml"
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
    size, channels = train.images.shape[-1], train.images.shape[1]
    x0 = FlatModel(build_unet(cfg.model, size, channels, seed=cfg.seed))  # the initial global model
    exchange = make_exchange(cfg, x0.module)
    hooks = dict(resume=state, on_checkpoint=None if not cfg.run.checkpoint_every else
                 (lambda st: checkpoint.write(out_dir / checkpoint.CHECKPOINT, st)))
    if cfg.run.dry_run:
        return _dry_run(cfg, x0.size, exchange, profiles, parts, availability, out_dir, progress, wall0, callback,
                        hooks)
    from .session import Session  # imports Ray: only once the input is known to be good

    with Session(cfg, train.images, held.images, x0.vector(), exchange, train_labels=train.labels,
                 heldout_labels=held.labels) as session:
        loop = session.run(profiles, parts, availability, progress, callback, hooks)
        tail = session.collect(loop)
    final, exported = tail["vector"], tail["exported"]
    (out_dir / "samples").mkdir(exist_ok=True)
    for version, images in tail["grids"]:
        write_grid(out_dir / "samples" / f"v{version:06d}.png", images)
    write_grid(out_dir / "samples" / "final.png", tail["final_samples"])
    real = held.images[np.random.default_rng([cfg.seed, 7]).permutation(len(held.images))[:cfg.eval.num_samples]]
    write_grid(out_dir / "samples" / "real.png", real)  # held-out real images, to compare by eye
    write_events(out_dir / "events.parquet", loop.rows)
    write_evals(out_dir / "evals.parquet", add_privacy(cfg, tail["evals"]))
    x0.load(exported)
    save_pipeline(out_dir / "model", x0.module, build_scheduler(cfg.model))
    summary = _summary(cfg, loop, wall0)
    summary.update(model_sha256=model_sha256(final), num_params=int(final.size), actors=session.num_actors,
                   final_heldout_loss=tail["evals"][-1]["heldout_loss"] if tail["evals"] else None,
                   exported_model="ema" if exported is not final else "global",
                   server_received=tail["server_received"],
                   ema_sha256=model_sha256(tail["ema"]) if tail["ema"] is not None else None, **tail["judge"])
    write_json(out_dir / "summary.json", summary)
    log.info("run folder: %s", out_dir)
    return RunResult(out_dir, summary)


def write_partition(out_dir: Path, parts, labels: np.ndarray, num_classes: int) -> None:
    """partition.parquet (per-client class counts) and partition.png: the data skew a person can see."""
    from .data.partition_report import class_counts, plot_partition

    table = class_counts(parts, labels, num_classes)
    table.to_parquet(out_dir / "partition.parquet", index=False)
    plot_partition(table, out_dir / "partition.png")


def add_privacy(cfg: Config, evals: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """With client-level DP, each evaluation row gets the (epsilon, delta) spent up to its version.

    Each version is one Gaussian-mechanism step over a sample of clients; the sampling rate is
    (updates per version) / clients, the usual DP-FedAvg accounting (Poisson sampling assumed; async
    arrival is not exactly that, so read epsilon as the standard estimate, not a proof).
    """
    dp = cfg.strategy.dp
    if not dp.enabled:
        return evals
    from .strategies import PrivacyAccountant

    st = cfg.strategy
    per_version = st.buffer_size if st.name == "fedbuff" else st.clients_per_round
    q = min(1.0, per_version / cfg.clients.num_clients)
    out = []
    for row in sorted(evals, key=lambda r: r["version"]):
        acc = PrivacyAccountant(dp.noise_multiplier, q)
        acc.step(row["version"])
        eps = acc.epsilon(dp.delta) if row["version"] else 0.0
        out.append(dict(row, epsilon=eps, delta=dp.delta))
    return out


def _dry_run(cfg: Config, size: int, exchange, profiles, parts, availability, out_dir: Path, progress: bool,
             wall0: float, callback, hooks: dict[str, Any]) -> RunResult:
    """Schedule without training: the real strategy on empty vectors, the real update size in bytes."""
    from .progress import Progress, chain
    from .sim.executor import DryExecutor
    from .sim.orchestrator import Orchestrator
    from .strategies import make_strategy

    bar = Progress(cfg, enabled=progress)
    strategy = make_strategy(cfg.strategy, np.random.default_rng([cfg.seed, 9]))
    down, up = exchange.down_bytes(size), exchange.up_bytes(size)  # up: one trial encode (top-k sorts)
    try:
        loop = Orchestrator(cfg, profiles, parts, availability, DryExecutor(strategy), None,
                            down, up, on_progress=chain(bar, callback),
                            **hooks).run()
    finally:
        bar.close()
    loop_s = loop.loop_seconds
    write_events(out_dir / "events.parquet", loop.rows)
    summary = _summary(cfg, loop, wall0)
    summary.update(dry_run=True, model_sha256=None, vector_bytes=4 * size, num_params=size,
                   upload_bytes=up, download_bytes=down,
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
