"""Which jobs train together (``train.group_size`` G > 1), decided from the virtual schedule alone.

A job that will be trained is not sent to an actor when it is dispatched: it waits here, with the
handles of its base vector and of its client's state taken at dispatch. Waiting jobs go out as one
group (one vectorised computation on one actor, raydiff/grouped.py):
- as soon as G jobs wait: those G, in job-id order;
- when the loop must settle a job that still waits (its event popped): every waiting job, in job-id
  order, in groups of at most G. So a group that cannot fill (G above the jobs in flight) never
  deadlocks: it goes out, smaller, when its first job is due.
Dispatches and settles happen in (virtual time, seq) order, so the groups depend on the seed, the
config and G only, never on which actor happens to be free: with 1, 2 or 4 actors, and after a
resume (the waiting jobs and the groups still training are checkpointed), a job trains with the
same mates, and the run ends with the same events and model hash. Pure Python: no Ray, no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from ..errors import InternalError
from ..messages import JobSpec


class _Waiting:
    """The ticket of a job that waits in a :class:`GroupBuffer` (dispatched, to be trained, not yet sent)."""

    def __repr__(self) -> str:
        return "WAITING"


WAITING: Any = _Waiting()


@dataclass(frozen=True)
class Member:
    """A job as its group trains it: what ``Executor.train`` gets for one job, fixed at dispatch."""

    spec: JobSpec
    base_version: int
    base: Any  # handle of the vector the job starts from
    state: Any  # handle of its client's state (None: none)


class GroupBuffer:
    """The waiting jobs and the groups sent out for training (kept while a member is unsettled, for checkpoints)."""

    def __init__(self, size: int) -> None:
        if size < 2:
            raise ValueError(f"a GroupBuffer is for group sizes >= 2, got {size}")
        self.size = size
        self.waiting: list[Member] = []  # in job-id order
        self.groups: list[list[Member]] = []  # sent out, in the order they were sent

    def __len__(self) -> int:
        return len(self.waiting)

    def __contains__(self, job_id: object) -> bool:
        return any(m.spec.job_id == job_id for m in self.waiting)

    def add(self, member: Member) -> Optional[list[Member]]:
        """Queue a dispatched job; returns the group to send when G jobs wait (else None)."""
        if self.waiting and member.spec.job_id <= self.waiting[-1].spec.job_id:
            raise InternalError(
                f"job {member.spec.job_id} was queued for grouping after job "
                f"{self.waiting[-1].spec.job_id}: jobs must wait in job-id order"
            )
        self.waiting.append(member)
        if len(self.waiting) < self.size:
            return None
        group, self.waiting = self.waiting, []
        return self._sent(group)

    def flush(self) -> list[list[Member]]:
        """Every waiting job, in job-id order, in groups of at most G (the loop must wait for one of them)."""
        out = [self._sent(self.waiting[i : i + self.size]) for i in range(0, len(self.waiting), self.size)]
        self.waiting = []
        return out

    def withdraw(self, job_id: int) -> bool:
        """A waiting job that will never be needed (its round closed, the run stopped): it is never trained.
        False if it was not waiting (a run interrupted while its group was being sent)."""
        before = len(self.waiting)
        self.waiting = [m for m in self.waiting if m.spec.job_id != job_id]
        return len(self.waiting) < before

    def live(self, unsettled: Any) -> list[list[Member]]:
        """The groups sent out that still have a member in ``unsettled`` (job ids); forgets the others."""
        self.groups = [g for g in self.groups if any(m.spec.job_id in unsettled for m in g)]
        return self.groups

    def restore(self, waiting: list[Member], groups: list[list[Member]]) -> None:
        """Put a checkpoint's waiting jobs and live groups back (the caller re-sends the groups)."""
        self.waiting = sorted(waiting, key=lambda m: m.spec.job_id)
        self.groups = [list(g) for g in groups]

    def _sent(self, group: list[Member]) -> list[Member]:
        clients = [m.spec.client_id for m in group]
        if len(set(clients)) != len(clients):  # a client's next job needs the state its previous one leaves
            raise InternalError(
                f"jobs {[m.spec.job_id for m in group]} of clients {clients} would share a group, "
                "two of them from one client"
            )
        self.groups.append(group)
        return group
