"""The messages that cross between the orchestrator (``sim/``) and the actors (``actors/``).

Both sides import them from here, so neither imports the other: the event loop depends on these
records and on the executor protocol only. Pure numpy; no torch, no Ray.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np


@dataclass(frozen=True)
class JobSpec:
    """Everything a job needs besides the base vector; small, so client state travels with the job."""

    job_id: int
    client_id: int
    seed: int
    indices: np.ndarray  # this client's sample indices into the training set
    steps: int
    batch_size: int


@dataclass(frozen=True)
class JobMetrics:
    """What a client reports about a job besides its update: small, so the driver fetches it."""

    job_id: int
    train_loss: float
    samples_trained: int
    actor: str
    node_id: str
    wall_seconds: float


@dataclass(frozen=True)
class ServerReply:
    """The parameter server's answer to ``submit`` or ``end_round``.

    ``status``: ``applied`` (this update made a new version), ``buffered`` (kept for a later
    version), ``rejected`` (never touched the model; ``reason`` says why), or ``""`` for a round's end.
    ``applied_jobs``: every job id the new version absorbed (empty when ``version`` did not change).
    ``finite``: False when the new version holds NaN or infinite values (the run then stops).
    ``weight``: the strategy's ``Decision.weight`` for this update (events.parquet's ``weight``); None
    when the strategy never saw it (a malformed or non-finite update) or for a round's end.
    """

    version: int
    status: str = ""
    staleness: Optional[int] = None
    reason: str = ""
    applied_jobs: tuple[int, ...] = ()
    finite: bool = True
    weight: Optional[float] = None


@dataclass
class ServerState:
    """The parameter server's whole state, for a checkpoint: the strategy's part is its ``state_dict()``."""

    x: np.ndarray
    version: int
    buffered_jobs: list[int] = field(default_factory=list)
    received: list[tuple[object, ...]] = field(default_factory=list)  # the audit: kinds of data clients sent
    strategy: dict[str, object] = field(default_factory=dict)
