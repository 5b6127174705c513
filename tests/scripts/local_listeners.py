"""Run by tests/test_cluster_launch.py in a fresh process whose environment lacks
RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER (as a user's shell does): a small local run, and every listening TCP socket of
this process and the Ray processes it started (GCS, raylet, agents, workers), read mid-run.

    python local_listeners.py OUT_DIR fresh|preimported

``preimported``: ``import ray`` first, as a notebook user might, before raydiff can set anything.
Prints one line: RESULT {"listeners": [[process, address, port], ...], "node_ip": ..., "final_version": ...}
"""

import json
import os
import sys

if "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" in os.environ:
    sys.exit("run me without RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER in the environment")
if sys.argv[2] == "preimported":
    import ray  # noqa: F401

import psutil

import raydiff

seen: list[tuple[str, str, int]] = []
node_ip: list[str] = []


def look(info: dict) -> None:
    """At the first new version: the run's actors are up, so every Ray process listens by now."""
    if seen:
        return
    import ray

    node_ip.append(ray.util.get_node_ip_address())
    me = psutil.Process()
    for p in [me, *me.children(recursive=True)]:
        try:
            seen.extend(
                (p.name(), c.laddr.ip, c.laddr.port)
                for c in p.net_connections(kind="tcp")
                if c.status == psutil.CONN_LISTEN
            )
        except psutil.Error:
            pass


cfg = {
    "seed": 1,
    "clients": {"num_clients": 4, "num_cpus": 1, "dropout": 0.0},
    "train": {"local_steps": 2, "batch_size": 8},
    "strategy": {"name": "fedbuff", "concurrency": 2, "buffer_size": 2},
    "eval": {
        "every_versions": 0,
        "num_heldout": 16,
        "num_samples": 4,
        "fid": False,
        "judge": False,
        "privacy_audit": {"enabled": False},
    },
    "model": {"num_train_timesteps": 20},
    "run": {"max_updates": 2, "num_cpus": 2},
}
res = raydiff.run(cfg, out=sys.argv[1], progress=False, callback=look)
print(
    "RESULT "
    + json.dumps(
        dict(
            listeners=sorted(set(seen)),
            node_ip=node_ip[0] if node_ip else None,
            final_version=res.summary["final_version"],
        )
    ),
    flush=True,
)
