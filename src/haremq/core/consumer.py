"""Sessions, consumers and leases: the one model behind AMQP channels and STOMP subscriptions.

A ``Session`` is what an AMQP channel or a STOMP connection is to the core: it owns consumers,
numbers deliveries with tags, and holds a ``Lease`` (``core/lease.py``, made by ``Queue.lease``)
for every delivered-but-unsettled entry.
When the session ends, its leases end and their entries are requeued, flagged redelivered.

Credit: a consumer may take a message when its own unacked count is under its prefetch, the
session's total is under the session-wide (``global``) prefetch, the session is not paused by
back-pressure, and flow is on. No-ack consumers ignore prefetch but still honour back-pressure.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from haremq.errors import PreconditionFailed

if TYPE_CHECKING:
    from haremq.core.lease import Lease
    from haremq.core.queue import Entry, Queue
    from haremq.core.vhost import VHost
    from haremq.message import Message
    from haremq.security.users import User


class DeliverySink(Protocol):
    """What a protocol adapter implements to receive the core's output for one session."""

    def deliver(self, consumer_tag: str, delivery_tag: int, redelivered: bool, queue: str,
                msg: Message) -> None:
        """Write one delivery to the peer (buffered; must not block)."""
        ...

    def consumer_cancelled(self, consumer_tag: str) -> None:
        """The broker cancelled a consumer (its queue was deleted)."""
        ...


class NoDeliveries:
    """Sink of sessions that never consume (polling front ends, the management API)."""

    def deliver(self, consumer_tag: str, delivery_tag: int, redelivered: bool, queue: str, msg: Message) -> None:
        raise AssertionError("this session has no consumers")

    def consumer_cancelled(self, consumer_tag: str) -> None:
        return None


class Consumer:
    __slots__ = ("arguments", "exclusive", "no_ack", "prefetch", "priority", "queue", "session", "tag",
                 "unacked")

    def __init__(self, session: Session, queue: Queue, tag: str, *, no_ack: bool, exclusive: bool,
                 prefetch: int, arguments: dict[str, Any]) -> None:
        self.session = session
        self.queue = queue
        self.tag = tag
        self.no_ack = no_ack
        self.exclusive = exclusive
        self.prefetch = prefetch
        self.arguments = arguments
        prio = arguments.get("x-priority", 0)
        self.priority = prio if isinstance(prio, int) and not isinstance(prio, bool) else 0
        self.unacked = 0

    def has_credit(self) -> bool:
        s = self.session
        if s.paused or not s.flow:
            return False
        if self.no_ack:
            return True
        if self.prefetch and self.unacked >= self.prefetch:
            return False
        return not (s.global_prefetch and len(s.leases) >= s.global_prefetch)


class Session:
    """The core side of one AMQP channel (or one STOMP connection)."""

    def __init__(self, vhost: VHost, user: User, connection: object, sink: DeliverySink) -> None:
        self.vhost = vhost
        self.user = user
        self.connection = connection
        self.sink = sink
        self.next_tag = 1
        self.leases: dict[int, Lease] = {}
        self.consumers: dict[str, Consumer] = {}
        self.prefetch = 0  # for consumers created from now on (basic.qos global=false)
        self.global_prefetch = 0  # whole session (basic.qos global=true)
        self.paused = False  # transport back-pressure
        self.flow = True  # channel.flow
        self.closed = False
        self.reply_to_token: str | None = None
        self.write_ok: set[str] = set()  # exchanges already checked for write access
        self.published = 0  # statistics (management API channel rates)
        self.acked = 0

    # ---- called by Queue.dispatch --------------------------------------------------------------
    def deliver(self, c: Consumer, queue: Queue, e: Entry) -> None:
        tag = self.next_tag
        self.next_tag = tag + 1
        stats = self.vhost.broker.stats
        if e.delivery_count > 1:
            stats.redelivered += 1
        if c.no_ack:
            stats.delivered_consume_auto_ack += 1
            queue.settle(e)
        else:
            stats.delivered_consume_manual_ack += 1
            self.leases[tag] = queue.lease(e, c)
        self.sink.deliver(c.tag, tag, e.delivery_count > 1, queue.name, e.msg)

    def take_get(self, queue: Queue, e: Entry, no_ack: bool) -> int:
        """Register a ``basic.get`` result; returns its delivery tag."""
        tag = self.next_tag
        self.next_tag = tag + 1
        if no_ack:
            queue.settle(e)
        else:
            self.leases[tag] = queue.lease(e)
        return tag

    # ---- settlement ----------------------------------------------------------------------------
    def _take(self, tag: int, multiple: bool) -> list[Lease]:
        leases = self.leases
        if multiple:
            if tag == 0:
                out = list(leases.values())
                leases.clear()
                return out
            if tag not in leases and not any(t <= tag for t in leases):
                raise PreconditionFailed(f"unknown delivery tag {tag}")
            out = []
            for t in list(leases):
                if t > tag:
                    break
                out.append(leases.pop(t))
            return out
        lease = leases.pop(tag, None)
        if lease is None:
            raise PreconditionFailed(f"unknown delivery tag {tag}")
        return [lease]

    def ack(self, tag: int, multiple: bool) -> None:
        leases = self._take(tag, multiple)
        self.acked += len(leases)
        self.vhost.broker.stats.acknowledged += len(leases)
        for lease in leases:
            lease.queue.ack(lease)
        if self.global_prefetch:
            self.vhost.broker.resume(self)  # channel-wide credit: every consumer's queue may dispatch

    def nack(self, tag: int, multiple: bool, requeue: bool) -> None:
        self._settle_negative(self._take(tag, multiple), requeue)

    def _settle_negative(self, leases: list[Lease], requeue: bool) -> None:
        by_queue: dict[Queue, list[Entry]] = {}
        for lease in leases:
            lease.queue.release(lease)
            by_queue.setdefault(lease.queue, []).append(lease.entry)
        if self.global_prefetch and leases:
            self.vhost.broker.resume(self)  # channel-wide credit: every consumer's queue may dispatch
        for q, entries in by_queue.items():
            if requeue:
                q.requeue(entries)
            else:
                q.reject(entries)

    def recover(self) -> None:
        """``basic.recover``: every unacked delivery goes back to its queue."""
        leases = list(self.leases.values())
        self.leases.clear()
        self._settle_negative(leases, requeue=True)

    # ---- consumers -----------------------------------------------------------------------------
    def cancel(self, tag: str) -> Consumer | None:
        c = self.consumers.pop(tag, None)
        if c is not None:
            c.queue.remove_consumer(c)
            if c.queue is self.vhost.reply_queues.get(self.reply_to_token or ""):
                self.vhost.drop_reply_to(self)
        return c

    def close(self) -> None:
        """The channel ended: cancel consumers, requeue every unacked delivery."""
        if self.closed:
            return
        self.closed = True
        for tag in list(self.consumers):
            self.cancel(tag)
        self.recover()
        self.vhost.drop_reply_to(self)
