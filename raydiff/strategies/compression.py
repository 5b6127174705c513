"""Compressed client updates: what a client uploads instead of a float32 delta, and its size in bytes.

A compressor is lossy in general. ``encode`` takes the client's ``residual`` (what earlier payloads
failed to carry; None the first time) and returns the new one, so a caller that keeps residuals per
client gets error feedback (Seide et al. 2014; Karimireddy et al. 2019), and one that drops them
gets plain compression. ``nbytes`` is the payload's size on the wire, for the network model.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, Optional

import numpy as np

Payload = Any


class Compressor(ABC):
    """encode(delta, residual) -> (payload, nbytes, new_residual); decode(payload, size) -> float32[size]."""

    @abstractmethod
    def encode(
        self, delta: np.ndarray, residual: Optional[np.ndarray] = None
    ) -> tuple[Payload, int, Optional[np.ndarray]]:
        """Compress ``delta + residual``; ``new_residual`` = that minus what the payload decodes to
        (None when nothing was lost)."""

    @abstractmethod
    def decode(self, payload: Payload, size: int) -> np.ndarray:
        """The float32 vector of ``size`` values that the payload stands for."""


class _Elementwise(Compressor):
    """A compressor of the whole vector: subclasses say how to pack it; the residual follows."""

    def encode(
        self, delta: np.ndarray, residual: Optional[np.ndarray] = None
    ) -> tuple[Payload, int, Optional[np.ndarray]]:
        e = delta if residual is None else delta + residual
        payload, nbytes = self._pack(e)
        return payload, nbytes, self._residual(e, payload)

    @abstractmethod
    def _pack(self, e: np.ndarray) -> tuple[Payload, int]:
        """(payload, its size in bytes)."""

    def _residual(self, e: np.ndarray, payload: Payload) -> Optional[np.ndarray]:
        out: np.ndarray = e - self.decode(payload, e.size)
        return out


class NoCompression(_Elementwise):
    """Raw float32: 4 bytes a value, nothing lost (the residual is always None)."""

    def _pack(self, e: np.ndarray) -> tuple[Payload, int]:
        return e, 4 * e.size

    def decode(self, payload: Payload, size: int) -> np.ndarray:
        return np.asarray(payload, dtype=np.float32).reshape(size)

    def _residual(self, e: np.ndarray, payload: Payload) -> Optional[np.ndarray]:
        return None


class FP16(_Elementwise):
    """IEEE half precision: 2 bytes a value, relative error <= 2^-11 in the normal range.

    Magnitudes above 65504 become inf, which the server's check rejects as non-finite.
    """

    def _pack(self, e: np.ndarray) -> tuple[Payload, int]:
        with np.errstate(over="ignore"):  # overflow to inf is the documented behaviour
            return e.astype(np.float16), 2 * e.size

    def decode(self, payload: Payload, size: int) -> np.ndarray:
        out: np.ndarray = np.asarray(payload).astype(np.float32).reshape(size)
        return out


class Int8(_Elementwise):
    """Symmetric 8-bit quantisation with one float32 scale per chunk: n + 4*ceil(n/chunk) bytes.

    scale = max|e| / 127 over the chunk; q = round(e / scale). Per-chunk scales keep one large value
    from flattening the rest of a big vector to zero. Error per value <= scale/2.
    """

    def __init__(self, chunk: int = 4096) -> None:
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        self.chunk = chunk

    def _pack(self, e: np.ndarray) -> tuple[Payload, int]:
        n = e.size
        chunks = math.ceil(n / self.chunk)
        padded = np.zeros(chunks * self.chunk, dtype=np.float32)
        padded[:n] = e
        rows = padded.reshape(chunks, self.chunk)
        scales = np.abs(rows).max(axis=1) / np.float32(127.0)
        safe = np.where(scales > 0, scales, np.float32(1.0))[:, None]
        q = np.clip(np.rint(rows / safe), -127, 127).astype(np.int8).reshape(-1)[:n]
        return (q, scales), n + 4 * chunks

    def decode(self, payload: Payload, size: int) -> np.ndarray:
        q, scales = payload
        out: np.ndarray = q.astype(np.float32) * np.repeat(scales, self.chunk)[:size]
        return out


class TopK(_Elementwise):
    """Keep the k = ceil(fraction * n) largest |values|: int32 indices + float32 values, 8k bytes.

    The dropped values are the new residual, so with error feedback nothing is lost, only delayed.
    """

    def __init__(self, fraction: float) -> None:
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        self.fraction = fraction

    def k_for(self, n: int) -> int:
        return min(n, math.ceil(self.fraction * n))

    def _pack(self, e: np.ndarray) -> tuple[Payload, int]:
        k = self.k_for(e.size)
        if k == 0:
            return (np.zeros(0, np.int32), np.zeros(0, np.float32)), 0
        idx = np.sort(np.argpartition(np.abs(e), e.size - k)[e.size - k :]).astype(np.int32)
        return (idx, e[idx].astype(np.float32)), 8 * k

    def decode(self, payload: Payload, size: int) -> np.ndarray:
        idx, values = payload
        out = np.zeros(size, dtype=np.float32)
        out[idx] = values
        return out

    def _residual(self, e: np.ndarray, payload: Payload) -> Optional[np.ndarray]:
        rest = np.array(e, dtype=np.float32, copy=True)
        rest[payload[0]] = 0.0  # exact: the kept entries travel unchanged
        return rest


class Partial(Compressor):
    """Exchange only the entries where ``mask`` is True (e.g. the decoder, as in FedDiffuse), via ``inner``.

    Both sides know the mask, so only the selected values cost bytes. Entries outside the mask are
    dropped on purpose and NOT kept as residual (they would never be sent); inside it the inner
    compressor's residual is carried.
    """

    def __init__(self, mask: np.ndarray, inner: Optional[Compressor] = None) -> None:
        if mask.dtype != np.bool_ or mask.ndim != 1:
            raise ValueError(f"mask must be a 1-D bool array, got {mask.dtype}{list(mask.shape)}")
        self.mask = mask
        self.inner = inner if inner is not None else NoCompression()

    def encode(
        self, delta: np.ndarray, residual: Optional[np.ndarray] = None
    ) -> tuple[Payload, int, Optional[np.ndarray]]:
        if delta.shape != self.mask.shape:
            raise ValueError(f"delta has {delta.size} values, the mask {self.mask.size}")
        payload, nbytes, inner_res = self.inner.encode(
            delta[self.mask], None if residual is None else residual[self.mask]
        )
        if inner_res is None:
            return payload, nbytes, None
        new_residual = np.zeros_like(delta, dtype=np.float32)
        new_residual[self.mask] = inner_res
        return payload, nbytes, new_residual

    def decode(self, payload: Payload, size: int) -> np.ndarray:
        if size != self.mask.size:
            raise ValueError(f"size {size} does not match the mask's {self.mask.size}")
        out = np.zeros(size, dtype=np.float32)
        out[self.mask] = self.inner.decode(payload, int(self.mask.sum()))
        return out


COMPRESSORS = ("none", "fp16", "int8", "topk")


def make_compressor(name: str, fraction: float = 0.01, chunk: int = 4096) -> Compressor:
    """The compressor called ``name`` (``fraction``: topk only; ``chunk``: int8 only).

    ``Partial`` needs a mask and is built directly: ``Partial(unet_mask(...), inner=make_compressor(...))``.
    """
    if name == "none":
        return NoCompression()
    if name == "fp16":
        return FP16()
    if name == "int8":
        return Int8(chunk)
    if name == "topk":
        return TopK(fraction)
    raise ValueError(f"unknown compressor {name!r}; allowed: {', '.join(COMPRESSORS)}")
