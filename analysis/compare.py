"""Which strategy is faster to a target, and which is better at the budget: numbers with CIs, and words.

Every sentence is generated from ``paired_diff`` rows, so it can only claim what its interval supports:
"X is faster" only when the CI of the time ratio excludes 1, "X is better" only when the CI of the
difference excludes 0; otherwise the sentence says the two cannot be told apart, and gives the interval.
Censored runs (never reached the target) are named, because they bound the factor from one side.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import pandas as pd

from .seeds import HIGHER_IS_BETTER, STRATEGY, paired_diff

QUALITY = ("final_heldout_loss", "final_fid_domain", "judge_mean_confidence")
LABELS = {
    "final_heldout_loss": "held-out loss",
    "final_fid_domain": "domain FID",
    "judge_mean_confidence": "judge confidence",
    "final_fid_inception": "Inception FID",
    "final_kid_domain": "domain KID",
    "ttt_heldout_loss": "time to target (virtual s)",
}


@dataclass(frozen=True)
class Comparison:
    """One claim: ``other`` against ``best`` on ``aspect`` within ``condition``, and its sentence."""

    condition: str
    aspect: str  # "ttt_<metric>" or a final-quality metric
    best: str
    other: str
    n_pairs: int
    estimate: float  # time ratio other/best for ttt_*, else difference other - best
    low: float
    high: float
    significant: bool  # the CI excludes "no difference" (1 for a ratio, 0 for a difference)
    n_censored_best: int
    n_censored_other: int
    target: float
    sentence: str


def _num(v: float, digits: int = 3) -> str:
    if v is None or not math.isfinite(v):
        return "n/a"
    return f"{v:.{digits}g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"


def _arm_namer(between: str) -> Callable[[Any], str]:
    """Strategy names read as themselves; any other arm as ``field=value`` (``data.beta=0.1``, not ``0.1``)."""
    short = between[len("cfg.") :] if between.startswith("cfg.") else between
    return lambda v: str(v) if isinstance(v, str) else f"{short}={v}"


def _arm_means(runs: pd.DataFrame, metric: str, between: str) -> pd.Series:
    return runs.groupby(between)[metric].mean().dropna()


def _time_sentence(
    cond: str, best: str, other: str, row: pd.Series, target: float, metric: str, budget: float, level: int
) -> tuple[str, bool]:
    r, lo, hi, n = row["ratio"], row["ratio_low"], row["ratio_high"], int(row["n_pairs"])
    cb, co = int(row.get("n_censored_a", 0)), int(row.get("n_censored_b", 0))
    what = f"{LABELS.get('final_' + metric, metric)} <= {_num(target, 4)}"
    sig = math.isfinite(lo) and lo > 1
    if n < 2:
        s = f"{best} vs {other} on time to {what}: {other}/{best} = {_num(r)}x from {n} paired seed (no interval)."
    elif sig:
        s = (
            f"{best} reaches {what} sooner than {other}: {other} takes {r:.2f}x as long "
            f"({level}% CI {lo:.2f}-{hi:.2f}x, {n} paired seeds)."
        )
    elif math.isfinite(hi) and hi < 1:  # shorter restricted mean, yet the paired ratios favour the other arm
        s = (
            f"{other} reaches {what} sooner than {best} seed by seed: {other}/{best} = {r:.2f}x "
            f"({level}% CI {lo:.2f}-{hi:.2f}x, {n} paired seeds), though {best}'s mean time is shorter."
        )
        sig = True
    elif math.isfinite(r):
        s = (
            f"{best} and {other} cannot be told apart on time to {what}: {other}/{best} = {r:.2f}x "
            f"({level}% CI {lo:.2f}-{hi:.2f}x includes 1, {n} paired seeds)."
        )
    else:
        s = f"{best} vs {other} on time to {what}: no ratio ({n} paired seeds)."
    where = f"the {_num(budget)} s budget" if math.isfinite(budget) else "the end of its run"
    notes = []
    if co:
        notes.append(
            f"{other} never reached it in {co} of {n} seeds (counted at {where}, "
            "so its time, and the factor, are lower bounds)"
        )
    if cb:
        notes.append(
            f"{best} never reached it in {cb} of {n} seeds (counted at {where}: its time is a lower "
            "bound, so the factor may be smaller)"
        )
    if notes:
        s += " " + "; ".join(notes) + "."  # names start the notes: left as the user spelled them
    return s, sig


def _quality_sentence(best: str, other: str, row: pd.Series, metric: str, level: int) -> tuple[str, bool]:
    d, lo, hi, n = row["diff"], row["diff_low"], row["diff_high"], int(row["n_pairs"])
    name = LABELS.get(metric, metric)
    higher = metric in HIGHER_IS_BETTER
    sig = math.isfinite(lo) and math.isfinite(hi) and (lo > 0 or hi < 0)
    word = "lower" if (d < 0) else "higher"
    if n < 2:
        s = (
            f"At the budget {best} vs {other} on {name}: {_num(row['mean_a'])} vs {_num(row['mean_b'])} from "
            f"{n} paired seed (no interval)."
        )
    elif sig:
        s = (
            f"At the budget {best} has the {'highest' if higher else 'lowest'} {name} "
            f"({_num(row['mean_a'])}); {other}'s is {word} by {_num(abs(d))} "
            f"({level}% CI of {other} - {best}: {_num(lo)} to {_num(hi)}, {n} paired seeds)."
        )
    else:
        s = (
            f"At the budget {best} and {other} cannot be told apart on {name}: {_num(row['mean_a'])} vs "
            f"{_num(row['mean_b'])} ({level}% CI of {other} - {best}: {_num(lo)} to {_num(hi)} includes 0, "
            f"{n} paired seeds)."
        )
    return s, sig


def comparisons(
    runs: pd.DataFrame,
    aspects: Optional[Sequence[str]] = None,
    between: str = STRATEGY,
    by: str = "condition",
    level: float = 0.95,
) -> list[Comparison]:
    """Per condition, the best arm of ``between`` on each aspect against every other arm (paired by seed).

    ``aspects``: ``ttt_<m>`` columns of ``runs`` (added by ``add_time_to_target``) and final-quality
    columns; by default every ``ttt_*`` column present plus held-out loss, domain FID and judge
    confidence where present. "Best" is the arm with the best mean (shortest restricted mean time).
    """
    if aspects is None:
        aspects = [c for c in runs.columns if c.startswith("ttt_") and not c.endswith("_reached")]
        aspects += [c for c in QUALITY if c in runs and runs[c].notna().any()]
    pct = round(level * 100)
    out: list[Comparison] = []
    for cond, grp in runs.groupby(by, sort=True):
        for aspect in aspects:
            if aspect not in grp or grp[aspect].notna().sum() == 0:
                continue
            means = _arm_means(grp, aspect, between)
            if len(means) < 2:
                continue
            higher = aspect in HIGHER_IS_BETTER
            best = means.idxmax() if higher else means.idxmin()
            name = _arm_namer(between)
            for other in [a for a in means.index if a != best]:
                pd_row = paired_diff(grp, aspect, best, other, by=[by], between=between, level=level)
                if pd_row.empty:
                    continue
                row = pd_row.iloc[0]
                target = math.nan
                if aspect.startswith("ttt_"):
                    metric = aspect[len("ttt_") :]
                    target = float(grp[f"target_{metric}"].iloc[0]) if f"target_{metric}" in grp else math.nan
                    b = grp["budget"] if "budget" in grp else pd.Series(dtype=float)
                    budget = float(b.iloc[0]) if len(b) and b.nunique() == 1 else math.nan  # a common budget?
                    text, sig = _time_sentence(str(cond), name(best), name(other), row, target, metric, budget, pct)
                    est, lo, hi = row["ratio"], row["ratio_low"], row["ratio_high"]
                else:
                    text, sig = _quality_sentence(name(best), name(other), row, aspect, pct)
                    est, lo, hi = row["diff"], row["diff_low"], row["diff_high"]
                out.append(
                    Comparison(
                        str(cond),
                        aspect,
                        name(best),
                        name(other),
                        int(row["n_pairs"]),
                        float(est),
                        float(lo),
                        float(hi),
                        bool(sig),
                        int(row.get("n_censored_a", 0)),
                        int(row.get("n_censored_b", 0)),
                        target,
                        text,
                    )
                )
    return out


def comparisons_frame(items: Sequence[Comparison]) -> pd.DataFrame:
    """``comparisons`` as a table (one row per claim), e.g. for a CSV next to a study's write-up."""
    cols: list[Any] = list(Comparison.__dataclass_fields__)
    return pd.DataFrame([[getattr(c, f) for f in cols] for c in items], columns=cols)


__all__ = ["LABELS", "QUALITY", "Comparison", "comparisons", "comparisons_frame"]
