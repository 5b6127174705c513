"""Grouped client training against processes packed on the same device (issue 16).

For each group size G, measured one right after the other on the same device:
- **grouped**: ONE process trains G jobs as one vmapped computation (raydiff/grouped.py);
- **packed**: G bare training processes share the device, each running ``train_local`` (the
  fractional-GPU packing raydiff does today);
- **one**: a single bare process with the device to itself, measured once per repeat.
Every rate is samples over one common window (overhead.bare_rate). The figure is grouped / packed
at the best G. On a GPU that is the point of grouping: one launch serves G jobs.
On a CPU the "device" is ONE core: every process has one thread and all are pinned to the same
core (children inherit the affinity), as G processes time-share one GPU. Giving a process several
threads instead was useless on this shared VM, where OpenMP threads spin while a sibling waits for
a core: one bare process with 2 threads ran at 6 samples/s against 465 for two 1-thread processes.
A CPU is compute-bound, not launch-bound, so grouping is not expected to win there.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import time
import warnings

import numpy as np

from . import require_device
from .overhead import bare_rate

GROUPS = (1, 2, 4, 8, 16)


def _grouped_worker(args: tuple, results) -> None:
    """One process, G jobs of ``steps`` steps trained as one group; reports (start, end, samples, warnings)."""
    preset, image_size, batch, steps, threads, device, bf16, G = args
    import torch

    from ..config import ModelConfig
    from ..data.datasets import load_digits_set
    from ..diffusion import data_tensor
    from ..grouped import GroupJob, GroupTrainer, job_inputs
    from ..model import FlatModel, build_scheduler, build_unet

    torch.set_num_threads(threads)
    images = load_digits_set().images
    if image_size != images.shape[-1]:
        images = torch.nn.functional.interpolate(torch.from_numpy(images), size=image_size).numpy()
    data = data_tensor(images, device)  # as a client actor holds it
    cfg = ModelConfig(preset=preset)
    fm = FlatModel(build_unet(cfg, image_size, 1, seed=0), device)
    x0 = fm.vector()
    trainer = GroupTrainer(fm, build_scheduler(cfg), G, autocast_bf16=bf16)
    idx = np.arange(len(images))

    def jobs(n: int) -> list[GroupJob]:
        return [GroupJob(x0, *job_inputs(1000 + j, idx, batch, n, device)) for j in range(G)]

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        trainer.train(jobs(3), data, 2e-3)  # warm-up: allocation, vmap's first trace, cuDNN's choice
        work = jobs(steps)
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        trainer.train(work, data, 2e-3)
        if device == "cuda":
            torch.cuda.synchronize()
        t1 = time.perf_counter()
    notes = sorted({str(w.message).split(". Please")[0] for w in seen if "batching rule" in str(w.message)})
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else 0
    results.put((t0, t1, G * steps * batch, notes, peak))


def grouped_rate(G: int, args: tuple) -> tuple[float, list[str], int]:
    """(samples/s of one process training G jobs as a group, vmap's fallback warnings, peak CUDA bytes)."""
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    p = ctx.Process(target=_grouped_worker, args=((*args, G), results))
    p.start()
    try:
        while True:
            try:
                t0, t1, samples, notes, peak = results.get(timeout=2)
                break
            except queue.Empty:
                if p.exitcode not in (None, 0):
                    raise RuntimeError(f"the grouped training process died (exit code {p.exitcode})") from None
    finally:
        p.join(timeout=10)
        if p.is_alive():
            p.terminate()
    return samples / (t1 - t0), notes, peak


def bench_grouped(
    groups: tuple[int, ...] = GROUPS,
    preset: str = "tiny",
    image_size: int = 8,
    batch: int = 32,
    steps: int = 20,
    device: str = "cpu",
    bf16: bool = False,
    repeats: int = 1,
) -> float:
    """Print grouped vs packed vs one process for each G; return the best grouped / packed ratio over G > 1
    (median over repeats)."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if not groups or min(groups) < 1:
        raise ValueError(f"group sizes must be >= 1, got {groups}")
    require_device("grouped", device)
    pinned = None
    if device == "cpu":  # the device is one core: pin this process, and so every child, to it
        saved = os.sched_getaffinity(0)
        pinned = max(saved)
        os.sched_setaffinity(0, {pinned})
    try:
        return _measure(groups, preset, image_size, batch, steps, device, bf16, repeats, pinned)
    finally:
        if pinned is not None:
            os.sched_setaffinity(0, saved)


def _measure(
    groups: tuple[int, ...],
    preset: str,
    image_size: int,
    batch: int,
    steps: int,
    device: str,
    bf16: bool,
    repeats: int,
    pinned: int | None,
) -> float:
    print(
        f"device             {device}"
        + (f" (core {pinned} of {os.cpu_count()}; 1 thread per process)" if pinned is not None else "")
    )
    print(
        f"model / batch      {preset} / {batch}  ({image_size}x{image_size}, {'bf16' if bf16 else 'fp32'}, "
        f"{steps} steps per job)"
    )
    ratios: dict[int, list[float]] = {g: [] for g in groups}
    notes: set[str] = set()
    for r in range(repeats):
        tag = f"  [repeat {r + 1}/{repeats}]" if repeats > 1 else ""
        one = bare_rate(1, (preset, image_size, batch, steps, 1, device, bf16))
        print(f"one bare process   {one:>10,.0f} samples/s{tag}")
        print(
            f"{'G':>3} {'grouped':>10} {'G packed':>10} {'grouped/packed':>15} {'grouped/one':>12}"
            + ("  grouped peak GiB" if device == "cuda" else "")
        )
        for g in groups:
            try:
                packed = bare_rate(g, (preset, image_size, batch, steps, 1, device, bf16))
                grp, seen, peak = grouped_rate(g, (preset, image_size, batch, steps, 1, device, bf16))
            except RuntimeError as exc:  # e.g. out of device memory at a large G: report it, go on
                print(f"{g:>3} failed: {exc}")
                continue
            notes.update(seen)
            ratios[g].append(grp / packed)
            print(
                f"{g:>3} {grp:>10,.0f} {packed:>10,.0f} {grp / packed:>15.3f} {grp / one:>12.3f}"
                + (f"  {peak / 2**30:>16.1f}" if device == "cuda" else "")
            )
    for n in sorted(notes):  # ops that vmap runs as a loop over the group
        print(f"note: {n}")
    med = {g: float(np.median(v)) for g, v in ratios.items() if v}
    if not med:
        from ..errors import RaydiffError

        raise RaydiffError("bench grouped: every measurement failed (see the lines above)")
    # G=1 is the control (a group of one runs train_local's own step; its ratio shows the noise)
    best = max([g for g in med if g > 1] or list(med), key=lambda g: med[g])
    what = f"median of {repeats}" if repeats > 1 else "one run"
    print(f"best grouped ratio (grouped / {best} packed processes at G={best}, {what}): {med[best]:.3f}")
    return med[best]
