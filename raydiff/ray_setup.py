"""Starting or joining Ray, and checking that the cluster can hold what the config asks for."""
from __future__ import annotations

import logging
import math
import os

from .config import Config
from .errors import ResourceError

log = logging.getLogger(__name__)


def init_ray(cfg: Config) -> bool:
    """Join ``run.address`` (or RAY_ADDRESS), reuse an initialised Ray, or start a local one on 127.0.0.1.

    Returns True if this call started Ray (and the caller should shut it down).
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    if ray.is_initialized():
        return False
    address = cfg.run.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        ray.init(num_cpus=cfg.run.num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
                 log_to_driver=True, configure_logging=False)
    return True


def size_pool(cfg: Config, resources: dict[str, float]) -> int:
    """How many client actors to start; a ResourceError if not even one fits or ``run.actors`` cannot."""
    c = cfg.clients
    cpus, gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
    if c.num_gpus > 0 and gpus == 0:
        raise ResourceError(f"clients.num_gpus={c.num_gpus} asks for GPUs, but the Ray cluster has none. "
                            "Set clients.num_gpus=0 to train on CPUs, or attach to a cluster with GPUs "
                            "(run.address).")
    if c.num_gpus > gpus:
        raise ResourceError(f"clients.num_gpus={c.num_gpus} but the Ray cluster has only {gpus:g} GPUs")
    if c.num_cpus > cpus:
        raise ResourceError(f"clients.num_cpus={c.num_cpus} but the Ray cluster has only {cpus:g} CPUs: "
                            "lower clients.num_cpus")
    fit = math.floor(cpus / c.num_cpus + 1e-9)
    if c.num_gpus > 0:  # one share is the evaluator's
        fit = min(fit, math.floor(gpus / c.num_gpus + 1e-9) - 1)
        if fit < 1:
            raise ResourceError(f"clients.num_gpus={c.num_gpus}: the cluster's {gpus:g} GPUs hold no client "
                                "actor beside the evaluator (which takes one client's share); use a fraction")
    width = cfg.strategy.clients_per_round if cfg.strategy.name == "fedavg" else cfg.strategy.concurrency
    if cfg.run.actors is not None:
        if cfg.run.actors > fit:
            raise ResourceError(
                f"run.actors={cfg.run.actors} actors of {c.num_cpus:g} CPU / {c.num_gpus:g} GPU each do not fit: "
                f"the cluster has {cpus:g} CPUs and {gpus:g} GPUs, room for {fit}")
        return cfg.run.actors
    return max(1, min(c.num_clients, width, fit))


def server_placement(cfg: Config) -> dict:
    """Ray options that pin the parameter server and evaluator to one node: ``run.server_node``
    (a node id or IP address), by default the head node, where the driver is and which a worker
    node's loss cannot take away."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    want = cfg.run.server_node
    alive = [n for n in ray.nodes() if n.get("Alive")]
    if want in (None, "head"):
        chosen = [n for n in alive if "node:__internal_head__" in n.get("Resources", {})]
    else:
        chosen = [n for n in alive if want in (n["NodeID"], n.get("NodeManagerAddress"))]
        if not chosen:
            raise ResourceError(f"run.server_node={want!r} is not a live node of the cluster; live nodes: "
                                + ", ".join(f"{n['NodeManagerAddress']} ({n['NodeID'][:8]})" for n in alive))
    if not chosen:
        return {}
    return {"scheduling_strategy": NodeAffinitySchedulingStrategy(chosen[0]["NodeID"], soft=False)}
