"""The orchestrator's records: a job in flight, the non-job events, and what a loop returns."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

from ..hetero import JobPlan
from ..messages import JobSpec

_MASK64 = (1 << 64) - 1


def job_seed(run_seed: int, job_id: int) -> int:
    """A job's training seed: splitmix64 of (run seed, job id), 63 bits.

    A pure function (any machine, any actor); ~1 us, where a SeedSequence costs ~20 us per job,
    which matters for dry runs at 100,000 events.
    """
    z = (run_seed * 0x9E3779B97F4A7C15 + (job_id + 1) * 0xD1B54A32D192ED03) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (z ^ (z >> 31)) >> 1


def steps_for(num_samples: int, batch_size: int, local_steps: Optional[int], local_epochs: Optional[float]) -> int:
    """How many optimizer steps one job takes: fixed, or enough to see the client's data ``local_epochs`` times."""
    if local_steps is not None:
        return local_steps
    if local_epochs is None:
        raise ValueError("one of local_steps and local_epochs must be set")
    # round() first: 1.1 * 100 / 2 is 55.00000000000001 in floating point, and ceil would add a step
    return max(1, math.ceil(round(float(local_epochs) * num_samples / batch_size, 9)))


@dataclass
class Job:
    spec: JobSpec
    plan: JobPlan
    base_version: int
    dispatch_vtime: float
    round: int
    ticket: Any = None  # the executor's handle while it trains; None if never trained (doomed to fail)
    row: dict[str, Any] = field(default_factory=dict)  # its events.parquet row, filled as it goes


@dataclass(frozen=True)
class Wake:
    """Try to dispatch again (no idle client was online)."""


@dataclass(frozen=True)
class Deadline:
    """A round's deadline."""

    round: int


@dataclass
class LoopResult:
    rows: list[dict[str, Any]]
    version: int
    vtime: float
    interrupted: bool
    version_handle: Any
    actors_replaced: int
    loop_seconds: float  # wall time of the event loop alone (no start-up, no final sampling)
