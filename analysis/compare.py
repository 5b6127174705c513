"""Every pair of arms, on every metric: the paired effect with its interval, its test, and a sentence.

Within each condition, every pair of arms (not only the best against the rest) is compared on every
metric, paired by seed (``analysis.seeds.paired_diff``). A positive metric is compared by the geometric
mean of the per-seed ratios ``b / a`` (a t-test on log ratios), any other by the mean difference ``b - a``
(a t-test on differences); time to target by the difference of restricted mean times (RMST, the paired
t-test on restricted times ``min(T, tau)``) and by the ratio of restricted times. Each row carries the
p-value of the very test whose inversion its interval is, and names it (``test``), so "the interval
excludes no difference" and "p < 0.05" say the same thing. In each pair ``a`` is the better arm on that
metric (lower or higher, ``analysis.metric_table``), so ratios of a lower-is-better metric are >= 1.

The sentence claims a difference only when the interval excludes it, and says which runs were censored:
a censored run never reached the target within the budget, and enters the restricted times at the budget.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

import pandas as pd

from .metric_table import metric as metric_info
from .seeds import STRATEGY, paired_diff
from .stats import excludes_null

LEVEL = 0.95
# Kept for callers: metric column -> reader's label (analysis.metric_table is the source).
LABELS = {
    m: metric_info(m).axis
    for m in (
        "final_heldout_loss",
        "final_fid_domain",
        "judge_mean_confidence",
        "final_fid_inception",
        "final_kid_domain",
        "ttt_heldout_loss",
    )
}
COLUMNS = (
    "condition",
    "metric",
    "measure",
    "a",
    "b",
    "n_pairs",
    "value_a",
    "value_b",
    "estimate",
    "low",
    "high",
    "p_value",
    "test",
    "significant",
    "n_censored_a",
    "n_censored_b",
    "budget",
    "target",
    "sentence",
)


@dataclass(frozen=True)
class Comparison:
    """One claim: arm ``b`` against arm ``a`` on ``metric`` within ``condition``, by ``measure``."""

    condition: str
    metric: str
    measure: str  # "ratio" (b / a, null 1) or "difference" (b - a, null 0)
    a: str
    b: str
    n_pairs: int
    value_a: float  # a's mean over the pairs (its RMST for a time to target)
    value_b: float
    estimate: float
    low: float
    high: float
    p_value: float
    test: str
    significant: bool  # p < 1 - level, which is the interval excluding the null
    n_censored_a: int
    n_censored_b: int
    budget: float
    target: float
    sentence: str


def _num(v: float, digits: int = 3) -> str:
    if v is None or not math.isfinite(v):
        return "n/a"
    return f"{v:.{digits}g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"


def _p(p: float) -> str:
    if not math.isfinite(p):
        return "p n/a"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}" if p < 0.1 else f"p = {p:.2f}"


def _sentence(c: Comparison, level: float = LEVEL) -> str:
    info = metric_info(c.metric)
    pct = round(level * 100)
    timed = c.metric.startswith("ttt_")
    what = f"time to {info.label[len('time to ') :]}" if timed else info.label
    if timed and math.isfinite(c.target):
        what += f" (<= {_num(c.target, 4)})"
    unit = f" {info.unit}" if info.unit and c.measure == "difference" else ""
    if c.measure == "ratio":
        eff = f"{c.b}/{c.a} = {c.estimate:.2f}x [{c.low:.2f}, {c.high:.2f}]" if math.isfinite(c.low) else ""
        null = "1"
    else:
        eff = f"{c.b} - {c.a} = {c.estimate:+.3g}{unit} [{c.low:+.3g}, {c.high:+.3g}]" if math.isfinite(c.low) else ""
        null = "0"
    # each value next to its arm: the subject of a sentence is not always arm a
    pair = f"{c.a} {_num(c.value_a)} vs {c.b} {_num(c.value_b)}"
    means = f"RMST {pair} virtual s up to the {_num(c.budget)} s budget" if timed else pair
    if c.n_pairs < 2 or not eff:
        s = f"{c.a} vs {c.b} on {what} ({c.measure}): {means}, from {c.n_pairs} paired seed(s), no interval."
    elif c.significant:
        b_higher = c.estimate > (1.0 if c.measure == "ratio" else 0.0)
        tail = f"{means}; {eff} ({pct}% CI, {c.test}, {_p(c.p_value)}, {c.n_pairs} paired seeds)."
        if info.better == "none":
            s = f"{c.b} is {'higher' if b_higher else 'lower'} than {c.a} on {what}: {tail}"
        else:
            winner = c.a if b_higher == (info.better == "lower") else c.b
            word = "shorter" if timed else info.better
            s = f"{winner} has the {word} {what}: {tail}"
    else:
        s = (
            f"{c.a} and {c.b} cannot be told apart on {what}: {means}; {eff} ({pct}% CI includes {null}, "
            f"{c.test}, {_p(c.p_value)}, {c.n_pairs} paired seeds)."
        )
    if timed and (c.n_censored_a or c.n_censored_b):
        notes = [f"{arm} in {k} of {c.n_pairs}" for arm, k in ((c.a, c.n_censored_a), (c.b, c.n_censored_b)) if k]
        s += (
            f" Never reached the target within the budget (censored, entered at the budget): {'; '.join(notes)}"
            " seeds; the comparison is of times capped at the budget."
        )
    return s


def _arm_order(grp: pd.DataFrame, metric: str, between: str) -> list[Any]:
    """Arms best first on ``metric`` (by their mean; a time to target by its restricted mean)."""
    info = metric_info(metric)
    vals = grp[metric].astype(float)
    if metric.startswith("ttt_") and "budget" in grp:
        vals = vals.clip(upper=float(pd.to_numeric(grp["budget"]).min()))
    means = vals.groupby(grp[between]).mean().dropna()
    if info.better == "none":
        return sorted(means.index, key=str)
    return list(means.sort_values(ascending=info.better != "higher", kind="stable").index)


def compare_arms(
    runs: pd.DataFrame,
    metrics: Sequence[str],
    between: str = STRATEGY,
    pair_on: str = "cfg.seed",
    by: str = "condition",
    level: float = LEVEL,
    names: Optional[dict[Any, str]] = None,
) -> list[Comparison]:
    """Every pair of arms of ``between`` within each ``by`` group, on each of ``metrics`` (module doc).

    ``runs`` is a per-run frame with ``metric`` columns; a ``ttt_<m>`` metric needs ``ttt_<m>_reached``,
    ``target_<m>`` and ``budget`` (``analysis.seeds.add_time_to_target``). ``names`` spell the arms.
    """
    names = names or {}
    out: list[Comparison] = []
    for cond, grp in runs.groupby(by, sort=True):
        for m in metrics:
            if m not in grp or grp[m].notna().sum() == 0:
                continue
            order = _arm_order(grp, m, between)
            timed = m.startswith("ttt_")
            measures = ("difference", "ratio") if timed else (metric_info(m).compare_by,)
            if measures == ("ratio",) and (grp[m].dropna() <= 0).any():
                measures = ("difference",)  # a value <= 0 (no staleness at all) has no log ratio
            tcol = f"target_{m[len('ttt_') :]}"
            target = float(grp[tcol].iloc[0]) if timed and tcol in grp else math.nan
            for a, b in itertools.combinations(order, 2):
                d = paired_diff(grp, m, a, b, by=[by], between=between, pair_on=pair_on, level=level)
                if d.empty:
                    continue
                row = d.iloc[0]
                for measure in measures:
                    key = "ratio" if measure == "ratio" else "diff"
                    est, lo, hi = float(row[key]), float(row[f"{key}_low"]), float(row[f"{key}_high"])
                    p = float(row[f"p_{key}"])
                    c = Comparison(
                        str(cond),
                        m,
                        measure,
                        names.get(a, str(a)),
                        names.get(b, str(b)),
                        int(row["n_pairs"]),
                        float(row["mean_a"]),
                        float(row["mean_b"]),
                        est,
                        lo,
                        hi,
                        p,
                        str(row[f"test_{key}"]),
                        bool(math.isfinite(p) and p < 1 - level),
                        int(row.get("n_censored_a", 0)),
                        int(row.get("n_censored_b", 0)),
                        float(row.get("budget", math.nan)),
                        target,
                        "",
                    )
                    null = 1.0 if measure == "ratio" else 0.0
                    if c.significant != excludes_null(lo, hi, null) and math.isfinite(p):
                        raise AssertionError(f"interval and test disagree: {c}")  # the module's promise
                    out.append(Comparison(**{**c.__dict__, "sentence": _sentence(c, level)}))
    return out


def comparisons_frame(items: Sequence[Comparison]) -> pd.DataFrame:
    """``compare_arms`` as a table (one row per claim), e.g. for a CSV next to a study's write-up."""
    return pd.DataFrame([[getattr(c, f) for f in COLUMNS] for c in items], columns=list(COLUMNS))


__all__ = ["COLUMNS", "LABELS", "Comparison", "compare_arms", "comparisons_frame"]
