"""The event loop: dispatch jobs at virtual times, settle their results in (virtual time, seq) order.

Real training of every in-flight job runs in parallel behind the executor; the loop only ever
waits for the job whose virtual finish time is earliest. Results therefore depend on the seed alone,
not on how many actors there are or which finished first in real time (docs/architecture.md).
This module never imports Ray: the executor is the only door to the outside, and the strategy
speaks through its :class:`~raydiff.strategies.base.Schedule`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any, Optional, Union

import numpy as np

from ..config import Config
from ..errors import ModelNotFinite, NoProgress
from ..hetero import Availability, ClientProfile, plan_job
from ..messages import JobSpec, ServerReply
from ..strategies.base import Schedule
from ..strategies.update_checks import NON_FINITE
from . import checkpoint
from .clock import EventQueue
from .dispatch import dispatch_policy
from .executor import ActorLost, Executor
from .grouping import WAITING, GroupBuffer, Member
from .jobs import Deadline, Job, LoopResult, Wake, job_seed, steps_for
from .selection import IdleSet

log = logging.getLogger(__name__)

Event = Union[Job, Wake, Deadline]

# Stop rules for a schedule that cannot make a version (clients.availability.p=1e-9, mean_on_s far shorter than a
# job, a deadline no job can meet, a norm bound that rejects every update): counted, not timed, so a run stops at
# the same event whatever the machine. Events are cheap (a wake, a job doomed at dispatch: no training), so
# STALL_EVENTS of them cost seconds; a job that trained and was then thrown away costs real training, so far
# fewer of those are allowed. A run whose version needs more than this (a success chance per job below about
# 1/25,000) is better stopped and told why.
STALL_EVENTS = 100_000
STALL_TRAINED = 1_000  # and at least 20 rounds' (or buffers') worth of jobs


class LoopAborted(Exception):
    """The loop stopped on an error (``cause``); ``result`` holds every job it settled, each with one final status."""

    def __init__(self, cause: Exception, result: LoopResult) -> None:
        super().__init__(str(cause))
        self.cause, self.result = cause, result


class Orchestrator:
    """Owns the virtual clock, the event heap and job bookkeeping."""

    def __init__(
        self,
        cfg: Config,
        schedule: Schedule,
        profiles: list[ClientProfile],
        parts: list[np.ndarray],
        availability: Availability,
        executor: Executor,
        x0_handle: Any,
        down_bytes: int,
        up_bytes: int,
        stateful_clients: bool = False,
        on_progress: Optional[Callable[[dict[str, Any]], None]] = None,
        on_checkpoint: Optional[Callable[[checkpoint.LoopState], None]] = None,
        resume: Optional[checkpoint.LoopState] = None,
        on_row: Optional[Callable[[dict[str, Any]], None]] = None,
    ) -> None:
        """``schedule``: the strategy's declarations (round-based or not, jobs in flight, ...).
        ``on_checkpoint(state)`` is called every ``run.checkpoint_every`` versions with a snapshot
        (sim/checkpoint.py); ``resume`` is such a snapshot to continue from. ``on_row(row)`` is called
        once per job, when it settles with its final status (raydiff.records: the run's record stream)."""
        self.on_row = on_row
        self.cfg = cfg
        self.schedule = schedule
        self.policy = dispatch_policy(schedule)
        self.on_checkpoint = on_checkpoint
        self.resume = resume
        self.ckpt_due = False
        self.profiles = profiles
        self.parts = parts
        self.avail = availability
        self.executor = executor
        self.down_bytes, self.up_bytes = down_bytes, up_bytes
        self.stateful = stateful_clients
        self.client_state: dict[int, Any] = {}  # handles of per-client state (residuals, private weights)
        self.on_progress = on_progress or (lambda info: None)
        self.select_rng = np.random.default_rng([cfg.seed, 2])
        self.plan_rng = np.random.default_rng([cfg.seed, 3])
        self.idle = IdleSet(len(profiles))
        tr = cfg.train
        self.steps = [steps_for(len(p), tr.batch_size, tr.local_steps, tr.local_epochs) for p in parts]
        self._check_deadline()
        self.queue: EventQueue[Event] = EventQueue()
        self.inflight: dict[int, Job] = {}
        self.rows: dict[int, dict[str, Any]] = {}
        self.pending_rows: dict[int, Job] = {}  # buffered in the server, not yet in a version
        self.version = 0
        self.now = 0.0
        self.current = x0_handle
        self.handles: dict[int, Any] = {0: x0_handle}  # versions that in-flight jobs started from
        self.base_count: dict[int, int] = {}
        self.next_job = 0
        self.round = 0
        self.round_received = 0
        self.wake_at: Optional[float] = None
        self.recent_loss: list[float] = []
        self.counts = dict(applied=0, dropped=0, failed=0, rejected=0)
        self.active: Optional[Job] = None  # popped, not yet settled (matters on Ctrl-C)
        # Asynchronous strategies that allow one update per client per version (client-level DP): a
        # client whose update waits in the server's buffer is not dispatched again until a version
        # absorbs it. (Round-based dispatch already selects each client at most once per round.)
        self.hold_buffered = schedule.one_update_per_client and not schedule.round_based
        self.held: set[int] = set()
        self.last_eval: tuple[int, bool] = (0, False)
        self.next_eval_vtime = math.inf
        self.non_finite_streak = 0  # updates rejected as NaN/Inf in a row (not checkpointed: a stop rule only)
        # since the last new version (stop rules only, not checkpointed): events popped, and jobs trained for real
        self.stall_events = 0
        self.stall_trained = 0
        self.stall_trained_max = max(STALL_TRAINED, 20 * (schedule.jobs_in_flight + schedule.updates_per_version))
        # train.group_size > 1: jobs wait to be sent in groups decided by the virtual schedule (sim/grouping.py)
        self.groups = GroupBuffer(cfg.train.group_size) if cfg.train.group_size > 1 else None

    def _check_deadline(self) -> None:
        """A round deadline shorter than every client's fastest possible job can never receive an update: say so
        before the first job (a deterministic lower bound: both transfers, plus the compute unless jitter can
        shorten it)."""
        deadline = self.schedule.deadline_s
        if not self.schedule.round_based or deadline is None or not self.profiles:
            return
        jitter = self.cfg.clients.speed.jitter > 0
        batch = self.cfg.train.batch_size
        fastest = min(
            2 * p.latency_s
            + self.down_bytes / p.down_bps
            + self.up_bytes / p.up_bps
            + (0.0 if jitter else steps * batch / p.speed)
            for p, steps in zip(self.profiles, self.steps)
        )
        if fastest > deadline:
            raise NoProgress(
                f"strategy.deadline_s={deadline:g} is shorter than the fastest client's job ({fastest:.6g} virtual "
                f"s: {'download and upload' if jitter else 'download, compute and upload'}), so no update can ever "
                "arrive before a round closes and the run would never make a version; raise strategy.deadline_s "
                "(or set it to null for no deadline)"
            )

    @property
    def needs_base(self) -> bool:
        return self.schedule.needs_base

    # ------------------------------------------------------------------ selection and dispatch
    def pick_online(self) -> Optional[int]:
        """A uniformly chosen idle client that is online now, or None (then a Wake is scheduled)."""
        tried: list[int] = []
        found = None
        n = len(self.idle)
        for _ in range(min(n, 32)):  # rejection sampling: uniform over online idle clients
            c = self.idle.pick(self.select_rng)
            if self.avail.is_on(c, self.now):
                found = c
                break
            tried.append(c)
        for c in tried:
            self.idle.release(c)
        if found is not None or len(tried) == n:
            return found
        skip = set(tried)  # many offline: scan the rest exactly (rare, O(idle))
        online = [c for c in self.idle.items() if c not in skip and self.avail.is_on(c, self.now)]
        if online:
            c = online[int(self.select_rng.integers(len(online)))]
            self.idle.take(c)
            return c
        return None

    def schedule_wake(self) -> None:
        """Wake at the earliest time an idle client comes online; a sooner wake replaces a pending later one."""
        if not len(self.idle):
            return
        t = max(min(self.avail.next_on(c, self.now) for c in self.idle.items()), self.now)
        if self.wake_at is not None and self.wake_at <= t:
            return
        self.wake_at = t
        self.queue.push(t, Wake())

    def dispatch(self, client: int) -> None:
        n = len(self.parts[client])
        tr = self.cfg.train
        steps = self.steps[client]
        samples = steps * tr.batch_size
        offline_after = self.avail.on_until(client, self.now) - self.now
        plan = plan_job(
            self.profiles[client],
            samples,
            self.down_bytes,
            self.up_bytes,
            self.plan_rng,
            jitter=self.cfg.clients.speed.jitter,
            offline_after=offline_after,
        )
        job_id = self.next_job
        self.next_job += 1
        seed = job_seed(self.cfg.seed, job_id)
        spec = JobSpec(job_id, client, seed, self.parts[client], steps, tr.batch_size)
        job = Job(spec, plan, self.version, self.now, self.round)
        job.row = dict(
            job_id=job_id,
            client_id=client,
            actor="",
            node_id="",
            dispatch_vtime=self.now,
            finish_vtime=self.now + plan.end_s,
            status="",
            failure_reason=plan.failure_reason,
            base_version=self.version,
            applied_version=None,
            staleness=None,
            weight=None,  # the strategy's Decision.weight, once it has decided
            num_samples=n,
            samples_trained=samples,
            train_loss=math.nan,
            wall_seconds=math.nan,
            download_s=plan.download_s,
            compute_s=plan.compute_s,
            upload_s=plan.upload_s,
            download_bytes=self.down_bytes,
            upload_bytes=self.up_bytes,
        )
        full = None
        if not plan.fails:  # a job doomed to fail is not trained for real: its result is never used
            self.stall_trained += 1
            if self.groups is None:
                job.ticket = self.executor.train(spec, self.current, self.client_state.get(client))
            else:
                job.ticket = WAITING
                full = self.groups.add(Member(spec, self.version, self.current, self.client_state.get(client)))
            self.base_count[self.version] = self.base_count.get(self.version, 0) + 1
        self.inflight[job_id] = job
        self.queue.push(self.now + plan.end_s, job)
        if full is not None:
            self._send(full)

    def _send(self, group: list[Member]) -> None:
        """Start a group of waiting jobs on one actor; each job gets its own ticket."""
        assert self.groups is not None
        tickets = self.executor.train_group([m.spec for m in group], [m.base for m in group], [m.state for m in group])
        for m, ticket in zip(group, tickets):
            self.inflight[m.spec.job_id].ticket = ticket
        self.groups.live(self.inflight)  # forget groups whose jobs are all settled (they hold base handles)

    def _drop_ticket(self, job: Job) -> None:
        """The job's result will never be used: a waiting job is never trained, a sent one is discarded."""
        if job.ticket is WAITING:
            assert self.groups is not None
            self.groups.withdraw(job.spec.job_id)
        elif job.ticket is not None:
            self.executor.discard(job.ticket)

    # ------------------------------------------------------------------ settling
    def _release_base(self, job: Job) -> None:
        v = job.base_version
        c = self.base_count[v] - 1
        if c:
            self.base_count[v] = c
            return
        del self.base_count[v]
        if v != self.version:
            self.handles.pop(v, None)

    def _final(self, job: Job, status: str, reason: str = "") -> None:
        row = job.row
        row["status"] = status
        if reason:
            row["failure_reason"] = reason
        self.counts[status] += 1
        self.rows[row["job_id"]] = row
        if self.on_row is not None:
            self.on_row(row)

    def _leave(self, job: Job) -> None:
        """The job no longer occupies its client."""
        del self.inflight[job.spec.job_id]
        self.idle.release(job.spec.client_id)

    def _settle(self, job: Job) -> None:
        if job.ticket is WAITING:  # the loop must wait for a job not yet sent: send every waiting job
            assert self.groups is not None
            for group in self.groups.flush():
                self._send(group)
        del self.inflight[job.spec.job_id]
        client = job.spec.client_id
        if job.ticket is None:
            self.idle.release(client)
            self._final(job, "dropped" if job.plan.failure_reason.startswith("dropout") else "failed")
            return
        try:
            metrics = self.executor.result(job.ticket)
        except ActorLost as exc:
            self.idle.release(client)
            self._lost(job, exc)
            return
        if metrics is not None:
            job.row.update(
                actor=metrics.actor,
                node_id=metrics.node_id,
                train_loss=metrics.train_loss,
                wall_seconds=metrics.wall_seconds,
            )
            self.recent_loss = ([*self.recent_loss, metrics.train_loss])[-20:]
        base = self.handles[job.base_version] if self.needs_base else None
        try:
            reply, handle = self.executor.submit(job.spec, job.base_version, job.ticket, base)
        except ActorLost as exc:  # the server never saw it: a failed job, like a lost actor
            self.idle.release(client)
            self._lost(job, exc)
            return
        if self.stateful and reply.status != "rejected":
            # a rejected update (NaN, norm) must not become the client's error-feedback residual
            self.client_state[client] = self.executor.state_after(job.ticket)
        self._release_base(job)
        job.row["staleness"] = reply.staleness
        job.row["weight"] = reply.weight
        if reply.status == "buffered" and self.hold_buffered:
            self.held.add(client)  # busy until a version absorbs its update: one update per client per version
        else:
            self.idle.release(client)
        if reply.status == "rejected":
            self._final(job, "rejected", reply.reason)
            self._count_non_finite(reply.reason)
        else:
            self.non_finite_streak = 0
            self.pending_rows[job.spec.job_id] = job
            self.round_received += 1
        self._adopt(reply, handle)

    def _count_non_finite(self, reason: str) -> None:
        """Stop a run that diverged while its model stays finite: every update NaN or Inf, for two rounds of
        jobs in flight in a row (a run would otherwise reject them forever and never make a version)."""
        if not reason.startswith(NON_FINITE):
            return
        self.non_finite_streak += 1
        if self.non_finite_streak >= max(16, 2 * self.schedule.jobs_in_flight):
            raise ModelNotFinite(
                f"the last {self.non_finite_streak} updates were all NaN or infinite (training "
                f"diverged at version {self.version}), so the run stops; the run folder keeps every "
                "job settled so far. Lower train.lr or strategy.server_lr, or set strategy.norm_bound"
            )

    def _lost(self, job: Job, exc: ActorLost) -> None:
        """The job's actor, or an object it needed or made, died with a node: the job failed."""
        self._release_base(job)
        self.client_state.pop(job.spec.client_id, None)  # its state may be gone too: start afresh
        job.row["actor"] = exc.actor
        self._final(job, "failed", exc.reason)  # actor_lost or object_lost (README: "The run folder")

    def _adopt(self, reply: ServerReply, handle: Any) -> None:
        """Mark the jobs a new version absorbed as applied, adopt its handle, schedule evaluations."""
        if reply.version == self.version:
            return
        if self.base_count.get(self.version, 0) == 0:
            self.handles.pop(self.version, None)
        self.version = reply.version
        self.stall_events = self.stall_trained = 0
        self.current = handle
        self.handles[self.version] = handle
        for jid in reply.applied_jobs:
            job = self.pending_rows.pop(jid)
            job.row["applied_version"] = self.version
            self._final(job, "applied")
            if job.spec.client_id in self.held:
                self.held.discard(job.spec.client_id)
                self.idle.release(job.spec.client_id)
        if not reply.finite:  # stop before this version is evaluated, sampled or checkpointed
            raise ModelNotFinite(
                f"the global model has NaN or infinite values at version {reply.version} (virtual "
                f"time {self.now:.6g} s), so the run stops; the run folder keeps every job settled "
                "so far. Lower strategy.server_lr or train.lr, or set strategy.norm_bound"
            )
        self._schedule_eval(handle)
        every = self.cfg.run.checkpoint_every
        if every and self.on_checkpoint is not None and self.version % every == 0:
            self.ckpt_due = True  # taken at the end of this step, when every event is settled
        ev = self.cfg.eval
        if ev.sample_every_versions and self.version % ev.sample_every_versions == 0:
            self.executor.sample(self.version, handle)
        self.on_progress(
            dict(
                version=self.version,
                vtime=self.now,
                loss=float(np.mean(self.recent_loss)) if self.recent_loss else math.nan,
                live_versions=len(self.handles),
                **self.counts,
            )
        )

    def _schedule_eval(self, handle: Any) -> None:
        """Queue an evaluation of the new version if a schedule asks for it (the call returns at once).

        Held-out loss: every ``eval.every_versions`` versions, and/or the first version at or after each
        multiple of ``eval.every_vtime``. FID (costlier: it samples) every ``eval.fid_every_versions``.
        """
        ev, v = self.cfg.eval, self.version
        by_time = ev.every_vtime is not None and self.now >= self.next_eval_vtime
        if by_time and ev.every_vtime is not None:  # one evaluation however many multiples this version jumped
            self.next_eval_vtime = (math.floor(self.now / ev.every_vtime) + 1) * ev.every_vtime
        fid = bool(ev.fid_every_versions) and v % ev.fid_every_versions == 0
        if by_time or fid or (ev.every_versions and v % ev.every_versions == 0):
            self.executor.evaluate(v, self.now, handle, fid=fid)
            self.last_eval = (v, fid)

    def close_round(self, reason: str) -> None:
        """End a round now: jobs still out are discarded with ``reason``; aggregate."""
        for job in list(self.inflight.values()):
            self._leave(job)
            if job.ticket is not None:
                self._drop_ticket(job)
                self._release_base(job)
            self._final(job, "rejected", reason)
        self.end_round()

    def end_round(self) -> None:
        reply, handle = self.executor.end_round()
        self._adopt(reply, handle)

    # ------------------------------------------------------------------ loop
    def _done(self) -> bool:
        r = self.cfg.run
        if r.max_updates is not None and self.version >= r.max_updates:
            return True
        return r.max_vtime is not None and len(self.queue) > 0 and self.queue.peek_time() > r.max_vtime

    def _check_progress(self) -> None:
        """Stop a schedule that makes no version (see STALL_EVENTS) with what it did instead, and what to change."""
        if self.stall_events < STALL_EVENTS and self.stall_trained < self.stall_trained_max:
            return
        c = self.counts
        what = (
            f"{self.stall_events:,} events and {self.stall_trained:,} trained jobs"
            if self.stall_trained >= self.stall_trained_max
            else f"{self.stall_events:,} events"
        )
        raise NoProgress(
            f"no new model version in {what} since version {self.version} (virtual time now {self.now:.6g} s; "
            f"jobs so far: {c['applied']} applied, {c['failed']} failed, {c['dropped']} dropped, {c['rejected']} "
            "rejected), so the run stops: this schedule cannot make progress. Usual causes: clients almost never "
            "online (clients.availability.p, or mean_on_s far shorter than a job), a strategy.deadline_s that no "
            "job meets, clients.dropout near 1, or a strategy.norm_bound (norm_mode: reject) or max_staleness "
            "that rejects every update; the run folder keeps every job settled so far"
        )

    def _step(self) -> None:
        self.stall_events += 1
        self._check_progress()
        self.now, item = self.queue.pop()
        if isinstance(item, Wake):
            if self.wake_at == self.now:  # else a stale, superseded wake: a harmless refill
                self.wake_at = None
        elif isinstance(item, Deadline):
            self.policy.on_deadline(self, item)
        elif item.spec.job_id in self.inflight:  # else: discarded when its round closed
            self.active = item
            self._settle(item)
            self.active = None
            self.policy.after_settle(self)
        if not self._done():
            self.policy.refill(self)
        if self.ckpt_due and self.on_checkpoint is not None:
            self.ckpt_due = False
            self.on_checkpoint(checkpoint.snapshot(self))

    def run(self) -> LoopResult:
        t0 = time.perf_counter()
        interrupted = False
        if self.resume is not None:  # a checkpoint that does not fit stops the run here, before it changes anything
            checkpoint.restore(self, self.resume)
        try:
            if self.resume is None:
                self.executor.evaluate(0, 0.0, self.current)
                self.last_eval = (0, False)
                self.next_eval_vtime = self.cfg.eval.every_vtime or math.inf
                self.policy.refill(self)
            while len(self.queue) and not self._done():
                self._step()
        except KeyboardInterrupt:
            interrupted = True
            log.warning("interrupted: writing a consistent run folder for version %d", self.version)
        except Exception as exc:  # a client's bug, a diverged model: stop; the runner keeps what is settled
            try:
                self._wind_down(True, "run_failed")
            except Exception:  # the executor may be broken too; the rows are what matters
                log.exception("winding down after a failure")
            raise LoopAborted(
                exc,
                LoopResult(
                    [self.rows[k] for k in sorted(self.rows)],
                    self.version,
                    self.now,
                    True,
                    self.current,
                    self.executor.replaced,
                    time.perf_counter() - t0,
                ),
            ) from exc
        self._wind_down(interrupted)
        if tuple(self.last_eval) != (self.version, True):  # the final version always gets FID (a repeat row wins)
            self.executor.evaluate(self.version, self.now, self.current, fid=True)
        return LoopResult(
            [self.rows[k] for k in sorted(self.rows)],
            self.version,
            self.now,
            interrupted,
            self.current,
            self.executor.replaced,
            time.perf_counter() - t0,
        )

    def _wind_down(self, interrupted: bool, reason: str = "") -> None:
        """Give every dispatched job its one final status: in flight -> rejected; buffered -> rejected."""
        reason = reason or ("interrupted" if interrupted else "run_stopped")
        if self.active is not None:
            jid = self.active.spec.job_id
            if jid not in self.rows and jid not in self.pending_rows:
                self.inflight.pop(jid, None)
                self._final(self.active, "rejected", reason)
        for job in sorted(self.inflight.values(), key=lambda j: j.spec.job_id):
            self._drop_ticket(job)
            self._final(job, "rejected", reason)
        self.inflight.clear()
        self.queue.drain()
        try:
            leftover = self.executor.discard_pending()
        except KeyboardInterrupt:
            leftover = list(self.pending_rows)
        for jid in list(leftover) + list(self.pending_rows):  # the second list is a safety net
            if jid in self.pending_rows:
                self._final(self.pending_rows.pop(jid), "rejected", "buffer_unflushed")
