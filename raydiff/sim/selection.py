"""Uniform client selection among idle clients in O(1) per pick (a swap-remove array).

Deterministic for a Generator: the same sequence of picks and releases gives the same choices.
"""
from __future__ import annotations

import numpy as np


class IdleSet:
    def __init__(self, num_clients: int) -> None:
        self._items = list(range(num_clients))
        self._pos = list(range(num_clients))  # client -> index in _items, or -1 when busy

    def __len__(self) -> int:
        return len(self._items)

    def pick(self, rng: np.random.Generator) -> int:
        """Remove and return a uniformly chosen idle client."""
        i = int(rng.integers(len(self._items)))
        c = self._items[i]
        last = self._items.pop()
        if last != c:
            self._items[i] = last
            self._pos[last] = i
        self._pos[c] = -1
        return c

    def release(self, client: int) -> None:
        if self._pos[client] != -1:
            raise ValueError(f"client {client} is already idle")
        self._pos[client] = len(self._items)
        self._items.append(client)
