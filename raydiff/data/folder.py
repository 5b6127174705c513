"""An image folder with one subfolder per class (root/cat/001.png, root/dog/002.jpg), read with PIL.

Class ids follow the sorted subfolder names, as in torchvision's ImageFolder, so the same folder gives
the same labels on every machine. All images must share one size: mixed sizes usually mean a wrong
folder, so this is checked before anything is resized to data.image_size.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..config import DataConfig
from ..errors import DataError

if TYPE_CHECKING:
    from PIL import Image

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N"}
SIXTEEN_BIT = {"I", "I;16", "I;16L", "I;16B", "I;16N"}  # PIL's convert("L") clips these, so scale by hand


def _visible(path: Path, top: Path) -> bool:
    return not any(part.startswith(".") for part in path.relative_to(top).parts)


def list_images(root: Path) -> tuple[list[str], list[Path], np.ndarray]:
    """Class names, image paths (sorted within each class) and their labels."""
    if not root.is_dir():
        raise DataError(
            f"data.root: folder {root} does not exist; for data.dataset=folder point data.root at a "
            "folder with one subfolder of images per class (root/cat/1.png, root/dog/2.png)"
        )
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataError(
            f"data.root: {root} has no class subfolders; data.dataset=folder expects one subfolder "
            "per class (root/cat/1.png, root/dog/2.png): move the images into such subfolders"
        )
    files: list[Path] = []
    labels: list[int] = []
    for k, name in enumerate(classes):
        d = root / name
        found = sorted(p for p in d.rglob("*") if p.is_file() and p.suffix.lower() in EXTENSIONS and _visible(p, d))
        if not found:
            raise DataError(
                f"data.root: class folder {d} holds no images ({', '.join(EXTENSIONS)}); add images "
                "to it or remove the folder"
            )
        files += found
        labels += [k] * len(found)
    return classes, files, np.asarray(labels, dtype=np.int64)


def _unreadable(path: Path, exc: BaseException) -> DataError:
    return DataError(
        f"data.root: cannot read image {path} ({type(exc).__name__}: {exc}); the file is corrupt "
        "or not an image: replace or delete it"
    )


def _pixels(im: Image.Image, channels: int) -> np.ndarray:
    """One decoded PIL image as uint8 (H, W, channels)."""
    if im.mode in SIXTEEN_BIT:  # 16-bit greyscale (common for medical PNGs)
        grey = np.clip(np.rint(np.asarray(im, dtype=np.float64) / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], channels, axis=2)
    arr = np.asarray(im.convert("L" if channels == 1 else "RGB"))
    return arr[..., None] if channels == 1 else arr


def load_folder(cfg: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    """All images as uint8 (N, H, W, C): C is 1 if every image is greyscale, else 3 (RGB)."""
    from PIL import Image

    root = Path(str(cfg.root)).expanduser()
    _, files, labels = list_images(root)
    sizes, modes = [], []
    for f in files:  # headers only: cheap, and finds foreign files before any pixel is decoded
        try:
            with Image.open(f) as im:
                sizes.append(im.size)
                modes.append(im.mode)
        except Exception as exc:
            raise _unreadable(f, exc) from None
    odd = next((i for i, s in enumerate(sizes) if s != sizes[0]), None)
    if odd is not None:
        (w0, h0), (w1, h1) = sizes[0], sizes[odd]
        raise DataError(
            f"data.root: images in {root} differ in size: {files[0]} is {w0}x{h0} but {files[odd]} is "
            f"{w1}x{h1}. Mixed sizes usually mean a wrong folder, so raydiff stops before resizing to "
            "data.image_size; point data.root at the right folder or bring all images to one size"
        )
    channels = 1 if all(m in GREY_MODES for m in modes) else 3
    w, h = sizes[0]
    out = np.empty((len(files), h, w, channels), dtype=np.uint8)
    for i, f in enumerate(files):
        try:
            with Image.open(f) as im:
                out[i] = _pixels(im, channels)
        except Exception as exc:  # truncated data shows only when decoding
            raise _unreadable(f, exc) from None
    return out, labels
