"""The Ray side of clients: a pool of ClientWorker actors, least-loaded dispatch, replacement on death."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any, Optional

import ray

from ..actors import ClientWorker
from ..config import Config
from ..messages import JobSpec

log = logging.getLogger(__name__)


@dataclass
class Ticket:
    """Where a job went: the actor slot, that slot's generation (bumped on replacement) and result refs."""

    slot: int
    generation: int
    metrics_ref: Any
    payload_ref: Any
    state_ref: Any  # the client's state after this job
    spec: Optional[JobSpec] = None  # the job, to name it when it fails

    @property
    def actor(self) -> str:
        """The actor's name as JobMetrics.actor reports it."""
        return f"client-actor-{self.slot}"


class ActorPool:
    def __init__(self, cfg: Config, images_ref: Any, size: int, labels_ref: Any = None) -> None:
        self.cfg = cfg
        self.images_ref = images_ref
        self.labels_ref = labels_ref  # model.conditional: the training labels, beside the images
        self.cls = ray.remote(ClientWorker)
        self.tag = f"raydiff-{uuid.uuid4().hex[:8]}"  # actor names: findable (ray list actors), unique per run
        self.actors = [self._spawn(i) for i in range(size)]
        self.load = [0] * size
        self.generation = [0] * size
        self.replaced = 0

    def _spawn(self, slot: int, generation: int = 0):
        c = self.cfg.clients
        # SPREAD: clients fan out over the cluster's nodes, so losing a node loses few of them.
        return self.cls.options(
            num_cpus=c.num_cpus,
            num_gpus=c.num_gpus,
            max_restarts=0,
            max_task_retries=0,
            scheduling_strategy="SPREAD",
            name=f"{self.tag}-client-{slot}-g{generation}",
        ).remote(self.cfg, self.images_ref, f"client-actor-{slot}", self.labels_ref)

    def wait_ready(self) -> list[str]:
        """Block until every actor has built its model; returns their node ids."""
        return ray.get([a.ping.remote() for a in self.actors])

    def submit(self, job: JobSpec, base_ref: Any, state_ref: Any = None) -> Ticket:
        slot = min(range(len(self.actors)), key=lambda i: (self.load[i], i))
        self.load[slot] += 1
        m, p, s = self.actors[slot].train.options(num_returns=3).remote(job, base_ref, state_ref)
        return Ticket(slot, self.generation[slot], m, p, s, job)

    def submit_group(self, jobs: list[JobSpec], base_refs: list[Any], state_refs: list[Any]) -> list[Ticket]:
        """Train ``jobs`` as one group on the least-loaded actor; one ordinary Ticket per job.

        The actor's load grows by the group's size, and each ticket is settled (``done``) or lost (``replace``)
        on its own, so a group lost with its actor fails each of its jobs through the usual ActorLost path.
        """
        k = len(jobs)
        slot = min(range(len(self.actors)), key=lambda i: (self.load[i], i))
        self.load[slot] += k
        refs = self.actors[slot].train_group.options(num_returns=3 * k).remote(jobs, *base_refs, *state_refs)
        gen = self.generation[slot]
        return [Ticket(slot, gen, refs[3 * i], refs[3 * i + 1], refs[3 * i + 2], job) for i, job in enumerate(jobs)]

    def done(self, t: Ticket) -> None:
        if self.generation[t.slot] == t.generation:
            self.load[t.slot] -= 1

    def replace(self, t: Ticket) -> None:
        """The actor behind ``t`` died: start a fresh one in its slot (once per death)."""
        if self.generation[t.slot] != t.generation:
            return
        log.warning("client actor %d died; starting a replacement", t.slot)
        try:
            ray.kill(self.actors[t.slot], no_restart=True)
        except Exception:  # noqa: BLE001 - it is already gone
            pass
        self.generation[t.slot] += 1
        self.actors[t.slot] = self._spawn(t.slot, self.generation[t.slot])
        self.load[t.slot] = 0
        self.replaced += 1

    def shutdown(self) -> None:
        for a in self.actors:
            try:
                ray.kill(a, no_restart=True)
            except Exception:  # noqa: BLE001
                pass
