"""Inception FID through torchmetrics, only when the user hands us the weights file.

Why optional: the standard FID network (torch-fidelity's InceptionV3, 2015-12-05 weights, ~100 MB) is
downloaded from GitHub by default, and raydiff never downloads at run time. With
``eval.inception_weights: /path/weights-inception-2015-12-05-6726825d.pth`` raydiff computes FID the
way the original TensorFlow code and torch-fidelity do: the same network and weights, and the same
resize to 299x299 (TensorFlow-1-style bilinear, ``antialias=False`` in torchmetrics >= 1.8, whose
default since 1.8 is an antialiased PyTorch resize that gives different features and so different FIDs).
tests/test_inception.py checks that raydiff's features equal torch-fidelity's, bit for bit.

What still differs from a paper's number: the sample count (papers use 50,000 samples; FID is biased
upwards at small counts, so a 64-sample FID is far larger than the same model's 50k FID) and the real
set (here the run's held-out images, not the full training set a paper uses). On 8x8 digits the
number means little: Inception sees 299x299 upsampled blobs.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError

log = logging.getLogger(__name__)

WEIGHTS_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
)
FEATURES = 2048


def check_inception_weights(path: str | None) -> None:
    """Fail before Ray starts, naming the field, when the weights file is missing or torch-fidelity is absent."""
    if path is None:
        return
    p = Path(os.path.expanduser(path))
    if not p.is_file():
        raise ConfigError(
            f"eval.inception_weights: {str(p)!r} is not a file. It must be torch-fidelity's "
            f"InceptionV3 weights (download them yourself from {WEIGHTS_URL}); raydiff never "
            "downloads at run time. Set eval.inception_weights to null to skip Inception FID "
            "(the domain-classifier metrics fid_domain, kid_domain, precision, recall still run)."
        )
    try:
        import torch_fidelity  # noqa: F401
    except ImportError:
        raise ConfigError(
            "eval.inception_weights is set but the torch-fidelity package is not installed "
            "(torchmetrics needs it for Inception FID): pip install torch-fidelity"
        ) from None


def to_uint8_rgb(images: np.ndarray) -> torch.Tensor:
    """(N, C, H, W) in [-1, 1] -> uint8 RGB, the input the FID network expects (it resizes to 299 itself)."""
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def fid_metric(weights_path: str) -> Any:
    """torchmetrics' ``FrechetInceptionDistance`` set up as the reference FID: 2048-d pool features and the
    TensorFlow-1-style bilinear resize (``antialias=False``), real statistics kept across ``reset``."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    return FrechetInceptionDistance(
        feature=FEATURES,
        reset_real_features=False,
        normalize=False,
        feature_extractor_weights_path=os.path.expanduser(weights_path),
        antialias=False,
    )


class InceptionFID:
    """Real statistics computed once (``reset_real_features=False``); each ``score`` feeds new samples only."""

    def __init__(
        self, weights_path: str, real: np.ndarray, device: torch.device | str = "cpu", batch: int = 64
    ) -> None:
        self.batch = batch
        self.device = torch.device(device)
        self.metric = fid_metric(weights_path)
        self.metric.to(self.device)
        self.num_real = len(real)
        self._update(real, real=True)
        log.info("Inception FID: real statistics from %d held-out images", len(real))

    def _update(self, images: np.ndarray, real: bool) -> None:
        for s in range(0, len(images), self.batch):
            self.metric.update(to_uint8_rgb(images[s : s + self.batch]).to(self.device), real=real)

    @torch.no_grad()
    def features(self, images: np.ndarray) -> np.ndarray:
        """The 2048-d features FID is computed from, (N, 2048) float64 (what the equivalence test compares)."""
        out = [
            self.metric.inception(to_uint8_rgb(images[s : s + self.batch]).to(self.device))
            for s in range(0, len(images), self.batch)
        ]
        return torch.cat(out).reshape(len(images), -1).double().cpu().numpy()

    def score(self, fake: np.ndarray) -> float:
        self.metric.reset()  # keeps the real statistics
        self._update(fake, real=False)
        return float(self.metric.compute())


__all__ = ["FEATURES", "WEIGHTS_URL", "InceptionFID", "check_inception_weights", "fid_metric", "to_uint8_rgb"]
