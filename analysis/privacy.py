"""The report's "Privacy" section: per run, the two epsilons (with client-level DP) and the privacy audit's
numbers next to what a model that leaks nothing would score, then its privacy.png and per-client table.

Read from summary.json (``load_runs``' ``summary.*`` columns) and the run folder's privacy.parquet and
privacy.png (README, "Privacy"); a run without either is left out, and a report without any gets no section.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any

import pandas as pd

# (summary.json key, column header, the null: a number, or the summary key that holds it)
AUDIT_COLUMNS: tuple[tuple[str, str, Any], ...] = (
    ("mia_auc", "MIA AUC", 0.5),
    ("mia_tpr_at_1pct_fpr", "TPR at 1% FPR", 0.01),
    ("memorization_ratio_median", "memorisation ratio (median)", "memorization_ratio_median_null"),
    ("extraction_rate", "extraction rate", "extraction_rate_null"),
)
DP_COLUMNS: tuple[tuple[str, str], ...] = (
    ("epsilon", "epsilon (guarantee, worst client)"),
    ("epsilon_median", "epsilon (median client)"),
    ("epsilon_sampled", "epsilon_sampled (estimate)"),
    ("uniform_selection", "uniform selection"),
    ("delta", "delta"),
)
EXPLAIN_DP = (
    "epsilon holds for every client whatever the scheduler did (the server is trusted and the schedule public); "
    "epsilon_sampled also assumes each client is picked uniformly at random in every aggregation, so it is only an "
    "estimate for FedBuff, FedAsync, over-selection or deadlines, and wherever 'uniform selection' is no (the "
    "counts rule it out)."
)
EXPLAIN_AUDIT = (
    "The audit's numbers are evidence, not a guarantee: beside each "
    "is its null, what a model that leaks nothing scores (AUC 0.5; TPR 0.01 at 1% FPR; for the memorisation "
    "ratio and extraction rate, real held-out images in place of samples). A sample is 'extracted' when it is at "
    "least three times closer to a training image than to any held-out one."
)
EXPLAIN = f"{EXPLAIN_DP} {EXPLAIN_AUDIT}"


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, (bool,)) or str(v) in ("True", "False"):
        return "yes" if str(v) == "True" else "no"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e4 else f"{v:,.0f}"
    return html.escape(str(v))


def _value(meta: pd.Series, key: str) -> Any:
    v = meta.get(f"summary.{key}")
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


def _has_privacy(meta: pd.Series) -> bool:
    return any(_value(meta, k) is not None for k in ("mia_auc", "epsilon"))


def _summary_table(metas: pd.DataFrame) -> str:
    dp = any(_value(m, "epsilon") is not None for _, m in metas.iterrows())
    head = ["run"] + ([label for _, label in DP_COLUMNS] if dp else [])
    for _, label, _ in AUDIT_COLUMNS:
        head += [label, "null"]
    rows = []
    for run, m in metas.iterrows():
        cells = [html.escape(str(run))]
        if dp:
            cells += [_fmt(_value(m, key)) for key, _ in DP_COLUMNS]
        for key, _, null in AUDIT_COLUMNS:
            v = _value(m, key)
            if key == "mia_auc" and v is not None and _value(m, "mia_auc_se") is not None:
                cells.append(f"{_fmt(v)} ± {_fmt(_value(m, 'mia_auc_se'))}")
            else:
                cells.append(_fmt(v))
            cells.append(_fmt(null if not isinstance(null, str) else _value(m, null)) if v is not None else "")
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    header = "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"
    return (
        '<div class="table-wrap"><table class="comparison" id="privacy-table">'
        f"<thead>{header}</thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


def _run_details(run: str, run_dir: Path) -> str:
    parts = [f"<h3>{html.escape(run)}</h3>"]
    png = run_dir / "privacy.png"
    if png.is_file():
        b64 = base64.b64encode(png.read_bytes()).decode("ascii")
        alt = f"privacy audit of run {run}: member and non-member losses, per-client AUC, memorisation ratios"
        parts.append(
            f'<figure><img id="plot-privacy-{html.escape(run)}" alt="{html.escape(alt)}" '
            f'src="data:image/png;base64,{b64}"><figcaption>Privacy audit of {html.escape(run)}.</figcaption></figure>'
        )
    table = run_dir / "privacy.parquet"
    if table.is_file():
        per_client = pd.read_parquet(table)
        parts.append(
            '<div class="table-wrap">'
            + per_client.to_html(
                classes="comparison privacy-clients",
                index=False,
                float_format=lambda v: f"{v:.3g}",
                na_rep="",
                border=0,
                table_id=f"privacy-clients-{run}",
            )
            + "</div>"
        )
    return "\n".join(parts) if len(parts) > 1 else ""


def privacy_section(df: pd.DataFrame) -> str:
    """The section's HTML from ``load_runs``' frame; "" when no run has DP or an audit."""
    if "run" not in df or df.empty:
        return ""
    metas = df.groupby("run", sort=True).first()
    metas = metas[[_has_privacy(m) for _, m in metas.iterrows()]]
    if metas.empty:
        return ""
    # A report without DP opens with what it has (the audit), not with epsilons it has none of.
    dp = any(_value(m, "epsilon") is not None for _, m in metas.iterrows())
    audit = any(_value(m, "mia_auc") is not None for _, m in metas.iterrows())
    text = " ".join(t for t, on in ((EXPLAIN_DP, dp), (EXPLAIN_AUDIT, audit)) if on)
    parts = [
        '<h2 id="privacy">Privacy</h2>',
        f'<p class="note" id="privacy-explain">{html.escape(text)}</p>',
        _summary_table(metas),
    ]
    for run, m in metas.iterrows():
        parts.append(_run_details(str(run), Path(str(m["run_dir"]))))
    return "<section>" + "\n".join(p for p in parts if p) + "</section>"


__all__ = ["privacy_section"]
