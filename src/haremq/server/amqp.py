"""AMQP listener: adapts the sans-IO ``AmqpConnection`` and the core ``Broker`` to asyncio.

One ``asyncio.BufferedProtocol`` per socket (no per-connection task, no await per message): the kernel
copies each read straight into the protocol object's buffer. Each ``buffer_updated`` runs: decode ->
core commands -> ``broker.flush()`` (dispatch) -> coalesced publisher confirms -> one ``writelines`` per
connection that has output. Deliveries produced for other connections are buffered on them and written
in the same pass (``Node.flush_output``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from pamqp import commands as C

from haremq import __version__
from haremq.core.broker import REJECTED, UNROUTABLE
from haremq.core.consumer import Session
from haremq.errors import (
    AuthenticationFailed,
    ConnectionForced,
    HareError,
    InternalError,
    NotAllowed,
    NotFound,
    NotImplementedByBroker,
    PreconditionFailed,
    ResourceError,
)
from haremq.message import Message
from haremq.protocol.amqp import codec
from haremq.protocol.amqp import connection as ev
from haremq.security.refusal import LoginRefused, Peer, Reason
from haremq.server.durability import Answers
from haremq.server.listener import ClientListener

if TYPE_CHECKING:
    from haremq.server.node import Node

log = logging.getLogger("haremq.amqp")
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


class Channel:
    """One open AMQP channel: the core session plus AMQP-only state (confirms, tx, last queue)."""

    __slots__ = ("confirm", "confirm_seq", "conn", "ctag_cache", "held_cancels", "last_queue", "number",
                 "outcomes", "session", "tx", "tx_acks", "tx_publishes")

    def __init__(self, conn: AmqpServerProtocol, number: int) -> None:
        self.conn = conn
        self.number = number
        assert conn.vhost is not None and conn.user is not None
        self.session: Session = conn.node.broker.open_session(conn.vhost, conn.user, conn, self)
        self.confirm = False
        self.confirm_seq = 0
        # answers not yet sent, in publish order, each behind the log positions it wrote: a confirm
        # (token seq: ack, -seq: nack) or a deferred tx.commit-ok (token 0); see server/durability.py
        self.outcomes = Answers()
        self.tx = False
        self.tx_publishes: list[ev.Publish] = []
        self.tx_acks: list[ev.Settle] = []
        self.last_queue = ""
        self.ctag_cache: dict[str, bytes] = {}
        # basic.cancel frames held back while this channel's own queue.delete runs (sent after delete-ok)
        self.held_cancels: list[bytes] | None = None

    # ---- DeliverySink ---------------------------------------------------------------------------
    def deliver(self, consumer_tag: str, delivery_tag: int, redelivered: bool, queue: str, msg: Message) -> None:
        ctag = self.ctag_cache.get(consumer_tag)
        if ctag is None:
            ctag = self.ctag_cache[consumer_tag] = codec.sstr(consumer_tag)
        conn = self.conn
        conn.proto.send_content(codec.deliver_method(self.number, ctag, delivery_tag, redelivered, msg.exchange,
                                                     msg.routing_key), self.number, _props_raw(msg), msg.body)
        conn.node.want_flush(conn)

    def consumer_cancelled(self, consumer_tag: str) -> None:
        self.ctag_cache.pop(consumer_tag, None)
        caps = self.conn.client_properties.get("capabilities")
        if isinstance(caps, dict) and caps.get("consumer_cancel_notify"):
            # only clients that announced it understand a server-sent basic.cancel (as RabbitMQ)
            frame = codec.method_frame(self.number, codec.build(C.Basic.Cancel, consumer_tag=consumer_tag,
                                                                nowait=True))
            if self.held_cancels is not None:
                self.held_cancels.append(frame)
                return
            self.conn.proto.write(frame)
            self.conn.node.want_flush(self.conn)

    # ---- confirms -------------------------------------------------------------------------------
    def fail_confirms(self, err: HareError) -> None:
        """Nack every confirm still waiting for the disk; a waiting tx.commit closes the channel."""
        conn = self.conn
        if conn.channels.get(self.number) is not self:
            self.outcomes.clear()
            return
        write = conn.proto.write
        commit_waiting = False
        for token in self.outcomes.tokens():
            if token:
                write(codec.confirm_frame(self.number, abs(token), False, nack=True))
            else:
                commit_waiting = True
        self.outcomes.clear()
        if commit_waiting:
            conn.proto.close_channel(self.number, ResourceError(f"transaction not durable: {err.text}"))
            conn.channels.pop(self.number, None)
            self.session.close()

    def flush_confirms(self) -> bool:
        """Send what is committed, coalesced: one ``ack multiple`` per run of successes.

        Returns True when outcomes remain that wait for the disk.
        """
        outcomes = self.outcomes
        if self.conn.channels.get(self.number) is not self:
            # closed while waiting for the disk: its confirms must not reach a reopened channel
            outcomes.clear()
            return False
        write = self.conn.proto.write
        run_end = 0
        items = outcomes.items  # Answers.pop_ready, inlined: this runs once per confirm
        while items:
            token, log, lsn = items[0]
            if log is not None and log.committed_lsn < lsn:
                break
            items.popleft()
            if token is None:
                continue  # a barrier: a later answer also wrote to this log
            if token > 0:
                run_end = token
                self.conn.node.broker.stats.confirmed += 1
                continue
            if run_end:
                write(codec.confirm_frame(self.number, run_end, True))
                run_end = 0
            if token:
                write(codec.confirm_frame(self.number, -token, False, nack=True))
            else:
                write(codec.method_frame(self.number, codec.build(C.Tx.CommitOk)))
        if run_end:
            write(codec.confirm_frame(self.number, run_end, True))
        return bool(outcomes)


def _props_raw(msg: Message) -> bytes:
    raw = msg.encoded_props
    if raw is None:
        raw = msg.encoded_props = codec.encode_properties(msg.props)
    return raw


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
        self.channels: dict[int, Channel] = {}
        self.client_properties: dict[str, Any] = {}
        self.blocked_sent = False
        self.auth_mechanism: str | None = None  # for the management API
        self._held: asyncio.Future[int] | None = None  # output held until these definitions are durable
        self._definitions_seen = False  # this read had a declare/bind while a definitions write was pending
        self._methods: dict[type[Any], Callable[[Channel, Any], None]] = {
            C.Basic.Qos: self._qos, C.Basic.Consume: self._consume, C.Basic.Cancel: self._cancel,
            C.Basic.Get: self._get, C.Basic.Recover: self._recover, C.Basic.RecoverAsync: self._recover,
            C.Exchange.Declare: self._exchange_declare, C.Exchange.Delete: self._exchange_delete,
            C.Exchange.Bind: self._exchange_bind, C.Exchange.Unbind: self._exchange_bind,
            C.Queue.Declare: self._queue_declare, C.Queue.Bind: self._queue_bind,
            C.Queue.Unbind: self._queue_bind, C.Queue.Purge: self._queue_purge,
            C.Queue.Delete: self._queue_delete, C.Confirm.Select: self._confirm_select,
            C.Tx.Select: self._tx_select, C.Tx.Commit: self._tx_commit, C.Tx.Rollback: self._tx_rollback,
            C.Channel.Flow: self._flow,
        }
        # event type -> handler (``buffer_updated`` looks it up once per event)
        self._events: dict[type[ev.Event], Callable[[Any], None]] = {
            ev.Publish: self._on_publish, ev.Settle: self._on_settle, ev.MethodReceived: self._on_method,
            ev.ChannelOpened: self._on_channel_opened, ev.ChannelClosed: self._on_channel_closed,
            ev.ChannelFailed: self._on_channel_closed, ev.StartOk: self._authenticate,
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

    def connection_ended(self) -> None:
        for ch in list(self.channels.values()):
            ch.session.close()
            self.node.durability.forget(ch)
        self.channels.clear()

    def sessions(self) -> Iterable[Session]:
        return [ch.session for ch in self.channels.values()]

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
        for ch in list(self.channels.values()):
            ch.session.close()
        self.channels.clear()
        # do not wait forever for close-ok
        asyncio.get_running_loop().call_later(self.node.settings.close_timeout, self.abort)

    def force_close(self, reason: str) -> bool:
        """Broker stopping: 320 CONNECTION_FORCED, as RabbitMQ (before the handshake: just close)."""
        if self.proto.state in (ev.State.OPEN, ev.State.AWAIT_OPEN, ev.State.AWAIT_TUNE_OK):
            self._fail(ConnectionForced(f"broker forced connection closure with reason '{reason}'"))
            return True
        return False

    # ---- events (``_events`` maps each event type to one of these) ---------------------------------
    def _on_publish(self, event: ev.Publish) -> None:
        ch = self.channels.get(event.channel)
        if ch is not None:
            self._guard(ch, 60, 40, self._publish, event)

    def _on_settle(self, event: ev.Settle) -> None:
        ch = self.channels.get(event.channel)
        if ch is not None:
            self._guard(ch, 60, event.method_id, self._settle, event)

    def _on_method(self, event: ev.MethodReceived) -> None:
        ch = self.channels.get(event.channel)
        if ch is None:
            return
        m = event.method
        if type(m) in DEFINITION_METHODS and self.node.broker.metadata.pending() is not None and \
                getattr(m, "queue", None) != "":  # (a server-named queue is new: no one else's)
            # its -ok may name an object another connection created whose write is still pending
            self._definitions_seen = True
        handler = self._methods.get(type(m), self._unsupported)
        self._guard(ch, m.index >> 16, m.index & 0xFFFF, handler, m)

    def _on_channel_opened(self, event: ev.ChannelOpened) -> None:
        self.channels[event.channel] = Channel(self, event.channel)
        self.node.broker.stats.channels_opened += 1

    def _on_channel_closed(self, event: ev.ChannelClosed | ev.ChannelFailed) -> None:
        ch = self.channels.pop(event.channel, None)
        if ch is not None:
            ch.session.close()

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

    def _guard(self, ch: Channel, class_id: int, method_id: int, fn: Callable[[Channel, Any], None],
               arg: Any) -> None:
        """Run a channel command; a peer error closes the channel or the connection with its code."""
        try:
            fn(ch, arg)
        except HareError as err:
            if not err.class_id:
                err.class_id, err.method_id = class_id, method_id
            if err.closes_connection:
                self._fail(err)
            else:
                self.proto.close_channel(ch.number, err)
                self.channels.pop(ch.number, None)
                ch.session.close()

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

    def _peer(self) -> Peer:
        return Peer("amqp", self.peer_name, self.loopback)

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
        for ch in self.channels.values():
            ch.session.user = user
            ch.session.write_ok.clear()  # permissions are looked up afresh
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

    # ---- hot path -----------------------------------------------------------------------------------
    def _publish(self, ch: Channel, e: ev.Publish) -> None:
        if e.immediate:
            raise NotImplementedByBroker("immediate=true")
        if ch.tx:
            # checked on arrival, as RabbitMQ does, so a bad publish fails here, not half a commit later
            self.node.broker.publish_target(ch.session, e.exchange)
            ch.tx_publishes.append(e)
            return
        self._route(ch, e)

    def _route(self, ch: Channel, e: ev.Publish) -> None:
        self.published = True
        msg = Message(e.exchange, e.routing_key, e.props, e.body, e.raw_props)
        broker = self.node.broker
        if ch.confirm:
            ch.confirm_seq += 1
            written = broker.written
            written.clear()
            broker.stats.received_confirm += 1
            result = broker.publish(ch.session, e.exchange, msg)
            # the confirm waits for the log positions this publish appended (none: at once)
            token = ch.confirm_seq if result != REJECTED else -ch.confirm_seq
            n = len(written)  # Answers.add inlined for no log / one log (once per message)
            if n == 0:
                ch.outcomes.items.append((token, None, 0))
            elif n == 1:
                for log in written:
                    ch.outcomes.items.append((token, log, written[log]))
            else:
                ch.outcomes.add(token, written)
        else:
            result = broker.publish(ch.session, e.exchange, msg)
        if result == UNROUTABLE and e.mandatory:
            broker.stats.returned += 1
            self.proto.send_content(codec.return_method(ch.number, 312, "NO_ROUTE", e.exchange, e.routing_key),
                                    ch.number, e.raw_props, e.body)

    def _settle(self, ch: Channel, e: ev.Settle) -> None:
        if ch.tx:
            ch.tx_acks.append(e)
            return
        self._apply_settle(ch, e)

    @staticmethod
    def _apply_settle(ch: Channel, e: ev.Settle) -> None:
        s = ch.session
        if e.method_id == 80:
            s.ack(e.tag, bool(e.bits & 1))
        elif e.method_id == 120:
            s.nack(e.tag, bool(e.bits & 1), bool(e.bits & 2))
        else:
            s.nack(e.tag, False, bool(e.bits & 1))

    # ---- basic ----------------------------------------------------------------------------------
    def _qos(self, ch: Channel, m: Any) -> None:
        if m.prefetch_size:
            raise NotImplementedByBroker(f"prefetch_size!=0 ({m.prefetch_size})")
        if m.global_:
            ch.session.global_prefetch = m.prefetch_count
        else:
            ch.session.prefetch = m.prefetch_count
        self.node.broker.resume(ch.session)
        self.proto.send_method(ch.number, codec.build(C.Basic.QosOk))

    def _queue_name(self, ch: Channel, name: str) -> str:
        if name:
            return name
        if not ch.last_queue:
            raise NotFound("no previously declared queue")
        return ch.last_queue

    def _consume(self, ch: Channel, m: Any) -> None:
        queue = self._queue_name(ch, m.queue)
        c = self.node.broker.consume(ch.session, queue, m.consumer_tag, no_ack=m.no_ack, exclusive=m.exclusive,
                                     arguments=dict(m.arguments or {}))
        if not m.nowait:
            self.proto.send_method(ch.number, codec.build(C.Basic.ConsumeOk, consumer_tag=c.tag))

    def _cancel(self, ch: Channel, m: Any) -> None:
        self.node.broker.cancel(ch.session, m.consumer_tag)
        ch.ctag_cache.pop(m.consumer_tag, None)
        if not m.nowait:
            self.proto.send_method(ch.number, codec.build(C.Basic.CancelOk, consumer_tag=m.consumer_tag))

    def _get(self, ch: Channel, m: Any) -> None:
        queue = self._queue_name(ch, m.queue)
        got = self.node.broker.get(ch.session, queue, no_ack=m.no_ack)
        if got is None:
            self.proto.send_method(ch.number, codec.build(C.Basic.GetEmpty))
            return
        tag, entry, count = got
        msg = entry.msg
        self.proto.send_content(codec.get_ok_method(ch.number, tag, entry.delivery_count > 1, msg.exchange,
                                                    msg.routing_key, count), ch.number, _props_raw(msg), msg.body)

    def _recover(self, ch: Channel, m: Any) -> None:
        if not m.requeue:
            raise NotImplementedByBroker("requeue=false")
        ch.session.recover()
        if isinstance(m, C.Basic.Recover):
            self.proto.send_method(ch.number, codec.build(C.Basic.RecoverOk))

    # ---- exchange / queue -------------------------------------------------------------------------
    def _exchange_declare(self, ch: Channel, m: Any) -> None:
        self.node.broker.exchange_declare(ch.session, m.exchange, m.exchange_type, passive=m.passive,
                                          durable=m.durable, auto_delete=m.auto_delete, internal=m.internal,
                                          arguments=dict(m.arguments or {}))
        if not m.nowait:
            self.proto.send_method(ch.number, codec.build(C.Exchange.DeclareOk))

    def _exchange_delete(self, ch: Channel, m: Any) -> None:
        self.node.broker.exchange_delete(ch.session, m.exchange, if_unused=m.if_unused)
        if not m.nowait:
            self.proto.send_method(ch.number, codec.build(C.Exchange.DeleteOk))

    def _exchange_bind(self, ch: Channel, m: Any) -> None:
        unbind = isinstance(m, C.Exchange.Unbind)
        self.node.broker.exchange_bind(ch.session, m.destination, m.source, m.routing_key,
                                       dict(m.arguments or {}), unbind=unbind)
        if not m.nowait:
            ok = C.Exchange.UnbindOk if unbind else C.Exchange.BindOk
            self.proto.send_method(ch.number, codec.build(ok))

    def _queue_declare(self, ch: Channel, m: Any) -> None:
        q = self.node.broker.queue_declare(ch.session, m.queue, passive=m.passive, durable=m.durable,
                                           exclusive=m.exclusive, auto_delete=m.auto_delete,
                                           arguments=dict(m.arguments or {}))
        ch.last_queue = q.name
        if not m.nowait:
            self.proto.send_method(ch.number, codec.build(
                C.Queue.DeclareOk, queue=q.name, message_count=q.message_count, consumer_count=q.consumer_count))

    def _queue_bind(self, ch: Channel, m: Any) -> None:
        unbind = isinstance(m, C.Queue.Unbind)
        queue = self._queue_name(ch, m.queue)
        self.node.broker.queue_bind(ch.session, queue, m.exchange, m.routing_key, dict(m.arguments or {}),
                                    unbind=unbind)
        if unbind:
            self.proto.send_method(ch.number, codec.build(C.Queue.UnbindOk))
        elif not m.nowait:
            self.proto.send_method(ch.number, codec.build(C.Queue.BindOk))

    def _queue_purge(self, ch: Channel, m: Any) -> None:
        n = self.node.broker.queue_purge(ch.session, self._queue_name(ch, m.queue))
        if not m.nowait:
            self.proto.send_method(ch.number, codec.build(C.Queue.PurgeOk, message_count=n))

    def _queue_delete(self, ch: Channel, m: Any) -> None:
        """delete-ok goes before the basic.cancel of this channel's own consumers, as RabbitMQ sends
        them (py-amqp, waiting for delete-ok, raises ConsumerCancelled on a cancel that comes first)."""
        held: list[bytes] = []
        ch.held_cancels = held
        try:
            n = self.node.broker.queue_delete(ch.session, self._queue_name(ch, m.queue),
                                              if_unused=m.if_unused, if_empty=m.if_empty)
            if not m.nowait:
                self.proto.send_method(ch.number, codec.build(C.Queue.DeleteOk, message_count=n))
        finally:
            ch.held_cancels = None
            for frame in held:
                self.proto.write(frame)

    # ---- confirm / tx / flow ---------------------------------------------------------------------
    def _confirm_select(self, ch: Channel, m: Any) -> None:
        if ch.tx:
            raise PreconditionFailed("cannot switch from tx to confirm mode")
        ch.confirm = True
        if not m.nowait:
            self.proto.send_method(ch.number, codec.build(C.Confirm.SelectOk))

    def _tx_select(self, ch: Channel, m: Any) -> None:
        if ch.confirm:
            raise PreconditionFailed("cannot switch from confirm to tx mode")
        ch.tx = True
        self.proto.send_method(ch.number, codec.build(C.Tx.SelectOk))

    def _tx_commit(self, ch: Channel, m: Any) -> None:
        if not ch.tx:
            raise PreconditionFailed("channel is not transactional")
        publishes, acks = ch.tx_publishes, ch.tx_acks
        ch.tx_publishes, ch.tx_acks = [], []
        written = self.node.broker.written
        written.clear()
        for p in publishes:
            self._route(ch, p)  # (not in confirm mode: ``written`` gathers the whole transaction)
        for a in acks:
            self._apply_settle(ch, a)
        if written or ch.outcomes:
            ch.outcomes.add(0, written)  # commit-ok once the transaction is on disk (and after an earlier one)
        else:
            self.proto.send_method(ch.number, codec.build(C.Tx.CommitOk))

    def _tx_rollback(self, ch: Channel, m: Any) -> None:
        if not ch.tx:
            raise PreconditionFailed("channel is not transactional")
        ch.tx_publishes.clear()
        ch.tx_acks.clear()
        self.proto.send_method(ch.number, codec.build(C.Tx.RollbackOk))

    def _flow(self, ch: Channel, m: Any) -> None:
        ch.session.flow = bool(m.active)
        if m.active:
            self.node.broker.resume(ch.session)
        self.proto.send_method(ch.number, codec.build(C.Channel.FlowOk, active=m.active))

    def _unsupported(self, ch: Channel, m: Any) -> None:
        raise NotImplementedByBroker(f"method {m.name} is not supported from a client")
