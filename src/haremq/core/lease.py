"""Timed leases: an in-flight entry that comes back by itself when its deadline passes.

This is the SQS receive (visibility timeout) side of the one lease model (``consumer.Lease`` is
the AMQP/STOMP side, which ends with its channel). Each lease has a numeric id that receipt
handles carry; deadlines sit in a heap with lazy deletion: a lease settled or extended leaves its
old heap item behind, and ``expired`` skips items whose lease is gone or whose deadline moved. The
heap is rebuilt when stale items outnumber live leases, so memory stays proportional to what is in
flight. No I/O and no clock inside: callers pass ``now``; expiry is driven by ``Broker.schedule``.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from haremq.core.queue import Entry


class TimerTarget(Protocol):
    """Anything ``Broker.schedule`` can wake up: queues, receivers, move tasks."""

    def on_timer(self, now: float) -> None: ...


class TimedLease:
    """One received (invisible) entry."""

    __slots__ = ("deadline", "entry", "group", "id", "received_at")

    def __init__(self, lease_id: int, entry: Entry, deadline: float, group: str | None, received_at: float) -> None:
        self.id = lease_id
        self.entry = entry
        self.deadline = deadline
        self.group = group
        self.received_at = received_at


class TimedLeases:
    """The in-flight set of one queue, by id, with deadlines."""

    __slots__ = ("_heap", "_next", "by_id")

    def __init__(self) -> None:
        self.by_id: dict[int, TimedLease] = {}
        self._heap: list[tuple[float, int]] = []
        self._next = 1

    def __len__(self) -> int:
        return len(self.by_id)

    def add(self, entry: Entry, deadline: float, group: str | None, now: float) -> TimedLease:
        lid = self._next
        self._next = lid + 1
        lease = TimedLease(lid, entry, deadline, group, now)
        self.by_id[lid] = lease
        self._push(deadline, lid)
        return lease

    def _push(self, deadline: float, lid: int) -> None:
        heap = self._heap
        heapq.heappush(heap, (deadline, lid))
        if len(heap) > 1024 and len(heap) > 4 * len(self.by_id):
            self._heap = [(lease.deadline, i) for i, lease in self.by_id.items()]
            heapq.heapify(self._heap)

    def get(self, lid: int) -> TimedLease | None:
        return self.by_id.get(lid)

    def remove(self, lid: int) -> TimedLease | None:
        return self.by_id.pop(lid, None)

    def extend(self, lease: TimedLease, deadline: float) -> None:
        """Move the deadline (ChangeMessageVisibility); the old heap item becomes stale."""
        lease.deadline = deadline
        self._push(deadline, lease.id)

    def expired(self, now: float) -> list[TimedLease]:
        """Remove and return every lease whose deadline has passed, oldest deadline first."""
        heap, by_id = self._heap, self.by_id
        out: list[TimedLease] = []
        while heap and heap[0][0] <= now:
            deadline, lid = heapq.heappop(heap)
            lease = by_id.get(lid)
            if lease is not None and lease.deadline == deadline:
                del by_id[lid]
                out.append(lease)
        return out

    def next_deadline(self) -> float | None:
        heap, by_id = self._heap, self.by_id
        while heap:
            deadline, lid = heap[0]
            lease = by_id.get(lid)
            if lease is not None and lease.deadline == deadline:
                return deadline
            heapq.heappop(heap)
        return None

    def clear(self) -> list[TimedLease]:
        out = list(self.by_id.values())
        self.by_id.clear()
        self._heap.clear()
        return out
