"""The parameter server's cost per update against one numpy axpy over the same vector (target <= 3x)."""

from __future__ import annotations

import time

import numpy as np

from ..actors import ParameterServer
from ..config import StrategyConfig
from ..strategies import strategy_class


def _best(fn, repeats: int) -> float:
    """Best of ``repeats`` timings: the cost of the code, not of whatever else the machine was doing."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def bench_aggregate(size: int = 35_746_307, repeats: int = 7, strategy: str = "fedbuff") -> float:
    """Default size: the ddpm-cifar10 UNet's parameter count."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(size, dtype=np.float32)
    delta = rng.standard_normal(size, dtype=np.float32) * np.float32(1e-3)
    y = x.copy()
    axpy = _best(lambda: np.add(y, np.float32(0.5) * delta, out=y), repeats)  # the textbook y += a*x
    server = ParameterServer(
        x,
        strategy_class(strategy).from_config(StrategyConfig(name=strategy, buffer_size=1000000)),
        copy_on_return=False,
    )
    base = x.copy() if server.strategy.needs_base else None
    counter = iter(range(10**9))
    per_update = _best(lambda: server.submit(next(counter), 0, server.version, 10, delta, base), repeats)
    ratio = per_update / axpy
    print(f"vector             {size:>12,} float32 ({size * 4 / 1e6:.0f} MB)")
    print(f"strategy           {strategy:>12}")
    print(f"numpy axpy         {axpy * 1e3:>10.1f} ms")
    print(f"server per update  {per_update * 1e3:>10.1f} ms")
    print(f"aggregate ratio (server / axpy): {ratio:.2f}")
    return ratio
