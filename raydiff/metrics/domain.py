"""The domain classifier: a small CNN trained on the run's OWN training images, whose features replace Inception.

Why: Inception FID needs 100 MB of weights from the internet and judges 8x8 digits through a
network trained on 299x299 photos. A classifier trained on the training split of the very dataset
being generated knows what matters in it (strokes of a digit, not ImageNet textures), trains in
seconds on a CPU, and needs no download. Its penultimate layer is the feature space for FID, KID
and precision/recall; its accuracy on the held-out images tells users how much to trust it.

Trained once per (images, labels, architecture) and cached on disk by a sha256 of all three.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

# Bump when DomainNet or the training recipe changes: old cache files then no longer match.
ARCH_VERSION = 1
EPOCHS, MAX_STEPS, BATCH, LR = 15, 2000, 64, 2e-3
FEATURES = 64
TRAINED = 0  # trainings done in this process (tests check that the cache spares them)


class DomainNet(nn.Module):
    """Three 3x3 convs, one 2x2 pool, adaptive pooling to 4x4, a 64-wide hidden layer: any size >= 4 px."""

    def __init__(self, channels: int, num_classes: int, width: int = 32) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(2 * width * 16, FEATURES),
            nn.ReLU(),
        )
        self.head = nn.Linear(FEATURES, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


@dataclass
class DomainClassifier:
    """A trained DomainNet; ``features`` is its penultimate layer (the space FID is measured in)."""

    net: DomainNet
    key: str
    device: torch.device
    scale: float = 1.0  # makes the training features' mean squared norm equal to their dimension

    @torch.no_grad()
    def _batches(self, images: np.ndarray, fn, batch: int = 512) -> np.ndarray:
        self.net.eval()
        out = [
            fn(torch.from_numpy(np.ascontiguousarray(images[s : s + batch], dtype=np.float32)).to(self.device))
            for s in range(0, len(images), batch)
        ]
        return torch.cat(out).cpu().numpy()

    def features(self, images: np.ndarray) -> np.ndarray:
        """(N, C, H, W) in [-1, 1] -> (N, 64) float64, scaled to O(1) per dimension.

        The scale is fixed per classifier (from its training images), so distances stay comparable across
        runs; it keeps KID's polynomial kernel (x.y / d + 1)^3 in its intended range.
        """
        return self._batches(images, self.net.body).astype(np.float64) * self.scale

    def predict(self, images: np.ndarray) -> np.ndarray:
        """The most likely class of each image (N,) int64."""
        return self._batches(images, lambda x: self.net(x).argmax(1)).astype(np.int64)

    def accuracy(self, images: np.ndarray, labels: np.ndarray) -> float:
        return float((self.predict(images) == np.asarray(labels)).mean())


def classifier_key(images: np.ndarray, labels: np.ndarray, seed: int) -> str:
    """sha256 of the training images, labels, their shapes, the architecture version and the seed."""
    h = hashlib.sha256()
    h.update(
        f"raydiff-domain-judge v{ARCH_VERSION} {images.shape} {labels.shape} seed={seed} "
        f"{EPOCHS},{MAX_STEPS},{BATCH},{LR},{FEATURES}".encode()
    )
    h.update(np.ascontiguousarray(images, dtype=np.float32).tobytes())
    h.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    return h.hexdigest()


def _feature_scale(clf: DomainClassifier, images: np.ndarray) -> float:
    f = clf.features(images)
    return float(1.0 / np.sqrt(max((f * f).sum(1).mean() / f.shape[1], 1e-12)))


def train_net(
    images: np.ndarray, labels: np.ndarray, num_classes: int, seed: int, device: torch.device | str = "cpu"
) -> DomainNet:
    """The domain classifier's recipe (architecture, Adam, epochs, step budget) on any labelled images,
    uncached: the utility evaluation's classifier (raydiff.utility)."""
    return _train(images, labels, num_classes, seed, torch.device(device))


def _train(images: np.ndarray, labels: np.ndarray, num_classes: int, seed: int, device: torch.device) -> DomainNet:
    """Adam with a fixed step budget; init and batch order are pure functions of ``seed``."""
    global TRAINED
    with torch.random.fork_rng(devices=[]):  # module init draws from the global RNG: keep it contained
        torch.manual_seed(seed)
        net = DomainNet(images.shape[1], num_classes).to(device)
    g = torch.Generator().manual_seed(seed)
    x_all = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    y_all = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    per_epoch = math.ceil(len(x_all) / BATCH)
    epochs = max(1, min(EPOCHS, MAX_STEPS // per_epoch))
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    net.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x_all), generator=g).split(BATCH):
            loss = nn.functional.cross_entropy(net(x_all[idx].to(device)), y_all[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    TRAINED += 1
    log.info("domain classifier trained: %d images, %d classes, %d epochs", len(x_all), num_classes, epochs)
    return net.eval()


def _save_atomic(path: Path, payload: dict) -> None:
    """Write to a temporary file in the same folder, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def domain_classifier(
    images: np.ndarray,
    labels: np.ndarray,
    cache_dir: Optional[str],
    seed: int = 0,
    device: torch.device | str = "cpu",
    num_classes: Optional[int] = None,
) -> DomainClassifier:
    """Load the classifier for this training set from ``cache_dir``, or train it and store it there.

    An unwritable cache only costs a retraining next time, so it is logged, never raised.
    ``num_classes`` None: the labels' largest value + 1 (a larger count enters the cache key).
    """
    device = torch.device(device)
    labels = np.asarray(labels, dtype=np.int64)
    natural = int(labels.max()) + 1
    num_classes = natural if num_classes is None else max(num_classes, natural)
    key = classifier_key(images, labels, seed)
    if num_classes != natural:
        key = hashlib.sha256(f"{key} classes={num_classes}".encode()).hexdigest()
    path = Path(os.path.expanduser(cache_dir)) / f"domain-{key[:32]}.pt" if cache_dir else None
    if path is not None and path.is_file():
        try:
            payload = torch.load(path, map_location=device, weights_only=True)
            if payload.get("key") == key:
                net = DomainNet(payload["channels"], payload["num_classes"]).to(device)
                net.load_state_dict(payload["state"])
                log.info("domain classifier loaded from cache: %s", path)
                return DomainClassifier(net.eval(), key, device, float(payload["scale"]))
        except Exception as exc:  # noqa: BLE001 - a corrupt cache file is retrained over, not fatal
            log.warning("domain classifier cache %s unreadable (%s): retraining", path, exc)
    clf = DomainClassifier(_train(images, labels, num_classes, seed, device), key, device)
    clf.scale = _feature_scale(clf, images)
    if path is not None:
        try:
            _save_atomic(
                path,
                dict(
                    key=key,
                    channels=int(images.shape[1]),
                    num_classes=num_classes,
                    scale=clf.scale,
                    state={k: v.cpu() for k, v in clf.net.state_dict().items()},
                ),
            )
        except OSError as exc:
            log.warning("could not cache the domain classifier in %s (%s); it will be retrained next run", path, exc)
    return clf


__all__ = ["ARCH_VERSION", "DomainClassifier", "DomainNet", "classifier_key", "domain_classifier", "train_net"]
