"""Delayed messages (SQS ``DelaySeconds``): held out of the queue until their due time."""

from __future__ import annotations

import heapq
import itertools

from haremq.core.message import Message


class DelayedMessages:
    """A heap of (due, message); ``due`` pops them in due order, ties in arrival order."""

    __slots__ = ("_heap", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Message]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, due: float, msg: Message) -> None:
        heapq.heappush(self._heap, (due, next(self._seq), msg))

    def due(self, now: float) -> list[Message]:
        heap = self._heap
        out: list[Message] = []
        while heap and heap[0][0] <= now:
            out.append(heapq.heappop(heap)[2])
        return out

    def next_due(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def clear(self) -> int:
        n = len(self._heap)
        self._heap.clear()
        return n
