"""Simulator overhead: clients training inside a raydiff run against bare loops on the same cores.

(a) k plain processes, each a bare training loop (same model, batch, threads), run at once: the
raw rate of this machine for k workers. (b) a raydiff run with k actors (FedBuff, no dropout, no
evaluation in the loop), counting the samples of every job whose result was used, over the event
loop's wall time. Target: (b) / (a) >= 0.90.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import tempfile
import time
from pathlib import Path

import numpy as np

from . import require_device


def _bare_worker(args: tuple, barrier, results) -> None:
    """One bare training loop; it starts its clock with the others (``barrier``) and reports
    (start, end, samples) so that the raw rate is the machine's, over one common window."""
    preset, image_size, batch, steps, threads, device, bf16 = args
    import torch

    from ..config import ModelConfig
    from ..data.datasets import load_digits_set
    from ..diffusion import data_tensor, job_generator, train_local
    from ..model import FlatModel, build_scheduler, build_unet

    torch.set_num_threads(threads)
    images = load_digits_set().images
    if image_size != images.shape[-1]:
        images = torch.nn.functional.interpolate(torch.from_numpy(images), size=image_size).numpy()
    data = data_tensor(images, device)  # as a client actor holds it
    cfg = ModelConfig(preset=preset)
    fm = FlatModel(build_unet(cfg, image_size, 1, seed=0), device)
    sched = build_scheduler(cfg)
    rng = np.random.default_rng(0)
    gen = job_generator(0, device)
    train_local(fm, sched, data, rng.integers(0, len(images), (5, batch)), 2e-3, gen, autocast_bf16=bf16)
    batches = rng.integers(0, len(images), (steps, batch))
    if device == "cuda":
        torch.cuda.synchronize()
    barrier.wait()
    t0 = time.perf_counter()
    train_local(fm, sched, data, batches, 2e-3, gen, autocast_bf16=bf16)
    if device == "cuda":
        torch.cuda.synchronize()
    results.put((t0, time.perf_counter(), steps * batch))


def bare_rate(k: int, args: tuple) -> float:
    """k bare loops at once: their samples over the window from the first start to the last end.

    Summing each process's own rate would overstate the machine when one process runs alone for a
    while (start-up skew, CUDA initialisation); a barrier and a common window do not.
    """
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(k), ctx.Queue()
    procs = [ctx.Process(target=_bare_worker, args=(args, barrier, results)) for _ in range(k)]
    for p in procs:
        p.start()
    got: list[tuple] = []
    try:
        while len(got) < k:
            try:
                got.append(results.get(timeout=2))
            except queue.Empty:  # a dead worker would leave the others waiting at the barrier forever
                dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(f"a bare training process died (exit code {dead[0]})") from None
    finally:
        for p in procs:
            p.join(timeout=10) if len(got) == k else p.terminate()
    start, end = min(g[0] for g in got), max(g[1] for g in got)
    return sum(g[2] for g in got) / (end - start)


def raydiff_rate(cfg: dict) -> tuple[float, int]:
    """(samples/s of every job whose result was used, over the event loop's wall time; jobs)."""
    import pandas as pd

    from ..runner import run

    with tempfile.TemporaryDirectory() as tmp:
        res = run(cfg, out=Path(tmp) / "run", progress=False)
        ev = pd.read_parquet(res.out_dir / "events.parquet")
    used = ev[ev.wall_seconds.notna()]
    return float(used.samples_trained.sum() / res.summary["loop_seconds"]), len(used)


def bench_overhead(
    actors: int | None = None,
    batch: int = 32,
    local_steps: int = 20,
    updates: int = 60,
    preset: str = "tiny",
    device: str = "cpu",
    image_size: int = 8,
    bf16: bool = False,
    repeats: int = 1,
) -> float:
    """``device="cuda"``: k clients of ``num_gpus=1/(k+1)`` (one share is the evaluator's) on one GPU against
    k bare processes sharing it
    (the packed rate of ARCHITECTURE.md's table, e.g. 8 x 0.125 for the 3.9M UNet at 32x32, bf16).

    ``repeats`` > 1 measures (bare, raydiff) pairs one after the other and reports the median of the
    pairs' ratios: a shared VM's speed drifts by more than the overhead being measured (seen here:
    the same bare loops at 1,350 and 1,800 samples/s an hour apart), and a pair shares one stretch of it.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    require_device("overhead", device)
    k = actors or (os.cpu_count() or 1 if device == "cpu" else 8)
    bare_steps = local_steps * updates // k
    cfg = {
        "name": "bench-overhead",
        "model": {"preset": preset},
        "data": {"image_size": image_size},
        "clients": {
            "num_clients": 4 * k,
            "num_cpus": 1 if device == "cpu" else max(1, (os.cpu_count() or 2) // (k + 1)),
            "num_gpus": 0 if device == "cpu" else 1.0 / (k + 1),
            "dropout": 0.0,
        },
        "train": {
            "local_steps": local_steps,
            "batch_size": batch,
            "device": device,
            "precision": "bf16" if bf16 else "fp32",
        },
        "strategy": {"name": "fedbuff", "concurrency": 2 * k, "buffer_size": 1},
        "eval": {"every_versions": 10**9, "num_samples": 1, "judge": False},
        "run": {"max_updates": updates, "actors": k},
    }
    print(f"workers            {k:>12}")
    print(f"model / batch      {preset:>8} / {batch}  ({device}{', bf16' if bf16 else ''}, {image_size}x{image_size})")
    ratios = []
    for r in range(repeats):
        bare = bare_rate(k, (preset, image_size, batch, bare_steps, 1, device, bf16))
        sim, jobs = raydiff_rate(cfg)
        ratios.append(sim / bare)
        tag = f" [{r + 1}/{repeats}]" if repeats > 1 else ""
        print(f"bare loops{tag:<8} {bare:>10,.0f} samples/s ({k} processes, one common window)")
        print(
            f"inside raydiff{tag:<4} {sim:>10,.0f} samples/s ({jobs} jobs of {local_steps} steps): "
            f"ratio {sim / bare:.3f}"
        )
    ratio = float(np.median(ratios))
    what = "median of " + ", ".join(f"{x:.3f}" for x in ratios) if repeats > 1 else "one pair"
    print(f"overhead ratio (raydiff / bare, {what}): {ratio:.3f}")
    return ratio
