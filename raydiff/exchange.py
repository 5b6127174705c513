"""What travels between clients and the server: the compressor both sides agree on, and its byte sizes.

Built from the config alone, on each side, so nothing but the payload crosses the wire.

Error feedback (README, "Compression") is for ``topk`` only: it drops most of an update, and carrying the rest
to the client's next job is what makes it converge. ``fp16`` and ``int8`` round each value (relative error
2^-11, or half an int8 step), so they are plain compression, with or without ``partial``: a residual would cost
a model-sized vector per simulated client for a correction of rounding noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from .config import Config
from .errors import ConfigError
from .strategies import Compressor, Partial, make_compressor, unet_mask
from .strategies.compression import Payload


@dataclass(frozen=True)
class Exchange:
    compressor: Optional[Compressor]  # None: the plain float32 delta (no work at all)
    mask: Optional[np.ndarray]  # partial exchange: the entries that are sent, both ways
    stateful: bool  # clients keep state between jobs (top-k's error-feedback residual, partial's private weights)

    def down_bytes(self, size: int) -> int:
        return 4 * int(self.mask.sum() if self.mask is not None else size)

    def up_bytes(self, size: int) -> int:
        """Payload bytes of one update; the same for every update of a given size."""
        if self.compressor is None:
            return 4 * size
        return int(self.compressor.encode(np.zeros(size, np.float32))[1])


class WithoutFeedback(Compressor):
    """``inner`` as plain compression: the residual is neither used nor returned (no error feedback)."""

    def __init__(self, inner: Compressor) -> None:
        self.inner = inner

    def encode(
        self, delta: np.ndarray, residual: Optional[np.ndarray] = None
    ) -> tuple[Payload, int, Optional[np.ndarray]]:
        payload, nbytes, _ = self.inner.encode(delta, None)
        return payload, nbytes, None

    def decode(self, payload: Payload, size: int) -> np.ndarray:
        return self.inner.decode(payload, size)


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
        # the private weights make a partial client stateful; only top-k also carries a residual
        comp = Partial(mask, inner=comp if comp is None or c.name == "topk" else WithoutFeedback(comp))
    return Exchange(comp, mask, stateful=c.name == "topk" or bool(c.partial))
