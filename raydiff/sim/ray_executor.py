"""The Ray side of a run: client actors train, the server actor aggregates, the evaluator scores.

The driver passes ObjectRefs only: the version blob goes server -> object store -> clients, and each
delta goes client -> server, never through the driver.
"""
from __future__ import annotations

from typing import Any, Optional

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, RayTaskError

from ..actors import JobSpec
from ..errors import RaydiffError
from .executor import ActorLost
from .pool import ActorPool, Ticket

_ACTOR_LOST = (RayActorError, ActorDiedError, ActorUnavailableError)


class RayExecutor:
    def __init__(self, pool: ActorPool, server: Any, evaluator: Any, cfg) -> None:
        self.pool, self.server, self.evaluator, self.cfg = pool, server, evaluator, cfg
        self.eval_refs: list[Any] = []
        self.sample_refs: list[tuple[int, Any]] = []

    @property
    def replaced(self) -> int:
        return self.pool.replaced

    def train(self, spec: JobSpec, base: Any, state: Any = None) -> Ticket:
        return self.pool.submit(spec, base, state)

    def state_after(self, ticket: Ticket) -> Any:
        return ticket.state_ref

    def discard(self, ticket: Ticket) -> None:
        self.pool.done(ticket)

    def result(self, ticket: Ticket) -> dict[str, Any]:
        self.pool.done(ticket)
        try:
            return ray.get(ticket.metrics_ref)
        except _ACTOR_LOST as exc:
            self.pool.replace(ticket)
            raise ActorLost(type(exc).__name__) from None
        except RayTaskError as exc:
            raise RaydiffError(f"a client job raised an error, so the run stops:\n{exc}") from None

    def submit(self, spec: JobSpec, base_version: int, ticket: Ticket, base: Optional[Any]) -> tuple[dict, Any]:
        out_ref, vec_ref = self.server.submit.options(num_returns=2).remote(
            spec.job_id, spec.client_id, base_version, len(spec.indices), ticket.payload_ref, base)
        return ray.get(out_ref), vec_ref

    def end_round(self) -> tuple[dict, Any]:
        out_ref, vec_ref = self.server.end_round.options(num_returns=2).remote()
        return ray.get(out_ref), vec_ref

    def discard_pending(self) -> list[int]:
        return ray.get(self.server.discard_pending.remote())

    def evaluate(self, version: int, vtime: float, handle: Any) -> None:
        self.eval_refs.append(self.evaluator.evaluate.remote(version, vtime, handle))

    def sample(self, version: int, handle: Any) -> None:
        self.sample_refs.append((version, self.evaluator.sample.remote(handle, self.cfg.eval.num_samples,
                                                                       self.cfg.seed)))
