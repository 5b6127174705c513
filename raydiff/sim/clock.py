"""An event heap keyed by (virtual time, sequence): ties break by dispatch order, never by real timing."""

from __future__ import annotations

import heapq
from typing import Generic, TypeVar

T = TypeVar("T")


class EventQueue(Generic[T]):
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, T]] = []
        self._seq = 0

    def push(self, vtime: float, item: T) -> None:
        heapq.heappush(self._heap, (vtime, self._seq, item))
        self._seq += 1

    def pop(self) -> tuple[float, T]:
        vtime, _, item = heapq.heappop(self._heap)
        return vtime, item

    def peek_time(self) -> float:
        return self._heap[0][0]

    def drain(self) -> list[tuple[float, T]]:
        """All remaining events in order, emptying the queue."""
        out = [(v, it) for v, _, it in sorted(self._heap, key=lambda e: (e[0], e[1]))]
        self._heap.clear()
        return out

    @property
    def seq(self) -> int:
        return self._seq

    def entries(self) -> list[tuple[float, int, T]]:
        """Every pending (vtime, seq, item), for checkpoints."""
        return list(self._heap)

    def restore(self, entries: list[tuple[float, int, T]], seq: int) -> None:
        self._heap = list(entries)
        heapq.heapify(self._heap)
        self._seq = seq

    def __len__(self) -> int:
        return len(self._heap)
