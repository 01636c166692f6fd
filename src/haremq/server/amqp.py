"""AMQP listener: adapts the sans-IO ``AmqpConnection`` and channel handlers to asyncio and the core.

What each channel method does lives in ``protocol/amqp/channel.py`` (sans-IO, over a ``BrokerPort``);
this module feeds bytes in, writes bytes out, runs timers (the listener base), files answers with the
durability tracker, holds output for definitions, applies alarms, authenticates and opens the vhost,
and implements the port over the core ``Broker`` (``BrokerChannelPort``).

One ``asyncio.BufferedProtocol`` per socket (no per-connection task, no await per message): the kernel
copies each read straight into the protocol object's buffer. Each ``buffer_updated`` runs: decode ->
core commands -> ``broker.flush()`` (dispatch) -> coalesced publisher confirms -> one ``writelines`` per
connection that has output. Deliveries produced for other connections are buffered on them and written
in the same pass (``Node.flush_output``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, cast

from pamqp import commands as C

from haremq import __version__
from haremq.core.broker import REJECTED, UNROUTABLE
from haremq.core.consumer import Consumer, Session
from haremq.core.queue import Entry, Queue
from haremq.errors import AuthenticationFailed, ConnectionForced, HareError, InternalError, NotAllowed
from haremq.message import Message
from haremq.protocol.amqp import channel as amqp_channel
from haremq.protocol.amqp import codec
from haremq.protocol.amqp import connection as ev
from haremq.protocol.amqp.channel import AmqpChannels, ChannelSession, ChannelSink
from haremq.security.refusal import LoginRefused, Peer, Reason
from haremq.server.listener import ClientListener
from haremq.store.api import Positions

if TYPE_CHECKING:
    from haremq.server.node import Node

log = logging.getLogger("haremq.amqp")
# the channel handlers name the broker's publish results without importing core
assert (amqp_channel.UNROUTABLE, amqp_channel.REJECTED) == (UNROUTABLE, REJECTED)
DEFINITIONS = "definitions"  # read-pause reason: a declare's -ok waits for the metadata store
DEFINITION_METHODS = frozenset({C.Exchange.Declare, C.Exchange.Bind, C.Exchange.Unbind, C.Queue.Declare,
                                C.Queue.Bind, C.Queue.Unbind})
"""Methods whose -ok reports definitions: held while any definitions write is pending, not only this
connection's (the object exists in memory before its write is on disk)."""

CAPABILITIES = {
    "publisher_confirms": True, "exchange_exchange_bindings": True, "basic.nack": True,
    "consumer_cancel_notify": True, "connection.blocked": True, "consumer_priorities": True,
    "authentication_failure_close": True, "per_consumer_qos": True, "direct_reply_to": True,
}


def server_properties(cluster_name: str) -> dict[str, Any]:
    return {
        "product": "haremq", "version": __version__, "platform": "Python",
        "copyright": "haremq authors", "information": "Licensed under the Apache License 2.0",
        "cluster_name": cluster_name, "capabilities": CAPABILITIES,
    }


class BrokerChannelPort:
    """The ``BrokerPort`` of one connection's channels over the core ``Broker``: the hot calls are the
    broker's own bound methods (no extra call per message), the rest forward with core types."""

    def __init__(self, conn: AmqpServerProtocol) -> None:
        broker = conn.node.broker
        self._conn = conn
        self._broker = broker
        self.written: Positions = broker.written
        self.stats = broker.stats
        self.publish: Callable[[ChannelSession, str, Message], int] = broker.publish  # type: ignore[assignment]

    def open_session(self, sink: ChannelSink) -> Session:
        conn = self._conn
        assert conn.vhost is not None and conn.user is not None
        return self._broker.open_session(conn.vhost, conn.user, conn, sink)

    def publish_target(self, s: Any, exchange: str) -> object:
        return self._broker.publish_target(s, exchange)

    def resume(self, s: Any) -> None:
        self._broker.resume(s)

    def exchange_declare(self, s: Any, name: str, type_: str, *, passive: bool, durable: bool,
                         auto_delete: bool, internal: bool, arguments: dict[str, Any]) -> object:
        return self._broker.exchange_declare(s, name, type_, passive=passive, durable=durable,
                                             auto_delete=auto_delete, internal=internal, arguments=arguments)

    def exchange_delete(self, s: Any, name: str, *, if_unused: bool) -> None:
        self._broker.exchange_delete(s, name, if_unused=if_unused)

    def exchange_bind(self, s: Any, destination: str, source: str, routing_key: str, arguments: dict[str, Any],
                      *, unbind: bool) -> None:
        self._broker.exchange_bind(s, destination, source, routing_key, arguments, unbind=unbind)

    def queue_declare(self, s: Any, name: str, *, passive: bool, durable: bool, exclusive: bool,
                      auto_delete: bool, arguments: dict[str, Any]) -> Queue:
        return self._broker.queue_declare(s, name, passive=passive, durable=durable, exclusive=exclusive,
                                          auto_delete=auto_delete, arguments=arguments)

    def queue_bind(self, s: Any, queue: str, exchange: str, routing_key: str, arguments: dict[str, Any],
                   *, unbind: bool) -> None:
        self._broker.queue_bind(s, queue, exchange, routing_key, arguments, unbind=unbind)

    def queue_purge(self, s: Any, name: str) -> int:
        return self._broker.queue_purge(s, name)

    def queue_delete(self, s: Any, name: str, *, if_unused: bool, if_empty: bool) -> int:
        return self._broker.queue_delete(s, name, if_unused=if_unused, if_empty=if_empty)

    def consume(self, s: Any, queue: str, tag: str, *, no_ack: bool, exclusive: bool,
                arguments: dict[str, Any]) -> Consumer:
        return self._broker.consume(s, queue, tag, no_ack=no_ack, exclusive=exclusive, arguments=arguments)

    def cancel(self, s: Any, tag: str) -> None:
        self._broker.cancel(s, tag)

    def get(self, s: Any, queue: str, *, no_ack: bool) -> tuple[int, Entry, int] | None:
        return self._broker.get(s, queue, no_ack=no_ack)


class AmqpServerProtocol(ClientListener, asyncio.BufferedProtocol):
    protocol = "amqp"
    log = log
    EOF_REASON = "client unexpectedly closed TCP connection"

    def __init__(self, node: Node) -> None:
        super().__init__(node)
        s = node.settings
        self.proto = ev.AmqpConnection(
            server_properties(node.cluster_name), channel_max=s.channel_max, frame_max=s.frame_max,
            heartbeat=s.heartbeat, max_message_size=s.max_message_size, mechanisms=node.auth.sasl_mechanisms,
            properties_cache=node.amqp_properties)
        # the sans-IO channel handlers (protocol/amqp/channel.py); ``channels`` is theirs, shared
        self.chans = AmqpChannels(self.proto, BrokerChannelPort(self), self,
                                  want_output=functools.partial(node.want_flush, self), fail_connection=self._fail)
        self.channels = self.chans.channels
        self.client_properties: dict[str, Any] = {}
        self.blocked_sent = False
        self.auth_mechanism: str | None = None  # for the management API
        self._held: asyncio.Future[int] | None = None  # output held until these definitions are durable
        self._definitions_seen = False  # this read had a declare/bind while a definitions write was pending
        # event type -> handler (``buffer_updated`` looks it up once per event); channel events go
        # straight to the channel handlers
        chans = self.chans
        self._events: dict[type[ev.Event], Callable[[Any], None]] = {
            ev.Publish: chans.on_publish, ev.Settle: chans.on_settle, ev.MethodReceived: self._on_method,
            ev.ChannelOpened: chans.on_channel_opened, ev.ChannelClosed: chans.on_channel_closed,
            ev.ChannelFailed: chans.on_channel_closed, ev.StartOk: self._authenticate,
            ev.TuneOk: self._on_tune_ok, ev.OpenVhost: self._on_open_vhost,
            ev.ConnectionClosed: self._on_connection_closed, ev.UpdateSecret: self._update_secret,
            ev.BadHeader: self._on_bad_header,
        }

    # ---- asyncio.Protocol (accept, close, flow control: ClientListener) -----------------------------
    def get_buffer(self, sizehint: int) -> memoryview:
        """The socket reads straight into the protocol object's buffer (no per-read bytes object)."""
        return self.proto.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        self.bytes_in += nbytes
        node = self.node
        self.last_recv = node.loop_time()
        revision = node.broker.metadata.revision
        try:
            events = self.proto.buffer_updated(nbytes)
            handlers = self._events
            for event in events:
                handlers[type(event)](event)
                if self.closing:
                    break
            node.broker.flush()
            for ch in list(self.channels.values()):
                if ch.outcomes and ch.flush_confirms():
                    node.durability.hold(ch)
        except Exception:  # a bug of ours must not take the broker down
            log.exception("internal error on connection from %s", self.peer)
            self._fail(InternalError("internal error"))
        if node.broker.metadata.revision != revision or self._definitions_seen:
            self._definitions_seen = False
            self._hold_for_definitions()
        node.want_flush(self)
        node.flush_output()
        if node.publishers_blocked and self.published:
            self.apply_alarms(node.memory_alarm, node.disk_alarm)

    def _on_method(self, event: ev.MethodReceived) -> None:
        m = event.method
        if type(m) in DEFINITION_METHODS and self.node.broker.metadata.pending() is not None and \
                getattr(m, "queue", None) != "":  # (a server-named queue is new: no one else's)
            # its -ok may name an object another connection created whose write is still pending
            self._definitions_seen = True
        self.chans.on_method(event)

    def connection_ended(self) -> None:
        for ch in self.chans.close_all():
            self.node.durability.forget(ch)

    def sessions(self) -> Iterable[Session]:
        return [cast(Session, ch.session) for ch in self.channels.values()]

    def queue_heartbeat(self) -> None:
        self.proto.send_heartbeat()

    # ---- output ---------------------------------------------------------------------------------
    def _hold_for_definitions(self) -> None:
        """A declare, delete or bind changed durable definitions: hold this connection's output (its
        -ok and whatever follows) and input until the metadata store's writer thread has them."""
        pending = self.node.broker.metadata.pending()
        if pending is None:
            return
        self.pause_reading(DEFINITIONS)
        held = self._held = asyncio.wrap_future(pending)
        held.add_done_callback(self._release_hold)

    def _release_hold(self, held: asyncio.Future[int]) -> None:
        if held is not self._held:
            return  # a later hold is still waiting
        self._held = None
        if held.cancelled() or held.exception() is not None:
            log.error("definitions of connection %s not persisted; dropping it", self.peer)
            self.abort()  # no -ok for what was not kept
            return
        self.resume_reading(DEFINITIONS)
        self.node.want_flush(self)
        self.node.flush_output()

    def write_pending(self) -> None:
        if self._held is not None:
            return
        out = self.proto.data_to_send()
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.writelines(out)
            self.last_send = self.node.loop_time()
            self.bytes_out += sum(map(len, out))
        if self.proto.state == ev.State.CLOSED and self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def send_blocked(self, blocked: bool, reason: str) -> None:
        """connection.blocked / unblocked, to clients that announced the capability (once per change)."""
        caps = self.client_properties.get("capabilities")
        if self.vhost is None or not isinstance(caps, dict) or not caps.get("connection.blocked"):
            return
        if blocked == self.blocked_sent:
            return
        self.blocked_sent = blocked
        if blocked:
            self.proto.send_method(0, codec.build(C.Connection.Blocked, reason=reason))
        else:
            self.proto.send_method(0, codec.build(C.Connection.Unblocked))
        self.node.want_flush(self)

    def _fail(self, err: HareError) -> None:
        """Close the connection with ``err`` (connection.close, then the socket after close-ok)."""
        if self.close_reason is None:
            self.close_reason = err.reply_text
        self.proto.close(err)
        self.closing = True
        self.chans.close_all()
        # do not wait forever for close-ok
        asyncio.get_running_loop().call_later(self.node.settings.close_timeout, self.abort)

    def force_close(self, reason: str) -> bool:
        """Broker stopping: 320 CONNECTION_FORCED, as RabbitMQ (before the handshake: just close)."""
        if self.proto.state in (ev.State.OPEN, ev.State.AWAIT_OPEN, ev.State.AWAIT_TUNE_OK):
            self._fail(ConnectionForced(f"broker forced connection closure with reason '{reason}'"))
            return True
        return False

    # ---- events (``_events`` maps each event type to one of these) ---------------------------------
    def _on_tune_ok(self, event: ev.TuneOk) -> None:
        interval = event.heartbeat
        if interval > 0:
            self.start_heartbeats(interval / 2, 2 * interval, f"missed heartbeats from client, timeout: {interval}s")

    def _on_open_vhost(self, event: ev.OpenVhost) -> None:
        self._open_vhost(event.vhost)

    def _on_connection_closed(self, event: ev.ConnectionClosed) -> None:
        if event.error is not None:
            log.info("closing connection from %s: %s", self.peer, event.error.reply_text)
            self._fail(event.error)
        elif self.close_reason is None:
            self.close_reason = f"client closed: {event.reply_code} {event.reply_text}".rstrip()
        self.closing = True

    def _on_bad_header(self, event: ev.BadHeader) -> None:
        self.closing = True

    def _authenticate(self, e: ev.StartOk) -> None:
        self.auth_mechanism = e.mechanism  # for the management API
        """PLAIN / AMQPLAIN through the node's authentication service (which audits every refusal);
        the client is told to see the broker log, as RabbitMQ does."""
        self.client_properties = e.client_properties
        try:
            self.user = self.node.auth.sasl(e.mechanism, e.response, self._peer())
        except LoginRefused as refused:
            self._fail(AuthenticationFailed(refused.detail if refused.reason is Reason.UNSUPPORTED_MECHANISM else
                                            f"Login was refused using authentication mechanism {e.mechanism}. "
                                            "For details see the broker logfile."))
            return
        self.proto.send_tune()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self.cert_name is not None:  # a verified client certificate: connection.start offers EXTERNAL
            self.proto.mechanisms = self.node.auth.mechanisms_for(self._peer())

    def _peer(self) -> Peer:
        return Peer("amqp", self.peer_name, self.loopback, self.cert_name)

    def _update_secret(self, e: ev.UpdateSecret) -> None:
        """connection.update-secret (RabbitMQ): re-authenticate this connection's user with the new
        secret; a refused one closes the connection with 530, as RabbitMQ does."""
        assert self.user is not None
        name = self.user.name
        try:
            user = self.node.auth.password(name, e.new_secret.decode("utf-8", "replace"), self._peer(),
                                           action="update-secret")
        except LoginRefused:
            self._fail(NotAllowed("New secret was refused by one of the backends", class_id=10, method_id=70))
            return
        self.user = user
        for s in self.sessions():
            s.user = user
            s.write_ok.clear()  # permissions are looked up afresh
        log.info("updated secret of user '%s' on connection from %s (reason: %s)", name, self.peer_name, e.reason)
        self.proto.send_method(0, codec.build(C.Connection.UpdateSecretOk))

    def _open_vhost(self, name: str) -> None:
        assert self.user is not None
        try:
            self.vhost = self.node.auth.vhost(self.user, name, self.node.broker.vhosts, self._peer())
        except LoginRefused as refused:
            self._fail(NotAllowed(refused.detail, class_id=10, method_id=40))
            return
        self.proto.send_open_ok()
        self.handshake_done(name)
        if self.node.disk_alarm or self.node.memory_alarm:
            self.send_blocked(True, "low on disk space" if self.node.disk_alarm else "low on memory")
