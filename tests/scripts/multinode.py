"""Run by tests/test_cluster.py in its own process: a 3-node Ray cluster on 127.0.0.1 (head + 2 workers,
real raylets via ray.cluster_utils.Cluster), a tiny run whose clients spread over the workers, and one
worker node removed mid-run. Prints one JSON line with what happened."""

import json
import os
import sys

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import pandas as pd
import ray
from ray.cluster_utils import Cluster

import raydiff

out = sys.argv[1]
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "node_ip_address": "127.0.0.1"})
workers = [cluster.add_node(num_cpus=2, node_ip_address="127.0.0.1") for _ in range(2)]
cluster.wait_for_nodes()
ray.init(address=cluster.address)
head_id = next(n["NodeID"] for n in ray.nodes() if "node:__internal_head__" in n["Resources"])
killed = []


def kill_a_worker(info):
    if info["version"] == 3 and not killed:
        cluster.remove_node(workers[1], allow_graceful=False)
        killed.append(workers[1].node_id)


cfg = {
    "seed": 5,
    "clients": {"num_clients": 6, "num_cpus": 1, "dropout": 0.0},
    "train": {"local_steps": 2, "batch_size": 8},
    "strategy": {"name": "fedbuff", "concurrency": 4, "buffer_size": 2},
    "eval": {"every_versions": 4, "num_heldout": 16, "num_samples": 4},
    "model": {"num_train_timesteps": 20},
    "run": {"max_updates": 8, "actors": 2},
}
res = raydiff.run(cfg, out=out, progress=False, callback=kill_a_worker)
ev = pd.read_parquet(f"{out}/events.parquet")
print(
    "RESULT "
    + json.dumps(
        dict(
            killed=killed,
            head=head_id,
            workers=[w.node_id for w in workers],
            summary=res.summary,
            nodes_used=sorted(set(ev.node_id[ev.node_id != ""])),
            failed=int((ev.status == "failed").sum()),
            applied=int((ev.status == "applied").sum()),
            unique_jobs=bool(ev.job_id.is_unique),
            statuses=sorted(set(ev.status)),
        )
    ),
    flush=True,
)
ray.shutdown()
cluster.shutdown()
