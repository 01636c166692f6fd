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
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pamqp import commands as C
from pamqp import decode

from haremq import __version__
from haremq.core.broker import REJECTED, UNROUTABLE
from haremq.core.consumer import Session
from haremq.core.message import Message
from haremq.core.vhost import VHost
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
from haremq.protocol.amqp import codec
from haremq.protocol.amqp import connection as ev
from haremq.security import audit
from haremq.security.users import User
from haremq.server.transport import accept

if TYPE_CHECKING:
    from haremq.server.node import Node

log = logging.getLogger("haremq.amqp")

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
        # (seq, ok, ticket) in publish order: confirms (and, seq 0, a deferred tx.commit-ok) not yet sent;
        # one whose message went to the disk waits until the store's durable ticket reaches ``ticket``
        self.outcomes: deque[tuple[int, bool, int]] = deque()
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
        out = conn.proto._out
        out.append(codec.deliver_method(self.number, ctag, delivery_tag, redelivered, msg.exchange,
                                        msg.routing_key))
        out.extend(codec.content_frames(self.number, _props_raw(msg), msg.body, conn.proto.frame_max))
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
        out = conn.proto._out
        commit_waiting = False
        for seq, _ok, ticket in self.outcomes:
            if ticket and seq:
                out.append(codec.confirm_frame(self.number, seq, False, nack=True))
            elif ticket:
                commit_waiting = True
        self.outcomes.clear()
        if commit_waiting:
            conn.proto.close_channel(self.number, ResourceError(f"transaction not durable: {err.text}"))
            conn.channels.pop(self.number, None)
            self.session.close()

    def flush_confirms(self, durable: int) -> bool:
        """Send what is durable, coalesced: one ``ack multiple`` per run of successes.

        Returns True when outcomes remain that wait for the disk.
        """
        outcomes = self.outcomes
        if self.conn.channels.get(self.number) is not self:
            # closed while waiting for the disk: its confirms must not reach a reopened channel
            outcomes.clear()
            return False
        out = self.conn.proto._out
        run_end = 0
        while outcomes:
            seq, ok, ticket = outcomes[0]
            if ticket > durable:
                break
            outcomes.popleft()
            if ok and seq:
                run_end = seq
                self.conn.node.broker.stats.confirmed += 1
                continue
            if run_end:
                out.append(codec.confirm_frame(self.number, run_end, True))
                run_end = 0
            if seq:
                out.append(codec.confirm_frame(self.number, seq, False, nack=True))
            else:
                out.append(codec.method_frame(self.number, codec.build(C.Tx.CommitOk)))
        if run_end:
            out.append(codec.confirm_frame(self.number, run_end, True))
        return bool(outcomes)


def _props_raw(msg: Message) -> bytes:
    raw = msg.encoded_props
    if raw is None:
        raw = msg.encoded_props = codec.encode_properties(msg.props)
    return raw


class AmqpServerProtocol(asyncio.BufferedProtocol):
    def __init__(self, node: Node) -> None:
        self.node = node
        s = node.settings
        self.proto = ev.AmqpConnection(
            server_properties(node.cluster_name), channel_max=s.channel_max, frame_max=s.frame_max,
            heartbeat=s.heartbeat, max_message_size=s.max_message_size)
        self.transport: asyncio.Transport | None = None
        self.channels: dict[int, Channel] = {}
        self.user: User | None = None
        self.vhost: VHost | None = None
        self.peer = ("?", 0)
        self.peer_name = "?:0"
        self.loopback = False
        self.closing = False
        self.client_properties: dict[str, Any] = {}
        self.last_recv = 0.0
        self.last_send = 0.0
        self._hb: asyncio.TimerHandle | None = None
        self._handshake_timer: asyncio.TimerHandle | None = None
        self.paused = False
        self.reading_paused = False
        self.blocked_sent = False
        self.published = False  # has published at least once: subject to the memory alarm
        self.bytes_in = 0
        self.connected_at = time.time()  # wall clock, for the management API
        self.auth_mechanism: str | None = None
        self.bytes_out = 0
        self.opened = False  # connection.open-ok sent (and audited): its close is audited too
        self.close_reason: str | None = None  # the first reason the connection ended, for the audit log
        self._held: asyncio.Future[int] | None = None  # output held until these definitions are durable
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

    # ---- asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transport is not a subclass
        host, port, self.loopback = accept(transport)
        self.peer = (host, port)
        self.peer_name = f"{host}:{port}"
        self.node.connections.add(self)
        self.node.broker.stats.connections_opened += 1
        loop = asyncio.get_running_loop()
        self.last_recv = self.last_send = loop.time()
        # a client must finish the handshake in time (RabbitMQ: handshake_timeout 10 s)
        self._handshake_timer = loop.call_later(self.node.settings.handshake_timeout, self._handshake_expired)

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
            for event in events:
                self._handle(event)
                if self.closing:
                    break
            node.broker.flush()
            durable = node.broker.store.durable_ticket
            for ch in self.channels.values():
                if ch.outcomes and ch.flush_confirms(durable):
                    node.waiting[ch] = None
        except Exception:  # a bug of ours must not take the broker down
            log.exception("internal error on connection from %s", self.peer)
            self._fail(InternalError("internal error"))
        if node.broker.metadata.revision != revision:
            self._hold_for_definitions()
        node.want_flush(self)
        node.flush_output()
        if node.publishers_blocked and self.published and not self.reading_paused:
            self.block_reading(True)

    def buffered_bytes(self) -> int:
        """Output waiting in the transport (for the memory alarm's estimate)."""
        t = self.transport
        return t.get_write_buffer_size() if t is not None and not t.is_closing() else 0

    def block_reading(self, blocked: bool) -> None:
        """Memory/disk alarm back-pressure (as RabbitMQ): stop reading from a publishing connection."""
        if self.transport is None or self.transport.is_closing() or blocked == self.reading_paused:
            return
        self.reading_paused = blocked
        if blocked:
            self.transport.pause_reading()
        else:
            self.last_recv = self.node.loop_time()  # the silence was ours: do not count it against heartbeats
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        if self.opened:
            self.opened = False
            reason = self.close_reason or (
                "client unexpectedly closed TCP connection" if exc is None else f"connection lost: {exc}")
            audit.connection_closed("amqp", self.peer_name, self.user.name if self.user else None, reason)
        for timer in (self._hb, self._handshake_timer):
            if timer is not None:
                timer.cancel()
        for ch in list(self.channels.values()):
            ch.session.close()
            self.node.waiting.pop(ch, None)
        self.channels.clear()
        self.node.connections.discard(self)
        self.node.broker.connection_closed(self)
        self.node.flush_output()

    def pause_writing(self) -> None:
        self.paused = True
        for ch in self.channels.values():
            ch.session.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        for ch in self.channels.values():
            ch.session.paused = False
            self.node.broker.resume(ch.session)
        self.node.broker.flush()
        self.node.flush_output()

    # ---- output ---------------------------------------------------------------------------------
    def _hold_for_definitions(self) -> None:
        """A declare, delete or bind changed durable definitions: hold this connection's output (its
        -ok and whatever follows) and input until the metadata store's writer thread has them."""
        pending = self.node.broker.metadata.pending()
        if pending is None:
            return
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()
        held = self._held = asyncio.wrap_future(pending)
        held.add_done_callback(self._release_hold)

    def _release_hold(self, held: asyncio.Future[int]) -> None:
        if held is not self._held:
            return  # a later hold is still waiting
        self._held = None
        if held.cancelled() or held.exception() is not None:
            log.error("definitions of connection %s not persisted; dropping it", self.peer)
            self._abort()  # no -ok for what was not kept
            return
        if self.transport is not None and not self.transport.is_closing() and not self.reading_paused:
            self.transport.resume_reading()
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
        asyncio.get_running_loop().call_later(self.node.settings.close_timeout, self._abort)

    def _abort(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def shutdown(self, reason: str = "shutdown") -> None:
        """Broker stopping: 320 CONNECTION_FORCED, as RabbitMQ."""
        if self.proto.state in (ev.State.OPEN, ev.State.AWAIT_OPEN, ev.State.AWAIT_TUNE_OK):
            self._fail(ConnectionForced(f"broker forced connection closure with reason '{reason}'"))
            self.write_pending()
        else:
            self._abort()

    # ---- heartbeats -----------------------------------------------------------------------------
    def _start_heartbeats(self, interval: int) -> None:
        if interval <= 0:
            return
        loop = asyncio.get_running_loop()

        def tick() -> None:
            if self.closing or self.transport is None or self.transport.is_closing():
                return
            now = loop.time()
            if self.reading_paused:
                self.last_recv = now  # we are not reading: the peer's heartbeats wait in the socket
            if now - self.last_recv > 2 * interval:
                log.info("missed heartbeats from %s, closing", self.peer)
                self.close_reason = self.close_reason or f"missed heartbeats from client, timeout: {interval}s"
                self._abort()
                return
            if now - self.last_send >= interval / 2:
                self.proto.send_heartbeat()
                self.write_pending()
            self._hb = loop.call_later(interval / 2, tick)

        self._hb = loop.call_later(interval / 2, tick)

    def _handshake_expired(self) -> None:
        if self.vhost is None:
            log.info("handshake timeout from %s", self.peer)
            self._abort()

    # ---- events ---------------------------------------------------------------------------------
    def _handle(self, event: ev.Event) -> None:
        t = type(event)
        if t is ev.Publish:
            assert isinstance(event, ev.Publish)
            ch = self.channels.get(event.channel)
            if ch is not None:
                self._guard(ch, 60, 40, self._publish, event)
        elif t is ev.Settle:
            assert isinstance(event, ev.Settle)
            ch = self.channels.get(event.channel)
            if ch is not None:
                self._guard(ch, 60, event.method_id, self._settle, event)
        elif t is ev.MethodReceived:
            assert isinstance(event, ev.MethodReceived)
            ch = self.channels.get(event.channel)
            if ch is None:
                return
            m = event.method
            handler = self._methods.get(type(m))
            if handler is None:
                self._guard(ch, m.index >> 16, m.index & 0xFFFF, self._unsupported, m)
            else:
                self._guard(ch, m.index >> 16, m.index & 0xFFFF, handler, m)
        elif t is ev.ChannelOpened:
            assert isinstance(event, ev.ChannelOpened)
            self.channels[event.channel] = Channel(self, event.channel)
            self.node.broker.stats.channels_opened += 1
        elif t is ev.ChannelClosed or t is ev.ChannelFailed:
            assert isinstance(event, ev.ChannelClosed | ev.ChannelFailed)
            ch = self.channels.pop(event.channel, None)
            if ch is not None:
                ch.session.close()
        elif t is ev.StartOk:
            assert isinstance(event, ev.StartOk)
            self.auth_mechanism = event.mechanism  # for the management API
            self._authenticate(event)
        elif t is ev.TuneOk:
            assert isinstance(event, ev.TuneOk)
            self._start_heartbeats(event.heartbeat)
        elif t is ev.OpenVhost:
            assert isinstance(event, ev.OpenVhost)
            self._open_vhost(event.vhost)
        elif t is ev.ConnectionClosed:
            assert isinstance(event, ev.ConnectionClosed)
            if event.error is not None:
                log.info("closing connection from %s: %s", self.peer, event.error.reply_text)
                self._fail(event.error)
            elif self.close_reason is None:
                self.close_reason = f"client closed: {event.reply_code} {event.reply_text}".rstrip()
            self.closing = True
        elif t is ev.UpdateSecret:
            assert isinstance(event, ev.UpdateSecret)
            self._update_secret(event)
        elif t is ev.BadHeader:
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
        """PLAIN / AMQPLAIN; every refusal is audited (the client is told to see the broker log)."""
        self.client_properties = e.client_properties
        user = None
        login: Any = None
        mech = e.mechanism
        try:
            if mech == "PLAIN":
                parts = e.response.split(b"\x00")
                if len(parts) == 3:
                    login = parts[1].decode()
                    user = self.node.broker.users.authenticate(login, parts[2].decode(), loopback=self.loopback)
            elif mech == "AMQPLAIN":
                raw = e.response
                _, table = decode.field_table(len(raw).to_bytes(4, "big") + raw)
                login, password = table.get("LOGIN"), table.get("PASSWORD")
                if isinstance(login, bytes):
                    login = login.decode()
                if isinstance(password, bytes):
                    password = password.decode()
                if isinstance(login, str) and isinstance(password, str):
                    user = self.node.broker.users.authenticate(login, password, loopback=self.loopback)
            else:
                audit.login_refused("amqp", self.peer_name, None, f"unsupported authentication mechanism {mech}")
                self._fail(AuthenticationFailed(f"unsupported authentication mechanism '{mech}'"))
                return
        except (UnicodeDecodeError, ValueError, IndexError, KeyError, TypeError):
            user = None
        if user is None:
            name = login if isinstance(login, str) else None
            audit.login_refused("amqp", self.peer_name, name, self._refusal_reason(mech, name))
            self._fail(AuthenticationFailed(
                f"Login was refused using authentication mechanism {mech}. For details see the broker logfile."))
            return
        self.user = user
        self.proto.send_tune()

    def _refusal_reason(self, mech: str, name: str | None) -> str:
        """Why a login failed, for the log only (the client just hears 403)."""
        if name is None:
            return f"malformed {mech} response"
        known = self.node.broker.users.users.get(name)
        if known is not None and known.loopback_only and not self.loopback:
            return "user can only connect via localhost"
        return "invalid credentials"

    def _update_secret(self, e: ev.UpdateSecret) -> None:
        """connection.update-secret (RabbitMQ): re-authenticate this connection's user with the new
        secret; a refused one closes the connection with 530, as RabbitMQ does."""
        assert self.user is not None
        name = self.user.name
        try:
            user = self.node.broker.users.authenticate(name, e.new_secret.decode(), loopback=self.loopback)
        except UnicodeDecodeError:
            user = None
        if user is None:
            reason = self._refusal_reason("update-secret", name)
            audit.login_refused("amqp", self.peer_name, name, f"update-secret refused: {reason}")
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
            self.vhost = self.node.broker.open_vhost(self.user, name)
        except HareError as err:
            audit.login_refused("amqp", self.peer_name, self.user.name, err.text)
            err.class_id, err.method_id = 10, 40
            self._fail(err)
            return
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        self.proto.send_open_ok()
        self.opened = True
        audit.connection_opened("amqp", self.peer_name, self.user.name, name)
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
            broker.stats.received_confirm += 1
            before = broker.store.ticket
            result = broker.publish(ch.session, e.exchange, msg)
            after = broker.store.ticket
            # wait for the disk only if this publish appended to the log
            ch.outcomes.append((ch.confirm_seq, result != REJECTED, after if after != before else 0))
        else:
            result = broker.publish(ch.session, e.exchange, msg)
        if result == UNROUTABLE and e.mandatory:
            broker.stats.returned += 1
            out = self.proto._out
            out.append(codec.return_method(ch.number, 312, "NO_ROUTE", e.exchange, e.routing_key))
            out.extend(codec.content_frames(ch.number, e.raw_props, e.body, self.proto.frame_max))

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
        out = self.proto._out
        out.append(codec.get_ok_method(ch.number, tag, entry.delivery_count > 1, msg.exchange, msg.routing_key,
                                       count))
        out.extend(codec.content_frames(ch.number, _props_raw(msg), msg.body, self.proto.frame_max))

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
        store = self.node.broker.store
        before = store.ticket
        for p in publishes:
            self._route(ch, p)
        for a in acks:
            self._apply_settle(ch, a)
        if store.ticket != before:
            ch.outcomes.append((0, True, store.ticket))  # commit-ok once the transaction is on disk
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
