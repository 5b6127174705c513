"""Confidence intervals over seeds: one number per run in, one interval per condition out.

A study's unit of replication is the seed (it fixes the partition, the client profiles, the schedule's
randomness and the model's initialisation), so every interval here is over runs, never over the rows
inside a run. Two methods, and each result says which one it used (``ci_method``):

- ``"t"``: Student's t, ``mean +- t(0.975, n-1) * s / sqrt(n)``. Used below ``BOOTSTRAP_MIN_N`` seeds:
  a bootstrap from 5 seeds resamples 5 numbers and its percentile intervals come out far too narrow
  (about 0.6x the t interval's width at n = 5), while t is exact for normal data and degrades slowly.
- ``"bootstrap"``: scipy's BCa bootstrap (10,000 resamples, seeded, so the report is reproducible),
  from ``BOOTSTRAP_MIN_N`` seeds on, where it no longer needs the normality t leans on.

Paired comparisons (two strategies run with the same seeds) work on per-seed differences ``b - a``
and per-seed log ratios ``log(b / a)``: pairing removes the seed-to-seed variation both arms share,
which is most of it in a simulator where the seed fixes everything but the strategy. The ratio's
interval is the exponentiated interval of the mean log ratio, i.e. a CI of the geometric-mean ratio.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

Method = Literal["auto", "t", "bootstrap"]
BOOTSTRAP_MIN_N = 20
N_RESAMPLES = 10_000


@dataclass(frozen=True)
class Interval:
    """A mean with its two-sided confidence interval over ``n`` values (NaN where undefined)."""

    n: int
    mean: float
    std: float  # sample standard deviation (ddof=1)
    low: float
    high: float
    method: str  # "t", "bootstrap", or "none" (fewer than two values)


def choose_method(n: int, method: Method = "auto") -> str:
    """``"auto"`` -> ``"t"`` below ``BOOTSTRAP_MIN_N`` values, else ``"bootstrap"``."""
    if method not in ("auto", "t", "bootstrap"):
        raise ValueError(f"method must be 'auto', 't' or 'bootstrap', got {method!r}")
    if method != "auto":
        return method
    return "t" if n < BOOTSTRAP_MIN_N else "bootstrap"


def mean_ci(values: np.ndarray | list[float], level: float = 0.95, method: Method = "auto", seed: int = 0) -> Interval:
    """The mean of the finite ``values`` and its ``level`` confidence interval.

    NaN values are dropped (a run that lacks the metric is not a run with value 0); callers that must
    keep such runs (censored times) give them a value first. Fewer than two values: no interval.
    Identical values: a zero-width interval (the t formula gives it; the bootstrap is not asked).
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    n = int(x.size)
    if n == 0:
        return Interval(0, math.nan, math.nan, math.nan, math.nan, "none")
    mean = float(x.mean())
    if n == 1:
        return Interval(1, mean, math.nan, math.nan, math.nan, "none")
    std = float(x.std(ddof=1))
    how = choose_method(n, method)
    if std == 0.0:
        return Interval(n, mean, 0.0, mean, mean, how)
    if how == "t":
        from scipy import stats

        half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * std / math.sqrt(n)
        return Interval(n, mean, std, mean - half, mean + half, "t")
    from scipy import stats

    res = stats.bootstrap(
        (x,), np.mean, confidence_level=level, n_resamples=N_RESAMPLES, method="BCa", rng=np.random.default_rng(seed)
    )
    return Interval(n, mean, std, float(res.confidence_interval.low), float(res.confidence_interval.high), "bootstrap")


@dataclass(frozen=True)
class PairedComparison:
    """``b`` against ``a`` over ``n`` paired seeds: the mean difference ``b - a`` and the geometric-mean
    ratio ``b / a``, each with its confidence interval, and the paired t-test's two-sided p-value."""

    n: int
    mean_a: float
    mean_b: float
    diff: Interval
    ratio: float
    ratio_low: float
    ratio_high: float
    p_value: float


def paired_ci(
    a: np.ndarray | list[float],
    b: np.ndarray | list[float],
    level: float = 0.95,
    method: Method = "auto",
    seed: int = 0,
) -> PairedComparison:
    """Compare paired values (``a[i]`` and ``b[i]`` come from the same seed).

    Pairs where either value is NaN are dropped. The ratio needs both values positive; pairs where one
    is not leave the ratio NaN (a difference is still given). The p-value is the paired t-test's
    (scipy.stats.ttest_rel), NaN below two pairs or when every difference is equal.
    """
    xa, xb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if xa.shape != xb.shape:
        raise ValueError(f"paired values need equal lengths, got {xa.shape} and {xb.shape}")
    keep = np.isfinite(xa) & np.isfinite(xb)
    xa, xb = xa[keep], xb[keep]
    n = int(xa.size)
    diff = mean_ci(xb - xa, level, method, seed)
    ratio = lo = hi = math.nan
    if n and np.all(xa > 0) and np.all(xb > 0):
        log_ci = mean_ci(np.log(xb / xa), level, method, seed)
        ratio, lo, hi = math.exp(log_ci.mean), math.exp(log_ci.low), math.exp(log_ci.high)
    p = math.nan
    if n >= 2 and diff.std and diff.std > 0:
        from scipy import stats

        p = float(stats.ttest_rel(xb, xa).pvalue)
    return PairedComparison(
        n, float(xa.mean()) if n else math.nan, float(xb.mean()) if n else math.nan, diff, ratio, lo, hi, p
    )


__all__ = [
    "BOOTSTRAP_MIN_N",
    "N_RESAMPLES",
    "Interval",
    "PairedComparison",
    "choose_method",
    "mean_ci",
    "paired_ci",
]
