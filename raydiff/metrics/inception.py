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


# a tensor every torch-fidelity InceptionV3 state dict holds: tells its weights from any other tensors file
_INCEPTION_KEYS = ("Conv2d_1a_3x3.conv.weight", "Mixed_7c.branch_pool.conv.weight", "fc.weight")


def load_inception_weights(path: str) -> dict[str, torch.Tensor]:
    """The weights file as tensors only, or a ConfigError naming the field: never code.

    torch-fidelity reads its weights with ``torch.load(weights_only=False)``, which unpickles anything: a
    crafted ``.pth`` runs its code in the Evaluator. raydiff reads the file itself, with
    ``weights_only=True`` (a pickle allowed to build tensors and containers, nothing else; a file that
    would run code is refused) or as safetensors (``.safetensors``: no pickle at all), and hands
    torch-fidelity only what it read (:func:`fid_metric`)."""
    import pickle

    p = Path(os.path.expanduser(path))
    what = f"eval.inception_weights: {str(p)!r}"
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(p), device="cpu")
        else:
            state = torch.load(str(p), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, ValueError, EOFError, OSError, AttributeError, TypeError) as exc:
        lines = str(exc).strip().splitlines() or [""]
        # torch's own text advises weights_only=False: show only the line naming what was refused
        named = [ln.strip() for ln in lines if "GLOBAL" in ln or "WeightsUnpickler error" in ln]
        first = (named[0] if named else "it holds more than tensors" if "Weights only" in lines[0] else lines[0])[:300]
        raise ConfigError(
            f"{what} cannot be read as tensors only ({type(exc).__name__}: {first}). raydiff loads weights "
            "with torch.load(weights_only=True), which refuses a file that would run code when loaded; use "
            f"torch-fidelity's own weights file ({WEIGHTS_URL}) or a .safetensors copy of it"
        ) from None
    except Exception as exc:  # noqa: BLE001 - SafetensorError and other readers' errors: the user's file
        raise ConfigError(f"{what} cannot be read ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ConfigError(f"{what} holds {type(state).__name__}, not a state dict of tensors")
    missing = [k for k in _INCEPTION_KEYS if k not in state]
    if missing:
        raise ConfigError(
            f"{what} is a file of tensors but not torch-fidelity's InceptionV3 weights (no {missing[0]!r}); "
            f"download them from {WEIGHTS_URL}"
        )
    return state


def check_inception_weights(path: str | None) -> None:
    """Fail before Ray starts, naming the field, when the weights file is missing, is not tensors only (it would
    run code), is not InceptionV3's, or torch-fidelity is absent."""
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
    load_inception_weights(path)  # tensors only, and InceptionV3's: a crafted file is refused here (exit 2)


def to_uint8_rgb(images: np.ndarray) -> torch.Tensor:
    """(N, C, H, W) in [-1, 1] -> uint8 RGB, the input the FID network expects (it resizes to 299 itself)."""
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def fid_metric(weights_path: str) -> Any:
    """torchmetrics' ``FrechetInceptionDistance`` set up as the reference FID: 2048-d pool features and the
    TensorFlow-1-style bilinear resize (``antialias=False``), real statistics kept across ``reset``."""
    import tempfile

    from torchmetrics.image.fid import FrechetInceptionDistance

    state = load_inception_weights(weights_path)  # read here again: the file may have changed since the check
    # torch-fidelity only takes a path, which it unpickles without restriction: give it a private copy of the
    # tensors just read (a file raydiff wrote from tensors has nothing to run), never the user's file
    with tempfile.TemporaryDirectory(prefix="raydiff-inception-") as tmp:
        own = os.path.join(tmp, "inception.pth")
        torch.save(state, own)
        del state
        return FrechetInceptionDistance(
            feature=FEATURES,
            reset_real_features=False,
            normalize=False,
            feature_extractor_weights_path=own,
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


__all__ = [
    "FEATURES",
    "WEIGHTS_URL",
    "InceptionFID",
    "check_inception_weights",
    "fid_metric",
    "load_inception_weights",
    "to_uint8_rgb",
]
