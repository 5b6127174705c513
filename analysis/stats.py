"""Confidence intervals and tests over seeds: one number per run in, one interval (and one test) out.

A study's unit of replication is the seed (it fixes the partition, the client profiles, the schedule's
randomness and the model's initialisation), so every interval here is over runs, never over the rows
inside a run.

**One arm** (``range_ci``): the interval is made on the scale where the metric is unbounded, then mapped
back, so it cannot leave the metric's range (``analysis.metric_table``):

- positive metrics (FID, loss, times): the mean of ``log x``, i.e. a geometric mean and its interval;
- shares in [0, 1] (precision, recall, judge confidence): the mean of ``logit x``;
- any other metric: the mean itself.

Where a value sits on the boundary (a 0 for a positive metric, a 0 or 1 for a share) the transform is
undefined; the interval is then made on the raw scale and cut at the boundary, and ``ci_method`` says so.
On each scale: Student t below ``BOOTSTRAP_MIN_N`` values (a bootstrap from 5 seeds resamples 5 numbers
and comes out far too narrow), scipy's BCa bootstrap from ``BOOTSTRAP_MIN_N`` on.

**Two arms** (``paired_ci``), paired by seed: the difference ``b - a`` and the ratio ``b / a`` (the
geometric mean of per-seed ratios, i.e. the mean log ratio), each with **its own test on its own scale**:
the p-value of the difference comes from the differences, the p-value of the ratio from the log ratios.
The interval is the inversion of that same test, so "the interval excludes no difference (0, or 1 for a
ratio)" and "p < 1 - level" are the same statement on every row:

- ``"paired t"`` (below ``BOOTSTRAP_MIN_N`` pairs): the t interval of the mean and the one-sample t-test
  of the same values against 0 (``scipy.stats.ttest_1samp``, i.e. ``ttest_rel`` on the pairs);
- ``"paired bootstrap"`` (from ``BOOTSTRAP_MIN_N`` pairs): the percentile interval of ``N_RESAMPLES``
  resampled means (order statistics, no interpolation) and the p-value of the same resamples,
  ``p = min(1, 2 min(#{m* <= 0}, #{m* >= 0}) / B)``; with the interval's order statistic ``k =
  ceil(B alpha / 2) - 1`` the two agree exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Method = Literal["auto", "t", "bootstrap"]
BOOTSTRAP_MIN_N = 20
N_RESAMPLES = 10_000


@dataclass(frozen=True)
class Interval:
    """``estimate`` with its two-sided confidence interval over ``n`` values (NaN where undefined).

    ``mean`` and ``std`` are the raw values' arithmetic mean and sample standard deviation; ``estimate``
    is what the interval is for: the mean on the interval's scale mapped back (the geometric mean for a
    log-scale interval), which equals ``mean`` for a raw-scale one.
    """

    n: int
    mean: float
    std: float  # sample standard deviation (ddof=1)
    low: float
    high: float
    method: str  # "t", "bootstrap", "none" (fewer than two values), with the scale: "t, log scale"
    estimate: float = field(default=math.nan)

    def __post_init__(self) -> None:
        if math.isnan(self.estimate):
            object.__setattr__(self, "estimate", self.mean)


def choose_method(n: int, method: Method = "auto") -> str:
    """``"auto"`` -> ``"t"`` below ``BOOTSTRAP_MIN_N`` values, else ``"bootstrap"``."""
    if method not in ("auto", "t", "bootstrap"):
        raise ValueError(f"method must be 'auto', 't' or 'bootstrap', got {method!r}")
    if method != "auto":
        return method
    return "t" if n < BOOTSTRAP_MIN_N else "bootstrap"


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")


def mean_ci(values: np.ndarray | list[float], level: float = 0.95, method: Method = "auto", seed: int = 0) -> Interval:
    """The arithmetic mean of the finite ``values`` and its ``level`` confidence interval (raw scale).

    NaN values are dropped (a run that lacks the metric is not a run with value 0). Fewer than two
    values: no interval. Identical values: a zero-width interval (the t formula gives it).
    """
    _check_level(level)
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
    from scipy import stats

    if how == "t":
        half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * std / math.sqrt(n)
        return Interval(n, mean, std, mean - half, mean + half, "t")
    res = stats.bootstrap(
        (x,), np.mean, confidence_level=level, n_resamples=N_RESAMPLES, method="BCa", rng=np.random.default_rng(seed)
    )
    return Interval(n, mean, std, float(res.confidence_interval.low), float(res.confidence_interval.high), "bootstrap")


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p) - np.log1p(-p)


def _expit(z: float) -> float:
    return float(1.0 / (1.0 + math.exp(-z))) if z >= 0 else float(math.exp(z) / (1.0 + math.exp(z)))


def _scale(x: np.ndarray, range_: str) -> tuple[str, Callable[[np.ndarray], np.ndarray], Callable[[float], float]]:
    """The scale an interval of ``x`` is made on: its name, the forward map and the inverse."""
    if range_ == "positive" and np.all(x > 0):
        return "log scale (geometric mean)", np.log, lambda v: math.exp(v) if math.isfinite(v) else v
    if range_ == "unit" and np.all((x > 0) & (x < 1)):
        return "logit scale", _logit, lambda v: _expit(v) if math.isfinite(v) else v
    return "", lambda v: v, lambda v: v


def range_ci(
    values: np.ndarray | list[float],
    range_: str = "real",
    level: float = 0.95,
    method: Method = "auto",
    seed: int = 0,
) -> Interval:
    """The interval of the values' central value on the scale their ``range_`` calls for (module doc).

    ``range_``: ``"positive"``, ``"unit"`` or ``"real"`` (``analysis.metric_table.Metric.range``).
    """
    if range_ not in ("positive", "unit", "real"):
        raise ValueError(f"range must be 'positive', 'unit' or 'real', got {range_!r}")
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    raw = mean_ci(x, level, method, seed)
    if x.size == 0:
        return raw
    name, fwd, inv = _scale(x, range_)
    if name:
        ci = mean_ci(fwd(x), level, method, seed)
        return Interval(raw.n, raw.mean, raw.std, inv(ci.low), inv(ci.high), f"{ci.method}, {name}", inv(ci.mean))
    if range_ == "real" or raw.n < 2:
        return raw
    lo_b, hi_b = (0.0, 1.0) if range_ == "unit" else (0.0, math.inf)
    low, high = min(max(raw.low, lo_b), hi_b), min(max(raw.high, lo_b), hi_b)
    why = "a value <= 0" if range_ == "positive" else "a value at 0 or 1"
    how = f"{raw.method}, raw scale ({why}) cut to the range"
    return Interval(raw.n, raw.mean, raw.std, low, high, how, raw.mean)


@dataclass(frozen=True)
class Test:
    """The mean of paired values (differences or log ratios), its interval and the p-value of the test
    whose inversion the interval is; ``method`` names that test."""

    n: int
    estimate: float
    low: float
    high: float
    p_value: float
    method: str


def paired_test(d: np.ndarray | list[float], level: float = 0.95, method: Method = "auto", seed: int = 0) -> Test:
    """Is the mean of the per-seed values ``d`` zero? The estimate, the interval and the p-value of one test.

    Paired t (``scipy.stats.ttest_1samp`` against 0, and its t interval) below ``BOOTSTRAP_MIN_N`` values,
    else the paired percentile bootstrap with its own p-value (module doc). All values equal: a zero-width
    interval, and p = 0 when they are not 0, p = 1 when they are (the interval holds 0).
    """
    _check_level(level)
    x = np.asarray(d, dtype=float)
    x = x[np.isfinite(x)]
    n = int(x.size)
    how = choose_method(n, method)
    name = "paired t" if how == "t" else "paired bootstrap"
    if n < 2:
        return Test(n, float(x.mean()) if n else math.nan, math.nan, math.nan, math.nan, "none")
    mean = float(x.mean())
    if float(x.std(ddof=1)) <= 1e-12 * max(1.0, abs(mean)):  # equal up to rounding (log(2a) - log(a) per seed)
        return Test(n, mean, mean, mean, 0.0 if abs(mean) > 1e-12 else 1.0, name)
    if how == "t":
        from scipy import stats

        ci = mean_ci(x, level, "t")
        return Test(n, mean, ci.low, ci.high, float(stats.ttest_1samp(x, 0.0).pvalue), name)
    rng = np.random.default_rng(seed)
    means = np.sort(x[rng.integers(0, n, size=(N_RESAMPLES, n))].mean(axis=1))
    k = math.ceil(N_RESAMPLES * (1 - level) / 2) - 1
    below, above = int(np.sum(means <= 0)), int(np.sum(means >= 0))
    p = min(1.0, 2 * min(below, above) / N_RESAMPLES)
    return Test(n, mean, float(means[k]), float(means[N_RESAMPLES - 1 - k]), p, name)


@dataclass(frozen=True)
class PairedComparison:
    """``b`` against ``a`` over ``n`` paired seeds: the mean difference ``b - a`` and the geometric-mean
    ratio ``b / a``, each with the interval and p-value of its own test (``diff.method``, ``log_ratio``)."""

    n: int
    mean_a: float
    mean_b: float
    diff: Test
    log_ratio: Test  # on log(b / a); NaN when a value is not positive

    @property
    def ratio(self) -> float:
        return math.exp(self.log_ratio.estimate) if math.isfinite(self.log_ratio.estimate) else math.nan

    @property
    def ratio_low(self) -> float:
        return math.exp(self.log_ratio.low) if math.isfinite(self.log_ratio.low) else math.nan

    @property
    def ratio_high(self) -> float:
        return math.exp(self.log_ratio.high) if math.isfinite(self.log_ratio.high) else math.nan


def paired_ci(
    a: np.ndarray | list[float],
    b: np.ndarray | list[float],
    level: float = 0.95,
    method: Method = "auto",
    seed: int = 0,
) -> PairedComparison:
    """Compare paired values (``a[i]`` and ``b[i]`` come from the same seed).

    Pairs where either value is NaN are dropped. The ratio needs every value positive; otherwise it is
    NaN (the difference is still given). See ``paired_test`` for the intervals and p-values.
    """
    xa, xb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if xa.shape != xb.shape:
        raise ValueError(f"paired values need equal lengths, got {xa.shape} and {xb.shape}")
    keep = np.isfinite(xa) & np.isfinite(xb)
    xa, xb = xa[keep], xb[keep]
    n = int(xa.size)
    diff = paired_test(xb - xa, level, method, seed)
    if n and np.all(xa > 0) and np.all(xb > 0):
        log_ratio = paired_test(np.log(xb) - np.log(xa), level, method, seed)
    else:
        log_ratio = Test(n, math.nan, math.nan, math.nan, math.nan, "none")
    return PairedComparison(
        n, float(xa.mean()) if n else math.nan, float(xb.mean()) if n else math.nan, diff, log_ratio
    )


def excludes_null(low: float, high: float, null: float) -> bool:
    """The interval lies wholly on one side of ``null`` (False for an undefined interval)."""
    return bool(math.isfinite(low) and math.isfinite(high) and (low > null or high < null))


__all__ = [
    "BOOTSTRAP_MIN_N",
    "N_RESAMPLES",
    "Interval",
    "PairedComparison",
    "Test",
    "choose_method",
    "excludes_null",
    "mean_ci",
    "paired_ci",
    "paired_test",
    "range_ci",
]
