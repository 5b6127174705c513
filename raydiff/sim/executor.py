"""What the orchestrator needs from the world that trains and aggregates, so that it never imports Ray.

``RayExecutor`` (sim/ray_executor.py) trains on actors; ``DryExecutor`` (here) trains nothing: it runs
the real ParameterServer and strategy on EMPTY vectors, so versions, buffers and staleness follow
exactly the rules of a real run at the cost of a few list operations per event.
"""
from __future__ import annotations

from typing import Any, Optional, Protocol

import numpy as np

from ..actors import JobSpec, ParameterServer
from ..strategies import Strategy


class ActorLost(Exception):
    """The actor that held a job died; the job counts as failed at its virtual time."""


class Executor(Protocol):
    replaced: int

    def train(self, spec: JobSpec, base: Any, state: Any = None) -> Any:
        """Start a job from the model behind handle ``base`` (and the client's ``state``); return a ticket."""

    def state_after(self, ticket: Any) -> Any:
        """A handle to the client's state once the job is done (kept by the orchestrator per client)."""

    def discard(self, ticket: Any) -> None:
        """The job's result will never be used (run stopped, round closed without it)."""

    def result(self, ticket: Any) -> dict[str, Any]:
        """The job's metrics, waiting for them if needed. Raises ActorLost."""

    def submit(self, spec: JobSpec, base_version: int, ticket: Any, base: Optional[Any]) -> tuple[dict, Any]:
        """Hand the job's update to the server: (outcome, handle of the new version or None)."""

    def end_round(self) -> tuple[dict, Any]:
        """Close a synchronous round: (outcome, handle of the new version or None)."""

    def discard_pending(self) -> list[int]:
        """Job ids buffered in the server that will never reach a version."""

    def evaluate(self, version: int, vtime: float, handle: Any, fid: bool = False) -> None:
        """Schedule an evaluation of a version (with ``fid``: sample-quality metrics too); must not block training."""

    def sample(self, version: int, handle: Any) -> None:
        """Schedule a sample grid of a version."""


class _Checkpointable:
    """What checkpoints need from an executor, for executors that hold everything in-process."""

    def fetch(self, handle: Any) -> Any:
        return handle

    def put(self, value: Any) -> Any:
        return value

    def server_state(self) -> dict:
        import copy

        return copy.deepcopy(self.server.state())

    def restore_server(self, state: dict) -> None:
        self.server.load_state(state)

    def server_vector(self) -> Any:
        return self.server.vector()

    def finished_evals(self) -> list:
        return []

    def restore_evals(self, evals: list) -> None:
        pass


class DryExecutor(_Checkpointable):
    """No training, no Ray: every job "succeeds" with an empty update; the server logic is the real one."""

    def __init__(self, strategy: Strategy) -> None:
        self.server = ParameterServer(np.zeros(0, np.float32), strategy)
        self.empty = np.zeros(0, np.float32)
        self.replaced = 0

    def train(self, spec: JobSpec, base: Any, state: Any = None) -> Any:
        return spec.job_id

    def state_after(self, ticket: Any) -> Any:
        return None

    def discard(self, ticket: Any) -> None:
        pass

    def result(self, ticket: Any) -> dict[str, Any]:
        return {}

    def submit(self, spec: JobSpec, base_version: int, ticket: Any, base: Optional[Any]) -> tuple[dict, Any]:
        return self.server.submit(spec.job_id, spec.client_id, base_version, len(spec.indices), self.empty,
                                  self.empty if self.server.strategy.needs_base else None)

    def end_round(self) -> tuple[dict, Any]:
        return self.server.end_round()

    def discard_pending(self) -> list[int]:
        return self.server.discard_pending()

    def evaluate(self, version: int, vtime: float, handle: Any, fid: bool = False) -> None:
        pass

    def sample(self, version: int, handle: Any) -> None:
        pass
