"""The Ray side of a run: client actors train, the server actor aggregates, the evaluator scores.

The driver passes ObjectRefs only: the version blob goes server -> object store -> clients, and each
delta goes client -> server, never through the driver.
"""

from __future__ import annotations

from typing import Any, Optional

import ray
from ray.exceptions import (
    ActorDiedError,
    ActorUnavailableError,
    LocalRayletDiedError,
    NodeDiedError,
    ObjectLostError,
    RayActorError,
    RayTaskError,
    WorkerCrashedError,
)

from ..config import Config
from ..errors import ClientJobError, InternalError, strip_ansi
from ..messages import JobMetrics, JobSpec, ServerReply, ServerState
from ..sim.executor import ActorLost
from .pool import ActorPool, Ticket

_ACTOR_LOST = (RayActorError, ActorDiedError, ActorUnavailableError)
# what a task's argument dies of when its node goes: the object itself, or the actor or worker that made it
_GONE = (ObjectLostError, RayActorError, NodeDiedError, WorkerCrashedError, LocalRayletDiedError)


def _lost_input(exc: BaseException) -> bool:
    """A task failed because an argument's object died with its node (not because the code is wrong).

    Decided by exception types along Ray's ``cause`` chain (a task whose argument was lost fails with a
    RayTaskError whose cause is the argument's own error), never by matching Ray's message text.
    """
    e: object = exc
    for _ in range(8):
        if isinstance(e, _GONE):
            return True
        e = getattr(e, "cause", None)
        if e is None:
            return False
    return False


def _job(ticket: Ticket) -> str:
    spec = ticket.spec
    who = f"client {spec.client_id}'s job {spec.job_id}" if spec is not None else "a client job"
    return f"{who} (on {ticket.actor})"


class RayExecutor:
    """The :class:`~raydiff.sim.executor.Executor` of real runs: client actors, a server actor, an evaluator."""

    def __init__(self, pool: ActorPool, server: Any, evaluator: Any, cfg: Config) -> None:
        self.pool, self.server, self.evaluator, self.cfg = pool, server, evaluator, cfg
        self.eval_refs: list[Any] = []
        self.sample_refs: list[tuple[int, Any]] = []

    @property
    def replaced(self) -> int:
        return self.pool.replaced

    def train(self, spec: JobSpec, base: Any, state: Any = None) -> Ticket:
        return self.pool.submit(spec, base, state)

    def train_group(self, specs: list[JobSpec], bases: list[Any], states: list[Any]) -> list[Ticket]:
        return self.pool.submit_group(specs, bases, states)

    def state_after(self, ticket: Ticket) -> Any:
        return ticket.state_ref

    def discard(self, ticket: Ticket) -> None:
        self.pool.done(ticket)

    def result(self, ticket: Ticket) -> Optional[JobMetrics]:
        self.pool.done(ticket)
        try:
            metrics: JobMetrics = ray.get(ticket.metrics_ref)
            return metrics
        except _ACTOR_LOST:
            self.pool.replace(ticket)
            raise ActorLost("actor_lost", ticket.actor) from None
        except (RayTaskError, ObjectLostError) as exc:
            if _lost_input(exc):  # e.g. the client's state lived on a node that is gone
                raise ActorLost("object_lost", ticket.actor) from None
            raise ClientJobError(
                f"{_job(ticket)} raised an exception in its training, so the run stops. This is a "
                f"bug in the training code, not a problem with the input; the remote traceback:\n"
                f"{strip_ansi(str(exc))}"
            ) from None

    def submit(self, spec: JobSpec, base_version: int, ticket: Ticket, base: Optional[Any]) -> tuple[ServerReply, Any]:
        out_ref, vec_ref = self.server.submit.options(num_returns=2).remote(
            spec.job_id, spec.client_id, base_version, len(spec.indices), ticket.payload_ref, base
        )
        try:
            return ray.get(out_ref), vec_ref
        except (RayTaskError, ObjectLostError) as exc:
            if _lost_input(exc):  # the update was stored on a node that died before the server read it
                raise ActorLost("object_lost", ticket.actor) from None
            raise InternalError(
                f"the parameter server raised an exception on the update of {_job(ticket)}, so the "
                f"run stops (a bug in the strategy or the server); the remote traceback:\n{strip_ansi(str(exc))}"
            ) from None

    def end_round(self) -> tuple[ServerReply, Any]:
        out_ref, vec_ref = self.server.end_round.options(num_returns=2).remote()
        try:
            return ray.get(out_ref), vec_ref
        except RayTaskError as exc:
            raise InternalError(
                "the parameter server raised an exception closing a round, so the run stops (a bug in the "
                f"strategy or the server); the remote traceback:\n{strip_ansi(str(exc))}"
            ) from None

    def discard_pending(self) -> list[int]:
        return ray.get(self.server.discard_pending.remote())

    def evaluate(self, version: int, vtime: float, handle: Any, fid: bool = False) -> None:
        """Queue on the evaluator actor and return at once: training never waits for an evaluation."""
        self.eval_refs.append(self.evaluator.evaluate.remote(version, vtime, handle, fid))

    def sample(self, version: int, handle: Any) -> None:
        """A grid of ``eval.num_samples`` with the run's seed and ``eval.sampler`` (as the final grid and FID)."""
        self.sample_refs.append(
            (version, self.evaluator.sample.remote(handle, self.cfg.eval.num_samples, self.cfg.seed))
        )

    # ---- checkpoints: handles <-> contents (only at checkpoint and resume time)
    def fetch(self, handle: Any) -> Any:
        return ray.get(handle)

    def put(self, value: Any) -> Any:
        return ray.put(value)

    def server_state(self) -> ServerState:
        state: ServerState = ray.get(self.server.state.remote())
        return state

    def restore_server(self, state: ServerState) -> None:
        ray.get(self.server.load_state.remote(state))

    def server_vector(self) -> Any:
        return ray.get(self.server.vector.remote())

    def finished_evals(self) -> list[dict[str, Any]]:
        """Evaluations scheduled so far, waited for: a checkpoint must not lose them."""
        return ray.get(self.eval_refs)

    def restore_evals(self, evals: list[dict[str, Any]]) -> None:
        self.eval_refs = [ray.put(e) for e in evals]
