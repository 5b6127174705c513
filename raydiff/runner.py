"""The Python API: ``raydiff.run(config_or_path, overrides) -> RunResult``. The CLI is a shell over it.

:func:`run` is the composition root, and reads top to bottom: config, data, clients, model,
strategy, then the event loop (dry, or on Ray), then the run folder. Everything that can be wrong
with the input (config, data, partition, strategy options) is checked before Ray starts, so a typo
costs milliseconds, not an actor start-up.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional

import numpy as np

from .config import Config
from .config_load import dump_yaml, load_config
from .data import load_dataset, partition, split_holdout
from .errors import ConfigError
from .exchange import make_exchange
from .hetero import class_share, make_availability, sample_profiles
from .model import FlatModel, build_scheduler, build_unet, model_sha256
from .outputs import save_pipeline, write_events, write_evals, write_grid, write_json
from .sim.jobs import LoopResult
from .strategies import Schedule, Strategy, build_strategy, implements_state

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunResult:
    out_dir: Path
    summary: dict[str, Any]


def check_config(cfg: Config, strategy: Optional[Strategy] = None) -> Strategy:
    """Cross-field checks that no single dataclass can make; returns the run's (wrapped, bound) strategy.

    ``strategy``: an already built one (else it is built from ``cfg`` here, which also validates
    ``strategy.name`` and ``strategy.options``).
    """
    s = strategy if strategy is not None else build_strategy(cfg.strategy, cfg.clients.num_clients,
                                                             rng=np.random.default_rng(0))
    check_schedule(cfg, s.schedule(), type(s).__name__)
    if cfg.run.checkpoint_every and not implements_state(s):
        raise ConfigError(f"run.checkpoint_every: the strategy {cfg.strategy.name!r} does not implement "
                          "state_dict() and load_state_dict(), so a checkpoint cannot save it and a resumed run "
                          "would not be the same run. Implement both (README: Write your own strategy), or set "
                          "run.checkpoint_every to null")
    from .metrics import check_eval

    check_eval(cfg)  # sampling steps, Inception weights: before Ray, as every input check
    return s


def check_schedule(cfg: Config, sch: Schedule, who: str) -> None:
    """The strategy's declared scheduling against the population it will run on."""
    n = cfg.clients.num_clients
    if sch.jobs_in_flight < 1 or sch.updates_per_version < 1 or sch.round_reports < 1:
        raise ConfigError(f"strategy.name: {who} declares jobs_in_flight={sch.jobs_in_flight}, updates_per_version="
                          f"{sch.updates_per_version}, round_reports={sch.round_reports}; each must be >= 1")
    if sch.round_based and sch.round_reports > n:
        raise ConfigError(f"strategy.clients_per_round={sch.round_reports} exceeds clients.num_clients={n}")
    if not sch.round_based and sch.jobs_in_flight > n:
        raise ConfigError(f"strategy.concurrency={sch.jobs_in_flight} exceeds clients.num_clients={n}: a client "
                          "trains one job at a time")
    if sch.one_update_per_client and not sch.round_based and sch.updates_per_version > n:
        raise ConfigError(f"strategy.buffer_size={sch.updates_per_version} exceeds clients.num_clients={n}: with "
                          "client-level DP each client puts at most one update into a version, so a version "
                          "needs that many distinct clients")


def default_out_dir(cfg: Config) -> Path:
    return Path("runs") / f"{cfg.name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def _strategy_name(strategy: Strategy) -> str:
    """The import path recorded in config.yaml for a strategy handed over as an instance."""
    cls = type(strategy)
    return f"{cls.__module__}:{cls.__qualname__}"


def run(config: "str | Path | Mapping | Config | None" = None, overrides: Iterable[str] = (),
        out: "str | Path | None" = None, progress: bool = True,
        callback: Optional[Callable[[dict[str, Any]], None]] = None,
        resume: "str | Path | None" = None, strategy: Optional[Strategy] = None) -> RunResult:
    """Run one simulation and write its folder (README: "The run folder").

    ``callback(info)`` is called at every new model version with ``version, vtime, loss`` and the
    job counts so far: for live plots in a notebook, or to inject faults in tests.
    ``resume``: a run folder holding a checkpoint (``run.checkpoint_every``); the run continues
    from it, with the folder's own config, and ends as if it had never stopped.
    ``strategy``: a :class:`raydiff.Strategy` instance to use instead of the one ``strategy.name``
    names (DP, norm bound and EMA from the config still wrap it; config.yaml records its class).
    Resuming such a run needs the same instance again (``run(resume=..., strategy=...)``).
    """
    wall0 = time.perf_counter()
    from .sim import checkpoint

    # 1. the config (and the checkpoint to continue from)
    state = None
    if resume is not None:
        if config is not None or list(overrides):
            raise ConfigError("--resume continues a run with its own config.yaml: give no scenario or --set")
        out = Path(resume)
        state = checkpoint.read(out / checkpoint.CHECKPOINT)
        config = out / "config.yaml"
    cfg = load_config(config, overrides)
    if strategy is not None:
        cfg = replace(cfg, strategy=replace(cfg.strategy, name=_strategy_name(strategy)))

    # 2. data, partition and the simulated clients
    ds = load_dataset(cfg.data)
    train, held = split_holdout(ds, cfg.data.holdout_fraction, np.random.default_rng([cfg.seed, 6]))
    parts = partition(train.labels, cfg.clients.num_clients, cfg.data.partition, cfg.data.beta,
                      np.random.default_rng([cfg.seed, 5]), shards_per_client=cfg.data.shards_per_client,
                      quantity_sigma=cfg.data.quantity_sigma)
    slow = class_share(parts, train.labels, cfg.clients.slow_classes) if cfg.clients.slow_classes else None
    profiles = sample_profiles(cfg.clients, np.random.default_rng([cfg.seed, 4]), slow_score=slow)
    availability = make_availability(cfg.clients, profiles, np.random.default_rng([cfg.seed, 8]))

    # 3. the model, what travels on the wire, and the strategy (all still before Ray)
    size, channels = train.images.shape[-1], train.images.shape[1]
    x0 = FlatModel(build_unet(cfg.model, size, channels, seed=cfg.seed))  # the initial global model
    exchange = make_exchange(cfg, x0.module)
    strat = build_strategy(cfg.strategy, cfg.clients.num_clients, rng=np.random.default_rng([cfg.seed, 9]),
                           mask=exchange.mask, base=strategy)
    check_config(cfg, strat)

    # 4. the run folder's inputs
    out_dir = Path(out) if out is not None else default_out_dir(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(dump_yaml(cfg))
    write_partition(out_dir, parts, train.labels, max(ds.num_classes, 1))
    on_checkpoint = None if not cfg.run.checkpoint_every else (
        lambda st: checkpoint.write(out_dir / checkpoint.CHECKPOINT, st))

    # 5. the event loop: without training (dry run), or on Ray
    if cfg.run.dry_run:
        from .dry_run import run_dry

        loop, extra = run_dry(cfg, strat, x0.size, exchange, profiles, parts, availability, progress, callback,
                              on_checkpoint, state)
        write_events(out_dir / "events.parquet", loop.rows)
        summary = _summary(cfg, loop, wall0)
        summary.update(extra)
        write_json(out_dir / "summary.json", summary)
        return RunResult(out_dir, summary)
    from .ray_setup import keep_ray_local  # before Ray's first import: a local Ray then stays on 127.0.0.1
    keep_ray_local(cfg)
    from .session import Session  # imports Ray: only once the input is known to be good

    with Session(cfg, strat, train.images, held.images, x0.vector(), exchange, train_labels=train.labels,
                 heldout_labels=held.labels) as session:
        loop = session.run(profiles, parts, availability, progress, callback, on_checkpoint, state)
        tail = session.collect(loop)

    # 6. the run folder's results
    (out_dir / "samples").mkdir(exist_ok=True)
    for version, images in tail.grids:
        write_grid(out_dir / "samples" / f"v{version:06d}.png", images)
    write_grid(out_dir / "samples" / "final.png", tail.final_samples)
    real = held.images[np.random.default_rng([cfg.seed, 7]).permutation(len(held.images))[:cfg.eval.num_samples]]
    write_grid(out_dir / "samples" / "real.png", real)  # held-out real images, to compare by eye
    write_events(out_dir / "events.parquet", loop.rows)
    write_evals(out_dir / "evals.parquet", add_privacy(cfg, strat.schedule(), tail.evals))
    x0.load(tail.exported)
    save_pipeline(out_dir / "model", x0.module, build_scheduler(cfg.model))
    summary = _summary(cfg, loop, wall0)
    summary.update(model_sha256=model_sha256(tail.vector), num_params=int(tail.vector.size),
                   actors=session.num_actors,
                   final_heldout_loss=tail.evals[-1]["heldout_loss"] if tail.evals else None,
                   exported_model="ema" if tail.exported is not tail.vector else "global",
                   server_received=tail.server_received,
                   ema_sha256=model_sha256(tail.export_vector) if tail.export_vector is not None else None,
                   **tail.judge)
    write_json(out_dir / "summary.json", summary)
    log.info("run folder: %s", out_dir)
    return RunResult(out_dir, summary)


def write_partition(out_dir: Path, parts: list[np.ndarray], labels: np.ndarray, num_classes: int) -> None:
    """partition.parquet (per-client class counts) and partition.png: the data skew a person can see."""
    from .data.partition_report import class_counts, plot_partition

    table = class_counts(parts, labels, num_classes)
    table.to_parquet(out_dir / "partition.parquet", index=False)
    plot_partition(table, out_dir / "partition.png")


def add_privacy(cfg: Config, schedule: Schedule, evals: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """With client-level DP, each evaluation row gets the (epsilon, delta) spent up to its version.

    Each version is one Gaussian-mechanism step over a sample of clients; the sampling rate is
    (updates per version) / clients, the usual DP-FedAvg accounting (Poisson sampling assumed; async
    arrival is not exactly that, so read epsilon as the standard estimate, not a proof).
    """
    dp = cfg.strategy.dp
    if not dp.enabled:
        return evals
    from .strategies import PrivacyAccountant

    q = min(1.0, schedule.updates_per_version / cfg.clients.num_clients)
    out = []
    for row in sorted(evals, key=lambda r: r["version"]):
        acc = PrivacyAccountant(dp.noise_multiplier, q)
        acc.step(row["version"])
        eps = acc.epsilon(dp.delta) if row["version"] else 0.0
        out.append(dict(row, epsilon=eps, delta=dp.delta))
    return out


def _summary(cfg: Config, loop: LoopResult, wall0: float) -> dict[str, Any]:
    statuses = [r["status"] for r in loop.rows]
    return dict(name=cfg.name, seed=cfg.seed, strategy=cfg.strategy.name, final_version=loop.version,
                updates_applied=statuses.count("applied"), jobs_dispatched=len(loop.rows),
                jobs_dropped=statuses.count("dropped"), jobs_failed=statuses.count("failed"),
                jobs_rejected=statuses.count("rejected"), virtual_time=loop.vtime,
                wall_seconds=time.perf_counter() - wall0, loop_seconds=loop.loop_seconds, interrupted=loop.interrupted,
                actors_replaced=loop.actors_replaced)


__all__ = ["run", "RunResult", "check_config"]
