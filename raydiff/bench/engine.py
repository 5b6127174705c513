"""Dry-run scheduling rate: events per second with 10,000 clients (target >= 20,000 events/s)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from ..runner import run

ENGINE_CONFIG: dict[str, Any] = {
    "name": "bench-engine",
    "data": {"dataset": "synthetic", "synthetic_size": 60000, "partition": "iid"},
    "clients": {"num_clients": 10000, "speed": {"dist": "lognormal", "mean": 500, "sigma": 0.8}, "dropout": 0.05},
    "strategy": {"name": "fedbuff", "concurrency": 1000, "buffer_size": 10},
    "run": {"max_updates": 10000, "dry_run": True},
}


def bench_engine(clients: int = 10000, updates: int = 10000, availability: str = "always") -> float:
    cfg = {**ENGINE_CONFIG, "run": {**ENGINE_CONFIG["run"], "max_updates": updates}}
    cfg["clients"] = {**cfg["clients"], "num_clients": clients, "availability": {"mode": availability}}
    cfg["strategy"] = {**cfg["strategy"], "concurrency": max(1, min(1000, clients // 10))}  # 10% in flight
    with tempfile.TemporaryDirectory() as tmp:
        s = run(cfg, out=Path(tmp) / "run", progress=False).summary
    rate = s["events_per_second"]
    print(f"clients            {clients:>12,}  ({cfg['strategy']['concurrency']:,} jobs in flight)")
    print(f"availability       {availability:>12}")
    print(f"events             {s['jobs_dispatched']:>12,}")
    print(f"loop seconds       {s['loop_seconds']:>12.2f}")
    print(f"engine events/s: {rate:,.0f}")
    return rate
