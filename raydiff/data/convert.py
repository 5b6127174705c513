"""From uint8 pictures of any source to the float32 NCHW [-1, 1] array that goes into Ray's object store.

Every loader hands over uint8 (N, H, W, C) (a strided view is fine); this module does the rest in
chunks written into one preallocated output, so a 73,257-image SVHN costs the output plus one chunk,
never several full-size float copies.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

CHUNK = 2048  # images per conversion step: bounds the temporary float copies
SCALE = np.float32(2.0 / 255.0)  # uint8 0..255 -> 0..2, then minus 1
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601-2, the weights of PIL's convert("L")


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of float NCHW images to size x size; antialiased only when shrinking.

    Antialiasing matters when shrinking (a 64->16 resize without it aliases badly); when enlarging it
    has no effect, and leaving it off keeps the enlarged digits bit-identical to earlier versions.
    torch is imported lazily: data loading should not need it otherwise.
    """
    h, w = images.shape[-2:]
    if h == size and w == size:
        return images
    import torch
    import torch.nn.functional as F

    shrink = size < h or size < w
    out = F.interpolate(
        torch.from_numpy(np.ascontiguousarray(images)),
        size=(size, size),
        mode="bilinear",
        align_corners=False,
        antialias=shrink,
    )
    return out.clamp_(-1, 1).numpy()


def convert_channels(images: np.ndarray, channels: Optional[int]) -> np.ndarray:
    """Float NCHW images to ``channels`` (1, 3, None keeps them): luminance for RGB -> grey, copies for grey -> RGB."""
    have = images.shape[1]
    if channels is None or channels == have:
        return images
    if have == 1 and channels == 3:
        return np.repeat(images, 3, axis=1)
    if have == 3 and channels == 1:
        return np.tensordot(LUMA, images, axes=([0], [1]))[:, None].astype(np.float32, copy=False)
    raise ValueError(f"cannot convert {have} channels to {channels}")  # loaders only produce 1 or 3


def to_float_images(images: np.ndarray, size: int, channels: Optional[int]) -> np.ndarray:
    """uint8 (N, H, W, C) -> float32 (N, C', size, size) in [-1, 1], C-contiguous, C' = channels or C."""
    n, h, w, have = images.shape
    out = np.empty((n, channels or have, size, size), dtype=np.float32)
    as_is = channels in (None, have) and h == size and w == size
    for i in range(0, n, CHUNK):
        chunk = images[i : i + CHUNK].transpose(0, 3, 1, 2)
        if as_is:  # the common case (MNIST at 28, CIFAR at 32): scale straight into the output
            dst = out[i : i + CHUNK]
            np.multiply(chunk, SCALE, out=dst, dtype=np.float32, casting="unsafe")
            dst -= 1.0
        else:
            x = chunk.astype(np.float32)
            x *= SCALE
            x -= 1.0
            out[i : i + CHUNK] = resize(convert_channels(x, channels), size)
    return out
