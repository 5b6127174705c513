"""The Python API: ``raydiff.run(config_or_path, overrides) -> RunResult``. The CLI is a shell over it.

:func:`run` is the composition root, and reads top to bottom: config, data, clients, model,
strategy, then the event loop (dry, or on Ray), then the run folder. Everything that can be wrong
with the input (config, data, partition, strategy options) is checked before Ray starts, so a typo
costs milliseconds, not an actor start-up.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .config import Config
from .config_load import dump_yaml, load_config
from .data import federated_split
from .errors import ConfigError
from .exchange import make_exchange
from .hetero import class_share, make_availability, sample_profiles
from .model import FlatModel, build_scheduler, build_unet, model_sha256
from .outputs import save_pipeline, write_evals, write_events, write_grid, write_json
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
    s = (
        strategy
        if strategy is not None
        else build_strategy(cfg.strategy, cfg.clients.num_clients, rng=np.random.default_rng(0))
    )
    check_schedule(cfg, s.schedule(), type(s).__name__)
    if cfg.run.checkpoint_every and not implements_state(s):
        raise ConfigError(
            f"run.checkpoint_every: the strategy {cfg.strategy.name!r} does not implement "
            "state_dict() and load_state_dict(), so a checkpoint cannot save it and a resumed run "
            "would not be the same run. Implement both (README: Write your own strategy), or set "
            "run.checkpoint_every to null"
        )
    from .metrics import check_eval

    check_eval(cfg)  # sampling steps, Inception weights: before Ray, as every input check
    return s


def check_schedule(cfg: Config, sch: Schedule, who: str) -> None:
    """The strategy's declared scheduling against the population it will run on."""
    n = cfg.clients.num_clients
    if sch.jobs_in_flight < 1 or sch.updates_per_version < 1 or sch.round_reports < 1:
        raise ConfigError(
            f"strategy.name: {who} declares jobs_in_flight={sch.jobs_in_flight}, updates_per_version="
            f"{sch.updates_per_version}, round_reports={sch.round_reports}; each must be >= 1"
        )
    if sch.round_based and sch.round_reports > n:
        raise ConfigError(f"strategy.clients_per_round={sch.round_reports} exceeds clients.num_clients={n}")
    if not sch.round_based and sch.jobs_in_flight > n:
        raise ConfigError(
            f"strategy.concurrency={sch.jobs_in_flight} exceeds clients.num_clients={n}: a client "
            "trains one job at a time"
        )
    if sch.one_update_per_client and not sch.round_based and sch.updates_per_version > n:
        raise ConfigError(
            f"strategy.buffer_size={sch.updates_per_version} exceeds clients.num_clients={n}: with "
            "client-level DP each client puts at most one update into a version, so a version "
            "needs that many distinct clients"
        )


def default_out_dir(cfg: Config) -> Path:
    return Path("runs") / f"{cfg.name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def _strategy_name(strategy: Strategy) -> str:
    """The import path recorded in config.yaml for a strategy handed over as an instance."""
    cls = type(strategy)
    return f"{cls.__module__}:{cls.__qualname__}"


def run(
    config: str | Path | Mapping | Config | None = None,
    overrides: Iterable[str] = (),
    out: str | Path | None = None,
    progress: bool = True,
    callback: Optional[Callable[[dict[str, Any]], None]] = None,
    resume: str | Path | None = None,
    strategy: Optional[Strategy] = None,
    force: bool = False,
) -> RunResult:
    """Run one simulation and write its folder (README: "The run folder").

    ``callback(info)`` is called at every new model version with ``version, vtime, loss`` and the
    job counts so far: for live plots in a notebook, or to inject faults in tests.
    ``resume``: a run folder holding a checkpoint (``run.checkpoint_every``); the run continues
    from it, with the folder's own config, and ends as if it had never stopped.
    ``strategy``: a :class:`raydiff.Strategy` instance to use instead of the one ``strategy.name``
    names (DP, norm bound and EMA from the config still wrap it; config.yaml records its class).
    Resuming such a run needs the same instance again (``run(resume=..., strategy=...)``).
    ``force``: write into ``out`` even when it holds another config's finished run, or files that are
    not a run's (README: "The run folder's life cycle").

    The folder is locked while the run writes, and its ``status.json`` says ``running`` first and
    ``finished``, ``interrupted`` or ``failed`` last. SIGINT, SIGTERM and SIGHUP stop the run with a
    consistent folder (``raydiff.signals``); resuming a finished run changes nothing.
    """
    from .signals import SignalGuard

    ctx = _Held()
    with SignalGuard():
        try:
            result = _run(config, overrides, out, progress, callback, resume, strategy, force, ctx)
        except BaseException as exc:
            cause = _close_after_error(ctx, exc)
            if cause is exc:
                raise
            raise cause from None  # LoopAborted: the error that stopped the loop (its traceback kept)
        _close_done(ctx, result)
        return result


@dataclass
class _Held:
    """The run folder once :func:`_run` has locked it, and whether this run started writing in it."""

    folder: Any = None  # a run_folder.RunFolder
    started: bool = False


def _close_done(ctx: _Held, result: RunResult) -> None:
    """The last write of a run that returned: its final status."""
    from .run_folder import FINISHED, INTERRUPTED
    from .signals import defer, last_signal, signal_name

    defer()  # a signal now would leave status.json saying "running" for a complete folder

    if ctx.folder is None:
        return
    if not ctx.started:  # resuming a finished run: nothing was written
        ctx.folder.close(None)
    elif result.summary.get("interrupted"):
        ctx.folder.close(
            INTERRUPTED,
            f"stopped by {signal_name(last_signal()) or 'SIGINT'}",
            version=result.summary.get("final_version"),
        )
    else:
        ctx.folder.close(FINISHED, version=result.summary.get("final_version"))


def _close_after_error(ctx: _Held, exc: BaseException) -> BaseException:
    """A run that raised: keep what the loop settled (events.parquet), record why, release the lock.

    Returns the exception to raise: the loop's own error when the loop stopped on one."""
    from .run_folder import FAILED, INTERRUPTED
    from .signals import defer
    from .sim.orchestrator import LoopAborted

    defer()

    cause: BaseException = exc.cause if isinstance(exc, LoopAborted) else exc
    folder = ctx.folder
    if folder is None:
        return cause
    if not ctx.started:  # refused before this run wrote anything (a bad checkpoint, a finished run's lock)
        folder.close(None)
        return cause
    try:
        if isinstance(exc, LoopAborted):
            write_events(folder.path / "events.parquet", exc.result.rows)
    except Exception:  # the status below must still be written
        log.exception("writing the events of a failed run")
    if isinstance(cause, KeyboardInterrupt):
        folder.close(INTERRUPTED, f"stopped by {cause} before the run folder was complete")
    else:
        text = str(cause).strip().splitlines()
        folder.close(FAILED, f"{type(cause).__name__}: {text[0] if text else ''}"[:500])
    return cause


def _run(
    config: str | Path | Mapping | Config | None,
    overrides: Iterable[str],
    out: str | Path | None,
    progress: bool,
    callback: Optional[Callable[[dict[str, Any]], None]],
    resume: str | Path | None,
    strategy: Optional[Strategy],
    force: bool,
    ctx: _Held,
) -> RunResult:
    """:func:`run`'s body: the composition root, top to bottom."""
    wall0 = time.perf_counter()
    from . import run_folder
    from .sim import checkpoint

    # 1. the config (and the checkpoint to continue from)
    state = None
    if resume is not None:
        if config is not None or list(overrides):
            raise ConfigError("--resume continues a run with its own config.yaml: give no scenario or --set")
        folder = out = Path(resume)
        ctx.folder, _ = run_folder.RunFolder.reopen(folder)  # locked: no second run resumes it at the same time
        config = folder / "config.yaml"
    cfg = load_config(config, overrides)
    if strategy is not None:
        cfg = replace(cfg, strategy=replace(cfg.strategy, name=_strategy_name(strategy)))
    sha = run_folder.config_sha256(cfg)
    if resume is not None:
        if run_folder.inspect(folder, sha).status == run_folder.FINISHED:
            return _already_finished(folder)
        state = checkpoint.read(folder / checkpoint.CHECKPOINT, sha)  # of this very config, or exit 2

    # 2. data, partition and the simulated clients
    train, held, num_classes, parts = federated_split(cfg)
    slow = class_share(parts, train.labels, cfg.clients.slow_classes) if cfg.clients.slow_classes else None
    profiles = sample_profiles(cfg.clients, np.random.default_rng([cfg.seed, 4]), slow_score=slow)
    availability = make_availability(cfg.clients, profiles, np.random.default_rng([cfg.seed, 8]))

    # 3. the model, what travels on the wire, and the strategy (all still before Ray)
    size, channels = train.images.shape[-1], train.images.shape[1]
    x0 = FlatModel(build_unet(cfg.model, size, channels, seed=cfg.seed))  # the initial global model
    exchange = make_exchange(cfg, x0.module)
    strat = build_strategy(
        cfg.strategy,
        cfg.clients.num_clients,
        rng=np.random.default_rng([cfg.seed, 9]),
        mask=exchange.mask,
        base=strategy,
    )
    check_config(cfg, strat)
    if state is not None:  # the checkpoint fits this run (sizes, clients, states), before anything is written
        checkpoint.check_fits(
            state,
            parts,
            availability,
            0 if cfg.run.dry_run else x0.size,
            strat,
            path=Path(str(resume)) / checkpoint.CHECKPOINT,
        )

    # 4. the run folder's inputs
    out_dir = Path(out) if out is not None else default_out_dir(cfg)
    if resume is None:  # checked, locked, emptied of an older run's files, status.json "running" written first
        ctx.folder = run_folder.RunFolder.create(out_dir, cfg, force)
        ctx.started = True
        (out_dir / "config.yaml").write_text(dump_yaml(cfg))
        write_partition(out_dir, parts, train.labels, max(num_classes, 1))
    else:  # config.yaml and the partition are the checkpoint's own (same sha256): left as they are
        ctx.folder.mark_running(sha)
        ctx.started = True
    on_checkpoint = (
        None
        if not cfg.run.checkpoint_every
        else (lambda st: checkpoint.write(out_dir / checkpoint.CHECKPOINT, st, sha))
    )

    # 5. the event loop: without training (dry run), or on Ray
    if cfg.run.dry_run:
        from .dry_run import run_dry

        loop, extra = run_dry(
            cfg, strat, x0.size, exchange, profiles, parts, availability, progress, callback, on_checkpoint, state
        )
        write_events(out_dir / "events.parquet", loop.rows)
        summary = _summary(cfg, loop, wall0)
        summary.update(extra, **privacy_summary(cfg, loop))
        write_json(out_dir / "summary.json", summary)
        return RunResult(out_dir, summary)
    from .ray_setup import keep_ray_local  # before Ray's first import: a local Ray then stays on 127.0.0.1

    keep_ray_local(cfg)
    from .session import Session  # imports Ray: only once the input is known to be good
    from .signals import reinstall as reinstall_signal_handlers

    with Session(
        cfg,
        strat,
        train.images,
        held.images,
        x0.vector(),
        exchange,
        train_labels=train.labels,
        heldout_labels=held.labels,
    ) as session:
        reinstall_signal_handlers()  # ray.init replaced SIGTERM's handler with one that aborts mid-write
        loop = session.run(profiles, parts, availability, progress, callback, on_checkpoint, state)
        tail = session.collect(loop)

    # 6. the run folder's results
    (out_dir / "samples").mkdir(exist_ok=True)
    for version, images in tail.grids:
        write_grid(out_dir / "samples" / f"v{version:06d}.png", images)
    write_grid(out_dir / "samples" / "final.png", tail.final_samples)
    real = held.images[np.random.default_rng([cfg.seed, 7]).permutation(len(held.images))[: cfg.eval.num_samples]]
    write_grid(out_dir / "samples" / "real.png", real)  # held-out real images, to compare by eye
    write_events(out_dir / "events.parquet", loop.rows)
    write_evals(out_dir / "evals.parquet", privacy_evals(cfg, loop, tail.evals))
    x0.load(tail.exported)
    save_pipeline(out_dir / "model", x0.module, build_scheduler(cfg.model))
    summary = _summary(cfg, loop, wall0)
    summary.update(
        model_sha256=model_sha256(tail.vector),
        num_params=int(tail.vector.size),
        actors=session.num_actors,
        final_heldout_loss=tail.evals[-1]["heldout_loss"] if tail.evals else None,
        exported_model="ema" if tail.exported is not tail.vector else "global",
        server_received=tail.server_received,
        ema_sha256=model_sha256(tail.export_vector) if tail.export_vector is not None else None,
        **tail.judge,
        **privacy_summary(cfg, loop),
    )
    write_json(out_dir / "summary.json", summary)  # complete even if the audit below fails or is interrupted
    if cfg.eval.privacy_audit.enabled and not loop.interrupted:
        summary.update(audit_privacy(cfg, x0.module, train, held, parts, tail.final_samples, out_dir))
        summary["wall_seconds"] = time.perf_counter() - wall0
        write_json(out_dir / "summary.json", summary)
    log.info("run folder: %s", out_dir)
    return RunResult(out_dir, summary)


def write_partition(out_dir: Path, parts: list[np.ndarray], labels: np.ndarray, num_classes: int) -> None:
    """partition.parquet (per-client class counts) and partition.png: the data skew a person can see."""
    from .data.partition_report import class_counts, plot_partition

    table = class_counts(parts, labels, num_classes)
    table.to_parquet(out_dir / "partition.parquet", index=False)
    plot_partition(table, out_dir / "partition.png")


def privacy_evals(cfg: Config, loop: LoopResult, evals: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """With client-level DP, each evaluation row gets the privacy spent by its version (README, "Differential
    privacy"): ``epsilon`` (rigorous, worst client), ``epsilon_median``, ``epsilon_sampled`` (valid only for
    uniform random selection), ``delta`` and the sampling rates, all from who really took part (the events)."""
    dp = cfg.strategy.dp
    if not dp.enabled:
        return evals
    from .privacy import privacy_columns

    return privacy_columns(evals, loop.rows, cfg.clients.num_clients, dp.noise_multiplier, dp.delta)


def privacy_summary(cfg: Config, loop: LoopResult) -> dict[str, Any]:
    """summary.json's privacy fields with client-level DP (the final version's), else none."""
    dp = cfg.strategy.dp
    if not dp.enabled:
        return {}
    from .privacy import summary_fields

    return summary_fields(loop.rows, cfg.clients.num_clients, dp.noise_multiplier, dp.delta, loop.version)


def audit_privacy(
    cfg: Config, module: Any, train: Any, held: Any, parts: list[np.ndarray], samples: np.ndarray, out_dir: Path
) -> dict[str, Any]:
    """The end-of-run privacy audit of the exported model (``eval.privacy_audit``): membership inference and
    memorisation, on the run's own final samples; writes privacy.parquet and privacy.png, returns the
    summary.json fields. In the driver, on its GPU when the run trains on one."""
    import torch

    from .privacy.audit import audit_trained, write_audit

    device = "cuda" if cfg.train.device != "cpu" and torch.cuda.is_available() else "cpu"
    cpu0 = time.process_time()
    res = audit_trained(cfg, module.to(device), train, held, parts, samples, device=device)
    write_audit(res, out_dir)
    log.info(
        "privacy audit: membership AUC %.3f, TPR@1%%FPR %.3f, extraction rate %.3f (%.1f s, %.1f s of CPU with "
        "the plot)",
        res.mia_auc,
        res.mia_tpr_at_1pct_fpr,
        res.extraction_rate,
        res.privacy_audit_seconds,
        time.process_time() - cpu0,
    )
    return res.summary()


def _summary(cfg: Config, loop: LoopResult, wall0: float) -> dict[str, Any]:
    from .signals import last_signal, signal_name

    statuses = [r["status"] for r in loop.rows]
    return dict(
        name=cfg.name,
        seed=cfg.seed,
        strategy=cfg.strategy.name,
        final_version=loop.version,
        updates_applied=statuses.count("applied"),
        jobs_dispatched=len(loop.rows),
        jobs_dropped=statuses.count("dropped"),
        jobs_failed=statuses.count("failed"),
        jobs_rejected=statuses.count("rejected"),
        virtual_time=loop.vtime,
        wall_seconds=time.perf_counter() - wall0,
        loop_seconds=loop.loop_seconds,
        interrupted=loop.interrupted,
        stop_signal=signal_name(last_signal()) if loop.interrupted else None,
        actors_replaced=loop.actors_replaced,
    )


def _already_finished(out: Path) -> RunResult:
    """``--resume`` of a finished run: say so and change nothing."""
    import json

    try:
        summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        summary = {}
    log.info("%s already finished (version %s); there is nothing to resume", out, summary.get("final_version"))
    return RunResult(out, dict(summary, already_finished=True))


__all__ = ["RunResult", "check_config", "run"]
