"""Loading image sets into one contiguous float32 array, the form that goes into Ray's object store once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..config import DataConfig
from ..errors import DataError
from .convert import convert_channels, resize, to_float_images


@dataclass(frozen=True)
class ImageSet:
    """Images (N, C, H, W) float32 in [-1, 1] and integer labels (N,)."""

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or len(self.images) != len(self.labels):
            raise DataError(
                f"images must be (N, C, H, W) with one label each; got {self.images.shape} and {self.labels.shape}"
            )

    @property
    def num_classes(self) -> int:
        return int(self.labels.max()) + 1 if len(self.labels) else 0

    def subset(self, idx: np.ndarray) -> ImageSet:
        return ImageSet(np.ascontiguousarray(self.images[idx]), self.labels[idx])


def load_digits_set() -> ImageSet:
    """scikit-learn's 1,797 8x8 digits (pixel values 0..16), shipped inside the package: no download."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = (d.images.astype(np.float32) / 16.0 * 2.0 - 1.0)[:, None, :, :]
    return ImageSet(np.ascontiguousarray(images), d.target.astype(np.int64))


def synthetic_set(n: int, classes: int, size: int, seed: int = 0) -> ImageSet:
    """``n`` labelled greyscale images: one random template per class plus noise. No download, any size.

    Made for dry runs at 100,000 clients, tests and benchmarks, not for judging sample quality.
    """
    rng = np.random.default_rng([seed, 0x5E7])
    templates = rng.uniform(-1, 1, (classes, 1, size, size)).astype(np.float32)
    labels = np.arange(n, dtype=np.int64) % classes
    rng.shuffle(labels)
    images = templates[labels] + rng.normal(0, 0.2, (n, 1, size, size)).astype(np.float32)
    return ImageSet(np.clip(images, -1, 1, out=images), labels)


def _file_reader(dataset: str) -> Callable[[DataConfig], tuple[np.ndarray, np.ndarray]]:
    """The loader of a dataset read from disk: each returns uint8 (N, H, W, C) and int64 labels."""
    from .folder import load_folder
    from .npz import load_npz
    from .torchvision_sets import load_cifar10, load_mnist, load_svhn

    readers = {
        "mnist": load_mnist,
        "fashion_mnist": load_mnist,
        "cifar10": load_cifar10,
        "svhn": load_svhn,
        "folder": load_folder,
        "npz": load_npz,
    }
    if dataset not in readers:  # guarded by the config's Literal; kept for readers adding datasets
        raise DataError(f"data.dataset: unknown dataset {dataset!r}")
    return readers[dataset]


def load_dataset(cfg: DataConfig) -> ImageSet:
    """The configured set at data.image_size, with data.channels channels, in [-1, 1]."""
    if cfg.dataset == "synthetic":
        ds = synthetic_set(cfg.synthetic_size, cfg.synthetic_classes, cfg.image_size)
    elif cfg.dataset == "digits":
        ds = load_digits_set()
        ds = ImageSet(np.ascontiguousarray(resize(ds.images, cfg.image_size), dtype=np.float32), ds.labels)
    else:
        images, labels = _file_reader(cfg.dataset)(cfg)
        return ImageSet(to_float_images(images, cfg.image_size, cfg.channels), labels)
    if cfg.channels is None:
        return ds
    return ImageSet(np.ascontiguousarray(convert_channels(ds.images, cfg.channels)), ds.labels)


def split_holdout(ds: ImageSet, fraction: float, rng: np.random.Generator) -> tuple[ImageSet, ImageSet]:
    """Stratified split: the held-out set keeps the class mix, so its loss is comparable across runs."""
    hold: list[np.ndarray] = []
    for c in range(ds.num_classes):
        idx = np.flatnonzero(ds.labels == c)
        k = round(len(idx) * fraction)
        hold.append(rng.permutation(idx)[:k])
    hold_idx = np.sort(np.concatenate(hold)) if hold else np.zeros(0, dtype=np.int64)
    mask = np.ones(len(ds.labels), dtype=bool)
    mask[hold_idx] = False
    return ds.subset(np.flatnonzero(mask)), ds.subset(hold_idx)
