"""Analysis of raydiff run folders: load many runs into pandas, compute heterogeneity metrics,
seed statistics with confidence intervals (each with its test), time to target as survival data,
plot them, and write one self-contained HTML report.

``analysis`` never imports Ray or torch, so studying a 10,000-client dry-run sweep needs only
pandas, pyarrow, scipy, lifelines and matplotlib.
"""

from .load import evals, events, find_runs, load_runs
from .metric_table import axis_label, metric
from .metrics import (
    final_quality,
    gini,
    participation,
    participation_gini,
    staleness_stats,
    summary_table,
    time_to_target,
    wasted_work,
)
from .seeds import (
    add_time_to_target,
    condition_columns,
    paired_diff,
    run_table,
    seed_summary,
    targets_relative,
    time_summary,
)
from .stats import mean_ci, paired_ci, paired_test, range_ci
from .survival import km_curve, rmst

__all__ = [
    "add_time_to_target",
    "axis_label",
    "condition_columns",
    "evals",
    "events",
    "final_quality",
    "find_runs",
    "gini",
    "km_curve",
    "load_runs",
    "mean_ci",
    "metric",
    "paired_ci",
    "paired_diff",
    "paired_test",
    "participation",
    "participation_gini",
    "range_ci",
    "rmst",
    "run_table",
    "seed_summary",
    "staleness_stats",
    "summary_table",
    "targets_relative",
    "time_summary",
    "time_to_target",
    "wasted_work",
]
