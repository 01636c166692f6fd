"""A broker node: wires settings -> stores -> core -> listeners, and owns their lifetime.

All output goes through ``flush_output``: commands and timers queue frames on connections and
mark them; one pass at the end writes each marked connection once (``writelines``).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import TYPE_CHECKING, Protocol

from haremq.config import Settings
from haremq.core.broker import Broker
from haremq.security.users import UserStore

if TYPE_CHECKING:
    from haremq.server.amqp import AmqpServerProtocol
    from haremq.server.stomp import StompServerProtocol

log = logging.getLogger("haremq")


class Writer(Protocol):
    """A connection with buffered output (AMQP, STOMP): ``flush_output`` writes it once per pass."""

    def write_pending(self) -> None: ...


class Node:
    def __init__(self, settings: Settings, *, broker: Broker | None = None) -> None:
        self.settings = settings
        if broker is None:
            users = UserStore()
            users.add(settings.default_user, settings.default_pass, tags=("administrator",),
                      loopback_only=settings.default_user == "guest")
            broker = Broker(users=users)
        self.broker = broker
        self.cluster_name = settings.node_name
        self.connections: set[AmqpServerProtocol] = set()
        self.stomp_connections: set[StompServerProtocol] = set()
        self._pending: dict[Writer, None] = {}
        self._servers: list[asyncio.AbstractServer] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.amqp_port = 0
        self.stomp_port: int | None = None  # None while STOMP is off
        self.stopped = asyncio.Event()

    def loop_time(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    # ---- output -----------------------------------------------------------------------------------
    def want_flush(self, conn: Writer) -> None:
        self._pending[conn] = None

    def flush_output(self) -> None:
        while self._pending:
            pending = self._pending
            self._pending = {}
            for conn in pending:
                conn.write_pending()

    # ---- timers -----------------------------------------------------------------------------------
    def _on_schedule(self, deadline: float) -> None:
        """The core has a new earliest deadline (monotonic seconds): wake up then."""
        if self._loop is None:
            return
        if self._timer_at is not None and self._timer_at <= deadline:
            return
        if self._timer is not None:
            self._timer.cancel()
        delay = max(0.0, deadline - self.broker.clock.monotonic())
        self._timer_at = deadline
        self._timer = self._loop.call_later(delay, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = None
        try:
            self.broker.run_timers()
        except Exception:
            log.exception("timer processing failed")
        self.flush_output()
        nxt = self.broker.next_deadline()
        if nxt is not None:
            self._on_schedule(nxt)

    # ---- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        from haremq.server.amqp import AmqpServerProtocol

        self._loop = asyncio.get_running_loop()
        self.broker.on_schedule = self._on_schedule
        s = self.settings
        server = await self._loop.create_server(
            lambda: AmqpServerProtocol(self), host=s.bind, port=s.amqp_port, reuse_address=True,
            family=socket.AF_UNSPEC, backlog=1024)
        self._servers.append(server)
        self.amqp_port = server.sockets[0].getsockname()[1]
        log.info("AMQP listening on %s:%d", s.bind, self.amqp_port)
        if s.stomp_enabled:
            from haremq.server.stomp import StompServerProtocol

            stomp = await self._loop.create_server(
                lambda: StompServerProtocol(self), host=s.bind, port=s.stomp_port, reuse_address=True,
                family=socket.AF_UNSPEC, backlog=1024)
            self._servers.append(stomp)
            self.stomp_port = stomp.sockets[0].getsockname()[1]
            log.info("STOMP listening on %s:%d", s.bind, self.stomp_port)

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        for conn in list(self.connections):
            conn.shutdown()
        for stomp_conn in list(self.stomp_connections):
            stomp_conn.shutdown()
        # give clients a moment to answer close-ok, then drop what is left
        for _ in range(20):
            if not self.connections:
                break
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn._abort()
        for stomp_conn in list(self.stomp_connections):
            stomp_conn._abort()
        for server in self._servers:
            await server.wait_closed()
        if self._timer is not None:
            self._timer.cancel()
        self.broker.store.close()
        self.broker.metadata.close()
        self.stopped.set()
