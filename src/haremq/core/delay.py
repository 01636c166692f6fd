"""Delayed entries: in the queue and in its log, but not ready until due.

A delayed message is enqueued at once (so it is persisted before the sender is answered) and held
in this heap instead of the ready list. Its due time is also written into the message as the
``x-delay-until`` header (wall-clock milliseconds), so a restart puts it back here, not in ready.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from haremq.core.queue import Entry

DELAY_HEADER = "x-delay-until"


class DelayedEntries:
    """A heap of (due, seq, entry): ``due`` pops them in due order, ties in arrival order."""

    __slots__ = ("_heap",)

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Entry]] = []

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, due: float, entry: Entry) -> None:
        heapq.heappush(self._heap, (due, entry.seq, entry))

    def due(self, now: float) -> list[Entry]:
        heap = self._heap
        out: list[Entry] = []
        while heap and heap[0][0] <= now:
            out.append(heapq.heappop(heap)[2])
        return out

    def next_due(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def clear(self) -> list[Entry]:
        out = [e for _, _, e in self._heap]
        self._heap.clear()
        return out
