"""Start and stop the HTTP listeners of a node (SQS, management); their ports for the ready line."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

from haremq.protocol.http import HttpRequest, HttpResponse
from haremq.server.http.server import Handler, HttpServerProtocol, HttpStats

if TYPE_CHECKING:
    from haremq.server.http.sqs import SqsEndpoint
    from haremq.server.node import Node

log = logging.getLogger("haremq.http")
SQS_MAX_BODY = 6 * 1024 * 1024


class HttpListeners:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.servers: list[asyncio.AbstractServer] = []
        self.sqs_port: int | None = None
        self.management_port: int | None = None
        self.sqs_https_port: int | None = None  # None while TLS is off
        self.management_https_port: int | None = None
        self.sqs: SqsEndpoint | None = None
        self.sqs_stats = HttpStats()
        self.management_stats = HttpStats()

    async def _listen(self, handler: Handler, port: int, stats: HttpStats, max_body: int, name: str,
                      too_large: Callable[[HttpRequest], HttpResponse] | None = None) -> int:
        from haremq.server.node import listen_error

        loop = asyncio.get_running_loop()
        s = self.node.settings
        ctx = self.node.tls_context(name)
        try:
            server = await loop.create_server(
                lambda: HttpServerProtocol(self.node, handler, stats, max_body=max_body,
                                           request_timeout=s.handshake_timeout, idle_timeout=s.http_idle_timeout,
                                           too_large=too_large),
                host=s.bind, port=port,
                reuse_address=True, family=socket.AF_UNSPEC, backlog=1024, ssl=ctx,
                ssl_handshake_timeout=s.handshake_timeout if ctx is not None else None)
        except OSError as exc:
            raise listen_error(name, s.bind, port, exc) from None
        self.servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    @classmethod
    async def start(cls, node: Node) -> HttpListeners:
        self = cls(node)
        s = node.settings
        if s.sqs_enabled:
            from haremq.server.http.sqs import SqsEndpoint

            self.sqs = SqsEndpoint(node)
            # a 1 MiB message (or batch) may take ~4x that on the wire (JSON \u escapes, percent-encoded
            # forms); beyond the limit the SQS endpoint answers in SQS's error shape, not a bare 413
            self.sqs_port = await self._listen(self.sqs, s.sqs_port, self.sqs_stats, SQS_MAX_BODY, "SQS",
                                               self.sqs.too_large)
            log.info("SQS API listening on %s:%d", s.bind, self.sqs_port)
            if node.ssl_context is not None:
                self.sqs_https_port = await self._listen(self.sqs, s.sqs_https_port, self.sqs_stats, SQS_MAX_BODY,
                                                         "SQS HTTPS", self.sqs.too_large)
                log.info("SQS API (HTTPS) listening on %s:%d", s.bind, self.sqs_https_port)
        if s.management_enabled:
            from haremq.server.http.management import ManagementApp

            app = ManagementApp(node, self)
            self.management_port = await self._listen(app, s.management_port, self.management_stats,
                                                      16 * 1024 * 1024, "management")
            log.info("management API listening on %s:%d", s.bind, self.management_port)
            if node.ssl_context is not None:
                self.management_https_port = await self._listen(app, s.management_https_port,
                                                                self.management_stats, 16 * 1024 * 1024,
                                                                "management HTTPS")
                log.info("management API (HTTPS) listening on %s:%d", s.bind, self.management_https_port)
        return self

    async def stop(self) -> None:
        for server in self.servers:
            server.close()
        self.sqs_stats.abort_all()
        self.management_stats.abort_all()
        for server in self.servers:
            await server.wait_closed()
