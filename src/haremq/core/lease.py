"""Leases: entries handed out and not settled yet, for every front end.

One model: a ``Lease`` has an owner (the consumer whose prefetch it uses, if any), an optional
deadline and the entry's delivery count. AMQP/STOMP deliveries hold leases without a deadline,
by delivery tag in their ``Session``, ending with the channel; poll receives (``core/receiver.py``)
hold leases with a deadline, after which the entry comes back by itself (visibility timeout).

``TimedLeases`` keeps the leases with a deadline of one queue, by id (receipt handles carry it);
deadlines sit in a heap with lazy deletion: a lease settled or extended leaves its
old heap item behind, and ``expired`` skips items whose lease is gone or whose deadline moved. The
heap is rebuilt when stale items outnumber live leases, so memory stays proportional to what is in
flight. No I/O and no clock inside: callers pass ``now``; expiry is driven by ``Broker.schedule``.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from haremq.core.consumer import Consumer
    from haremq.core.queue import Entry, Queue


class TimerTarget(Protocol):
    """Anything ``Broker.schedule`` can wake up: queues, receivers, move tasks."""

    def on_timer(self, now: float) -> None: ...


class Lease:
    """An entry handed out and not settled yet: the one lease model of every front end.

    ``owner`` is the consumer whose prefetch it counts against (None for ``basic.get`` and for poll
    receives); ``deadline`` is when it ends by itself and the entry becomes visible again (None: it
    lasts until settled or until its session ends); ``id`` numbers the timed leases of a queue (receipt
    handles carry it); ``group`` is the message group it locks. Made and ended by ``Queue.lease`` and
    ``Queue.release``, which keep the unacked counts of queue and consumer.
    """

    __slots__ = ("deadline", "entry", "group", "id", "owner", "queue")

    def __init__(self, queue: Queue, entry: Entry, owner: Consumer | None = None, deadline: float | None = None,
                 group: str | None = None) -> None:
        self.queue = queue
        self.entry = entry
        self.owner = owner
        self.deadline = deadline
        self.group = group
        self.id = 0

    @property
    def delivery_count(self) -> int:
        """How many times the entry has been handed out, this time included."""
        return self.entry.delivery_count

    @property
    def redelivered(self) -> bool:
        return self.entry.delivery_count > 1



class TimedLeases:
    """The in-flight set of one queue, by id, with deadlines."""

    __slots__ = ("_heap", "_next", "by_id")

    def __init__(self) -> None:
        self.by_id: dict[int, Lease] = {}
        self._heap: list[tuple[float, int]] = []
        self._next = 1

    def __len__(self) -> int:
        return len(self.by_id)

    def add(self, lease: Lease) -> Lease:
        """Track a lease with a deadline; gives it its id."""
        assert lease.deadline is not None
        lid = self._next
        self._next = lid + 1
        lease.id = lid
        self.by_id[lid] = lease
        self._push(lease.deadline, lid)
        return lease

    def _push(self, deadline: float, lid: int) -> None:
        heap = self._heap
        heapq.heappush(heap, (deadline, lid))
        if len(heap) > 1024 and len(heap) > 4 * len(self.by_id):
            self._heap = [(lease.deadline, i) for i, lease in self.by_id.items() if lease.deadline is not None]
            heapq.heapify(self._heap)

    def get(self, lid: int) -> Lease | None:
        return self.by_id.get(lid)

    def remove(self, lid: int) -> Lease | None:
        return self.by_id.pop(lid, None)

    def extend(self, lease: Lease, deadline: float) -> None:
        """Move the deadline (ChangeMessageVisibility); the old heap item becomes stale."""
        lease.deadline = deadline
        self._push(deadline, lease.id)

    def expired(self, now: float) -> list[Lease]:
        """Remove and return every lease whose deadline has passed, oldest deadline first."""
        heap, by_id = self._heap, self.by_id
        out: list[Lease] = []
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

    def clear(self) -> list[Lease]:
        out = list(self.by_id.values())
        self.by_id.clear()
        self._heap.clear()
        return out
