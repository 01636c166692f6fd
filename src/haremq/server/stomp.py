"""STOMP listener: adapts the sans-IO ``StompConnection`` and the core ``Broker`` to asyncio.

One ``asyncio.Protocol`` per socket, as the AMQP listener: ``data_received`` runs decode -> core
commands -> ``broker.flush()`` -> one ``writelines`` per connection with output.

Each SUBSCRIBE gets its own core ``Session``: its delivery tags are the subscription's ack ids
(``T_<subscription>@@<tag>``), its prefetch is the ``prefetch-count`` header, ``client`` mode
ACKs are cumulative over exactly that tag space, and UNSUBSCRIBE requeues what it still holds by
closing it. SENDs go through one more session per connection. Every session names this
connection as its owner, so exclusive (private) queues die with it.

An ERROR frame always ends the connection (the spec says the server MUST close after it); we write
the frame (after any RECEIPT still waiting for the disk: those messages were kept), then close the
socket once it is flushed. A SEND a queue refuses (reject-publish, disk full) gets an ERROR, never
a RECEIPT.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
from collections.abc import Iterable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from haremq import __version__
from haremq.core.broker import REJECTED
from haremq.core.consumer import Session
from haremq.core.queue import Entry, Queue
from haremq.core.vhost import VHost
from haremq.errors import (
    AuthenticationFailed,
    ConnectionForced,
    HareError,
    InternalError,
    NotAllowed,
    NotFound,
    PreconditionFailed,
    ResourceError,
    SyntaxError_,
)
from haremq.message import Message
from haremq.protocol.stomp import mapping as M
from haremq.protocol.stomp import session as S
from haremq.protocol.stomp.frames import V12, Frame
from haremq.security.refusal import LoginRefused, Peer, Reason
from haremq.security.users import User
from haremq.server.durability import WAIT, Answers, Durability, Gate
from haremq.server.listener import ClientListener
from haremq.store.api import Positions

if TYPE_CHECKING:
    from haremq.core.consumer import Consumer
    from haremq.server.node import Node

log = logging.getLogger("haremq.stomp")

ACK_MODES = ("auto", "client", "client-individual")
# SUBSCRIBE headers that become queue arguments when we declare the queue
QUEUE_ARGS = {"x-dead-letter-exchange": str, "x-dead-letter-routing-key": str, "x-expires": int,
              "x-max-length": int, "x-max-length-bytes": int, "x-max-priority": int, "x-message-ttl": int,
              "x-overflow": str, "x-queue-type": str, "x-single-active-consumer": bool}
_MAX_GONE = 1024
_NOTHING: Positions = {}  # the positions of a frame that wrote nothing (never mutated)


def _flag(h: dict[str, str], name: str, default: bool = False) -> bool:
    v = h.get(name)
    return default if v is None else v.lower() == "true"


def _queue_args(h: dict[str, str]) -> dict[str, Any]:
    args: dict[str, Any] = {}
    for name, typ in QUEUE_ARGS.items():
        v = h.get(name)
        if v is None:
            continue
        if typ is int:
            if not (v.strip().isdigit() and v.isascii()):
                raise SyntaxError_(f"header '{name}' must be a non-negative integer, got '{v[:40]}'")
            args[name] = int(v)
        elif typ is bool:
            args[name] = v.lower() == "true"
        else:
            args[name] = v
    return args


class Subscription:
    """One SUBSCRIBE: a core session with one consumer. Implements ``DeliverySink``."""

    __slots__ = ("ack", "conn", "count", "delete_on_unsubscribe", "destination", "id", "prefix", "queue",
                 "session", "tag")

    def __init__(self, conn: StompServerProtocol, sub_id: str, destination: str, ack: str) -> None:
        self.conn = conn
        self.id = sub_id
        self.destination = destination
        self.ack = ack
        # ack ids are ``T_<id>@@<n>@@<tag>``: ``n`` is unique on the connection, so an ACK meant for an
        # earlier subscription with the same id (UNSUBSCRIBE, SUBSCRIBE again) cannot settle this one's
        conn.sub_seq += 1
        self.prefix = f"T_{sub_id}@@{conn.sub_seq}@@"
        self.count = 1  # delivery count of the entry being delivered (set by SubscriptionSession)
        self.queue = ""
        self.tag = "T_" + sub_id
        self.delete_on_unsubscribe = False
        assert conn.vhost is not None and conn.user is not None
        self.session: Session = SubscriptionSession(conn.vhost, conn.user, conn, self)

    def deliver(self, consumer_tag: str, delivery_tag: int, redelivered: bool, queue: str, msg: Message) -> None:
        conn = self.conn
        ack_id = self.prefix + str(delivery_tag)
        headers = [("subscription", self.id), ("destination", M.destination_of(msg)), ("message-id", ack_id),
                   ("redelivered", "true" if redelivered else "false"),
                   ("x-delivery-count", str(self.count - 1))]
        if self.ack != "auto" and conn.proto.version == V12:
            headers.append(("ack", ack_id))
        headers.extend(M.property_headers(msg.props))
        conn.proto.send_message(headers, msg.body)
        conn.node.want_flush(conn)

    def consumer_cancelled(self, consumer_tag: str) -> None:
        """The queue was deleted under us: tell the client and end the connection (spec: ERROR closes)."""
        self.conn.fail(NotFound(f"subscription '{self.id}' cancelled: queue '{self.queue}' was deleted"))
        self.conn.node.want_flush(self.conn)


class SubscriptionSession(Session):
    """A core session that tells its subscription each entry's delivery count (``x-delivery-count``)."""

    def __init__(self, vhost: VHost, user: User, connection: object, sub: Subscription) -> None:
        super().__init__(vhost, user, connection, sub)
        self.subscription = sub

    def deliver(self, c: Consumer, queue: Queue, e: Entry) -> None:
        self.subscription.count = e.delivery_count
        super().deliver(c, queue, e)


class _NoDeliveries:
    """Sink of the publishing session: it never consumes."""

    def deliver(self, consumer_tag: str, delivery_tag: int, redelivered: bool, queue: str, msg: Message) -> None:
        raise AssertionError("publishing session has no consumers")

    def consumer_cancelled(self, consumer_tag: str) -> None:
        return None


DEFINITIONS = "definitions"  # read-pause reason: a frame waits for a queue it declared to be durable


class DeclarePending(Exception):
    """A frame declared a durable queue that exists only once its definition is durable: the frame
    (and those after it) runs again then, when the queue is there."""


class StompServerProtocol(ClientListener, asyncio.Protocol):
    protocol = "stomp"
    log = log
    AUDIT_UNOPENED = True  # a refused CONNECT is audited as opened-never, closed "login refused"

    def __init__(self, node: Node) -> None:
        super().__init__(node)
        s = node.settings
        self.proto = S.StompConnection(max_header_size=s.stomp_max_header_size, max_body=s.max_message_size)
        self.pub: Session | None = None
        self.subs: dict[str, Subscription] = {}
        self._gone: set[str] = set()  # ack-id prefixes of recent UNSUBSCRIBEs: late ACKs for them are ignored
        self.sub_seq = 0
        self.temp_queues: dict[str, str] = {}  # /temp-queue/<name> -> queue name
        # RECEIPTs in frame order, each behind the log positions its frame wrote (server/durability.py):
        # the receipt of a persistent SEND (or a COMMIT holding one) is the STOMP publisher confirm
        self._receipts = Answers()
        self._error: tuple[HareError, str | None, tuple[tuple[str, str], ...]] | None = None  # sent after them
        self._backlog: list[S.Event] | None = None  # frames waiting for a declared queue (DeclarePending)
        self._committing = False  # a COMMIT's frames run once: their queues are declared at once

    @property
    def conn(self) -> StompServerProtocol:
        """The connection to flush once held receipts are released (as ``Channel.conn``)."""
        return self

    # ---- asyncio.Protocol (accept, close, flow control: ClientListener) -----------------------------
    def data_received(self, data: bytes) -> None:
        self.bytes_in += len(data)
        node = self.node
        self.last_recv = node.loop_time()
        if self.closing:
            return
        try:
            events = self.proto.receive_data(data)
        except Exception:  # a bug of ours must not take the broker down
            log.exception("internal error on STOMP connection from %s", self.peer)
            events = []
            self.fail(InternalError("internal error"))
        if self._backlog is not None:  # read before the pause took effect: after the waiting frames
            self._backlog += events
            return
        self._run(events)

    def _run(self, events: list[S.Event]) -> None:
        node = self.node
        try:
            for i, event in enumerate(events):
                try:
                    self._handle(event)
                except DeclarePending:
                    self._wait_for_declare(events[i:])
                    break
                if self.closing:
                    break
            node.broker.flush()
        except Exception:  # a bug of ours must not take the broker down
            log.exception("internal error on STOMP connection from %s", self.peer)
            self.fail(InternalError("internal error"))
        node.want_flush(self)
        node.flush_output()
        # disk/memory alarm, as RabbitMQ's STOMP plugin: a connection that sends is not read (so its
        # SENDs get no RECEIPT) until the alarm clears
        if node.publishers_blocked and self.published:
            self.apply_alarms(node.memory_alarm, node.disk_alarm)

    def connection_ended(self) -> None:
        self._end_sessions()
        self._receipts.clear()
        self._error = None
        self.node.durability.forget(self)

    def sessions(self) -> Iterable[Session]:
        return [sub.session for sub in self.subs.values()]

    def queue_heartbeat(self) -> None:
        self.proto.send_heartbeat()

    # ---- output ---------------------------------------------------------------------------------
    def write_pending(self) -> None:
        t = self.transport
        if t is None or t.is_closing():
            self.proto.data_to_send()
            return
        out = self.proto.data_to_send()
        if out:
            t.writelines(out)
            self.last_send = self.node.loop_time()
            self.bytes_out += sum(map(len, out))
        if self.closing and not self._receipts:
            t.close()  # after the ERROR / last RECEIPT is written

    def fail(self, err: HareError, receipt: str | None = None, headers: tuple[tuple[str, str], ...] = ()) -> None:
        """Send an ERROR frame and close the connection once it is written.

        RECEIPTs still waiting for the disk are for messages that were kept: they go out first and
        the ERROR after them (``flush_confirms``), so the client does not resend what was stored."""
        if self.closing:
            return
        log.info("STOMP connection from %s: %s (%s)", self.peer, err.stomp_message, err.text)
        if self.close_reason is None:
            self.close_reason = f"ERROR sent: {err.stomp_message}"
        self.closing = True
        self._end_sessions()
        if self._receipts:
            self._error = (err, receipt, headers)
        else:
            self.proto.send_error(err, receipt, headers)

    def _end_sessions(self) -> None:
        for sub in self.subs.values():
            sub.session.close()
        self.subs.clear()
        if self.pub is not None:
            self.pub.close()

    def force_close(self, reason: str) -> bool:
        """Broker stopping: an ERROR frame (after the receipts already durable), then close."""
        self.close_reason = f"broker {reason}"
        if self.vhost is None or self.closing:
            return False
        self.fail(ConnectionForced(f"broker forced connection closure with reason '{reason}'"))
        if self.flush_confirms():
            # no time to wait for the disk: the receipts still waiting are not sent, the ERROR is
            self._receipts.clear()
            self.flush_confirms()
        return True

    # ---- heart-beats ----------------------------------------------------------------------------
    def _start_heartbeats(self) -> None:
        """As negotiated in CONNECT/CONNECTED; the client may be late by a full period (network, GC)
        before we give up on it."""
        send_s, recv_s = self.proto.send_ms / 1000, self.proto.recv_ms / 1000
        self.start_heartbeats(send_s / 2, 2 * recv_s, "missed heart-beats")

    # ---- events ---------------------------------------------------------------------------------
    def _handle(self, event: S.Event) -> None:
        t = type(event)
        if t is S.Received:
            assert isinstance(event, S.Received)
            self._guard(event.frame, self._apply, event)
        elif t is S.Held:
            assert isinstance(event, S.Held)
            if event.frame.command != "SEND":  # a held SEND is receipted at COMMIT, once its message is kept
                self._receipt(event.frame, _NOTHING)
        elif t is S.Commit:
            assert isinstance(event, S.Commit)
            self._guard(event.frame, self._commit, event)
        elif t is S.Connect:
            assert isinstance(event, S.Connect)
            self._guard(event.frame, self._connect, event)
        elif t is S.Disconnect:
            assert isinstance(event, S.Disconnect)
            self._receipt(event.frame, _NOTHING)
            self.close_reason = "client sent DISCONNECT"
            self.closing = True
            self._end_sessions()
        elif t is S.Failed:
            assert isinstance(event, S.Failed)
            self.fail(event.error, event.receipt, event.headers)

    def _guard(self, frame: Frame, fn: Any, arg: Any) -> None:
        broker = self.node.broker
        metadata = broker.metadata
        written = broker.written
        written.clear()
        revision = metadata.revision
        try:
            fn(arg)
        except HareError as err:
            self.fail(err, frame.headers.get("receipt"))
            return
        pending = broker.pending_definitions() if metadata.revision != revision else None
        if pending is not None and "receipt" in frame.headers:
            self._hold_receipt(frame, written, pending)
        else:
            self._receipt(frame, written)

    def _wait_for_declare(self, backlog: list[S.Event]) -> None:
        """Stop reading; run ``backlog`` (from the frame that declared) once the queue is applied, or
        end the connection with an ERROR if its definition could not be kept."""
        pending = self.node.broker.pending_definitions()
        assert pending is not None
        self._backlog = backlog
        self.pause_reading(DEFINITIONS)

        def release(done: asyncio.Future[int]) -> None:
            events, self._backlog = self._backlog or [], None
            if done.cancelled() or done.exception() is not None:
                self.fail(ResourceError("queue definition not durable"))
                self.node.want_flush(self)
                self.node.flush_output()
                return
            if self.closing:
                return  # lost meanwhile: its frames run no more (no subscription outlives it)
            self.resume_reading(DEFINITIONS)
            self._run(events)

        asyncio.wrap_future(pending).add_done_callback(release)

    def _hold_receipt(self, frame: Frame, written: Positions, pending: Future[int]) -> None:
        """The frame declared a durable queue: its RECEIPT (and later ones) also waits for the
        definition to be on disk (the metadata store's writer thread)."""
        gate = Gate()
        self._receipts.add_gate(None, gate)
        self._receipts.add(frame, written)
        self.node.durability.hold(self)

        def release(done: asyncio.Future[int]) -> None:
            if done.cancelled() or done.exception() is not None:
                self.fail(ResourceError("queue definition not durable"))
            else:
                gate.open()
                if self.flush_confirms():
                    self.node.durability.hold(self)
            self.node.want_flush(self)
            self.node.flush_output()

        asyncio.wrap_future(pending).add_done_callback(release)

    def _receipt(self, frame: Frame, written: Positions) -> None:
        """RECEIPT now, or once the positions the frame wrote are committed; never ahead of an
        earlier held one."""
        if "receipt" not in frame.headers:
            return
        if not self._receipts and Durability.is_committed(written):
            self.proto.send_receipt(frame)
            return
        self._receipts.add(frame, written)
        self.node.durability.hold(self)

    def fail_confirms(self, err: HareError) -> None:
        """Receipts that wait for the disk will never come: end the connection with an ERROR that
        names the first of them (the client must not take it, or any later one, as kept)."""
        tokens = self._receipts.tokens()
        self._receipts.clear()
        if not tokens:
            return
        first = tokens[0].headers.get("receipt")
        self._error = None  # an ERROR held behind those receipts: this one replaces it
        error = ResourceError(f"message not durable: {err.text}")
        if self.closing:  # already ending (DISCONNECT, or that held ERROR): only the ERROR is left to say
            self.proto.send_error(error, first)
        else:
            self.fail(error, first)

    def flush_confirms(self) -> bool:
        """Send the held receipts that are committed, then a held ERROR once none is left; True
        when some still wait for the disk."""
        receipts = self._receipts
        while (frame := receipts.pop_ready()) is not WAIT:
            self.proto.send_receipt(frame)
        if not receipts and self._error is not None:
            err, receipt, headers = self._error
            self._error = None
            self.proto.send_error(err, receipt, headers)
        return bool(receipts)

    def _commit(self, e: S.Commit) -> None:
        """Apply the held frames in order; each SEND gets its receipt here (as RabbitMQ). A refused
        SEND raises: the COMMIT gets the ERROR, the frames after it are dropped, and the SENDs before
        it are kept (STOMP transactions are not atomic across queues, in RabbitMQ either)."""
        written = self.node.broker.written
        total: Positions = {}  # what the whole transaction wrote: the COMMIT's own receipt waits for it
        for r in e.frames:
            written.clear()
            self._committing = True
            try:
                self._apply(r)
            finally:
                self._committing = False
                total.update(written)  # (lsns only grow: the newest per log wins)
            if r.action is S.Action.SEND:
                self._receipt(r.frame, written)
        written.clear()
        written.update(total)

    def _apply(self, e: S.Received) -> None:
        a = e.action
        if a is S.Action.SEND:
            self._send(e.frame)
        elif a is S.Action.ACK or a is S.Action.NACK:
            self._settle(e.frame, a is S.Action.NACK)
        elif a is S.Action.SUBSCRIBE:
            self._subscribe(e.frame)
        elif a is S.Action.UNSUBSCRIBE:
            self._unsubscribe(e.frame)

    # ---- CONNECT ------------------------------------------------------------------------------------
    def _connect(self, e: S.Connect) -> None:
        """Authenticate: ``login``/``passcode``, or without ``login`` the ``stomp_default_user`` when one
        is configured (RabbitMQ's ``stomp.default_user``), else refused. Loopback rules apply either way."""
        broker = self.node.broker
        peer = Peer("stomp", self.peer_name, self.loopback)
        try:
            user = (self.node.auth.password(e.login, e.passcode or "", peer) if e.login is not None
                    else self.node.auth.default_user(peer))
            # ``host`` names a vhost when it is one; clients put the server's host name there (1.2 makes
            # it mandatory), which means "the default vhost"
            vhost_name = e.host if e.host is not None and e.host in broker.vhosts else "/"
            self.vhost = self.node.auth.vhost(user, vhost_name, broker.vhosts, peer)
        except LoginRefused as refused:
            self.close_reason = "login refused"
            if refused.reason is Reason.NO_CREDENTIALS:
                raise AuthenticationFailed("CONNECT without login is refused: send login and passcode") from None
            if refused.reason is Reason.NOT_ALLOWED:
                raise NotAllowed(refused.detail) from None
            raise AuthenticationFailed(f"login was refused for user '{refused.user}'") from None
        self.user = user
        self.handshake_done(vhost_name)
        self.pub = broker.open_session(self.vhost, user, self, _NoDeliveries())
        session_id = "session-" + base64.urlsafe_b64encode(os.urandom(12)).decode()
        self.proto.send_connected(session_id, f"haremq/{__version__}")
        self._start_heartbeats()


    # ---- SEND ---------------------------------------------------------------------------------------
    def _send(self, frame: Frame) -> None:
        h = frame.headers
        dest = M.parse_destination(h["destination"])
        props = M.properties_from_headers(h)
        reply_to = props.reply_to
        if reply_to is not None and reply_to.startswith("/temp-queue/"):
            temp = M.parse_destination(reply_to)
            props = props.replace(reply_to="/reply-queue/" + self._temp_queue(temp.name))
        exchange, key = self._target(dest, h)
        msg = Message(exchange, key, props, frame.body)
        pub = self.pub
        assert pub is not None
        broker = self.node.broker
        self.published = True
        # unroutable messages are dropped (and receipted), as RabbitMQ: STOMP has no mandatory flag
        if broker.publish(pub, exchange, msg) == REJECTED:
            # a queue refused it (the AMQP nack): a RECEIPT would claim a message that is not kept
            if props.delivery_mode == 2 and broker.store_broken:
                why = "the store can no longer make persistent messages durable"
            elif props.delivery_mode == 2 and broker.store_failed:
                why = "a queue refused it (x-overflow reject-publish) or the store could not write it (disk full?)"
            else:
                why = "a queue refused it (x-max-length / x-max-length-bytes with x-overflow reject-publish)"
            raise ResourceError(f"message to '{h['destination'][:200]}' was not stored: {why}")

    def _target(self, dest: M.Destination, h: dict[str, str]) -> tuple[str, str]:
        """(exchange, routing key) for a SEND, declaring the queue a /queue/ destination implies."""
        kind = dest.kind
        if kind == M.QUEUE:
            self._ensure_queue(dest.name, h)
            return "", dest.name
        if kind == M.TOPIC or kind == M.EXCHANGE:
            return dest.name, dest.key
        if kind == M.AMQ_QUEUE or kind == M.REPLY_QUEUE:
            assert self.vhost is not None
            if dest.name not in self.vhost.queues:
                raise NotFound(f"no queue '{dest.name}' in vhost '{self.vhost.name}'")
            return "", dest.name
        return "", self._temp_queue(dest.name)

    def _ensure_queue(self, name: str, h: dict[str, str]) -> None:
        assert self.vhost is not None and self.pub is not None
        if name not in self.vhost.queues:
            self.node.broker.queue_declare(self.pub, name, durable=_flag(h, "durable", True),
                                           auto_delete=_flag(h, "auto-delete"), exclusive=_flag(h, "exclusive"),
                                           arguments=_queue_args(h), defer=self._defers(h))
            self._unless_pending(name)

    def _defers(self, h: dict[str, str]) -> bool:
        """Whether this frame's new durable queue waits for its definition before it exists: yes for
        a frame that asks for a RECEIPT; a frame without one keeps the order in which clients see its
        effects (a durable subscription, then another connection's SEND: the interop suites) and is
        applied at once, as are a COMMIT's frames (they must not run twice)."""
        return "receipt" in h and not self._committing

    def _unless_pending(self, name: str) -> None:
        """DeclarePending while the durable queue ``name`` this frame declared is not applied yet."""
        assert self.vhost is not None
        if name not in self.vhost.queues and name in self.vhost.pending_queues:
            raise DeclarePending(name)

    def _temp_queue(self, name: str) -> str:
        """The private queue behind ``/temp-queue/<name>``, created (and subscribed) on first use."""
        qname = self.temp_queues.get(name)
        if qname is not None:
            return qname
        assert self.pub is not None
        q = self.node.broker.queue_declare(self.pub, "", exclusive=True, auto_delete=True)
        sub_id = "/temp-queue/" + name
        sub = Subscription(self, sub_id, sub_id, "auto")
        sub.queue = q.name
        self.node.broker.consume(sub.session, q.name, sub.tag, no_ack=True)
        self.subs[sub_id] = sub
        self.temp_queues[name] = q.name
        return q.name

    # ---- SUBSCRIBE / UNSUBSCRIBE ----------------------------------------------------------------------
    def _subscribe(self, frame: Frame) -> None:
        h = frame.headers
        broker = self.node.broker
        destination = h["destination"]
        sub_id = h.get("id", destination)
        if sub_id in self.subs:
            raise PreconditionFailed(f"subscription id '{sub_id}' is already in use on this connection")
        ack = h.get("ack", "auto")
        if ack not in ACK_MODES:
            raise SyntaxError_(f"ack mode '{ack[:40]}' is not one of {', '.join(ACK_MODES)}")
        prefetch = h.get("prefetch-count", "0").strip()
        if not (prefetch.isdigit() and prefetch.isascii()):
            raise SyntaxError_(f"prefetch-count must be a non-negative integer, got '{prefetch[:40]}'")
        dest = M.parse_destination(destination)
        sub = Subscription(self, sub_id, destination, ack)
        sub.session.prefetch = int(prefetch)
        try:
            sub.queue = self._subscription_queue(sub, dest, h)
            broker.consume(sub.session, sub.queue, sub.tag, no_ack=ack == "auto")
        except (HareError, DeclarePending):
            sub.session.close()
            raise
        self.subs[sub_id] = sub

    def _subscription_queue(self, sub: Subscription, dest: M.Destination, h: dict[str, str]) -> str:
        broker = self.node.broker
        s = sub.session
        kind = dest.kind
        if kind == M.QUEUE:
            self._ensure_queue(dest.name, h)
            return dest.name
        if kind == M.AMQ_QUEUE:
            return dest.name
        if kind == M.TOPIC or kind == M.EXCHANGE:
            assert self.vhost is not None
            self.vhost.exchange(dest.name)  # NotFound before we declare anything
            durable = _flag(h, "durable") or _flag(h, "persistent")
            if durable:
                if "id" not in h:
                    raise SyntaxError_("a durable subscription needs an 'id' header")
                name = h.get("x-queue-name") or "stomp-subscription-" + base64.urlsafe_b64encode(
                    hashlib.md5(h["id"].encode()).digest()).rstrip(b"=").decode()
                q = broker.queue_declare(s, name, durable=True, auto_delete=_flag(h, "auto-delete"),
                                         arguments=_queue_args(h), defer=self._defers(h))
                self._unless_pending(q.name)
                sub.delete_on_unsubscribe = True
            else:
                name = h.get("x-queue-name") or "stomp-subscription-" + base64.urlsafe_b64encode(
                    os.urandom(16)).rstrip(b"=").decode()
                q = broker.queue_declare(s, name, exclusive=True, auto_delete=True, arguments=_queue_args(h))
            broker.queue_bind(s, q.name, dest.name, dest.key, defer=self._defers(h))
            return q.name
        raise SyntaxError_(f"cannot SUBSCRIBE to '{h['destination'][:200]}': "
                           f"{kind} destinations are only for SEND and reply-to")

    def _unsubscribe(self, frame: Frame) -> None:
        h = frame.headers
        sub_id = h.get("id") or h.get("destination", "")
        sub = self.subs.pop(sub_id, None)
        if sub is None:
            raise NotFound(f"no subscription '{sub_id}' on this connection")
        sub.session.close()
        if len(self._gone) >= _MAX_GONE:
            self._gone.clear()
        self._gone.add(sub.prefix)
        # a durable topic subscription ends for good when UNSUBSCRIBE says durable (RabbitMQ)
        if sub.delete_on_unsubscribe and (_flag(h, "durable") or _flag(h, "persistent")):
            self.node.broker.queue_delete(sub.session, sub.queue)

    # ---- ACK / NACK -----------------------------------------------------------------------------------
    def _settle(self, frame: Frame, nack: bool) -> None:
        h = frame.headers
        ack_id = h.get("id") if self.proto.version == V12 else h.get("message-id")
        assert ack_id is not None  # required headers are checked by the session
        head, sep, tag_s = ack_id.rpartition("@@")
        sub_id, sep2, _ = head.rpartition("@@")
        if not sep or not sep2 or not sub_id.startswith("T_") or not tag_s.isdigit():
            raise PreconditionFailed(f"'{ack_id[:200]}' is not a message id of this broker")
        sub_id = sub_id[2:]
        sub = self.subs.get(sub_id)
        if sub is None or sub.prefix != head + "@@":
            if head + "@@" in self._gone:
                return  # unsubscribed: its deliveries were already requeued
            raise PreconditionFailed(f"no subscription '{sub_id}' on this connection")
        if sub.ack == "auto":
            return  # nothing to settle: auto mode acknowledged on delivery
        tag = int(tag_s)
        multiple = sub.ack == "client"
        if nack:
            sub.session.nack(tag, multiple, requeue=_flag(h, "requeue", True))
        else:
            sub.session.ack(tag, multiple)
