"""Sample-quality metrics without downloads: the domain classifier (a CNN trained on the run's own training
images) for FID, KID and precision/recall, and Inception FID when the user supplies the weights.

Submodules import torch; this package file stays light so the runner's input checks can use
:func:`check_eval` before anything heavy is imported.
"""

from __future__ import annotations

from .eval_checks import check_eval

__all__ = ["check_eval"]
