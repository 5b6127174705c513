"""``raydiff bench overhead | aggregate | engine | grouped``: ratios and rates measured in one run.

Each benchmark prints a small table and, as its LAST line, the figure its target is about, so that
scripts (and docs/performance.md) can quote it.
"""

from __future__ import annotations


def require_device(bench: str, device: str) -> None:
    """A CUDA benchmark on a machine without a visible GPU stops with a user error (exit 2), not a traceback."""
    if device != "cuda":
        return
    import torch

    if not torch.cuda.is_available():
        from ..errors import RaydiffError

        raise RaydiffError(
            f"bench {bench} --device cuda: no CUDA device is visible to this process "
            "(torch.cuda.is_available() is False)"
        )
