"""Queues: ready messages in FIFO (or priority) order, in-flight leases, consumers served in turn.

Invariants:
- every ``Entry`` is in exactly one place: ``ready`` (waiting), a ``Lease`` (delivered, unacked),
  or gone (acked, dropped, expired, dead-lettered); the optional features hold entries too: ``delayed``
  (not due yet) and the receiver's group backlogs (``core/receiver.py``, ``core/groups.py``);
- leases are made only by ``lease`` and ended only by ``ack``/``release``, and deliveries are counted
  only here (``dispatch``, ``count_delivery``): the unacked, delivered and redelivered counts of the
  queue and of its consumers never change anywhere else;
- ``ready`` is ordered by ``seq`` within a priority level, so requeued messages go back to their
  original position (as RabbitMQ's classic queues do);
- only the head can expire (RabbitMQ semantics for per-message TTL), so expiry costs O(1) per
  message and needs one timer per queue, for the head.

A queue never awaits: enqueue marks it dirty, and the broker's ``flush`` calls ``dispatch`` once
per batch of input, which hands entries to consumers with credit.
"""

from __future__ import annotations

import dataclasses
import heapq
from collections import deque
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from haremq.core.arguments import QueueArgs
from haremq.core.delay import DelayedEntries
from haremq.core.lease import Lease
from haremq.core.policy import Policy, effective_arguments
from haremq.errors import NotImplementedByBroker, ResourceError
from haremq.message import Message, Properties

if TYPE_CHECKING:
    from haremq.core.consumer import Consumer
    from haremq.core.receiver import Receiver
    from haremq.core.vhost import VHost


# A paged-out entry's message lives only in the store; ``Queue.load`` reads it back on delivery.
PAGED = Message("", "", Properties(delivery_mode=2), b"")


# Rough RAM per message beyond its body (Entry, Message, Properties, deque slot; measured with
# tracemalloc), and per paged-out entry (only the Entry stays): for the memory alarm's estimate.
MESSAGE_OVERHEAD = 400
ENTRY_OVERHEAD = 100


class Entry:
    """One message's place in one queue."""

    __slots__ = ("delivery_count", "expires_at", "msg", "priority", "seq", "size")

    def __init__(self, msg: Message, seq: int, expires_at: float | None, priority: int,
                 size: int | None = None) -> None:
        self.msg = msg
        self.seq = seq
        self.expires_at = expires_at
        self.priority = priority
        self.delivery_count = 0
        self.size = len(msg.body) if size is None else size

    def __lt__(self, other: Entry) -> bool:
        return self.seq < other.seq


class _Fifo:
    """Ready entries of one priority level, ordered by seq."""

    __slots__ = ("d",)

    def __init__(self) -> None:
        self.d: deque[Entry] = deque()

    def requeue(self, entries: list[Entry]) -> None:
        d = self.d
        if not d or entries[-1].seq < d[0].seq:
            d.extendleft(reversed(entries))
        else:
            self.d = deque(heapq.merge(entries, d))


class ReadyList:
    """Ready entries, by priority level (one level unless ``x-max-priority`` is set)."""

    __slots__ = ("bytes", "count", "levels", "paged", "single")

    def __init__(self, max_priority: int | None) -> None:
        n = 1 if not max_priority else max_priority + 1
        self.levels = [_Fifo() for _ in range(n)]
        self.single = self.levels[0] if n == 1 else None
        self.count = 0
        self.bytes = 0
        self.paged = 0  # bytes of paged-out entries (bodies in the store, not in RAM): memory estimate

    def append(self, e: Entry) -> None:
        (self.single or self.levels[e.priority]).d.append(e)
        self.count += 1
        self.bytes += e.size
        if e.msg is PAGED:
            self.paged += e.size

    def head_level(self) -> _Fifo | None:
        if self.single is not None:
            return self.single if self.single.d else None
        for level in reversed(self.levels):
            if level.d:
                return level
        return None

    def peek(self) -> Entry | None:
        level = self.head_level()
        return level.d[0] if level is not None else None

    def popleft(self) -> Entry | None:
        level = self.head_level()
        if level is None:
            return None
        e = level.d.popleft()
        self.count -= 1
        self.bytes -= e.size
        if e.msg is PAGED:
            self.paged -= e.size
        return e

    def requeue(self, entries: list[Entry]) -> None:
        if self.single is not None:
            self.single.requeue(entries)
        else:
            by_level: dict[int, list[Entry]] = {}
            for e in entries:
                by_level.setdefault(e.priority, []).append(e)
            for p, es in by_level.items():
                self.levels[p].requeue(es)
        self.count += len(entries)
        self.bytes += sum(e.size for e in entries)
        self.paged += sum(e.size for e in entries if e.msg is PAGED)

    def clear(self) -> list[Entry]:
        out = [e for level in self.levels for e in level.d]
        for level in self.levels:
            level.d.clear()
        self.count = self.bytes = self.paged = 0
        return out

    def __iter__(self) -> Iterator[Entry]:
        for level in reversed(self.levels):
            yield from level.d


class Queue:
    """A queue in a vhost. Created and deleted only through ``VHost``."""

    kind = "queue"  # a binding destination's type, as definitions store it

    def __init__(
        self,
        vhost: VHost,
        name: str,
        *,
        durable: bool,
        exclusive_owner: object | None,
        auto_delete: bool,
        arguments: dict[str, Any],
    ) -> None:
        self.vhost = vhost
        self.name = name
        self.durable = durable
        self.exclusive_owner = exclusive_owner
        self.auto_delete = auto_delete
        self.arguments = arguments
        self.args = QueueArgs.parse(name, vhost.name, arguments)
        self.policy: Policy | None = None  # the vhost policy applied (its keys merged into ``args``)
        # persistent messages of durable, non-exclusive queues go to the store (exclusive queues die
        # with their connection, so they never outlive a restart)
        self.persist = durable and exclusive_owner is None
        # a quorum queue keeps every message on disk, whatever its delivery_mode (as RabbitMQ's, whose log
        # holds them all); with one node it has one replica (``core/arguments.py``)
        self.quorum = self.args.queue_type == "quorum"
        self.ready = ReadyList(self.args.max_priority)
        self.delayed = DelayedEntries()  # enqueued with a delay: stored, not ready until due
        self.consumers: list[Consumer] = []
        self._rr = 0
        self.has_had_consumer = False
        self.unacked = 0
        self.next_seq = 1
        self.deleted = False
        self.receiver: Receiver | None = None  # pull receives (core/receiver.py), once a poller uses this queue
        self.last_used = vhost.broker.clock.monotonic()
        self.has_consumer_priorities = False
        self._mean_size = 0  # last known mean ready message size (memory_estimate)
        # statistics
        self.published = 0
        self.delivered = 0
        self.acked = 0
        self.redelivered = 0
        if self.args.expires_ms is not None:
            self.vhost.broker.schedule(self.last_used + self.args.expires_ms / 1000, self)

    # ---- policy ------------------------------------------------------------------------------
    def set_policy(self, policy: Policy | None) -> None:
        """Apply ``policy`` (or none): the queue's arguments merged with it become its effective
        arguments now. A lower length limit drops from the head (``drop-head``) as a publish would;
        a TTL applies to messages enqueued from now on; ``expires`` restarts its timer."""
        args = QueueArgs.parse(self.name, self.vhost.name,
                               effective_arguments(self.arguments, policy, quorum=self.quorum))
        self.policy = policy
        if args == self.args:
            return
        self.args = args
        if args.overflow == "drop-head" and (args.max_length is not None or args.max_length_bytes is not None):
            dropped: list[Message] = []
            while self.ready.count and ((args.max_length is not None and self.ready.count > args.max_length) or (
                    args.max_length_bytes is not None and self.ready.bytes > args.max_length_bytes)):
                e = self.ready.popleft()
                assert e is not None
                if e.msg is PAGED and args.dlx is not None:
                    self.load(e)
                self.drop(e)
                if isinstance(e.msg, Message):
                    dropped.append(e.msg)
            if dropped:
                self.vhost.dead_letter(self, dropped, "maxlen")
        if args.expires_ms is not None:
            self.vhost.broker.schedule(self.last_used + args.expires_ms / 1000, self)

    # ---- counts ------------------------------------------------------------------------------
    def memory_estimate(self) -> int:
        """Bytes this queue holds in RAM (for the memory alarm; O(1), read once a second): bodies
        of ready messages not paged out, plus an index entry each; unacked and delayed messages
        are counted at the queue's mean message size."""
        ready = self.ready
        if ready.count:
            self._mean_size = ready.bytes // ready.count
        held = self.unacked + len(self.delayed)
        in_ram = ready.count if not ready.paged else ready.count * (ready.bytes - ready.paged) // ready.bytes
        return (ready.bytes - ready.paged + ready.count * ENTRY_OVERHEAD + in_ram * (MESSAGE_OVERHEAD - ENTRY_OVERHEAD)
                + held * (self._mean_size + MESSAGE_OVERHEAD))

    @property
    def message_count(self) -> int:
        """Ready messages (what queue.declare-ok and basic.get-ok report)."""
        return self.ready.count

    @property
    def consumer_count(self) -> int:
        return len(self.consumers)

    def __repr__(self) -> str:
        return f"Queue({self.vhost.name!r}, {self.name!r})"

    # ---- input -------------------------------------------------------------------------------
    def enqueue(self, msg: Message, delay: float | None = None) -> bool:
        """Add a routed message; False when the queue refuses it (``x-overflow`` reject-publish*).

        With ``delay`` (seconds) the message is stored now but becomes ready only when due; the
        caller puts the due time in its ``x-delay-until`` header so a restart honours it.
        """
        args = self.args
        now = self.vhost.broker.clock.monotonic()
        ttl = args.message_ttl_ms
        msg_ttl = msg.ttl_ms()
        if msg_ttl is not None and (ttl is None or msg_ttl < ttl):
            ttl = msg_ttl
        prio = 0
        if args.max_priority:
            p = msg.props.priority or 0
            prio = p if p <= args.max_priority else args.max_priority
        if (args.max_length is not None or args.max_length_bytes is not None) and not self._make_room(msg):
            if args.overflow == "reject-publish-dlx":
                self.vhost.dead_letter(self, [msg], "maxlen")
            return False
        if ttl == 0 and not delay:
            # RabbitMQ: a zero TTL means "deliver now or expire"; delivered in this very flush
            if not self._consumer_available():
                self.published += 1
                self.vhost.dead_letter(self, [msg], "expired")
                return True
            ttl = None
        e = Entry(msg, self.next_seq, None if ttl is None else now + ttl / 1000, prio)
        self.next_seq += 1
        self.published += 1
        if self.persist and (msg.props.delivery_mode == 2 or self.quorum):
            broker = self.vhost.broker
            if broker.store_broken:
                return False  # an fsync failed: a confirm could never be honest, so refuse (nack)
            try:
                log = broker.store.publish(self, e)
                broker.written[log] = log.appended_lsn
            except ResourceError:
                # disk full or failed: refuse the message (publisher gets a nack), keep serving
                self.published -= 1
                broker.store_failed = True
                return False
            if self.ready.bytes > broker.page_out_bytes and self.ready.count:
                # a backlog beyond the memory budget keeps only its index in RAM: the body is
                # in the store's mmap and comes back in ``load`` when the entry is delivered
                e.msg = PAGED
        if delay:
            self.delay(e, now + delay)
            return True
        self.ready.append(e)
        if e.expires_at is not None and self.ready.count == 1:
            self.vhost.broker.schedule(e.expires_at, self)
        self.vhost.broker.mark_dirty(self)
        return True

    def _make_room(self, msg: Message) -> bool:
        args = self.args
        size = len(msg.body)

        def full() -> bool:
            return (args.max_length is not None and self.ready.count >= args.max_length) or (
                args.max_length_bytes is not None and self.ready.bytes + size > args.max_length_bytes
            )

        if not full():
            return True
        if args.overflow != "drop-head":
            return False
        dropped: list[Message] = []
        while full() and self.ready.count:
            e = self.ready.popleft()
            assert e is not None
            if e.msg is PAGED and args.dlx is not None:
                self.load(e)
            self.drop(e)
            dropped.append(e.msg)
        if dropped:
            self.vhost.dead_letter(self, dropped, "maxlen")
        if full():
            # a single message larger than x-max-length-bytes, or x-max-length = 0: drop it too
            self.vhost.dead_letter(self, [msg], "maxlen")
            return False
        return True

    def drop(self, e: Entry) -> None:
        """The entry (taken out of the ready list or a lease) leaves the queue for good, not via ack:
        tell the store."""
        # a deleted queue's log is gone; the store is keyed by name, so touching it now would
        # remove a record of a new queue of the same name (a late nack of an old lease)
        if self.persist and not self.deleted and (e.msg.props.delivery_mode == 2 or self.quorum):  # (PAGED too)
            broker = self.vhost.broker
            log = broker.store.remove(self, e)
            if log is not None:
                broker.written[log] = log.appended_lsn

    # ---- consumers ---------------------------------------------------------------------------
    def add_consumer(self, c: Consumer) -> None:
        self.consumers.append(c)
        self.has_had_consumer = True
        if c.priority:
            self.has_consumer_priorities = True
        if self.has_consumer_priorities:
            self.consumers.sort(key=lambda x: -x.priority)
        self.touch()
        self.vhost.broker.mark_dirty(self)

    def check_consume(self, global_prefetch: int) -> None:
        """540 for a consumer on a quorum queue from a channel with a global (channel-wide) prefetch:
        RabbitMQ's quorum queues do not support one, and a client that works here must work there."""
        if self.quorum and global_prefetch:
            raise NotImplementedByBroker(f"queue '{self.name}' in vhost '{self.vhost.name}' does not support "
                                         "global qos")

    def remove_consumer(self, c: Consumer) -> None:
        try:
            self.consumers.remove(c)
        except ValueError:
            return
        self.touch()
        if not self.consumers and self.auto_delete and self.has_had_consumer and not self.deleted:
            self.vhost.delete_queue(self, defer=True)  # a durable one goes once its delete is durable
        else:
            self.vhost.broker.mark_dirty(self)

    def _consumer_available(self) -> bool:
        return any(c.has_credit() for c in self._eligible())

    def _eligible(self) -> list[Consumer]:
        if self.args.single_active_consumer:
            return self.consumers[:1]
        return self.consumers

    def _next_consumer(self) -> Consumer | None:
        cs = self._eligible()
        n = len(cs)
        if n == 1:
            c = cs[0]
            return c if c.has_credit() else None
        if self.has_consumer_priorities:
            # highest priority group first; round-robin inside a group by moving the chosen one last
            for i, c in enumerate(cs):
                if c.has_credit():
                    j = i
                    while j + 1 < n and cs[j + 1].priority == c.priority:
                        j += 1
                    cs.insert(j, cs.pop(i))
                    return c
            return None
        start = self._rr
        for k in range(n):
            c = cs[(start + k) % n]
            if c.has_credit():
                self._rr = (start + k + 1) % n
                return c
        return None

    # ---- output ------------------------------------------------------------------------------
    def take_head(self, now: float) -> Entry | None:
        """Pop the next live entry, expiring (and dead-lettering) dead heads on the way."""
        ready = self.ready
        while True:
            e = ready.popleft()
            if e is None:
                return None
            if e.expires_at is None or e.expires_at > now:
                if e.msg is PAGED:
                    self.load(e)
                return e
            self._expire([e])

    def load(self, e: Entry) -> None:
        """Read a paged-out entry's message back from the store."""
        r = self.vhost.broker.store.read_message(self, e.seq)
        assert r.body is not None
        e.msg = Message(r.exchange, r.routing_key, Properties(**r.props), r.body)

    def _expire(self, entries: list[Entry]) -> None:
        for e in entries:
            if e.msg is PAGED and self.args.dlx is not None:
                self.load(e)
            self.drop(e)
        self.vhost.dead_letter(self, [e.msg for e in entries], "expired")

    def dispatch(self) -> None:
        """Hand ready entries to consumers with credit, until either runs out."""
        if not self.consumers or not self.ready.count:
            return
        now = self.vhost.broker.clock.monotonic()
        while self.ready.count:
            c = self._next_consumer()
            if c is None:
                break
            e = self.take_head(now)
            if e is None:
                break
            self.delivered += 1
            if e.delivery_count:
                self.redelivered += 1
                if self.quorum:
                    self.stamp(e)
            e.delivery_count += 1
            c.session.deliver(c, self, e)
        self.schedule_head_expiry()

    def schedule_head_expiry(self) -> None:
        head = self.ready.peek()
        if head is not None and head.expires_at is not None:
            self.vhost.broker.schedule(head.expires_at, self)

    def get(self) -> Entry | None:
        """``basic.get``: the next live entry, or None."""
        self.touch()
        e = self.take_head(self.vhost.broker.clock.monotonic())
        if e is not None:
            if self.quorum and not e.delivery_count:
                self.stamp(e)  # RabbitMQ's quorum queues stamp every basic.get, 0 the first time
            self.count_delivery(e)
        return e

    def count_delivery(self, e: Entry) -> None:
        """A taken entry is handed out (once more): count it (``dispatch`` does the same inline)."""
        self.delivered += 1
        if e.delivery_count:
            self.redelivered += 1
            if self.quorum:
                self.stamp(e)
        e.delivery_count += 1

    @staticmethod
    def stamp(e: Entry) -> None:
        """Tell the consumer how often the message came back (RabbitMQ quorum queues' ``x-delivery-count``
        header: the returns so far, on every redelivery and every ``basic.get``)."""
        msg = e.msg
        headers = dict(msg.props.headers or {})
        if headers.get("x-delivery-count") != e.delivery_count:
            headers["x-delivery-count"] = e.delivery_count
            e.msg = msg.with_props(msg.props.replace(headers=headers))

    # ---- leases ------------------------------------------------------------------------------
    def lease(self, e: Entry, owner: Consumer | None = None, deadline: float | None = None,
              group: str | None = None) -> Lease:
        """A handed-out entry awaits settlement: the one place unacked counts go up. A lease without a
        deadline is recorded as delivered in the store (a restart flags the entry redelivered)."""
        self.unacked += 1
        if owner is not None:
            owner.unacked += 1
        if deadline is None and self.persist and (e.msg.props.delivery_mode == 2 or self.quorum):
            broker = self.vhost.broker
            log = broker.store.mark_delivered(self, e)
            if log is not None:
                broker.written[log] = log.appended_lsn
        return Lease(self, e, owner, deadline, group)

    def ack(self, lease: Lease) -> None:
        """A lease was acknowledged: it ends and its entry is gone (``release`` + ``settle`` in one call,
        for the hot ack path)."""
        self.unacked -= 1
        c = lease.owner
        if c is not None:
            c.unacked -= 1
        if self.deleted:
            return
        if c is not None:
            self.vhost.broker.mark_dirty(self)
        self.acked += 1
        e = lease.entry
        if self.persist and (e.msg.props.delivery_mode == 2 or self.quorum):
            broker = self.vhost.broker
            log = broker.store.remove(self, e)
            if log is not None:
                broker.written[log] = log.appended_lsn

    def release(self, lease: Lease) -> None:
        """A lease ended (settled, requeued, expired, or its entry dropped): the one place unacked counts
        go down. The owner's freed credit may let the queue dispatch again."""
        self.unacked -= 1
        c = lease.owner
        if c is not None:
            c.unacked -= 1
            if not self.deleted:
                self.vhost.broker.mark_dirty(self)

    def take_ready(self, e: Entry) -> bool:
        """Take a particular entry out of the ready list (deleted while waiting); False if it is not
        there. Linear, but entries whose lease expired go back near the head."""
        ready = self.ready
        for level in ready.levels:
            try:
                level.d.remove(e)
            except ValueError:
                continue
            ready.count -= 1
            ready.bytes -= e.size
            return True
        return False

    def set_message_ttl(self, ttl_ms: int | None) -> None:
        """Change the queue's message TTL (retention) for entries enqueued from now on."""
        self.args = dataclasses.replace(self.args, message_ttl_ms=ttl_ms)

    # ---- settlement --------------------------------------------------------------------------
    def settle(self, e: Entry) -> None:
        """The entry was acknowledged (or delivered with no-ack): it is gone."""
        self.acked += 1
        if self.persist and (e.msg.props.delivery_mode == 2 or self.quorum):
            broker = self.vhost.broker
            log = broker.store.remove(self, e)
            if log is not None:
                broker.written[log] = log.appended_lsn

    def requeue(self, entries: list[Entry]) -> None:
        """Unacked entries come back to their place at the head, flagged redelivered. In a quorum queue
        with ``x-delivery-limit``, an entry returned more often than the limit is dead-lettered (reason
        ``delivery_limit``) or dropped instead, as RabbitMQ does with poison messages."""
        if self.deleted or not entries:
            return
        limit = self.args.delivery_limit
        if limit is not None:
            poison = [e for e in entries if e.delivery_count > limit]  # deliveries so far = returns so far
            if poison:
                entries = [e for e in entries if e.delivery_count <= limit]
                for e in poison:
                    self.drop(e)
                self.vhost.dead_letter(self, [e.msg for e in poison], "delivery_limit")
                if not entries:
                    return
        entries.sort()
        self.ready.requeue(entries)
        self.vhost.broker.mark_dirty(self)
        self.schedule_head_expiry()

    def reject(self, entries: list[Entry]) -> None:
        """Rejected without requeue: dead-letter (reason ``rejected``) or drop."""
        for e in entries:
            self.drop(e)
        if not self.deleted:
            self.vhost.dead_letter(self, [e.msg for e in entries], "rejected")

    def purge(self) -> int:
        entries = self.ready.clear() + self.delayed.clear()
        for e in entries:
            self.drop(e)
        return len(entries)

    # ---- timers ------------------------------------------------------------------------------
    def touch(self) -> None:
        self.last_used = self.vhost.broker.clock.monotonic()

    def on_timer(self, now: float) -> None:
        """Expire dead heads, and delete the queue when ``x-expires`` has passed unused."""
        if self.deleted:
            return
        expired: list[Entry] = []
        while True:
            head = self.ready.peek()
            if head is None or head.expires_at is None or head.expires_at > now:
                break
            self.ready.popleft()
            expired.append(head)
        if expired:
            self._expire(expired)
        due = self.delayed.due(now)
        if due:
            for e in due:
                self.ready.append(e)
            self.vhost.broker.mark_dirty(self)  # the flush also wakes long polls
        nxt = self.delayed.next_due()
        if nxt is not None:
            self.vhost.broker.schedule(nxt, self)
        self.schedule_head_expiry()
        if self.args.expires_ms is not None:
            deadline = self.last_used + self.args.expires_ms / 1000
            if not self.consumers and deadline <= now:
                self.vhost.delete_queue(self)
            elif self.consumers:
                # in use: look again one period later (the last cancel also touches ``last_used``)
                self.vhost.broker.schedule(now + self.args.expires_ms / 1000, self)
            else:
                self.vhost.broker.schedule(deadline, self)

    def delay(self, e: Entry, due: float) -> None:
        """Hold a stored entry out of the ready list until ``due`` (monotonic seconds)."""
        self.delayed.push(due, e)
        self.vhost.broker.schedule(due, self)

    def restore(self, entries: list[Entry], next_seq: int) -> None:
        """Recovered entries (in seq order) become ready again after a restart."""
        for e in entries:
            self.ready.append(e)
        self.next_seq = max(self.next_seq, next_seq)
        self.schedule_head_expiry()
        self.vhost.broker.mark_dirty(self)

    def entries(self) -> Iterable[Entry]:
        return iter(self.ready)
