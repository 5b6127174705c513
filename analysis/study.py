"""The async study's results table, as Markdown: ``python -m analysis.study runs/async-study``.

One row per (condition, strategy): final held-out loss and domain FID at the same virtual-time
budget, the digit judge, mean staleness, participation Gini and the share of compute wasted.
"""
from __future__ import annotations

import sys

import pandas as pd

from .load import events, evals, load_runs
from .metrics import final_quality, participation_gini, staleness_stats, wasted_work


def study_table(paths) -> pd.DataFrame:
    df = load_runs(paths)
    ev, va = events(df), evals(df)
    runs = df.drop_duplicates("run").set_index("run")
    table = pd.DataFrame({
        "condition": [r.split("-strategy=")[0] for r in runs.index],
        "strategy": runs["cfg.strategy.name"],
        "versions": runs["summary.final_version"],
        "heldout_loss": final_quality(va, "heldout_loss"),
        "fid_domain": final_quality(va, "fid_domain") if "fid_domain" in va else float("nan"),
        "judge": runs.get("summary.judge_mean_confidence"),
        "staleness_mean": staleness_stats(ev)["staleness_mean"],
        "gini": participation_gini(ev),
        "wasted_compute": wasted_work(ev)["wasted_compute_share"],
    }, index=runs.index)
    return table.sort_values(["condition", "strategy"]).reset_index(drop=True)


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub table without the optional ``tabulate`` dependency."""
    cells = [[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row] for row in table.itertuples(index=False)]
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in cells])


def main(argv: list[str] | None = None) -> int:
    paths = (argv if argv is not None else sys.argv[1:]) or ["runs/async-study"]
    print(to_markdown(study_table(paths)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
