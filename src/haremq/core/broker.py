"""The broker: vhosts, users, timers, and the commands every protocol is translated into.

Commands are synchronous and return results; their side effects on other sessions (deliveries,
consumer cancellations) go out through each session's ``DeliverySink``. Queues that may have
work are marked dirty and dispatched once per batch of input by ``flush``: a publish burst read in
one socket read costs one dispatch pass per queue, not one per message.

Timers (message TTL at the queue head, ``x-expires``) live in one heap; the server sleeps until
``next_deadline`` and calls ``run_timers``. ``on_schedule`` tells it when an earlier deadline
appeared.

Durability: every record a command appends to a durable queue's log lands in ``written`` (highest
lsn per ``CommitLog``). The server clears it before a command whose answer must wait for the disk
(publish with confirms, tx.commit, a receipted STOMP frame, an SQS request) and reads it after:
that is the command's outcome, the positions its answer waits for (server/durability.py).
"""

from __future__ import annotations

import bisect
import dataclasses
import heapq
import itertools
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

from haremq.clock import Clock, SystemClock
from haremq.core.consumer import Consumer, DeliverySink, Session
from haremq.core.delay import DELAY_HEADER
from haremq.core.exchange import Exchange
from haremq.core.lease import TimerTarget
from haremq.core.policy import Policy
from haremq.core.queue import PAGED, Entry, Queue
from haremq.core.vhost import REPLY_TO, REPLY_TO_PREFIX, VHost, server_name
from haremq.errors import AccessRefused, NotAllowed, NotFound, PreconditionFailed, ResourceLocked
from haremq.message import Message, Properties
from haremq.security.access import vhost_refusal
from haremq.security.users import Access, Permission, User, UserStore
from haremq.store.api import Change, MetadataStore, Positions, RecoverableQueueStore, RecoveredMessage
from haremq.store.memory import MemoryMetadataStore, MemoryQueueStore

ROUTED, UNROUTABLE, REJECTED = 0, 1, 2
MESSAGE_SIZE_BUCKETS = (100, 1000, 10_000, 100_000, 1_000_000, 10_000_000, 50_000_000, 100_000_000)


@dataclasses.dataclass(slots=True)
class BrokerStats:
    """Node-wide counters since start, for the Prometheus ``rabbitmq_global_*`` and churn series (a
    counter that only grows survives queue and connection deletes, unlike per-queue counts)."""

    received: int = 0
    received_confirm: int = 0  # published on a channel in confirm mode (protocol layer)
    confirmed: int = 0  # publisher confirms sent (protocol layer)
    routed: int = 0
    unroutable: int = 0
    returned: int = 0  # unroutable and mandatory: basic.return (protocol layer)
    delivered_consume_auto_ack: int = 0
    delivered_consume_manual_ack: int = 0
    delivered_get_auto_ack: int = 0
    delivered_get_manual_ack: int = 0
    get_empty: int = 0
    redelivered: int = 0
    acknowledged: int = 0
    queues_declared: int = 0
    queues_created: int = 0
    queues_deleted: int = 0
    connections_opened: int = 0  # (protocol layer)
    channels_opened: int = 0  # (protocol layer)
    size_counts: list[int] = dataclasses.field(default_factory=lambda: [0] * (len(MESSAGE_SIZE_BUCKETS) + 1))
    size_sum: int = 0


Then = Callable[[BaseException | None], None]


def commit_failure(fut: Future[int]) -> BaseException | None:
    return fut.exception() if not fut.cancelled() else InterruptedError("definitions commit cancelled")


def run_when_durable(fut: Future[int], then: Then) -> None:
    """Without an event loop: ``then(failure)`` when ``fut`` completes (at once if it has: the
    memory store)."""
    fut.add_done_callback(lambda f: then(commit_failure(f)))


class Broker:
    def __init__(self, *, clock: Clock | None = None, store: RecoverableQueueStore | None = None,
                 metadata: MetadataStore | None = None, users: UserStore | None = None) -> None:
        self.clock: Clock = clock or SystemClock()
        self.store: RecoverableQueueStore = store or MemoryQueueStore()
        # a persistent write failed (disk full): refusals blame the store, not a queue limit (SQS 5xx,
        # STOMP ERROR text); cleared when the disk alarm clears
        self.store_failed = False
        self.store_broken = False  # an fsync failed: nothing can be made durable any more
        # (log, highest lsn) appended since the server last cleared it: a command's outcome
        self.written: Positions = {}
        # ready bytes per queue above which persistent bodies stay only in the store (paged out)
        self.page_out_bytes = 1 << 62
        self.metadata: MetadataStore = metadata or MemoryMetadataStore()
        self.users = users or UserStore()
        self.vhosts: dict[str, VHost] = {}
        self._dirty: dict[Queue, None] = {}
        self._timers: list[tuple[float, int, TimerTarget]] = []
        # earliest pending deadline per target: a later deadline for a target already due sooner is
        # not pushed (its ``on_timer`` re-derives every deadline it still needs), so callers may
        # schedule per message or per dispatch without the heap growing with traffic
        self._timer_due: dict[TimerTarget, float] = {}
        self._timer_seq = itertools.count()
        self.on_schedule: Callable[[float], None] | None = None
        self.stats = BrokerStats()
        # how a deferred declare learns its commit is durable; the server's Definitions runs it on the loop
        self.when_durable: Callable[[Future[int], Then], None] = run_when_durable
        self._applied: Future[int] | None = None  # done once the newest deferred declare is applied
        self.add_vhost("/")

    def commit_then(self, changes: Sequence[Change], then: Then) -> None:
        """Submit ``changes`` to the metadata store (its writer thread); ``then(failure)`` once
        durable (failure None) or refused. Bad input raises here, before anything is submitted."""
        fut = self.metadata.commit(changes)
        applied: Future[int] = Future()
        self._applied = applied

        def run(failure: BaseException | None) -> None:
            try:
                then(failure)
            finally:
                if failure is None:
                    applied.set_result(fut.result())
                else:
                    applied.set_exception(failure)

        self.when_durable(fut, run)

    def pending_definitions(self) -> Future[int] | None:
        """What an answer that reports a definitions change waits for: the newest commit not yet
        durable (its release is queued after every earlier apply), else the newest deferred declare
        durable but not applied yet (the loop runs the apply after the writer thread is done)."""
        pending = self.metadata.pending()
        if pending is not None:
            return pending
        applied = self._applied
        return applied if applied is not None and not applied.done() else None

    def add_vhost(self, name: str) -> VHost:
        vh = self.vhosts.get(name)
        if vh is None:
            vh = self.vhosts[name] = VHost(self, name)
        return vh

    # ---- scheduling ----------------------------------------------------------------------------
    def mark_dirty(self, q: Queue) -> None:
        self._dirty[q] = None

    def flush(self) -> None:
        """Dispatch every queue that may have deliverable messages."""
        while self._dirty:
            dirty = self._dirty
            self._dirty = {}
            for q in dirty:
                if not q.deleted:
                    q.dispatch()
                if q.receiver is not None and q.receiver.waiters:
                    q.receiver.wake()  # long polls waiting on this queue

    def schedule(self, deadline: float, q: TimerTarget) -> None:
        due = self._timer_due.get(q)
        if due is not None and due <= deadline:
            return
        self._timer_due[q] = deadline
        earliest = self._timers[0][0] if self._timers else None
        heapq.heappush(self._timers, (deadline, next(self._timer_seq), q))
        if self.on_schedule is not None and (earliest is None or deadline < earliest):
            self.on_schedule(deadline)

    def next_deadline(self) -> float | None:
        return self._timers[0][0] if self._timers else None

    def run_timers(self) -> None:
        now = self.clock.monotonic()
        fired: dict[TimerTarget, None] = {}
        while self._timers and self._timers[0][0] <= now:
            deadline, _, q = heapq.heappop(self._timers)
            if self._timer_due.get(q) != deadline:
                continue  # superseded by an earlier deadline that already fired
            del self._timer_due[q]
            fired[q] = None
        failed: list[tuple[TimerTarget, Exception]] = []
        for q in fired:
            try:
                q.on_timer(now)
            except Exception as exc:  # one target's bug must not starve the others' timers
                failed.append((q, exc))
        self.flush()
        if failed:
            raise failed[0][1]

    # ---- connections ---------------------------------------------------------------------------
    def open_vhost(self, user: User, name: str) -> VHost:
        vh = self.vhosts.get(name)
        refusal = vhost_refusal(user, name, vh is not None)
        if refusal is not None:
            raise NotAllowed(refusal[0])
        assert vh is not None
        return vh

    def open_session(self, vhost: VHost, user: User, connection: object, sink: DeliverySink) -> Session:
        return Session(vhost, user, connection, sink)

    def connection_closed(self, connection: object) -> None:
        """Exclusive queues die with the connection that declared them."""
        for vh in self.vhosts.values():
            for q in [q for q in vh.queues.values() if q.exclusive_owner is connection]:
                vh.delete_queue(q)
        self.flush()

    # ---- permissions ---------------------------------------------------------------------------
    @staticmethod
    def check(session: Session, access: Access, kind: str, name: str) -> None:
        resource = name or "amq.default"
        if not session.user.can(session.vhost.name, access, resource):
            raise AccessRefused(f"access to {kind} '{resource}' in vhost '{session.vhost.name}' refused for "
                                f"user '{session.user.name}'")

    # ---- exchanges -----------------------------------------------------------------------------
    def exchange_declare(self, s: Session, name: str, type_: str, *, passive: bool = False,
                         durable: bool = False, auto_delete: bool = False, internal: bool = False,
                         arguments: dict[str, Any] | None = None, defer: bool = False) -> Exchange:
        """``defer``: a new durable exchange becomes visible only once its put is durable (the
        caller holds its answer until then: the store's ``pending()``); see core/vhost.py."""
        if not passive:
            self.check(s, "configure", "exchange", name)
            ae = (arguments or {}).get("alternate-exchange")
            if isinstance(ae, str):  # RabbitMQ: unroutable messages are read here and written there
                self.check(s, "read", "exchange", name)
                self.check(s, "write", "exchange", ae)
        return s.vhost.declare_exchange(name, type_, passive=passive, durable=durable, auto_delete=auto_delete,
                                        internal=internal, arguments=arguments or {}, defer=defer)

    def exchange_delete(self, s: Session, name: str, *, if_unused: bool = False, defer: bool = False) -> None:
        self.check(s, "configure", "exchange", name)
        s.vhost.delete_exchange(name, if_unused=if_unused, defer=defer)

    def exchange_bind(self, s: Session, destination: str, source: str, routing_key: str,
                      arguments: dict[str, Any] | None = None, *, unbind: bool = False, defer: bool = False) -> None:
        self.check(s, "write", "exchange", destination)
        if destination == "" or source == "":
            raise AccessRefused("operation not permitted on the default exchange")
        self.check(s, "read", "exchange", source)
        if unbind:
            # RabbitMQ 3.10: unbinding from or to an exchange that is already gone is unbind-ok
            dest = s.vhost.exchanges.get(destination)
            if dest is not None and source in s.vhost.exchanges:
                s.vhost.unbind(source, dest, routing_key, arguments or {}, s, defer=defer)
        else:
            s.vhost.exchange(source)  # a missing source is reported before a missing destination (RabbitMQ)
            s.vhost.bind(source, s.vhost.exchange(destination), routing_key, arguments or {}, defer=defer)

    # ---- queues --------------------------------------------------------------------------------
    def queue_declare(self, s: Session, name: str, *, passive: bool = False, durable: bool = False,
                      exclusive: bool = False, auto_delete: bool = False,
                      arguments: dict[str, Any] | None = None, defer: bool = False) -> Queue:
        """``defer``: a new durable queue becomes visible only once its put is durable (the caller
        holds its answer until then: the store's ``pending()``); see core/vhost.py."""
        if name == REPLY_TO or name.startswith(REPLY_TO_PREFIX):
            if not passive:
                raise AccessRefused(f"queue name '{name}' contains reserved prefix 'amq.*'")
            q = s.vhost.reply_queues.get(name[len(REPLY_TO_PREFIX):])
            if q is None:
                raise NotFound(f"no queue '{name}' in vhost '{s.vhost.name}'")
            return q
        if passive:
            return s.vhost.declare_queue(s, name, passive=True, durable=durable, exclusive=exclusive,
                                         auto_delete=auto_delete, arguments=arguments or {})
        self.check(s, "configure", "queue", name or "amq.gen")
        dlx = (arguments or {}).get("x-dead-letter-exchange")
        if isinstance(dlx, str):  # RabbitMQ: dead-lettering reads the queue and writes to the exchange
            self.check(s, "read", "queue", name or "amq.gen")
            self.check(s, "write", "exchange", dlx)
        vh = s.vhost
        before = len(vh.queues) + len(vh.pending_queues)  # a deferred new queue is created (pending) too
        q = vh.declare_queue(s, name, passive=False, durable=durable, exclusive=exclusive,
                             auto_delete=auto_delete, arguments=arguments or {}, defer=defer)
        self.stats.queues_declared += 1
        if len(vh.queues) + len(vh.pending_queues) > before:
            self.stats.queues_created += 1
        return q

    def queue_delete(self, s: Session, name: str, *, if_unused: bool = False, if_empty: bool = False,
                     defer: bool = False) -> int:
        self.check(s, "configure", "queue", name)
        q = s.vhost.queues.get(name) or s.vhost.pending_queues.get(name)
        if q is None:
            return 0
        s.vhost.check_exclusive(q, s)
        count = s.vhost.delete_queue(q, if_unused=if_unused, if_empty=if_empty, defer=defer)
        self.flush()
        return count

    def queue_purge(self, s: Session, name: str) -> int:
        self.check(s, "read", "queue", name)
        return s.vhost.queue(name, s).purge()

    def queue_bind(self, s: Session, queue: str, exchange: str, routing_key: str,
                   arguments: dict[str, Any] | None = None, *, unbind: bool = False, defer: bool = False) -> None:
        self.check(s, "write", "queue", queue)
        if exchange == "":
            raise AccessRefused("operation not permitted on the default exchange")
        self.check(s, "read", "exchange", exchange)
        if unbind:
            # RabbitMQ 3.10: unbinding a queue or an exchange that is already gone is unbind-ok (aio-pika's
            # RPC close() unbinds its auto-deleted reply queue); 405 only for a binding that exists
            q = s.vhost.queues.get(queue)
            if q is not None and exchange in s.vhost.exchanges:
                s.vhost.unbind(exchange, q, routing_key, arguments or {}, s, defer=defer)
        else:
            s.vhost.exchange(exchange)  # a missing source is reported before a missing destination (RabbitMQ)
            s.vhost.bind(exchange, s.vhost.queue(queue, s), routing_key, arguments or {}, defer=defer)

    # ---- consuming -----------------------------------------------------------------------------
    def consume(self, s: Session, queue: str, tag: str, *, no_ack: bool = False, exclusive: bool = False,
                arguments: dict[str, Any] | None = None) -> Consumer:
        if queue == REPLY_TO:
            if not no_ack:
                raise PreconditionFailed("reply consumer cannot acknowledge")
            if s.reply_to_token is not None and s.reply_to_token in s.vhost.reply_queues:
                raise PreconditionFailed("reply consumer already set")
            q = s.vhost.reply_queue_for(s)
        else:
            self.check(s, "read", "queue", queue)
            q = s.vhost.queue(queue, s)
        if not tag:
            tag = server_name("amq.ctag-")
        if tag in s.consumers:
            raise NotAllowed(f"attempt to reuse consumer tag '{tag}'")
        q.check_consume(s.global_prefetch)
        if q.consumers and (exclusive or any(c.exclusive for c in q.consumers)):
            raise AccessRefused(f"queue '{queue}' in vhost '{s.vhost.name}' in exclusive use")
        c = Consumer(s, q, tag, no_ack=no_ack, exclusive=exclusive, prefetch=s.prefetch,
                     arguments=arguments or {})
        s.consumers[tag] = c
        q.add_consumer(c)
        return c

    def cancel(self, s: Session, tag: str) -> None:
        s.cancel(tag)

    def get(self, s: Session, queue: str, *, no_ack: bool) -> tuple[int, Entry, int] | None:
        """``basic.get``: (delivery tag, entry, ready count after) or None when empty."""
        self.check(s, "read", "queue", queue)
        q = s.vhost.queue(queue, s)
        if q.args.single_active_consumer and q.consumers:
            raise ResourceLocked(f"cannot get from queue '{queue}' in vhost '{s.vhost.name}' with an active "
                                 "single active consumer")
        e = q.get()
        stats = self.stats
        if e is None:
            stats.get_empty += 1
            return None
        if no_ack:
            stats.delivered_get_auto_ack += 1
        else:
            stats.delivered_get_manual_ack += 1
        if e.delivery_count > 1:
            stats.redelivered += 1
        return s.take_get(q, e, no_ack), e, q.message_count

    # ---- publishing ----------------------------------------------------------------------------
    def publish_target(self, s: Session, exchange: str) -> Exchange:
        """The exchange a session may publish to (404, 403 otherwise); checked once per exchange."""
        ex = s.vhost.exchanges.get(exchange)
        if ex is None:
            raise NotFound(f"no exchange '{exchange}' in vhost '{s.vhost.name}'")
        if exchange not in s.write_ok:
            self.check(s, "write", "exchange", exchange)
            if ex.internal:
                raise AccessRefused(f"cannot publish to internal exchange '{exchange}' in vhost '{s.vhost.name}'")
            s.write_ok.add(exchange)
        return ex

    def publish(self, s: Session, exchange: str, msg: Message) -> int:
        """Route and enqueue. Returns ROUTED, UNROUTABLE (for mandatory returns) or REJECTED (nack)."""
        vh = s.vhost
        ex = self.publish_target(s, exchange)
        stats = self.stats
        stats.received += 1
        s.published += 1
        size = len(msg.body)
        stats.size_counts[bisect.bisect_left(MESSAGE_SIZE_BUCKETS, size)] += 1
        stats.size_sum += size
        props = msg.props
        if props.user_id is not None and props.user_id != s.user.name:
            raise PreconditionFailed(f"user_id property set to '{props.user_id}' but authenticated user was "
                                     f"'{s.user.name}'")
        if props.reply_to is not None and props.reply_to == REPLY_TO:
            if s.reply_to_token is None or s.reply_to_token not in vh.reply_queues:
                raise PreconditionFailed("fast reply consumer does not exist")
            msg = msg.with_props(props.replace(reply_to=REPLY_TO_PREFIX + s.reply_to_token))
        if exchange == "" and msg.routing_key.startswith(REPLY_TO_PREFIX):
            rq = vh.reply_queues.get(msg.routing_key[len(REPLY_TO_PREFIX):])
            if rq is None:
                stats.unroutable += 1
                return UNROUTABLE
            rq.enqueue(msg)
            stats.routed += 1
            return ROUTED
        queues = vh.route(ex, msg)
        ex.publish_in += 1
        if not queues:
            stats.unroutable += 1
            return UNROUTABLE
        ex.publish_out += 1
        stats.routed += 1
        headers = msg.props.headers
        if headers and "BCC" in headers:  # RabbitMQ: BCC routes, but is removed before delivery
            headers = dict(headers)
            del headers["BCC"]
            msg = msg.with_props(msg.props.replace(headers=headers))
        ok = True
        for q in queues:
            if not q.enqueue(msg):
                ok = False
        return ROUTED if ok else REJECTED

    # ---- storage, for the server ----------------------------------------------------------------
    def read_message(self, q: Queue, seq: int) -> RecoveredMessage:
        """A paged-out message read back from the store (management's get-messages)."""
        return self.store.read_message(q, seq)

    def storage_stats(self, q: Queue) -> Any:
        """The queue log's storage statistics (management), None without a log."""
        return self.store.stats(q.vhost.name, q.name)

    # ---- restart -------------------------------------------------------------------------------
    def restore_definitions(self, defs: dict[str, list[dict[str, Any]]]) -> None:
        """Rebuild durable vhosts, users, permissions, access keys, exchanges, queues, bindings and
        policies (no writes back to the store)."""
        for v in defs.get("vhosts", []):
            self.add_vhost(v["name"])
        for u in defs.get("users", []):
            self.users.users[u["name"]] = User(u["name"], u["password_hash"], tuple(u.get("tags") or ()),
                                               loopback_only=u["name"] == "guest")
        for p in defs.get("permissions", []):
            user = self.users.users.get(p["user"])
            if user is not None:
                user.permissions[p["vhost"]] = Permission(p["configure"], p["write"], p["read"])
        for k in defs.get("access_keys", []):
            owner = self.users.users.get(k["user"])
            if owner is not None:
                owner.access_keys[k["key_id"]] = k["secret"]
        for e in defs.get("exchanges", []):
            vh = self.add_vhost(e["vhost"])
            if e["name"] not in vh.exchanges:
                vh.exchanges[e["name"]] = Exchange(e["name"], e["type"], durable=True, auto_delete=e["auto_delete"],
                                                   internal=e["internal"], arguments=dict(e["arguments"]))
        for qd in defs.get("queues", []):
            vh = self.add_vhost(qd["vhost"])
            if qd["name"] not in vh.queues:
                q = Queue(vh, qd["name"], durable=True, exclusive_owner=None, auto_delete=qd["auto_delete"],
                          arguments=dict(qd["arguments"]))
                vh.queues[q.name] = q
                vh.exchanges[""].table.bind(q, q.name, {})
        for bd in defs.get("bindings", []):
            vh = self.add_vhost(bd["vhost"])
            src = vh.exchanges.get(bd["source"])
            dest: Queue | Exchange | None = (vh.queues.get(bd["destination"]) if bd["destination_type"] == "queue"
                                             else vh.exchanges.get(bd["destination"]))
            if src is not None and dest is not None and src.table.bind(dest, bd["routing_key"], bd["arguments"]):
                src.bindings.append((dest, bd["routing_key"], dict(bd["arguments"])))
        for pd in defs.get("policies", []):
            pvh = self.vhosts.get(pd["vhost"])
            if pvh is not None:
                pvh.policies[pd["name"]] = Policy.parse(pd["vhost"], pd["name"], pd)
        for pvh in self.vhosts.values():
            if pvh.policies:
                pvh.apply_policies()

    def restore_messages(self, recovered: dict[tuple[str, str], list[Any]]) -> list[tuple[str, str]]:
        """Put recovered messages back in their queues; returns logs whose queue no longer exists."""
        orphans = []
        now = self.clock.monotonic()
        for (vhost, name), msgs in recovered.items():
            vh = self.vhosts.get(vhost)
            q = vh.queues.get(name) if vh is not None else None
            if q is None:
                orphans.append((vhost, name))
                continue
            entries = []
            wall_ms = self.clock.time() * 1000
            max_prio = q.args.max_priority
            in_memory = 0
            props_of: dict[int, Properties] = {}  # the store shares one dict per distinct property set
            for r in msgs:
                props = props_of.get(id(r.props))
                if props is None:
                    props = props_of[id(r.props)] = Properties(**r.props)
                size = r.size if r.size >= 0 else len(r.body or b"")
                if in_memory + size <= self.page_out_bytes:
                    body = r.body if r.body is not None else self.store.read_body(q, r.seq)
                    msg = Message(r.exchange, r.routing_key, props, body)
                    in_memory += size
                else:
                    msg = PAGED  # stays in the store until delivered
                ttl = q.args.message_ttl_ms
                exp = props.expiration
                mttl = int(exp) if exp is not None and exp.isdigit() else None
                if mttl is not None and (ttl is None or mttl < ttl):
                    ttl = mttl
                prio = min(props.priority or 0, max_prio) if max_prio else 0
                e = Entry(msg, r.seq, None if ttl is None else now + ttl / 1000, prio, size)
                if r.redelivered:
                    e.delivery_count = 1
                until = props.headers.get(DELAY_HEADER) if props.headers else None
                if isinstance(until, int) and until > wall_ms:
                    q.delay(e, now + (until - wall_ms) / 1000)  # still delayed: not ready before its time
                    continue
                entries.append(e)
            q.restore(entries, self.store.last_seq(vhost, name) + 1)
        return orphans

    # ---- flow ----------------------------------------------------------------------------------
    def resume(self, s: Session) -> None:
        """Back-pressure lifted or flow re-enabled: the session's queues may dispatch again."""
        for c in s.consumers.values():
            self.mark_dirty(c.queue)

