"""Starting or joining Ray, and checking that the cluster can hold what the config asks for."""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, Optional

from .config import Config
from .errors import ResourceError

log = logging.getLogger(__name__)

LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray takes 127.0.0.1 as the node's IP and binds there
_forced_local = {"env": False, "constant": False}  # what keep_ray_local changed in this process, to undo it


def keep_ray_local(cfg: Config) -> bool:
    """Make a local run's Ray listen on 127.0.0.1 only; leave Ray alone when the run attaches to a cluster.

    Call it before Ray is first imported (``runner.run`` does, right before the session imports Ray). Ray reads
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` once, at ``import ray``: with "0" it keeps the node IP at 127.0.0.1 and
    binds the GCS, raylet, agents and workers there; without it, a local Ray maps 127.0.0.1 to the machine's
    address and listens on every interface (then token authentication is the only guard). So this sets the
    variable (unless the user set it) for a local run, and when Ray was imported earlier (a notebook), sets the
    value Ray read from it, ``ray._private.ray_constants.ENABLE_RAY_CLUSTER``, to the same effect (logged). A Ray
    already running in this process is used as it is: a warning says so if it is not on the loopback.
    Attaching (``run.address`` or RAY_ADDRESS) undoes what an earlier local run of this process set, since a
    cluster's nodes must reach this process at its real address. Never imports Ray. Returns True for a local run.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    local = not (cfg.run.address or os.environ.get("RAY_ADDRESS"))
    consts: Any = sys.modules.get("ray._private.ray_constants")  # Ray's module, if imported: its setting is ours
    if local:
        if LOCAL_ONLY_ENV not in os.environ:
            os.environ[LOCAL_ONLY_ENV] = "0"  # for this process's `import ray` and every Ray process it starts
            _forced_local["env"] = True
        if consts is not None and os.environ[LOCAL_ONLY_ENV] == "0" and getattr(consts, "ENABLE_RAY_CLUSTER", False):
            import ray  # already imported: free

            if ray.is_initialized():
                ip = ray.util.get_node_ip_address()
                if ip not in ("127.0.0.1", "::1"):
                    log.warning(
                        "Ray was started in this process before raydiff (ray.init) on %s, not 127.0.0.1: "
                        "raydiff uses it as it is, so its GCS, raylet and actors listen beyond this machine, "
                        "guarded by token authentication only. Start Python with %s=0 or let raydiff start "
                        "Ray to keep it local.",
                        ip,
                        LOCAL_ONLY_ENV,
                    )
            else:
                consts.ENABLE_RAY_CLUSTER = False
                _forced_local["constant"] = True
                log.info(
                    "Ray was imported before raydiff could set %s=0; set Ray's copy of it instead, so this "
                    "local Ray listens on 127.0.0.1 only",
                    LOCAL_ONLY_ENV,
                )
    else:
        if _forced_local["env"] and os.environ.get(LOCAL_ONLY_ENV) == "0":
            del os.environ[LOCAL_ONLY_ENV]
        if consts is not None and (_forced_local["constant"] or _forced_local["env"]):
            consts.ENABLE_RAY_CLUSTER = not getattr(consts, "IS_WINDOWS_OR_OSX", False)  # Ray's own default
        _forced_local.update(env=False, constant=False)
    return local


def init_ray(cfg: Config) -> bool:
    """Join ``run.address`` (or RAY_ADDRESS), reuse an initialised Ray, or start a local one on 127.0.0.1.

    Returns True if this call started Ray (and the caller should shut it down).
    """
    keep_ray_local(cfg)
    import ray

    if ray.is_initialized():
        return False
    address = cfg.run.address or os.environ.get("RAY_ADDRESS")
    try:
        if address:
            ray.init(address=address, log_to_driver=True)
        else:
            with own_session() as started:
                ray.init(
                    # "local": always a new Ray of this run's own; without it, a `ray start` cluster elsewhere on
                    # the machine (its address file in /tmp/ray) is joined instead, and num_cpus then refused
                    address="local",
                    num_cpus=cfg.run.num_cpus,
                    include_dashboard=False,
                    _node_ip_address="127.0.0.1",
                    log_to_driver=True,
                    configure_logging=False,
                )
            start_reaper(started)
    except Exception as exc:  # noqa: BLE001 - Ray raises plain Exception ("The current node timed out during startup")
        _ray_start_failed(exc, address)
    return True


# ---------------------------------------------------------------------------------------- the run's own processes
@contextmanager
def own_session() -> Iterator[list[int]]:
    """Inside: every process Ray's start-up spawns (GCS, raylet, log monitor, dashboard, monitor) starts in a
    session of its own, so a signal to the driver's process group (a closed terminal, ``timeout``, a batch
    scheduler, ``kill -TERM -PGID``) reaches the driver only: Ray's processes no longer die first and take the
    run with them. Their children (agents, workers) inherit those sessions. Yields the pids started, each the
    id of its session. Ray's own fate-sharing (PR_SET_PDEATHSIG) is kept."""
    import ray._private.services as services

    started: list[int] = []
    base = services.ConsolePopen

    class _OwnSession(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kw: Any) -> None:
            kw["start_new_session"] = True
            super().__init__(*args, **kw)
            started.append(self.pid)

    setattr(services, "ConsolePopen", _OwnSession)  # noqa: B010 - mypy: a class attribute of a module
    try:
        yield started
    finally:
        setattr(services, "ConsolePopen", base)  # noqa: B010


# The reaper: a tiny process in a session of its own, deaf to INT/TERM/HUP, that reads its stdin until EOF. The
# driver holds the other end: on a clean exit it writes "done" first; when the driver dies by SIGKILL (or any
# death without that word) the kernel closes the pipe and the reaper kills every process left in the sessions
# of the Ray processes this run started (the dashboard and runtime-env agents outlived the raylet by 30 s+).
_REAPER = """
import os, signal, sys, time
for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(s, signal.SIG_IGN)
sids = {int(a) for a in sys.argv[1:]}
data = sys.stdin.buffer.read()
if data.endswith(b"done"):
    sys.exit(0)
me = os.getpid()
for sig, pause in ((signal.SIGTERM, 1.0), (signal.SIGKILL, 0.0)):
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != me:
            try:
                if os.getsid(int(name)) in sids:
                    os.kill(int(name), sig)
            except OSError:
                pass
    time.sleep(pause)
"""
_reaper: dict[str, Any] = {}


def start_reaper(sids: list[int]) -> None:
    """Start the reaper for the sessions ``sids`` (Linux; elsewhere nothing)."""
    if not sids or not sys.platform.startswith("linux"):
        return
    import subprocess

    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", _REAPER, *map(str, sids)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError as exc:
        log.warning("could not start the reaper of this run's Ray processes (%s)", exc)
        return
    _reaper["proc"] = proc


def shutdown_ray() -> None:
    """``ray.shutdown()``, then tell the reaper all is well, then re-arm the run's signal handlers (Ray's
    shutdown resets them at the C level: the next SIGTERM would kill the driver mid-write)."""
    import ray

    from .signals import reinstall

    try:
        ray.shutdown()
    finally:
        proc = _reaper.pop("proc", None)
        if proc is not None:
            try:
                assert proc.stdin is not None
                proc.stdin.write(b"done")
                proc.stdin.close()
                proc.wait(timeout=5)
            except Exception:  # the reaper is best effort
                log.debug("stopping the reaper", exc_info=True)
        reinstall()


def _ray_start_failed(exc: Exception, address: Optional[str]) -> NoReturn:
    """Ray did not start or attach: a ResourceError (``raydiff: error:``, exit 2, status ``failed``), not a
    traceback. Seen on a loaded machine: "The current node timed out during startup" (4 of 13 starts)."""
    import ray

    from .errors import strip_ansi

    try:
        ray.shutdown()  # whatever half-started processes ray.init left behind
    except Exception:  # nothing more to clean up
        log.debug("ray.shutdown after a failed start", exc_info=True)
    text = " ".join(strip_ansi(str(exc)).split())[:600]
    where = f"attach to the Ray cluster at {address}" if address else "start a local Ray"
    raise ResourceError(
        f"Ray failed to {where} ({type(exc).__name__}: {text}). On a heavily loaded machine Ray's start-up "
        "can time out (Ray waits 30 s for its processes): try again when the load is lower; for a cluster, "
        "check that the address is right and reachable"
    ) from None


def size_pool(cfg: Config, resources: dict[str, float], jobs_in_flight: int) -> int:
    """How many client actors to start; a ResourceError if not even one fits or ``run.actors`` cannot.

    ``jobs_in_flight``: the strategy's declared width (more actors than jobs in flight would idle)."""
    c = cfg.clients
    cpus, gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
    if c.num_gpus > 0 and gpus == 0:
        raise ResourceError(
            f"clients.num_gpus={c.num_gpus} asks for GPUs, but the Ray cluster has none. "
            "Set clients.num_gpus=0 to train on CPUs, or attach to a cluster with GPUs "
            "(run.address)."
        )
    if c.num_gpus > gpus:
        raise ResourceError(f"clients.num_gpus={c.num_gpus} but the Ray cluster has only {gpus:g} GPUs")
    if c.num_cpus > cpus:
        raise ResourceError(
            f"clients.num_cpus={c.num_cpus} but the Ray cluster has only {cpus:g} CPUs: lower clients.num_cpus"
        )
    fit = math.floor(cpus / c.num_cpus + 1e-9)
    if c.num_gpus > 0:  # one share is the evaluator's
        fit = min(fit, math.floor(gpus / c.num_gpus + 1e-9) - 1)
        if fit < 1:
            raise ResourceError(
                f"clients.num_gpus={c.num_gpus}: the cluster's {gpus:g} GPUs hold no client "
                "actor beside the evaluator (which takes one client's share); use a fraction"
            )
    if cfg.run.actors is not None:
        if cfg.run.actors > fit:
            raise ResourceError(
                f"run.actors={cfg.run.actors} actors of {c.num_cpus:g} CPU / {c.num_gpus:g} GPU each do not fit: "
                f"the cluster has {cpus:g} CPUs and {gpus:g} GPUs, room for {fit}"
            )
        return cfg.run.actors
    return max(1, min(c.num_clients, jobs_in_flight, fit))


def check_parallel_fit(cfgs: list[Config], parallel: int, resources: dict[str, float] | None = None) -> None:
    """A sweep's ``parallel`` runs share one Ray cluster: every run's actors must fit beside the others'.

    Each run starts all its client actors and waits until every one is placed. Runs sized for the whole
    cluster (``run.actors`` unset) would each get some of their actors and wait for the rest forever, so
    ``run.actors`` must be set, and ``parallel`` of the largest runs must fit the cluster's CPUs and GPUs
    (``resources``: ``ray.cluster_resources()``; None checks the configs only, before Ray starts).
    A ResourceError names the fix.
    """
    live = [c for c in cfgs if not c.run.dry_run]
    if parallel < 2 or not live:
        return
    unset = [c.name for c in live if c.run.actors is None]
    if unset:
        raise ResourceError(
            f"sweep parallel: {parallel} runs share one Ray cluster, so each run needs a fixed number of client "
            f"actors: add run.actors=N to the sweep's `set` (N x clients.num_cpus x {parallel} at most the "
            f"cluster's CPUs). Without it ({unset[0]}) each run sizes itself for the whole cluster, and concurrent "
            "runs each hold some of their actors and wait for the rest forever"
        )
    if resources is None:
        return
    # the evaluator takes one client's GPU share beside the actors (size_pool reserves it)
    need = sorted(
        (
            (c.run.actors or 0) * c.clients.num_cpus,
            ((c.run.actors or 0) + 1) * c.clients.num_gpus if c.clients.num_gpus else 0.0,
        )
        for c in live
    )
    top = need[-parallel:]
    cpus, gpus = sum(n[0] for n in top), sum(n[1] for n in top)
    have_c, have_g = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
    if cpus > have_c + 1e-9 or gpus > have_g + 1e-9:
        raise ResourceError(
            f"sweep parallel: {parallel} runs at once need {cpus:g} CPUs and {gpus:g} GPUs for their client actors "
            f"(run.actors x clients.num_cpus / num_gpus), but the Ray cluster has {have_c:g} CPUs and {have_g:g} "
            "GPUs: lower run.actors or parallel, or add nodes"
        )


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
            raise ResourceError(
                f"run.server_node={want!r} is not a live node of the cluster; live nodes: "
                + ", ".join(f"{n['NodeManagerAddress']} ({n['NodeID'][:8]})" for n in alive)
            )
    if not chosen:
        return {}
    return {"scheduling_strategy": NodeAffinitySchedulingStrategy(chosen[0]["NodeID"], soft=False)}
