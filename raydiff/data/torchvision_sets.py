"""MNIST, Fashion-MNIST, CIFAR-10 and SVHN (train split) as uint8 (N, H, W, C) arrays plus int64 labels.

The files are the standard ones that ``torchvision.datasets`` downloads into ``data.root``; torchvision
downloads them, and only when ``data.download`` is true. Arrays are taken whole (``.data``/``.targets``
or the files' own arrays), never item by item through PIL, so 60,000 images load in well under a second.

MNIST and Fashion-MNIST are read by torchvision itself: it only checks that the four raw files exist.
CIFAR-10 and SVHN are read here from the same files, because torchvision refuses any file whose md5
differs from the original's (a re-saved copy, a subset, a test fixture) and hashes 170-180 MB on every
load; we check the structure (keys, shapes, dtypes) instead. The CIFAR pickles are opened with an
unpickler that builds numpy arrays and nothing else, so a planted file cannot run code.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from ..config import DataConfig
from ..errors import DataError

MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
CIFAR_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
SVHN_FILE = "train_32x32.mat"


def _expected(dataset: str) -> str:
    """What a folder must hold for ``dataset``, worded for the error messages."""
    if dataset in ("mnist", "fashion_mnist"):
        sub = "MNIST" if dataset == "mnist" else "FashionMNIST"
        return f"{sub}/raw/ with the unzipped files {', '.join(MNIST_FILES)}"
    if dataset == "cifar10":
        return f"cifar-10-batches-py/ with {', '.join(CIFAR_BATCHES)} (the python version)"
    return SVHN_FILE


def _not_found(dataset: str, root: Path) -> DataError:
    what = _expected(dataset)
    return DataError(
        f"data.root: no {dataset} files in {root}: expected {what}. Set data.download: true on a "
        f"machine with internet, run `raydiff data fetch {dataset} --root {root}` once (on a cluster: the head), "
        "or point data.root at a folder holding these files"
    )


def _corrupt(dataset: str, what: object, exc: BaseException) -> DataError:
    return DataError(
        f"data.root: {what} could not be read as {dataset} ({type(exc).__name__}: {exc}); the file "
        "is corrupt or truncated: delete it and download it again (data.download: true)"
    )


def _root(cfg: DataConfig) -> Path:
    root = Path(str(cfg.root)).expanduser()
    if not cfg.download and not root.is_dir():
        raise DataError(
            f"data.root: folder {root} does not exist. Point data.root at the folder that holds "
            f"{_expected(cfg.dataset)}, set data.download: true on a machine with internet, or run "
            f"`raydiff data fetch {cfg.dataset} --root {cfg.root}` once (on a cluster: the head)"
        )
    return root


def _download(cls_name: str, root: Path, **kwargs: Any) -> Any:
    """Let torchvision fetch (and md5-check) the files; only called when data.download is true."""
    from torchvision import datasets

    try:
        return getattr(datasets, cls_name)(str(root), download=True, **kwargs)
    except Exception as exc:  # URLError, RuntimeError (bad md5, all mirrors failed), OSError (disk)
        raise DataError(
            f"data.download: torchvision could not download {cls_name} into {root} "
            f"({type(exc).__name__}: {exc}); check the internet connection and the disk, or copy "
            "the files there by hand and set data.download: false"
        ) from None


def load_mnist(cfg: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    """MNIST or Fashion-MNIST training images through torchvision (it reads the idx files itself)."""
    from torchvision import datasets

    root = _root(cfg)
    cls = datasets.MNIST if cfg.dataset == "mnist" else datasets.FashionMNIST
    raw = f"an idx file in {root / cls.__name__ / 'raw'}"
    try:
        ds = cls(str(root), train=True, download=cfg.download)
    except RuntimeError as exc:
        if "Dataset not found" in str(exc):
            raise _not_found(cfg.dataset, root) from None
        if cfg.download:
            raise DataError(
                f"data.download: torchvision could not download {cls.__name__} into {root} "
                f"({exc}); check the internet connection, or copy the files there by hand"
            ) from None
        raise _corrupt(cfg.dataset, raw, exc) from None
    except Exception as exc:  # a truncated or foreign idx file: KeyError, ValueError, TypeError, ...
        raise _corrupt(cfg.dataset, raw, exc) from None
    images, labels = ds.data.numpy(), ds.targets.numpy().astype(np.int64)
    if images.ndim != 3 or len(images) != len(labels):
        raise _corrupt(cfg.dataset, raw, ValueError(f"{images.shape} images but {labels.shape} labels"))
    return images[..., None], labels


class _ArraysOnly(pickle.Unpickler):
    """Unpickles dicts, lists and numpy arrays only: a CIFAR batch needs nothing else."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (a CIFAR batch holds only arrays)")


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            entry = _ArraysOnly(f, encoding="latin1").load()
        data = np.asarray(entry.get("data", entry.get(b"data")))
        labels = np.asarray(entry.get("labels", entry.get(b"labels")), dtype=np.int64)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
            raise ValueError(
                f"expected uint8 data (N, 3072) and N labels, got {data.dtype} {data.shape} and {labels.shape}"
            )
    except Exception as exc:
        raise _corrupt("cifar10", path, exc) from None
    return data, labels


def load_cifar10(cfg: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    """The five CIFAR-10 training batches (50,000 RGB 32x32 images)."""
    root = _root(cfg)
    if cfg.download:
        _download("CIFAR10", root, train=True)
    paths = [root / "cifar-10-batches-py" / name for name in CIFAR_BATCHES]
    if not all(p.is_file() for p in paths):
        raise _not_found("cifar10", root)
    batches = [_cifar_batch(p) for p in paths]
    data = np.concatenate([b[0] for b in batches]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return data, np.concatenate([b[1] for b in batches])


def load_svhn(cfg: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    """SVHN's train split (73,257 RGB 32x32 digits); label 10 (the digit 0) becomes 0, as in torchvision."""
    import scipy.io

    root = _root(cfg)
    if cfg.download:
        _download("SVHN", root, split="train")
    path = root / SVHN_FILE
    if not path.is_file():
        raise _not_found("svhn", root)
    try:
        mat = scipy.io.loadmat(str(path))
        x, y = mat["X"], mat["y"].astype(np.int64).reshape(-1)
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[2] != 3 or x.shape[3] != len(y):
            raise ValueError(f"expected X uint8 (H, W, 3, N) and N labels, got {x.dtype} {x.shape} and {y.shape}")
    except Exception as exc:  # MatReadError, ValueError, KeyError ('X' or 'y' missing), ...
        raise _corrupt("svhn", path, exc) from None
    np.place(y, y == 10, 0)
    return x.transpose(3, 0, 1, 2), y
