"""Simulator overhead: clients training inside a raydiff run against bare loops on the same cores.

(a) k plain processes, each a bare training loop (same model, batch, threads), run at once: the
raw rate of this machine for k workers. (b) a raydiff run with k actors (FedBuff, no dropout, no
evaluation in the loop), counting the samples of every job whose result was used, over the event
loop's wall time. Target: (b) / (a) >= 0.90.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def _bare_worker(args: tuple) -> float:
    preset, image_size, batch, steps, threads = args
    import torch

    from ..config import ModelConfig
    from ..data.datasets import load_digits_set
    from ..diffusion import train_local
    from ..model import FlatModel, build_scheduler, build_unet

    torch.set_num_threads(threads)
    images = load_digits_set().images
    cfg = ModelConfig(preset=preset)
    fm = FlatModel(build_unet(cfg, image_size, 1, seed=0))
    sched = build_scheduler(cfg)
    rng = np.random.default_rng(0)
    gen = torch.Generator().manual_seed(0)
    train_local(fm, sched, images, rng.integers(0, len(images), (5, batch)), 2e-3, gen)  # warm-up
    batches = rng.integers(0, len(images), (steps, batch))
    t0 = time.perf_counter()
    train_local(fm, sched, images, batches, 2e-3, gen)
    return steps * batch / (time.perf_counter() - t0)


def bench_overhead(actors: int | None = None, batch: int = 32, local_steps: int = 20, updates: int = 60,
                   preset: str = "tiny") -> float:
    k = actors or os.cpu_count() or 1
    bare_steps = local_steps * updates // k
    ctx = mp.get_context("spawn")
    with ctx.Pool(k) as pool:
        rates = pool.map(_bare_worker, [(preset, 8, batch, bare_steps, 1)] * k)
    bare = float(sum(rates))

    from ..runner import run

    cfg = {
        "name": "bench-overhead",
        "model": {"preset": preset},
        "clients": {"num_clients": 4 * k, "num_cpus": 1, "dropout": 0.0},
        "train": {"local_steps": local_steps, "batch_size": batch},
        "strategy": {"name": "fedbuff", "concurrency": 2 * k, "buffer_size": 1},
        "eval": {"every_versions": 10 ** 9, "num_samples": 1, "judge": False},
        "run": {"max_updates": updates, "actors": k},
    }
    with tempfile.TemporaryDirectory() as tmp:
        import pandas as pd

        res = run(cfg, out=Path(tmp) / "run", progress=False)
        ev = pd.read_parquet(res.out_dir / "events.parquet")
    used = ev[ev.wall_seconds.notna()]
    sim = float(used.samples_trained.sum() / res.summary["loop_seconds"])
    ratio = sim / bare
    print(f"workers            {k:>12}")
    print(f"model / batch      {preset:>8} / {batch}")
    print(f"bare loops         {bare:>10,.0f} samples/s (sum of {k} processes)")
    print(f"inside raydiff     {sim:>10,.0f} samples/s ({len(used)} jobs of {local_steps} steps)")
    print(f"overhead ratio (raydiff / bare): {ratio:.3f}")
    return ratio
