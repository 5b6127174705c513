"""What the orchestrator needs from the world that trains and aggregates, so that it never imports Ray.

``RayExecutor`` (ray_exec/executor.py) trains on actors; ``DryExecutor`` (raydiff/dry_run.py) trains
nothing: it runs the real ParameterServer and strategy on EMPTY vectors, so versions, buffers and
staleness follow exactly the rules of a real run at the cost of a few list operations per event.
"""

from __future__ import annotations

from typing import Any, Optional, Protocol

from ..messages import JobMetrics, JobSpec, ServerReply, ServerState


class ActorLost(Exception):
    """The actor that held a job (or an object it needed or made) died; the job fails at its virtual time.

    ``reason``: the job's failure_reason, ``actor_lost`` (the actor died) or ``object_lost`` (an update or
    client state lived in a lost node's object store); ``actor``: the actor the job ran on, if known.
    """

    def __init__(self, reason: str = "actor_lost", actor: str = "") -> None:
        super().__init__(reason)
        self.reason, self.actor = reason, actor


class Executor(Protocol):
    """Every method anything in ``sim/`` calls on an executor (the loop and the checkpoint code)."""

    @property
    def replaced(self) -> int:
        """Client actors replaced after dying, so far."""

    # ---- training and aggregation (the event loop)
    def train(self, spec: JobSpec, base: Any, state: Any = None) -> Any:
        """Start a job from the model behind handle ``base`` (and the client's ``state``); return a ticket."""

    def train_group(self, specs: list[JobSpec], bases: list[Any], states: list[Any]) -> list[Any]:
        """Start ``specs`` as ONE group (``train.group_size`` > 1), job i from ``bases[i]`` and ``states[i]``;
        return one ticket per job, each settled like ``train``'s."""

    def state_after(self, ticket: Any) -> Any:
        """A handle to the client's state once the job is done (kept by the orchestrator per client)."""

    def discard(self, ticket: Any) -> None:
        """The job's result will never be used (run stopped, round closed without it)."""

    def result(self, ticket: Any) -> Optional[JobMetrics]:
        """The job's metrics (None when nothing was trained: dry runs), waiting if needed. Raises ActorLost."""

    def submit(self, spec: JobSpec, base_version: int, ticket: Any, base: Optional[Any]) -> tuple[ServerReply, Any]:
        """Hand the job's update to the server: (reply, handle of the new version or None). Raises ActorLost."""

    def end_round(self) -> tuple[ServerReply, Any]:
        """Close a round: (reply, handle of the new version or None)."""

    def discard_pending(self) -> list[int]:
        """Job ids buffered in the server that will never reach a version."""

    def evaluate(self, version: int, vtime: float, handle: Any, fid: bool = False) -> None:
        """Schedule an evaluation of a version (with ``fid``: sample-quality metrics too); must not block training."""

    def sample(self, version: int, handle: Any) -> None:
        """Schedule a sample grid of a version."""

    # ---- checkpoints (sim/checkpoint.py): handles <-> contents, only at checkpoint and resume time
    def fetch(self, handle: Any) -> Any:
        """The object behind a handle (a version's vector, a client's state)."""

    def put(self, value: Any) -> Any:
        """A handle to ``value``, as ``train`` and ``submit`` expect."""

    def server_state(self) -> ServerState:
        """The parameter server's whole state."""

    def restore_server(self, state: ServerState) -> None:
        """Put a saved state back into the parameter server."""

    def server_vector(self) -> Any:
        """The server's current global vector (its contents, not a handle)."""

    def finished_evals(self) -> list[dict[str, Any]]:
        """The evaluation rows scheduled so far, waited for."""

    def restore_evals(self, evals: list[dict[str, Any]]) -> None:
        """Evaluation rows of the run before a resume, to be reported with the new ones."""
