"""Privacy: client-level DP accounting from a run's events, and an empirical privacy audit of the trained model.

``options`` (the ``eval.privacy_audit`` settings) is imported here, as the config needs it. ``accounting``
(scipy: ~2 s to import on a loaded machine) and ``audit`` (torch) load on first use of one of their names,
so ``import raydiff`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

from .options import AuditOptions

_ACCOUNTING = (
    "PrivacySpent",
    "composed_mu",
    "gdp_epsilon",
    "privacy_columns",
    "privacy_over_versions",
    "rigorous_epsilon",
    "sampled_epsilon",
    "selection_is_uniform",
    "summary_fields",
)
_AUDIT = ("AuditResult", "audit_model", "audit_run_folder", "membership_auc", "tpr_at_fpr", "write_audit")


def __getattr__(name: str) -> Any:
    for module, names in (("accounting", _ACCOUNTING), ("audit", _AUDIT)):
        if name in names:
            return getattr(importlib.import_module(f"{__name__}.{module}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["AuditOptions", *_ACCOUNTING, *_AUDIT]
