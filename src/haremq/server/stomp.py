"""STOMP listener: adapts the sans-IO ``StompConnection`` and ``StompHandler`` to asyncio and the core.

One ``asyncio.Protocol`` per socket, as the AMQP listener: ``data_received`` runs decode -> frame
handling -> ``broker.flush()`` -> one ``writelines`` per connection with output.

What SEND, SUBSCRIBE, UNSUBSCRIBE, ACK and NACK do lives in ``protocol/stomp/handler.py`` (sans-IO,
over a ``StompBrokerPort``); this module authenticates CONNECT, implements the port over the core
``Broker`` (``StompBrokerAdapter``), applies COMMITs in order, files RECEIPTs with the durability
tracker (and with the metadata store for declares), runs heart-beats and alarms, and ends the
connection with an ERROR. Every session names this connection as its owner, so exclusive (private)
queues die with it.

An ERROR frame always ends the connection (the spec says the server MUST close after it); we write
the frame (after any RECEIPT still waiting for the disk: those messages were kept), then close the
socket once it is flushed. A SEND a queue refuses (reject-publish, disk full) gets an ERROR, never
a RECEIPT.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, cast

from haremq import __version__
from haremq.core.broker import REJECTED
from haremq.core.consumer import NoDeliveries, Session
from haremq.core.queue import Entry, Queue
from haremq.core.vhost import VHost
from haremq.errors import AuthenticationFailed, ConnectionForced, HareError, InternalError, NotAllowed, ResourceError
from haremq.message import Message
from haremq.protocol.stomp import handler as stomp_handler
from haremq.protocol.stomp import session as S
from haremq.protocol.stomp.frames import Frame
from haremq.protocol.stomp.handler import StompHandler, StompSession, Subscription
from haremq.security.refusal import LoginRefused, Peer, Reason
from haremq.security.users import User
from haremq.server.durability import WAIT, Answers, Durability, Gate
from haremq.server.listener import ClientListener
from haremq.store.api import Positions

if TYPE_CHECKING:
    from haremq.core.consumer import Consumer
    from haremq.server.node import Node

log = logging.getLogger("haremq.stomp")
# the handler names the broker's publish refusal without importing core
assert stomp_handler.REJECTED == REJECTED

_NOTHING: Positions = {}  # the positions of a frame that wrote nothing (never mutated)


class SubscriptionSession(Session):
    """A core session that tells its subscription each entry's delivery count (``x-delivery-count``)."""

    def __init__(self, vhost: VHost, user: User, connection: object, sub: Subscription) -> None:
        super().__init__(vhost, user, connection, sub)
        self.subscription = sub

    def deliver(self, c: Consumer, queue: Queue, e: Entry) -> None:
        self.subscription.count = e.delivery_count
        super().deliver(c, queue, e)


class StompBrokerAdapter:
    """The ``StompBrokerPort`` of one connection over the core ``Broker``, bound to its vhost: publish
    is the broker's own bound method; the rest forward with core types."""

    def __init__(self, conn: StompServerProtocol, vhost: VHost, user: User) -> None:
        broker = conn.node.broker
        self._broker = broker
        self._conn = conn
        self._vhost = vhost
        self._user = user
        self.publish: Callable[[StompSession, str, Message], int] = broker.publish  # type: ignore[assignment]

    @property
    def vhost_name(self) -> str:
        return self._vhost.name

    @property
    def store_broken(self) -> bool:
        return self._broker.store_broken

    @property
    def store_failed(self) -> bool:
        return self._broker.store_failed

    def open_subscription(self, sub: Subscription) -> Session:
        return SubscriptionSession(self._vhost, self._user, self._conn, sub)

    def has_queue(self, name: str) -> bool:
        return name in self._vhost.queues

    def check_exchange(self, name: str) -> None:
        self._vhost.exchange(name)

    def queue_declare(self, s: Any, name: str, *, durable: bool = False, exclusive: bool = False,
                      auto_delete: bool = False, arguments: dict[str, Any] | None = None) -> Queue:
        return self._broker.queue_declare(s, name, durable=durable, exclusive=exclusive, auto_delete=auto_delete,
                                          arguments=arguments)

    def queue_bind(self, s: Any, queue: str, exchange: str, routing_key: str) -> None:
        self._broker.queue_bind(s, queue, exchange, routing_key)

    def queue_delete(self, s: Any, name: str) -> int:
        return self._broker.queue_delete(s, name)

    def consume(self, s: Any, queue: str, tag: str, *, no_ack: bool) -> object:
        return self._broker.consume(s, queue, tag, no_ack=no_ack)


class StompServerProtocol(ClientListener, asyncio.Protocol):
    protocol = "stomp"
    log = log
    AUDIT_UNOPENED = True  # a refused CONNECT is audited as opened-never, closed "login refused"

    def __init__(self, node: Node) -> None:
        super().__init__(node)
        s = node.settings
        self.proto = S.StompConnection(max_header_size=s.stomp_max_header_size, max_body=s.max_message_size)
        # what SEND/SUBSCRIBE/ACK... do (protocol/stomp/handler.py); created by CONNECT
        self.handler: StompHandler | None = None
        # RECEIPTs in frame order, each behind the log positions its frame wrote (server/durability.py):
        # the receipt of a persistent SEND (or a COMMIT holding one) is the STOMP publisher confirm
        self._receipts = Answers()
        self._error: tuple[HareError, str | None, tuple[tuple[str, str], ...]] | None = None  # sent after them

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
            for event in self.proto.receive_data(data):
                self._handle(event)
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
        if self.handler is None:
            return []
        return [cast(Session, sub.session) for sub in self.handler.subs.values()]

    def want_output(self) -> None:
        self.node.want_flush(self)

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
        if self.handler is not None:
            self.handler.close()

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
        pending = metadata.pending() if metadata.revision != revision else None
        if pending is not None and "receipt" in frame.headers:
            self._hold_receipt(frame, written, pending)
        else:
            self._receipt(frame, written)

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
            try:
                self._apply(r)
            finally:
                total.update(written)  # (lsns only grow: the newest per log wins)
            if r.action is S.Action.SEND:
                self._receipt(r.frame, written)
        written.clear()
        written.update(total)

    def _apply(self, e: S.Received) -> None:
        assert self.handler is not None  # the session accepts no other frame before CONNECT
        self.handler.apply(e)

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
        pub = broker.open_session(self.vhost, user, self, NoDeliveries())
        self.handler = StompHandler(self.proto, StompBrokerAdapter(self, self.vhost, user), self, pub)
        session_id = "session-" + base64.urlsafe_b64encode(os.urandom(12)).decode()
        self.proto.send_connected(session_id, f"haremq/{__version__}")
        self._start_heartbeats()
