"""The two dispatch policies, chosen from the strategy's declared schedule (never from its name).

- :class:`AsyncDispatch`: keep ``jobs_in_flight`` jobs out at all times; a version happens whenever
  the strategy says so (FedAsync, FedBuff, any asynchronous strategy).
- :class:`RoundDispatch`: select ``jobs_in_flight`` clients at once; the round closes when
  ``round_reports`` updates arrived (the rest are ``over_selected``), when every selected client is
  back, or at the deadline (stragglers: ``deadline``); then the server's ``end_round`` makes the version.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from ..strategies.base import Schedule
from .jobs import Deadline

if TYPE_CHECKING:
    from .orchestrator import Orchestrator


class DispatchPolicy(Protocol):
    def refill(self, loop: Orchestrator) -> None:
        """Dispatch jobs to idle, online clients as the policy allows (or schedule a wake-up)."""

    def after_settle(self, loop: Orchestrator) -> None:
        """A job's event was settled: close the round if it is complete."""

    def on_deadline(self, loop: Orchestrator, deadline: Deadline) -> None:
        """A deadline event popped."""


class AsyncDispatch:
    def __init__(self, schedule: Schedule) -> None:
        self.width = schedule.jobs_in_flight

    def refill(self, loop: Orchestrator) -> None:
        while len(loop.inflight) < self.width and len(loop.idle):
            c = loop.pick_online()
            if c is None:
                loop.schedule_wake()
                return
            loop.dispatch(c)

    def after_settle(self, loop: Orchestrator) -> None:
        pass

    def on_deadline(self, loop: Orchestrator, deadline: Deadline) -> None:
        pass


class RoundDispatch:
    def __init__(self, schedule: Schedule) -> None:
        self.width = schedule.jobs_in_flight
        self.reports = schedule.round_reports
        self.deadline_s = schedule.deadline_s

    def refill(self, loop: Orchestrator) -> None:
        if loop.inflight:
            return
        picked: list[int] = []
        while len(picked) < self.width and len(loop.idle):
            c = loop.pick_online()
            if c is None:
                break
            picked.append(c)
        if not picked:
            loop.schedule_wake()
            return
        loop.round += 1
        loop.round_received = 0
        for c in picked:
            loop.dispatch(c)
        if self.deadline_s is not None:
            loop.queue.push(loop.now + self.deadline_s, Deadline(loop.round))

    def after_settle(self, loop: Orchestrator) -> None:
        if loop.inflight and loop.round_received >= self.reports:
            loop.close_round("over_selected")
        elif not loop.inflight:
            loop.end_round()

    def on_deadline(self, loop: Orchestrator, deadline: Deadline) -> None:
        if deadline.round == loop.round and loop.inflight:
            loop.close_round("deadline")


def dispatch_policy(schedule: Schedule) -> DispatchPolicy:
    return RoundDispatch(schedule) if schedule.round_based else AsyncDispatch(schedule)
