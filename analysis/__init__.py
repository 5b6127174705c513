"""Analysis of raydiff run folders: load many runs into pandas, compute heterogeneity metrics,
plot them, and write one self-contained HTML report.

``analysis`` never imports Ray or torch, so studying a 10,000-client dry-run sweep needs only
pandas, pyarrow and matplotlib.
"""
from .load import evals, events, find_runs, load_runs
from .metrics import (final_quality, gini, participation, participation_gini, staleness_stats,
                      summary_table, time_to_target, wasted_work)

__all__ = ["find_runs", "load_runs", "events", "evals", "time_to_target", "final_quality",
           "staleness_stats", "participation", "gini", "participation_gini", "wasted_work",
           "summary_table"]
