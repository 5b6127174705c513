"""Measure what `parallel: 2` buys a sweep on the README's two-raylet cluster (one CPU each): the same 4 runs
(`run.actors=1`), submitted with `ray job submit` as `parallel: 1`, then `parallel: 2`. Not a test: run it by hand
(about 5 minutes here) and read the ratio.

    python tests/scripts/cluster_sweep_speedup.py [RUNS_DIR]

Prints one line: SPEEDUP {"parallel1_s": ..., "parallel2_s": ..., "speedup": ..., "nodes_per_run": ...}
"""

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ray_local_cluster import LocalRayCluster, readme_recipe

ROOT = Path(__file__).resolve().parents[2]
out = Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="speedup"))
rec = readme_recipe(ROOT / "README.md")
c = LocalRayCluster(workers=rec.workers)
res: dict = {"load_before": os.getloadavg()[0]}
try:
    c.start()
    for parallel in (1, 2):
        sweep = out / f"sweep{parallel}.yaml"
        sweep.write_text(
            yaml.safe_dump(
                {
                    "name": f"p{parallel}",
                    "base": str(ROOT / "scenarios" / "quickstart.yaml"),
                    "seeds": [0, 1, 2, 3],
                    "parallel": parallel,
                    "set": [
                        "run.max_updates=6",
                        "run.actors=1",
                        "model.num_train_timesteps=100",
                        "eval.every_versions=0",
                        "eval.num_samples=16",
                        "eval.fid=false",
                        "eval.privacy_audit.enabled=false",
                    ],
                }
            )
        )
        argv = [*rec.submit[: rec.submit.index("--") + 1], "raydiff", "sweep", str(sweep), "--out", "X"]
        t0 = time.perf_counter()
        r = c.job_submit(argv, cwd=ROOT, out=out / f"p{parallel}", timeout=1800)
        res[f"parallel{parallel}_s"] = round(time.perf_counter() - t0, 1)
        if r.returncode != 0:
            sys.exit(r.stdout[-3000:] + r.stderr[-3000:])
        events = sorted((out / f"p{parallel}").glob("*/events.parquet"))
        nodes = [sorted(set(pd.read_parquet(f).node_id) - {""}) for f in events]
        res[f"nodes_used_parallel{parallel}"] = len({n for ns in nodes for n in ns})
        res["nodes_per_run"] = max(len(ns) for ns in nodes)
    res["speedup"] = round(res["parallel1_s"] / res["parallel2_s"], 2)
    res["load_after"] = os.getloadavg()[0]
finally:
    c.stop()
    shutil.rmtree(c.root, ignore_errors=True)
print("SPEEDUP " + json.dumps(res), flush=True)
