"""What travels between clients and the server: the compressor both sides agree on, and its byte sizes.

Built from the config alone, on each side, so nothing but the payload crosses the wire.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from .config import Config
from .errors import ConfigError
from .strategies import Compressor, Partial, make_compressor, unet_mask


@dataclass(frozen=True)
class Exchange:
    compressor: Optional[Compressor]  # None: the plain float32 delta (no work at all)
    mask: Optional[np.ndarray]  # partial exchange: the entries that are sent, both ways
    stateful: bool  # clients keep state between jobs (error-feedback residuals, a private local model)

    def down_bytes(self, size: int) -> int:
        return 4 * int(self.mask.sum() if self.mask is not None else size)

    def up_bytes(self, size: int) -> int:
        """Payload bytes of one update; the same for every update of a given size."""
        if self.compressor is None:
            return 4 * size
        return int(self.compressor.encode(np.zeros(size, np.float32))[1])


def make_exchange(cfg: Config, unet=None) -> Exchange:
    """``unet``: a module of the run's architecture (needed only for ``compression.partial``)."""
    c = cfg.strategy.compression
    mask = None
    comp: Optional[Compressor] = None if c.name == "none" else make_compressor(c.name, c.fraction, c.chunk)
    if c.partial:
        if unet is None:
            raise ValueError("partial exchange needs the UNet to build its mask")
        try:
            mask = unet_mask(unet, tuple(c.partial))
        except ValueError as exc:
            raise ConfigError(f"strategy.compression.partial: {exc}") from None
        comp = Partial(mask, inner=comp)
    return Exchange(comp, mask, stateful=c.name == "topk" or bool(c.partial))
