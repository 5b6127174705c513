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
        c = self._items[int(rng.integers(len(self._items)))]
        self.take(c)
        return c

    def items(self) -> list[int]:
        """The idle clients, in the set's internal (deterministic) order."""
        return list(self._items)

    def take(self, client: int) -> None:
        """Remove a specific idle client (chosen by the caller)."""
        i = self._pos[client]
        if i == -1:
            raise ValueError(f"client {client} is not idle")
        last = self._items.pop()
        if last != client:
            self._items[i] = last
            self._pos[last] = i
        self._pos[client] = -1

    def release(self, client: int) -> None:
        if self._pos[client] != -1:
            raise ValueError(f"client {client} is already idle")
        self._pos[client] = len(self._items)
        self._items.append(client)
