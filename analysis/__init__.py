"""Analysis of raydiff run folders: load many runs into pandas, compute heterogeneity metrics,
seed statistics with confidence intervals, plot them, and write one self-contained HTML report.

``analysis`` never imports Ray or torch, so studying a 10,000-client dry-run sweep needs only
pandas, pyarrow, scipy and matplotlib.
"""

from .load import evals, events, find_runs, load_runs
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
from .seeds import add_time_to_target, condition_columns, paired_diff, run_table, seed_summary, targets_relative
from .stats import mean_ci, paired_ci

__all__ = [
    "add_time_to_target",
    "condition_columns",
    "evals",
    "events",
    "final_quality",
    "find_runs",
    "gini",
    "load_runs",
    "mean_ci",
    "paired_ci",
    "paired_diff",
    "participation",
    "participation_gini",
    "run_table",
    "seed_summary",
    "staleness_stats",
    "summary_table",
    "targets_relative",
    "time_to_target",
    "wasted_work",
]
