"""Time to target as survival data: Kaplan-Meier curves and the restricted mean time to target (RMST).

A run that reaches the target at virtual time ``T`` is an *event* at ``T``. A run that never reaches it
within its budget is *right-censored* at the budget: all we know is that its time exceeds the budget.
Averaging such a run's budget as if it were its time (or dropping it) would make the answer depend on the
budget in a way no reader can see. Instead, per arm:

- **Kaplan-Meier** (lifelines' ``KaplanMeierFitter``): ``F(t)``, the share of runs that reached the target
  by virtual time ``t``, with its pointwise 95% band (lifelines' exponential Greenwood interval, which stays
  in [0, 1]). Censored runs are ticks on the curve at their budget.
- **RMST** up to the budget ``tau``: the area under the "not yet reached" curve ``S(t) = 1 - F(t)`` from 0
  to ``tau``, i.e. the expected time to target when every time is capped at ``tau``. Every run here is
  followed up to the budget, so all censoring is administrative at (or after) ``tau``, and the RMST equals
  the mean of the restricted times ``min(T_i, tau)`` exactly (tests check it against lifelines'
  ``restricted_mean_survival_time``). Its interval is a t interval of ``RMST / tau`` on the logit scale
  (delta method: ``se_logit = se / (tau m (1 - m))`` with ``m = RMST / tau`` and ``se`` the standard error of
  the mean restricted time), mapped back: it lies inside [0, tau] by construction.

What a censored arm means: an arm whose runs are all censored never reached the target within the budget;
its RMST is the budget itself (an interval of zero width: no run says more). Its *mean* time to target is
unknown, and no number here claims one; comparisons of arms compare restricted times, which are defined
whatever the censoring (``analysis.stats.paired_test`` on ``min(T_b, tau) - min(T_a, tau)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

RMST_METHOD = "Kaplan-Meier RMST up to the budget; t interval of RMST/budget on the logit scale (delta method)"


@dataclass(frozen=True)
class Rmst:
    """Restricted mean time to target of one arm, up to ``budget`` (``tau``), with its interval in [0, tau]."""

    rmst: float
    low: float
    high: float
    budget: float
    n: int
    n_censored: int
    method: str


def restricted(times: np.ndarray, budget: float) -> np.ndarray:
    """``min(T_i, tau)``: a censored run enters with its censoring time (>= the budget), capped at ``tau``."""
    return np.minimum(np.asarray(times, dtype=float), budget)


def rmst(times: np.ndarray | list[float], reached: np.ndarray | list[bool], budget: float, level: float = 0.95) -> Rmst:
    """The RMST of one arm: ``times`` are first-reach times for runs with ``reached``, censoring times
    (each run's own budget, at least ``budget``) for the others. NaN times (no evaluations) are left out."""
    from scipy import stats

    t = np.asarray(times, dtype=float)
    r = np.asarray(reached, dtype=bool)
    keep = np.isfinite(t)
    t, r = t[keep], r[keep]
    n, cens = int(t.size), int((~r).sum())
    if not (math.isfinite(budget) and budget > 0):
        raise ValueError(f"the RMST needs a positive finite budget, got {budget}")
    if np.any(t[~r] < budget - 1e-9):
        raise ValueError("a run is censored before the budget: the RMST up to the budget is not identified")
    if n == 0:
        return Rmst(math.nan, math.nan, math.nan, budget, 0, 0, RMST_METHOD)
    x = restricted(t, budget)
    mean = float(x.mean())
    if n == 1:
        return Rmst(mean, math.nan, math.nan, budget, 1, cens, RMST_METHOD)
    sd = float(x.std(ddof=1))
    m = mean / budget
    if sd == 0.0 or not 0.0 < m < 1.0:
        return Rmst(mean, mean, mean, budget, n, cens, RMST_METHOD)
    se_logit = sd / math.sqrt(n) / (budget * m * (1.0 - m))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * se_logit
    z = math.log(m) - math.log1p(-m)
    low, high = (budget / (1.0 + math.exp(-(z + s * half))) for s in (-1.0, 1.0))
    return Rmst(mean, low, high, budget, n, cens, RMST_METHOD)


@dataclass(frozen=True)
class KmCurve:
    """``F(t)`` = share of runs that reached the target by ``t`` (a step function over ``time``), its
    pointwise band, and the censoring times (ticks)."""

    time: np.ndarray
    reached: np.ndarray
    low: np.ndarray
    high: np.ndarray
    censored_at: np.ndarray
    n: int


def km_curve(times: np.ndarray | list[float], reached: np.ndarray | list[bool], level: float = 0.95) -> KmCurve:
    """lifelines' Kaplan-Meier fit of one arm, as "reached by t" (``1 - S(t)``) with its band."""
    from lifelines import KaplanMeierFitter

    t = np.asarray(times, dtype=float)
    r = np.asarray(reached, dtype=bool)
    keep = np.isfinite(t)
    t, r = t[keep], r[keep]
    kmf = KaplanMeierFitter(alpha=1 - level).fit(t, event_observed=r)
    sf = kmf.survival_function_.iloc[:, 0].to_numpy(float)
    ci = kmf.confidence_interval_survival_function_.to_numpy(float)
    time = kmf.survival_function_.index.to_numpy(float)
    return KmCurve(time, 1.0 - sf, 1.0 - ci[:, 1], 1.0 - ci[:, 0], np.sort(t[~r]), int(t.size))


__all__ = ["RMST_METHOD", "KmCurve", "Rmst", "km_curve", "restricted", "rmst"]
