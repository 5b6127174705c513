"""Boolean masks over the flat parameter vector, built from parameter names (for partial exchange)."""

from __future__ import annotations

from typing import Any

import numpy as np


def unet_mask(module: Any, include: tuple[str, ...]) -> np.ndarray:
    """True for every flat entry of a parameter whose dotted name starts with one of ``include``.

    A prefix matches whole name components: ``'up_blocks'`` matches ``up_blocks.0.resnets...``, and
    ``'conv_out'`` matches ``conv_out.weight`` but not ``conv_out_extra.weight``. The order is
    ``module.named_parameters()``, the order in which ``raydiff.model.FlatModel`` lays out its vector.
    FedDiffuse's decoder (de Goede et al. 2024) is ``include=('up_blocks', 'conv_norm_out', 'conv_out')``.
    A prefix that matches no parameter raises, so a typo cannot silently select nothing.
    """
    named = list(module.named_parameters())
    parts, used = [], set()
    for name, p in named:
        hit = [pre for pre in include if name == pre or name.startswith(pre + ".")]
        used.update(hit)
        parts.append(np.full(p.numel(), bool(hit)))
    unused = [pre for pre in include if pre not in used]
    if unused:
        tops = sorted({name.split(".")[0] for name, _ in named})
        raise ValueError(f"no parameter matches {unused}; top-level names are: {', '.join(tops)}")
    return np.concatenate(parts) if parts else np.zeros(0, dtype=bool)
