"""What every client listener (AMQP, STOMP) shares, so each protocol adapter only speaks its protocol.

``ClientListener`` is a mixin for an ``asyncio.Protocol`` / ``asyncio.BufferedProtocol``: it owns the
accept-time socket settings and registration with the node, the TLS flag (the context itself is plugged
into ``create_server`` by ``Node.tls_context``), the handshake and heartbeat timers, read pausing with
reasons (resource alarms, a definition write, a future rate limit), transport flow control, per-connection
byte counters, the audit log of open and close, and shutdown (forced close, abort after a grace period).

The hot path stays in the protocols: ``buffer_updated`` / ``data_received`` / ``write_pending`` update
``bytes_in``, ``bytes_out``, ``last_recv`` and ``last_send`` inline (no method call per message).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, ClassVar

from haremq.security import audit
from haremq.server.tls import client_common_name
from haremq.server.transport import accept

if TYPE_CHECKING:
    from haremq.core.consumer import Session
    from haremq.core.vhost import VHost
    from haremq.security.users import User
    from haremq.server.node import Node

# why reading is paused; reading resumes when no reason is left
MEMORY_ALARM = "memory alarm"
DISK_ALARM = "disk alarm"
ALARMS = (MEMORY_ALARM, DISK_ALARM)


class ClientListener:
    """Base of one client connection of a listener; see the module docstring for what it owns.

    A protocol subclass sets ``protocol`` (the audit/registry name), ``log``, and implements
    ``write_pending``, ``sessions``, ``queue_heartbeat``, ``force_close`` and ``connection_ended``.
    """

    protocol: ClassVar[str]
    log: ClassVar[logging.Logger]
    # audit reason when the peer closes the socket without a goodbye
    EOF_REASON: ClassVar[str] = "client closed the connection"
    # audit the close of a connection that never finished its handshake (STOMP: a refused login)
    AUDIT_UNOPENED: ClassVar[bool] = False

    def __init__(self, node: Node) -> None:
        self.node = node
        self.transport: asyncio.Transport | None = None
        self.user: User | None = None
        self.vhost: VHost | None = None
        self.peer = ("?", 0)
        self.peer_name = "?:0"
        self.loopback = False
        self.cert_name: str | None = None  # subject CN of a verified TLS client certificate (SASL EXTERNAL)
        self.connected_at = time.time()  # wall clock, for the management API
        self.closing = False
        self.close_reason: str | None = None  # the first reason the connection ended, for the audit log
        self.opened = False  # handshake finished and audited: its close is audited too
        self.paused = False  # the transport's write buffer is above its high-water mark
        self.read_pauses: set[str] = set()
        self.reading_paused = False  # == bool(read_pauses), a plain attribute for the hot path
        self.published = False  # has published at least once: held back (not read) while an alarm is on
        self.bytes_in = 0
        self.bytes_out = 0
        self.last_recv = 0.0
        self.last_send = 0.0
        self._hb: asyncio.TimerHandle | None = None
        self._handshake_timer: asyncio.TimerHandle | None = None
        self._abort_timer: asyncio.TimerHandle | None = None

    # ---- what a protocol supplies ---------------------------------------------------------------
    def write_pending(self) -> None:
        """Write what the protocol object has queued (one ``writelines``)."""
        raise NotImplementedError

    def sessions(self) -> Iterable[Session]:
        """The core sessions that deliver to this connection (paused with its writes)."""
        raise NotImplementedError

    def queue_heartbeat(self) -> None:
        """Queue one heartbeat frame on the protocol object."""
        raise NotImplementedError

    def force_close(self, reason: str) -> bool:
        """Queue the protocol's goodbye (AMQP 320, STOMP ERROR); False when there is no one to tell."""
        raise NotImplementedError

    def connection_ended(self) -> None:
        """Release the protocol's state (sessions, held confirms) once the socket is gone."""
        raise NotImplementedError

    # ---- accept / close ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transport is not a subclass
        host, port, self.loopback = accept(transport)
        self.peer = (host, port)
        self.peer_name = f"{host}:{port}"
        if self.tls:
            self.cert_name = client_common_name(transport)
        self.node.register(self)
        self.node.broker.stats.connections_opened += 1
        if self.AUDIT_UNOPENED:
            self.opened = True
        loop = asyncio.get_running_loop()
        self.last_recv = self.last_send = loop.time()
        # a client must finish the handshake in time (RabbitMQ: handshake_timeout 10 s)
        self._handshake_timer = loop.call_later(self.node.settings.handshake_timeout, self._handshake_expired)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        for timer in (self._hb, self._handshake_timer, self._abort_timer):
            if timer is not None:
                timer.cancel()
        if self.opened:
            self.opened = False
            reason = self.close_reason or (self.EOF_REASON if exc is None else f"connection lost: {exc}")
            audit.connection_closed(self.protocol, self.peer_name, self.user.name if self.user else None, reason)
        self.connection_ended()
        self.node.unregister(self)
        self.node.broker.connection_closed(self)
        self.node.flush_output()

    @property
    def tls(self) -> bool:
        """The connection came in on a TLS listener (``Node.tls_context``)."""
        t = self.transport
        return t is not None and t.get_extra_info("sslcontext") is not None

    def handshake_done(self, vhost: str) -> None:
        """The client is authenticated and in its vhost: stop the handshake timer, audit the open."""
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        self.opened = True
        audit.connection_opened(self.protocol, self.peer_name, self.user.name if self.user else "?", vhost)

    def _handshake_expired(self) -> None:
        self._handshake_timer = None
        if self.vhost is None:
            self.log.info("%s handshake timeout from %s", self.protocol.upper(), self.peer_name)
            self.close_reason = self.close_reason or "handshake timeout"
            self.abort()

    def abort(self) -> None:
        """Close the socket now (what is already buffered is still written)."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def shutdown(self, reason: str = "shutdown", grace: float | None = None) -> None:
        """Broker stopping: the protocol's forced close (written now), then abort after ``grace`` seconds
        if the client has not closed by then (default: ``close_timeout``)."""
        if self.closing and (self.transport is None or self.transport.is_closing()):
            return
        if not self.force_close(reason):
            self.abort()
            return
        self.write_pending()
        if self.transport is not None and not self.transport.is_closing():
            delay = self.node.settings.close_timeout if grace is None else grace
            self._abort_timer = asyncio.get_running_loop().call_later(delay, self.abort)

    def buffered_bytes(self) -> int:
        """Output waiting in the transport (for the memory alarm's estimate)."""
        t = self.transport
        return t.get_write_buffer_size() if t is not None and not t.is_closing() else 0

    # ---- read pausing (back-pressure) -------------------------------------------------------------
    def pause_reading(self, reason: str) -> None:
        """Stop reading for ``reason``; other reasons may already hold it."""
        reasons = self.read_pauses
        if reason in reasons:
            return
        reasons.add(reason)
        if not self.reading_paused:
            self.reading_paused = True
            t = self.transport
            if t is not None and not t.is_closing():
                t.pause_reading()

    def resume_reading(self, reason: str) -> None:
        """Drop ``reason``; reading resumes when no reason is left."""
        reasons = self.read_pauses
        if reason not in reasons:
            return
        reasons.discard(reason)
        if not reasons and self.reading_paused:
            self.reading_paused = False
            self.last_recv = self.node.loop_time()  # the silence was ours: not a missed heartbeat
            t = self.transport
            if t is not None and not t.is_closing():
                t.resume_reading()

    def apply_alarms(self, memory: bool, disk: bool) -> None:
        """Resource alarms (as RabbitMQ): a connection that has published is not read while one is on."""
        for reason, on in ((MEMORY_ALARM, memory), (DISK_ALARM, disk)):
            if on and self.published:
                self.pause_reading(reason)
            elif not on:
                self.resume_reading(reason)

    # ---- write flow control -------------------------------------------------------------------------
    def pause_writing(self) -> None:
        """The transport's buffer is full: stop delivering to this connection."""
        self.paused = True
        for s in self.sessions():
            s.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        broker = self.node.broker
        for s in self.sessions():
            s.paused = False
            broker.resume(s)
        broker.flush()
        self.node.flush_output()

    # ---- heartbeats -------------------------------------------------------------------------------
    def start_heartbeats(self, send_every: float, timeout: float, missed_reason: str) -> None:
        """Send a heartbeat when nothing was sent for ``send_every`` s; close when nothing was received
        for ``timeout`` s (0: that side is off). Time spent with reading paused does not count."""
        if self._hb is not None:
            self._hb.cancel()
            self._hb = None
        periods = [p for p in (send_every, timeout / 4) if p > 0]
        if not periods:
            return
        period = max(0.01, min(periods))
        loop = asyncio.get_running_loop()

        def tick() -> None:
            self._hb = None
            if self.closing or self.transport is None or self.transport.is_closing():
                return
            now = loop.time()
            if self.reading_paused:
                self.last_recv = now  # we are not reading: the peer's heartbeats wait in the socket
            if timeout and now - self.last_recv > timeout:
                self.log.info("%s client %s sent nothing for %.1f s (heartbeat timeout), closing",
                              self.protocol.upper(), self.peer_name, now - self.last_recv)
                self.close_reason = self.close_reason or missed_reason
                self.abort()
                return
            if send_every and now - self.last_send >= send_every:
                self.queue_heartbeat()
                self.write_pending()
            self._hb = loop.call_later(period, tick)

        self._hb = loop.call_later(period, tick)
