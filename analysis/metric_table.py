"""One table of the metrics a study reports: name, label, unit, range and direction.

Every choice that depends on what a number *is* reads this table, so it is made once: the scale of an
interval (a positive metric gets a log-scale interval, a share in [0, 1] a logit-scale one, so neither can
leave its range), whether two arms are compared by a ratio or a difference, which arm of a pair is the
better one, and the titles and axis labels of the figures (a reader sees "domain FID", never
``final_fid_domain``). A metric missing from the table is shown by its column name, on an unbounded scale.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Range = Literal["positive", "unit", "real"]
Better = Literal["lower", "higher", "none"]


@dataclass(frozen=True)
class Metric:
    """A per-run number: ``range`` is ``"positive"`` (values > 0; 0 may occur, e.g. no staleness at all),
    ``"unit"`` (a share or probability in [0, 1]) or ``"real"`` (any sign)."""

    name: str
    label: str
    unit: str = ""
    range: Range = "real"
    better: Better = "none"

    @property
    def axis(self) -> str:
        """The axis label: ``"time to target (virtual s)"``, ``"domain FID"``."""
        return f"{self.label} ({self.unit})" if self.unit else self.label

    @property
    def bounds(self) -> tuple[float, float]:
        """The values the metric can take: intervals and bands are kept inside them."""
        return {"positive": (0.0, float("inf")), "unit": (0.0, 1.0)}.get(self.range, (float("-inf"), float("inf")))

    @property
    def compare_by(self) -> str:
        """``"ratio"`` for positive metrics (geometric mean of per-seed ratios), else ``"difference"``."""
        return "ratio" if self.range == "positive" else "difference"


_TABLE: tuple[Metric, ...] = (
    Metric("heldout_loss", "held-out denoising loss", "", "positive", "lower"),
    Metric("fid_domain", "domain FID", "", "positive", "lower"),
    # KID estimates a squared MMD, >= 0; the unbiased estimate of one run can dip below 0 (then the log-scale
    # interval is undefined and the raw interval is cut at 0, as for any positive metric with a value <= 0).
    Metric("kid_domain", "domain KID", "", "positive", "lower"),
    Metric("fid_inception", "Inception FID", "", "positive", "lower"),
    Metric("precision", "precision", "", "unit", "higher"),
    Metric("recall", "recall", "", "unit", "higher"),
    Metric("domain_classifier_accuracy", "domain-classifier accuracy", "", "unit", "higher"),
    Metric("judge_mean_confidence", "digit-judge confidence", "", "unit", "higher"),
    Metric("judge_accuracy", "digit-judge accuracy", "", "unit", "higher"),
    Metric("versions", "model versions", "versions", "positive", "none"),
    Metric("staleness_mean", "mean staleness", "versions", "positive", "lower"),
    Metric("participation_gini", "participation Gini", "", "unit", "lower"),
    Metric("wasted_compute_share", "wasted compute share", "", "unit", "lower"),
    Metric("wasted_samples_share", "wasted sample share", "", "unit", "lower"),
    Metric("vtime", "virtual time", "virtual s", "positive", "none"),
    # class-conditional runs (docs/conditional.md): utility for a downstream classifier, per-class quality
    Metric("utility_accuracy", "utility accuracy (classifier trained on samples)", "", "unit", "higher"),
    Metric("utility_accuracy_real", "accuracy of a classifier trained on real data", "", "unit", "higher"),
    Metric("utility_ratio", "utility ratio (synthetic / real accuracy)", "", "positive", "higher"),
    Metric("label_fidelity", "label fidelity", "", "unit", "higher"),
    Metric("density", "density", "", "positive", "higher"),
    Metric("coverage", "coverage", "", "unit", "higher"),
    Metric("fid", "domain FID (per class or client)", "", "positive", "lower"),
    Metric("slow_class_update_ratio", "slow classes' update share / data share", "", "positive", "none"),
)
_BY_NAME = {m.name: m for m in _TABLE}

# Config columns as a reader knows them (legends, table headers, condition panels).
CONFIG_LABELS = {
    "cfg.strategy.name": "strategy",
    "cfg.data.beta": "Dirichlet beta",
    "cfg.clients.num_clients": "clients",
    "cfg.clients.dropout": "dropout",
    "cfg.clients.speed.dist": "speed distribution",
    "cfg.clients.speed.sigma": "speed sigma",
    "cfg.train.local_epochs": "local epochs",
    "cfg.seed": "seed",
    "condition": "condition",
}
# A per-group column (``label_fidelity_slow``, ``utility_accuracy_slow_clients``) is its base metric over a
# group; ``<base>_gap`` is slow minus fast, a difference of two such values (any sign).
_GROUPS = (
    ("_slow_clients", "on slow clients' data"),
    ("_fast_clients", "on fast clients' data"),
    ("_slow", "slow clients' classes"),
    ("_fast", "fast clients' classes"),
)
_TTT = re.compile(r"^ttt_(?P<metric>.+?)(?:@(?P<slack>[0-9.]+))?$")


def metric(name: str) -> Metric:
    """The table's entry for a run-table column: ``final_fid_domain`` -> domain FID (lower is better);
    ``ttt_heldout_loss`` (and ``ttt_heldout_loss@0.05``, another target) -> time to target, in virtual
    seconds, positive, lower is better; anything unknown -> its own name, unbounded, no direction."""
    m = _TTT.match(name)
    if m:
        inner = metric(m.group("metric"))
        slack = f", target {float(m.group('slack')):.0%} above best" if m.group("slack") else ""
        return Metric(name, f"time to {inner.label} target{slack}", "virtual s", "positive", "lower")
    if name in _BY_NAME:
        return _BY_NAME[name]
    if name.startswith("final_") and name[len("final_") :] in _BY_NAME:
        base = _BY_NAME[name[len("final_") :]]
        return Metric(name, base.label, base.unit, base.range, base.better)
    for suffix, group in _GROUPS:
        if name.endswith(suffix) and name[: -len(suffix)] in _BY_NAME:
            base = _BY_NAME[name[: -len(suffix)]]
            return Metric(name, f"{base.label}, {group}", base.unit, base.range, base.better)
    if name.endswith("_gap") and name[: -len("_gap")] in _BY_NAME:
        base = _BY_NAME[name[: -len("_gap")]]
        return Metric(name, f"{base.label} gap (slow - fast)", base.unit, "real", "none")
    return Metric(name, name)


def label(name: str) -> str:
    """A reader's name for a metric or config column (``cfg.strategy.name`` -> ``strategy``)."""
    if name in CONFIG_LABELS:
        return CONFIG_LABELS[name]
    if name.startswith("cfg."):
        return name[len("cfg.") :]
    return metric(name).label


def axis_label(name: str) -> str:
    """Label with unit, for an axis: ``time to held-out denoising loss target (virtual s)``."""
    return metric(name).axis


__all__ = ["CONFIG_LABELS", "Metric", "axis_label", "label", "metric"]
