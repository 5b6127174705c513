"""Dry runs: the whole schedule without training and without Ray.

The real :class:`~raydiff.actors.ParameterServer` and strategy run on EMPTY vectors, so versions,
buffers, staleness and rejections follow exactly the rules of a real run, and the network model
uses the real update size; each event costs a few list operations.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import Any, Optional

import numpy as np

from .actors.server import ParameterServer
from .config import Config
from .exchange import Exchange
from .hetero import Availability, ClientProfile
from .messages import JobMetrics, JobSpec, ServerReply, ServerState
from .progress import Progress, chain
from .sim.checkpoint import LoopState
from .sim.jobs import LoopResult
from .sim.orchestrator import Orchestrator
from .strategies import Strategy

log = logging.getLogger(__name__)


class DryExecutor:
    """No training: every job "succeeds" with an empty update; the server logic is the real one."""

    def __init__(self, strategy: Strategy) -> None:
        self.server = ParameterServer(np.zeros(0, np.float32), strategy)
        self.empty = np.zeros(0, np.float32)
        self.needs_base = strategy.needs_base

    @property
    def replaced(self) -> int:
        return 0

    def train(self, spec: JobSpec, base: Any, state: Any = None) -> Any:
        return spec.job_id

    def train_group(self, specs: list[JobSpec], bases: list[Any], states: list[Any]) -> list[Any]:
        """Grouping changes no virtual time: each job as ``train``."""
        return [self.train(spec, base, state) for spec, base, state in zip(specs, bases, states)]

    def state_after(self, ticket: Any) -> Any:
        return None

    def discard(self, ticket: Any) -> None:
        pass

    def result(self, ticket: Any) -> Optional[JobMetrics]:
        return None

    def submit(self, spec: JobSpec, base_version: int, ticket: Any, base: Optional[Any]) -> tuple[ServerReply, Any]:
        return self.server.submit(
            spec.job_id,
            spec.client_id,
            base_version,
            len(spec.indices),
            self.empty,
            self.empty if self.needs_base else None,
        )

    def end_round(self) -> tuple[ServerReply, Any]:
        return self.server.end_round()

    def discard_pending(self) -> list[int]:
        return self.server.discard_pending()

    def evaluate(self, version: int, vtime: float, handle: Any, fid: bool = False) -> None:
        pass

    def sample(self, version: int, handle: Any) -> None:
        pass

    # ---- checkpoints: everything is in this process
    def fetch(self, handle: Any) -> Any:
        return handle

    def put(self, value: Any) -> Any:
        return value

    def server_state(self) -> ServerState:
        return copy.deepcopy(self.server.state())

    def restore_server(self, state: ServerState) -> None:
        self.server.load_state(state)

    def server_vector(self) -> Any:
        return self.server.vector()

    def finished_evals(self) -> list[dict[str, Any]]:
        return []

    def restore_evals(self, evals: list[dict[str, Any]]) -> None:
        pass


def run_dry(
    cfg: Config,
    strategy: Strategy,
    size: int,
    exchange: Exchange,
    profiles: list[ClientProfile],
    parts: list[np.ndarray],
    availability: Availability,
    progress: bool,
    callback: Optional[Callable[[dict[str, Any]], None]] = None,
    on_checkpoint: Optional[Callable[[LoopState], None]] = None,
    resume: Optional[LoopState] = None,
    records: Optional[Any] = None,
) -> tuple[LoopResult, dict[str, Any]]:
    """The event loop with a :class:`DryExecutor`; returns it and the dry run's summary fields.
    ``records``: a :class:`raydiff.records.Records` that gets every settled job and every new version."""
    bar = Progress(cfg, enabled=progress)
    down, up = exchange.down_bytes(size), exchange.up_bytes(size)  # up: one trial encode (top-k sorts)
    try:
        loop = Orchestrator(
            cfg,
            strategy.schedule(),
            profiles,
            parts,
            availability,
            DryExecutor(strategy),
            None,
            down,
            up,
            on_progress=chain(bar, records.version if records is not None else None, callback),
            on_checkpoint=on_checkpoint,
            resume=resume,
            on_row=records.job if records is not None else None,
        ).run()
    finally:
        bar.close()
    loop_s = loop.loop_seconds
    eps = len(loop.rows) / loop_s if loop_s > 0 else None
    log.info(
        "dry run: %d events in %.2f s (%s events/s)", len(loop.rows), loop_s, f"{eps:.0f}" if eps is not None else "n/a"
    )
    return loop, dict(
        dry_run=True,
        model_sha256=None,
        vector_bytes=4 * size,
        num_params=size,
        upload_bytes=up,
        download_bytes=down,
        events_per_second=eps,
    )
