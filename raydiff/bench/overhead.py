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
    preset, image_size, batch, steps, threads, device, bf16 = args
    import torch

    from ..config import ModelConfig
    from ..data.datasets import load_digits_set
    from ..diffusion import train_local
    from ..model import FlatModel, build_scheduler, build_unet

    torch.set_num_threads(threads)
    images = load_digits_set().images
    if image_size != images.shape[-1]:
        images = torch.nn.functional.interpolate(torch.from_numpy(images), size=image_size).numpy()
    cfg = ModelConfig(preset=preset)
    fm = FlatModel(build_unet(cfg, image_size, 1, seed=0), device)
    sched = build_scheduler(cfg)
    rng = np.random.default_rng(0)
    gen = torch.Generator().manual_seed(0)
    train_local(fm, sched, images, rng.integers(0, len(images), (5, batch)), 2e-3, gen, autocast_bf16=bf16)
    batches = rng.integers(0, len(images), (steps, batch))
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    train_local(fm, sched, images, batches, 2e-3, gen, autocast_bf16=bf16)
    if device == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0)


def bench_overhead(actors: int | None = None, batch: int = 32, local_steps: int = 20, updates: int = 60,
                   preset: str = "tiny", device: str = "cpu", image_size: int = 8, bf16: bool = False) -> float:
    """``device="cuda"``: k clients of ``num_gpus=1/(k+1)`` (one share is the evaluator's) on one GPU against k bare processes sharing it
    (the packed rate of ARCHITECTURE.md's table, e.g. 8 x 0.125 for the 3.9M UNet at 32x32, bf16)."""
    k = actors or (os.cpu_count() or 1 if device == "cpu" else 8)
    bare_steps = local_steps * updates // k
    ctx = mp.get_context("spawn")
    with ctx.Pool(k) as pool:
        rates = pool.map(_bare_worker, [(preset, image_size, batch, bare_steps, 1, device, bf16)] * k)
    bare = float(sum(rates))

    from ..runner import run

    cfg = {
        "name": "bench-overhead",
        "model": {"preset": preset},
        "data": {"image_size": image_size},
        "clients": {"num_clients": 4 * k, "num_cpus": 1 if device == "cpu" else max(1, (os.cpu_count() or 2) // (k + 1)),
                    "num_gpus": 0 if device == "cpu" else 1.0 / (k + 1), "dropout": 0.0},
        "train": {"local_steps": local_steps, "batch_size": batch, "device": device,
                  "precision": "bf16" if bf16 else "fp32"},
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
    print(f"model / batch      {preset:>8} / {batch}  ({device}{', bf16' if bf16 else ''}, {image_size}x{image_size})")
    print(f"bare loops         {bare:>10,.0f} samples/s (sum of {k} processes)")
    print(f"inside raydiff     {sim:>10,.0f} samples/s ({len(used)} jobs of {local_steps} steps)")
    print(f"overhead ratio (raydiff / bare): {ratio:.3f}")
    return ratio
