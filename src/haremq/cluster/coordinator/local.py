"""The in-process coordinator: a single node needs no external service. Same contract as etcd
(revisions, compare-and-set, watches from a revision, leases with TTL) on a synchronous store in
memory; several ``LocalCoordinator``s may share one ``LocalStore`` to play a cluster in tests.
Lease time comes from an injectable clock, so TTLs are tested by moving a fake one."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable, Sequence

from haremq.clock import Clock, SystemClock
from haremq.cluster.coordinator.api import Compacted, CoordinatorError, Event, KeyValue, Listing, WatchBatch
from haremq.cluster.coordinator.base import (
    DEFAULT_LEASE_MARGIN,
    DEFAULT_LEASE_TTL,
    BaseCoordinator,
    Cmp,
    LeasedPut,
    StreamBroken,
    TxnOp,
)


class LocalStore:
    """The shared state: one revision counter, the keys, the history since the last compaction and
    the leases (expiry checked against ``clock`` on every call and by the coordinators' reapers)."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock: Clock = clock or SystemClock()
        self.revision = 1  # etcd starts at 1 too
        self.compact_revision = 0
        self.kv: dict[str, KeyValue] = {}
        self.history: list[WatchBatch] = []
        self.leases: dict[int, tuple[float, float]] = {}  # id -> (ttl, expires at)
        self._lease_ids = itertools.count(0x1000)
        self.subscribers: set[Callable[[WatchBatch], None]] = set()

    def range(self, key: str, prefix: bool) -> Listing:
        self.expire()
        if prefix:
            items = tuple(self.kv[k] for k in sorted(self.kv) if k.startswith(key))
        else:
            items = (self.kv[key],) if key in self.kv else ()
        return Listing(items, self.revision)

    def txn(self, compares: Sequence[Cmp], ops: Sequence[TxnOp]) -> tuple[bool, int]:
        self.expire()
        for op in ops:
            if isinstance(op, LeasedPut) and op.lease and op.lease not in self.leases:
                raise CoordinatorError(f"lease {op.lease:x} not found")
        for c in compares:
            kv = self.kv.get(c.key)
            if c.mod_revision is not None and (kv.mod_revision if kv else 0) != c.mod_revision:
                return False, self.revision
            if c.value is not None and (kv is None or kv.value != c.value):
                return False, self.revision
        rev = self.revision + 1
        events: list[Event] = []
        for op in ops:
            if isinstance(op, LeasedPut):
                old = self.kv.get(op.key)
                self.kv[op.key] = KeyValue(op.key, op.value, rev, old.create_revision if old else rev, op.lease)
                events.append(Event("put", op.key, op.value, rev, op.lease))
            else:
                events += self._delete([op.key] if not op.prefix else [k for k in self.kv if k.startswith(op.key)], rev)
        self._publish(events, rev)
        return True, self.revision

    def _delete(self, keys: Sequence[str], rev: int) -> list[Event]:
        out = []
        for k in sorted(keys):
            if self.kv.pop(k, None) is not None:
                out.append(Event("delete", k, b"", rev))
        return out

    def _publish(self, events: list[Event], rev: int) -> None:
        if not events:
            return  # a transaction that changed nothing keeps the revision (etcd does the same)
        self.revision = rev
        batch = WatchBatch(rev, tuple(events))
        self.history.append(batch)
        for sub in list(self.subscribers):
            sub(batch)

    def grant(self, ttl: float) -> int:
        lease = next(self._lease_ids)
        self.leases[lease] = (ttl, self.clock.monotonic() + ttl)
        return lease

    def keepalive(self, lease: int) -> float:
        self.expire()
        if lease not in self.leases:
            return 0.0
        ttl = self.leases[lease][0]
        self.leases[lease] = (ttl, self.clock.monotonic() + ttl)
        return ttl

    def revoke(self, lease: int) -> None:
        if self.leases.pop(lease, None) is not None:
            self._publish(self._delete([k for k, kv in self.kv.items() if kv.lease == lease], self.revision + 1),
                          self.revision + 1)

    def expire(self) -> None:
        now = self.clock.monotonic()
        for lease, (_, at) in list(self.leases.items()):
            if at <= now:
                self.revoke(lease)

    def compact(self, revision: int) -> None:
        self.compact_revision = max(self.compact_revision, min(revision, self.revision))
        self.history = [b for b in self.history if b.revision > self.compact_revision]


class LocalCoordinator(BaseCoordinator):
    """One node's view of a ``LocalStore`` (its own unless one is given)."""

    def __init__(self, store: LocalStore | None = None, *, lease_ttl: float = DEFAULT_LEASE_TTL,
                 lease_margin: float = DEFAULT_LEASE_MARGIN, clock: Clock | None = None) -> None:
        store = store or LocalStore(clock)
        super().__init__(lease_ttl=lease_ttl, lease_margin=lease_margin, clock=clock or store.clock)
        self.store = store
        self._queues: set[asyncio.Queue[WatchBatch | None]] = set()

    async def start(self) -> None:
        await super().start()
        self._spawn(self._reaper())

    async def _reaper(self) -> None:
        while not self._closed:
            self.store.expire()
            await asyncio.sleep(0.05)

    async def _range(self, key: str, prefix: bool) -> Listing:
        return self.store.range(key, prefix)

    async def _txn(self, compares: Sequence[Cmp], ops: Sequence[TxnOp]) -> tuple[bool, int]:
        return self.store.txn(compares, ops)

    async def _watch_stream(self, prefix: str, from_revision: int) -> AsyncIterator[WatchBatch]:
        self.store.expire()
        if from_revision < self.store.compact_revision:
            raise Compacted(self.store.compact_revision)
        queue: asyncio.Queue[WatchBatch | None] = asyncio.Queue()
        self.store.subscribers.add(queue.put_nowait)
        self._queues.add(queue)
        try:
            backlog = [b for b in self.store.history if b.revision >= from_revision]
            last = self.store.revision
            for batch in backlog:
                if (picked := _only(batch, prefix)) is not None:
                    yield picked
            while True:
                item = await queue.get()
                if item is None:
                    raise StreamBroken("interrupted")
                if item.revision > last and (picked := _only(item, prefix)) is not None:
                    yield picked
        finally:
            self.store.subscribers.discard(queue.put_nowait)
            self._queues.discard(queue)

    async def _grant(self, ttl: float) -> tuple[int, float]:
        return self.store.grant(ttl), ttl

    async def _keepalive(self, lease: int) -> float:
        return self.store.keepalive(lease)

    async def _revoke(self, lease: int) -> None:
        self.store.revoke(lease)

    async def compact(self, revision: int) -> None:
        self.store.compact(revision)

    def interrupt_watches(self) -> None:
        for queue in list(self._queues):
            queue.put_nowait(None)

    async def close(self) -> None:
        await super().close()
        self.interrupt_watches()  # open watch iterators end (they see the coordinator closed)


def _only(batch: WatchBatch, prefix: str) -> WatchBatch | None:
    events = tuple(e for e in batch.events if e.key.startswith(prefix))
    return WatchBatch(batch.revision, events) if events else None


__all__ = ["LocalCoordinator", "LocalStore"]
