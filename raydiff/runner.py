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
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
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
from .model import FlatModel, build_scheduler, build_unet, model_sha256, num_classes_of
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
    if cfg.run.checkpoint_every:
        check_state_savable(cfg, s)
    from .metrics import check_eval

    check_eval(cfg)  # sampling steps, Inception weights: before Ray, as every input check
    from .trackers import check_trackers

    check_trackers(cfg.run.log)  # run.log's libraries installed (raydiff[track]), before Ray
    return s


def check_state_savable(cfg: Config, s: Strategy) -> None:
    """The strategy's ``state_dict()`` goes into a checkpoint: a value that cannot (a set, an object) is a
    ConfigError now, before the run starts, not at the first checkpoint."""
    from .errors import CheckpointError
    from .sim.checkpoint import check_encodable

    try:
        check_encodable(s.state_dict(), "state_dict()")
    except CheckpointError as exc:
        raise ConfigError(
            f"run.checkpoint_every: the strategy {cfg.strategy.name!r} returns a state_dict() that a "
            f"checkpoint cannot save ({exc}); return numbers, strings, None, lists, tuples, dicts or "
            "numpy arrays, or set run.checkpoint_every to null"
        ) from None
    except Exception as exc:  # noqa: BLE001 - the user's state_dict() itself raised
        raise ConfigError(
            f"run.checkpoint_every: the strategy {cfg.strategy.name!r} raised {type(exc).__name__} in "
            f"state_dict(): {exc}"
        ) from None


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
    with SignalGuard(), ctx.teardown:  # Ray is torn down last: after the status, so a slow teardown costs nothing
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
    """The run folder once :func:`_run` has locked it, whether this run started writing in it, its records,
    and what to tear down after the last status (the Ray session)."""

    folder: Any = None  # a run_folder.RunFolder
    started: bool = False
    records: Any = None  # a records.Records once the folder is written
    phase: str = "start-up"  # what the run was doing: named in the status when a signal stops it
    wall0: float = 0.0
    session: Any = None
    teardown: ExitStack = field(default_factory=ExitStack)


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
        skipped = result.summary.get("not_computed") or []
        ctx.folder.close(
            INTERRUPTED,
            f"stopped by {result.summary.get('stop_signal') or signal_name(last_signal()) or 'SIGINT'} during "
            f"{result.summary.get('stop_phase') or 'the event loop'}"
            + (f"; not computed: {', '.join(skipped)} (raydiff eval computes them)" if skipped else ""),
            version=result.summary.get("final_version"),
        )
    else:
        ctx.folder.close(FINISHED, version=result.summary.get("final_version"))
    from .signals import seconds_left, stopping

    if stopping():  # the wind-down's length, for the log (issue 23: at most run.stop_grace_s)
        log.info("status written %.1f s after the signal", -seconds_left(0.0))
    if ctx.records is not None and ctx.started:  # the trackers last: MLflow copies the complete folder
        ctx.records.close(INTERRUPTED if result.summary.get("interrupted") else FINISHED, ctx.folder.path)


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
        rows = exc.result.rows if isinstance(exc, LoopAborted) else None
        _keep_records(ctx, rows, isinstance(cause, KeyboardInterrupt))
    except Exception:  # the status below must still be written
        log.exception("writing the events of a failed run")
    if isinstance(cause, KeyboardInterrupt):
        from .signals import last_signal, signal_name

        signum = getattr(cause, "signum", None)
        name = signal_name(signum) if signum is not None else (signal_name(last_signal()) or "SIGINT")
        folder.close(INTERRUPTED, f"stopped by {name} during {ctx.phase}, before the run folder was complete")
    else:
        folder.close(FAILED, failure_reason(cause))
    return cause


def _keep_records(ctx: _Held, rows: Optional[list[dict[str, Any]]], interrupted: bool = False) -> None:
    """A run that raised keeps what it settled: events.parquet from the loop's rows, else from its stream."""
    from .records import has_stream, stream_rows

    path = ctx.folder.path
    records = ctx.records
    if records is not None:
        records.close_stream()
    if rows is None and has_stream(path):
        rows = stream_rows(path)
    if rows is not None:
        write_events(path / "events.parquet", rows)
    if records is not None:
        records.close("interrupted" if interrupted else "failed", None, compacted=rows is not None)


def failure_reason(cause: BaseException, limit: int = 800) -> str:
    """status.json's reason for a failed run: the error's first line and, when it carries a (remote)
    traceback, that traceback's last line, the exception itself (``ValueError: boom``); no ANSI colours."""
    from .errors import strip_ansi

    lines = [ln.strip() for ln in strip_ansi(str(cause)).strip().splitlines() if ln.strip()]
    head = lines[0] if lines else ""
    if len(lines) > 1 and lines[-1] != head:
        tail = lines[-1]
        budget = max(limit // 2, limit - len(tail) - len(type(cause).__name__) - 8)
        return f"{type(cause).__name__}: {head[:budget]} ... {tail}"[:limit]
    return f"{type(cause).__name__}: {head}"[:limit]


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
    wall0 = ctx.wall0 = time.perf_counter()
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
    if strategy is not None:  # config.yaml records the instance's class and options, so it reruns this run
        from .strategies.registry import instance_options

        if cfg.strategy.options and resume is None:
            raise ConfigError(
                f"strategy.options.{next(iter(cfg.strategy.options))}: given beside a strategy instance "
                "(raydiff.run(..., strategy=obj)), whose own options are used and recorded; set them on "
                "the instance, or name the class with strategy.name and pass no instance"
            )
        opts = instance_options(strategy)
        cfg = replace(cfg, strategy=replace(cfg.strategy, name=_strategy_name(strategy), options=opts))
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
    # the initial global model (model.conditional: a class embedding for the training labels' classes)
    x0 = FlatModel(build_unet(cfg.model, size, channels, seed=cfg.seed, num_classes=num_classes_of(train.labels)))
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

    # 5. the records: every settled job and evaluation goes to the folder's stream (and run.log's trackers) at once
    ctx.records = records = open_records(cfg, out_dir, state)
    if cfg.strategy.dp.enabled and cfg.run.log:  # what the trackers show of an evaluation: with its epsilon
        records.enrich = lambda row: _with_epsilon(cfg, ctx, row, strat.schedule())

    # 6. the event loop: without training (dry run), or on Ray
    if cfg.run.dry_run:
        from .dry_run import run_dry
        from .signals import hold

        ctx.phase = "the event loop"
        loop, extra = run_dry(
            cfg,
            strat,
            x0.size,
            exchange,
            profiles,
            parts,
            availability,
            progress,
            callback,
            on_checkpoint,
            state,
            records=records,
        )
        ctx.phase = "writing the run folder"
        with hold():
            write_events(out_dir / "events.parquet", loop.rows)
            summary = _summary(cfg, loop, wall0)
            summary.update(extra, **privacy_summary(cfg, loop, strat.schedule()))
            _note_stop(summary, ctx)
            write_json(out_dir / "summary.json", summary)
            records.close_stream()
            records.remove_stream()
        return RunResult(out_dir, summary)
    from .ray_setup import keep_ray_local  # before Ray's first import: a local Ray then stays on 127.0.0.1

    keep_ray_local(cfg)
    from .session import Session  # imports Ray: only once the input is known to be good
    from .signals import reinstall as reinstall_signal_handlers

    # torn down by run() after the last status: a slow Ray shutdown never delays the folder
    session = ctx.teardown.enter_context(
        Session(
            cfg,
            strat,
            train.images,
            held.images,
            x0.vector(),
            exchange,
            train_labels=train.labels,
            heldout_labels=held.labels,
        )
    )
    ctx.session = session
    reinstall_signal_handlers()  # ray.init replaced SIGTERM's handler with one that aborts mid-write
    ctx.phase = "the event loop"
    loop = session.run(profiles, parts, availability, progress, callback, on_checkpoint, state, records=records)
    return _finish(cfg, ctx, session, loop, out_dir, x0, train, held, parts, profiles, strat, wall0)


# the steps after the loop that a signal's grace period may skip (summary.json's not_computed; raydiff eval)
EVALUATIONS, FINAL_SAMPLES, CLASS_EVALUATION, PRIVACY_AUDIT = (
    "final_evaluation",
    "final_samples",
    "class_evaluation",
    "privacy_audit",
)
_PHASES = {
    EVALUATIONS: "the final evaluation (held-out loss, FID)",
    FINAL_SAMPLES: "the final sampling",
    CLASS_EVALUATION: "the per-class evaluation",
    PRIVACY_AUDIT: "the privacy audit",
}


def _reserve_s(grace: float) -> float:
    """Of the grace period, what the optional steps leave for the last writes (evals, grids, summary, status) and
    for what follows the status: Ray's teardown and the interpreter's exit (measured under a load of 35 on 2
    cores: status 15 s after SIGTERM with a 5 s reserve, exit 10 to 17 s later; a batch scheduler's SIGKILL comes
    30 s after its SIGTERM)."""
    return min(10.0, 0.5 * grace)


def _finish(
    cfg: Config,
    ctx: _Held,
    session: Any,
    loop: LoopResult,
    out_dir: Path,
    x0: FlatModel,
    train: Any,
    held: Any,
    parts: list[np.ndarray],
    profiles: list[Any],
    strat: Strategy,
    wall0: float,
) -> RunResult:
    """After the loop, in three phases. (1) What the folder cannot do without: events, model, summary, with
    signals held (a signal is noted, and the rest then skipped). (2) The final evaluation, final samples,
    per-class evaluation and privacy audit: each is waited for without bound in a run nobody stopped, but
    once a signal came (before or during them), only within ``run.stop_grace_s`` of it; what does not fit
    is listed in summary.json's ``not_computed`` and ``raydiff eval RUN`` computes it later. (3) The last
    writes, signals held again."""
    from ray.exceptions import GetTimeoutError

    from .signals import hold, note_stop, seconds_left, stopping

    grace = cfg.run.stop_grace_s
    sch = strat.schedule()

    def budget() -> Optional[float]:
        return None if not stopping() else seconds_left(grace) - _reserve_s(grace)

    # (1) the essentials
    ctx.phase = "writing the run folder"
    with hold():
        t = budget()
        tail = session.essentials(loop, timeout=None if t is None else max(t, 2.0))
        write_events(out_dir / "events.parquet", loop.rows)
        x0.load(tail.exported)
        save_pipeline(out_dir / "model", x0.module, build_scheduler(cfg.model))
        (out_dir / "samples").mkdir(exist_ok=True)
        real = held.images[np.random.default_rng([cfg.seed, 7]).permutation(len(held.images))[: cfg.eval.num_samples]]
        write_grid(out_dir / "samples" / "real.png", real)  # held-out real images, to compare by eye
        summary = _summary(cfg, loop, wall0)
        summary.update(
            model_sha256=model_sha256(tail.vector),
            num_params=int(tail.vector.size),
            actors=session.num_actors,
            final_heldout_loss=None,
            exported_model="ema" if tail.exported is not tail.vector else "global",
            server_received=tail.server_received,
            ema_sha256=model_sha256(tail.export_vector) if tail.export_vector is not None else None,
            **privacy_summary(cfg, loop, sch),
        )
        todo = [EVALUATIONS, FINAL_SAMPLES, CLASS_EVALUATION]
        if cfg.eval.privacy_audit.enabled:
            todo.append(PRIVACY_AUDIT)
        if tail.exported is not tail.vector:  # raydiff eval scores the global model, which model/ does not hold
            np.save(out_dir / "model" / GLOBAL_VECTOR, tail.vector, allow_pickle=False)
        _write_progress(cfg, out_dir, loop, tail, summary, todo, ctx, sch)

    # (2) what may be skipped
    done: list[str] = []
    for name in list(todo):
        if name in (CLASS_EVALUATION, PRIVACY_AUDIT) and tail.final_samples is None:
            continue  # both need the final samples
        if name == PRIVACY_AUDIT and (loop.interrupted or stopping()):
            continue  # minutes of CPU in this process: never in a wind-down (raydiff eval or raydiff audit later)
        t = budget()
        if t is not None and t <= 0:
            continue
        ctx.phase = _PHASES[name]
        log.info("after the loop: %s", ctx.phase)
        try:
            if name == EVALUATIONS:
                session.wait_evals(tail, loop, timeout=t)
            elif name == FINAL_SAMPLES:
                session.wait_final(tail, timeout=t)
            elif name == CLASS_EVALUATION:
                session.wait_classes(tail, timeout=t)
                from .utility import write_class_outputs  # utility and per-class quality (issue 22)

                with hold():
                    summary.update(
                        write_class_outputs(
                            cfg, out_dir, tail.classes, tail.final_samples, train, held, parts, profiles
                        )
                    )
            else:
                summary.update(audit_privacy(cfg, x0.module, train, held, parts, tail.final_samples, out_dir))
        except GetTimeoutError:
            log.warning("%s did not fit in run.stop_grace_s=%g: skipped (raydiff eval does it)", _PHASES[name], grace)
            continue
        except KeyboardInterrupt as exc:  # the first signal, during this step: the rest within the grace period
            note_stop(getattr(exc, "signum", None) or 2)
            log.warning("interrupted during %s: it is skipped (raydiff eval computes it)", _PHASES[name])
            _note_stop(summary, ctx)
            continue
        done.append(name)

    # (3) the last writes
    ctx.phase = "writing the run folder"
    with hold():
        if EVALUATIONS not in done:
            session.poll()  # what came back meanwhile
            tail.evals, tail.grids = session.evals_by_version(), list(session.grid_images)
        _write_progress(cfg, out_dir, loop, tail, summary, [n for n in todo if n not in done], ctx, sch)
        if not [n for n in todo if n not in done] and (out_dir / "model" / GLOBAL_VECTOR).exists():
            (out_dir / "model" / GLOBAL_VECTOR).unlink()
        ctx.records.close_stream()
        ctx.records.remove_stream()
    log.info("run folder: %s", out_dir)
    return RunResult(out_dir, summary)


GLOBAL_VECTOR = "global_vector.npy"  # model/: the final global vector while its evaluation is not computed


def _write_progress(
    cfg: Config,
    out_dir: Path,
    loop: LoopResult,
    tail: Any,
    summary: dict[str, Any],
    not_computed: list[str],
    ctx: _Held,
    sch: Schedule,
) -> None:
    """evals.parquet, the grids and summary.json as far as the run got (called with signals held)."""
    for version, images in tail.grids:
        write_grid(out_dir / "samples" / f"v{version:06d}.png", images)
    if tail.final_samples is not None:
        write_grid(out_dir / "samples" / "final.png", tail.final_samples)
    write_evals(out_dir / "evals.parquet", privacy_evals(cfg, loop, tail.evals, sch))
    final_row = {e["version"]: e for e in tail.evals}.get(loop.version)
    if EVALUATIONS in not_computed:
        summary["final_heldout_loss"] = final_row["heldout_loss"] if final_row else None
    else:
        summary["final_heldout_loss"] = tail.evals[-1]["heldout_loss"] if tail.evals else None
    summary.update(tail.judge)
    _note_stop(summary, ctx)
    if not_computed:
        summary["not_computed"] = list(not_computed)
    else:
        summary.pop("not_computed", None)
    summary["wall_seconds"] = time.perf_counter() - ctx.wall0 if ctx.wall0 else summary.get("wall_seconds")
    write_json(out_dir / "summary.json", summary)


def _note_stop(summary: dict[str, Any], ctx: _Held) -> None:
    """A signal that came after the loop: the run is interrupted too (exit 128 + signal), and says where."""
    from .signals import last_signal, signal_name, stopping

    if stopping():
        if not summary.get("interrupted"):
            summary["stop_phase"] = ctx.phase
        summary["interrupted"] = True
        summary["stop_signal"] = summary.get("stop_signal") or signal_name(last_signal())
        summary.setdefault("stop_phase", "the event loop")


def open_records(cfg: Config, out_dir: Path, state: Any) -> Any:
    """The run's records (raydiff.records): the folder's stream, started afresh (a resumed run: with its
    checkpoint's rows), and the trackers of ``run.log``."""
    from . import records as rec
    from .trackers import open_trackers

    rows = state.rows.values() if state is not None else ()
    evals = state.evals if state is not None else ()
    stream = rec.StreamSink(out_dir, rows, evals) if rec.STREAM_ENABLED else None
    return rec.Records(stream, open_trackers(cfg, out_dir))


def _with_epsilon(cfg: Config, ctx: _Held, row: Any, sch: Schedule) -> Any:
    """An evaluation row as the trackers see it with client-level DP: with the epsilon spent by its version."""
    from types import SimpleNamespace

    orch = getattr(ctx.session, "orchestrator", None) if ctx.session is not None else None
    if orch is None:
        return row
    return privacy_evals(cfg, SimpleNamespace(rows=list(orch.rows.values())), [dict(row)], sch)[0]  # type: ignore[arg-type]


def write_partition(out_dir: Path, parts: list[np.ndarray], labels: np.ndarray, num_classes: int) -> None:
    """partition.parquet (per-client class counts) and partition.png: the data skew a person can see."""
    from .data.partition_report import class_counts, plot_partition

    table = class_counts(parts, labels, num_classes)
    table.to_parquet(out_dir / "partition.parquet", index=False)
    plot_partition(table, out_dir / "partition.png")


def _selection_uniform(cfg: Config, sch: Schedule) -> bool:
    """Whether the run's schedule selects clients uniformly at random by design (the accounting's premise for
    ``epsilon_sampled``): round-based, no over-selection, no deadline, always-available clients."""
    from .privacy.accounting import selection_is_uniform

    return selection_is_uniform(
        sch.round_based, cfg.strategy.over_selection, sch.deadline_s, cfg.clients.availability.mode
    )


def privacy_evals(cfg: Config, loop: LoopResult, evals: list[dict[str, Any]], sch: Schedule) -> list[dict[str, Any]]:
    """With client-level DP, each evaluation row gets the privacy spent by its version (README, "Differential
    privacy"): ``epsilon`` (rigorous, worst client), ``epsilon_median``, ``epsilon_sampled`` (valid only for
    uniform random selection), ``delta`` and the sampling rates, all from who really took part (the events)."""
    dp = cfg.strategy.dp
    if not dp.enabled:
        return evals
    from .privacy import privacy_columns

    return privacy_columns(
        evals, loop.rows, cfg.clients.num_clients, dp.noise_multiplier, dp.delta, _selection_uniform(cfg, sch)
    )


def privacy_summary(cfg: Config, loop: LoopResult, sch: Schedule) -> dict[str, Any]:
    """summary.json's privacy fields with client-level DP (the final version's), else none."""
    dp = cfg.strategy.dp
    if not dp.enabled:
        return {}
    from .privacy import summary_fields

    return summary_fields(
        loop.rows, cfg.clients.num_clients, dp.noise_multiplier, dp.delta, loop.version, _selection_uniform(cfg, sch)
    )


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
