"""Inception FID through torchmetrics, only when the user hands us the weights file.

Why optional: the standard FID network (torch-fidelity's InceptionV3, 2015-12-05 weights, ~100 MB) is
downloaded from GitHub by default, and raydiff never downloads at run time. With
``eval.inception_weights: /path/weights-inception-2015-12-05-6726825d.pth`` the numbers are the
ones papers report (for 32x32 sets such as CIFAR-10; on 8x8 digits they mean little). Without it,
Inception FID is skipped silently and the domain judge's metrics stand alone.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError

log = logging.getLogger(__name__)

WEIGHTS_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
               "weights-inception-2015-12-05-6726825d.pth")


def check_inception_weights(path: str | None) -> None:
    """Fail before Ray starts, naming the field, when the weights file is missing or torch-fidelity is absent."""
    if path is None:
        return
    p = Path(os.path.expanduser(path))
    if not p.is_file():
        raise ConfigError(f"eval.inception_weights: {str(p)!r} is not a file. It must be torch-fidelity's "
                          f"InceptionV3 weights (download them yourself from {WEIGHTS_URL}); raydiff never "
                          "downloads at run time. Set eval.inception_weights to null to skip Inception FID "
                          "(the domain-judge metrics fid_domain, kid_domain, precision, recall still run).")
    try:
        import torch_fidelity  # noqa: F401
    except ImportError:
        raise ConfigError("eval.inception_weights is set but the torch-fidelity package is not installed "
                          "(torchmetrics needs it for Inception FID): pip install torch-fidelity") from None


def to_uint8_rgb(images: np.ndarray) -> torch.Tensor:
    """(N, C, H, W) in [-1, 1] -> uint8 RGB, the input torchmetrics' FID expects (it resizes to 299 itself)."""
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


class InceptionFID:
    """Real statistics computed once (``reset_real_features=False``); each ``score`` feeds new samples only."""

    def __init__(self, weights_path: str, real: np.ndarray, device: torch.device | str = "cpu",
                 batch: int = 64) -> None:
        from torchmetrics.image.fid import FrechetInceptionDistance

        self.batch = batch
        self.device = torch.device(device)
        self.metric = FrechetInceptionDistance(feature=2048, reset_real_features=False, normalize=False,
                                               feature_extractor_weights_path=os.path.expanduser(weights_path))
        self.metric.to(self.device)
        self._update(real, real=True)
        log.info("Inception FID: real statistics from %d held-out images", len(real))

    def _update(self, images: np.ndarray, real: bool) -> None:
        for s in range(0, len(images), self.batch):
            self.metric.update(to_uint8_rgb(images[s:s + self.batch]).to(self.device), real=real)

    def score(self, fake: np.ndarray) -> float:
        self.metric.reset()  # keeps the real statistics
        self._update(fake, real=False)
        return float(self.metric.compute())


__all__ = ["InceptionFID", "check_inception_weights", "to_uint8_rgb", "WEIGHTS_URL"]
