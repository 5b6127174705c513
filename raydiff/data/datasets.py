"""Loading image sets into one contiguous float32 array, the form that goes into Ray's object store once."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import DataConfig
from ..errors import DataError


@dataclass(frozen=True)
class ImageSet:
    """Images (N, C, H, W) float32 in [-1, 1] and integer labels (N,)."""

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or len(self.images) != len(self.labels):
            raise DataError(f"images must be (N, C, H, W) with one label each; got {self.images.shape} "
                            f"and {self.labels.shape}")

    @property
    def num_classes(self) -> int:
        return int(self.labels.max()) + 1 if len(self.labels) else 0

    def subset(self, idx: np.ndarray) -> "ImageSet":
        return ImageSet(np.ascontiguousarray(self.images[idx]), self.labels[idx])


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize with torch (imported lazily: data loading should not need it otherwise)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    import torch
    import torch.nn.functional as F

    out = F.interpolate(torch.from_numpy(images), size=(size, size), mode="bilinear", align_corners=False)
    return out.clamp_(-1, 1).numpy()


def load_digits_set() -> ImageSet:
    """scikit-learn's 1,797 8x8 digits (pixel values 0..16), shipped inside the package: no download."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = (d.images.astype(np.float32) / 16.0 * 2.0 - 1.0)[:, None, :, :]
    return ImageSet(np.ascontiguousarray(images), d.target.astype(np.int64))


def load_dataset(cfg: DataConfig) -> ImageSet:
    if cfg.dataset == "digits":
        ds = load_digits_set()
    else:  # guarded by the config's Literal; kept for readers adding datasets
        raise DataError(f"data.dataset: unknown dataset {cfg.dataset!r}")
    return ImageSet(np.ascontiguousarray(_resize(ds.images, cfg.image_size), dtype=np.float32), ds.labels)


def split_holdout(ds: ImageSet, fraction: float, rng: np.random.Generator) -> tuple[ImageSet, ImageSet]:
    """Stratified split: the held-out set keeps the class mix, so its loss is comparable across runs."""
    hold: list[np.ndarray] = []
    for c in range(ds.num_classes):
        idx = np.flatnonzero(ds.labels == c)
        k = int(round(len(idx) * fraction))
        hold.append(rng.permutation(idx)[:k])
    hold_idx = np.sort(np.concatenate(hold)) if hold else np.zeros(0, dtype=np.int64)
    mask = np.ones(len(ds.labels), dtype=bool)
    mask[hold_idx] = False
    return ds.subset(np.flatnonzero(mask)), ds.subset(hold_idx)
