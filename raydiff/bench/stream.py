"""``raydiff bench stream``: what streaming the records costs, measured both ways in one run.

The quickstart (or ``--max-updates`` versions of it) is run with the run folder's record stream on and off,
alternately (on, off, off, on, ...: a drift in the machine's load falls on both), on one Ray started once, so
that start-up is not in the figures. The figure is the ratio of the event loops' wall times, streaming over
not (median over ``--repeats`` pairs); the target is at most 1.03. The whole runs' wall times are printed too.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Any, Optional

QUICKSTART = Path(__file__).resolve().parents[2] / "scenarios" / "quickstart.yaml"


def bench_stream(max_updates: Optional[int] = None, repeats: int = 1, num_cpus: Optional[int] = None) -> dict[str, Any]:
    import ray

    from .. import records
    from ..config_load import load_config
    from ..ray_setup import init_ray, shutdown_ray
    from ..runner import run

    sets = [f"run.max_updates={max_updates}"] if max_updates else []
    sets += [f"run.num_cpus={num_cpus}"] if num_cpus else []
    started = init_ray(load_config(str(QUICKSTART), sets))  # once: every run below joins it
    rows: list[tuple[int, bool, float, float]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="raydiff-bench-stream-") as tmp:
            for i in range(repeats):
                for on in (True, False) if i % 2 == 0 else (False, True):
                    records.STREAM_ENABLED = on
                    r = run(str(QUICKSTART), sets, out=Path(tmp) / f"r{i}-{int(on)}", progress=False)
                    s = r.summary
                    rows.append((i, on, float(s["loop_seconds"]), float(s["wall_seconds"])))
                    print(
                        f"pair {i}  stream {'on ' if on else 'off'}  loop {s['loop_seconds']:8.2f} s  "
                        f"run {s['wall_seconds']:8.2f} s  versions {s['final_version']}",
                        flush=True,
                    )
    finally:
        records.STREAM_ENABLED = True
        if started and ray.is_initialized():
            shutdown_ray()
    loop = [on_[2] / off[2] for on_, off in _pairs(rows)]
    wall = [on_[3] / off[3] for on_, off in _pairs(rows)]
    out = {"loop_ratio": statistics.median(loop), "wall_ratio": statistics.median(wall), "pairs": len(loop)}
    print(f"whole run, streaming / not: {out['wall_ratio']:.3f}")
    print(
        f"event loop wall time, streaming / not (median of {len(loop)} pairs; target <= 1.03): {out['loop_ratio']:.3f}"
    )
    return out


def _pairs(rows: list[tuple[int, bool, float, float]]) -> list[tuple[tuple, tuple]]:
    by: dict[int, dict[bool, tuple]] = {}
    for r in rows:
        by.setdefault(r[0], {})[r[1]] = r
    return [(v[True], v[False]) for v in by.values() if True in v and False in v]
