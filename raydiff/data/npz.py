"""A MedMNIST-style .npz: ``<split>_images`` uint8 (N, H, W) or (N, H, W, C) and ``<split>_labels`` (N,) or (N, 1).

MedMNIST ships each dataset as one such file with train, val and test splits; ``data.npz_split``
picks one. Opened with ``allow_pickle=False``: an .npz is data, never code.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import MAX_CLASSES, DataConfig
from ..errors import DataError


def _bad(path: Path, what: str) -> DataError:
    return DataError(f"data.root: {path}: {what}")


def load_npz(cfg: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    """Images as uint8 (N, H, W, C) and labels as int64 (N,)."""
    path = Path(str(cfg.root)).expanduser()
    if not path.is_file():
        raise DataError(
            f"data.root: file {path} does not exist; for data.dataset=npz point data.root at a "
            "MedMNIST-style .npz file (train_images, train_labels, val_*, test_*)"
        )
    ik, lk = f"{cfg.npz_split}_images", f"{cfg.npz_split}_labels"
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError("this is a single .npy array, not an .npz archive")
        with archive:
            keys = list(archive.files)
            if ik not in keys:
                splits = sorted({k.rsplit("_", 1)[0] for k in keys if k.endswith("_images")})
                raise _bad(
                    path,
                    f"no {ik} array (data.npz_split={cfg.npz_split}); the file holds "
                    f"{', '.join(keys) or 'nothing'}; splits with images: {', '.join(splits) or 'none'}",
                )
            if lk not in keys:
                raise _bad(
                    path,
                    f"labels missing: {ik} is there but {lk} is not. raydiff needs one class label "
                    f"per image; add {lk} (N,) to the file",
                )
            images, labels = archive[ik], archive[lk]
    except DataError:
        raise
    except Exception as exc:  # BadZipFile, zlib.error, EOFError, ValueError (bad header, pickled data), OSError
        raise _bad(
            path,
            f"not a readable .npz archive ({type(exc).__name__}: {exc}); the file is corrupt or "
            "truncated: download or write it again (numpy.savez)",
        ) from None
    return _check(path, ik, lk, images, labels)


def _check(path: Path, ik: str, lk: str, images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if images.dtype != np.uint8:
        raise _bad(path, f"{ik} has dtype {images.dtype}; expected uint8 pixels 0..255 as in MedMNIST")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise _bad(path, f"{ik} has shape {images.shape}; expected (N, H, W) or (N, H, W, C) with C 1 or 3")
    if images.shape[0] == 0 or images.shape[1] == 0 or images.shape[2] == 0:
        raise _bad(
            path,
            f"{ik} has shape {images.shape}: {'no images' if images.shape[0] == 0 else 'images of zero size'}; "
            "expected at least one image of at least 1x1 pixels",
        )
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise _bad(
            path,
            f"{lk} has shape {labels.shape}; expected (N,) or (N, 1): one class per image "
            "(multi-label sets such as ChestMNIST are not supported)",
        )
    if labels.dtype.kind not in "iu" or (len(labels) and labels.min() < 0):
        raise _bad(path, f"{lk} must hold integer class ids >= 0, got dtype {labels.dtype}")
    if len(labels) and int(labels.max()) >= MAX_CLASSES:  # compared before any cast: uint64 would wrap negative
        raise _bad(
            path,
            f"{lk} holds the class id {int(labels.max())}; class ids must be 0 to {MAX_CLASSES - 1} (they index "
            "per-class tables): renumber the classes 0, 1, 2, ...",
        )
    if len(labels) != len(images):
        raise _bad(path, f"{ik} has {len(images)} images but {lk} has {len(labels)} labels")
    return images, labels.astype(np.int64)
