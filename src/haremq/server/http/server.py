"""A lean HTTP/1.1 server: one ``asyncio.Protocol`` per connection, parsing with httptools.

Why not a framework: on this machine aiohttp/starlette cost ~50 microseconds per request before
any work; a bare protocol with httptools serves an SQS-sized request in a fraction of that.

- Keep-alive and pipelining: requests are answered strictly in order. A handler may return an
  awaitable (an SQS long poll); later requests of the same connection wait in ``pending`` until
  it is answered, and reading pauses when too many are queued.
- Limits: the request line + headers are capped (``max_header``), bodies too (``max_body``, 413;
  or, with ``too_large``, the body is read and dropped, up to ``DRAIN_LIMIT``, and the listener's own
  answer is sent, e.g. SQS's error shape);
  malformed input gets a 400 and the connection is closed; a handler that raises gets a 500 and
  is logged. Nothing a peer sends can take the listener down.
- Output of one ``data_received`` is written once; ``node.flush_output`` runs after each batch, so
  a SendMessage that feeds an AMQP consumer reaches it in the same tick.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import TYPE_CHECKING

import httptools

from haremq.protocol.http import HttpRequest, HttpResponse
from haremq.server.transport import accept

if TYPE_CHECKING:
    from haremq.server.node import Node

log = logging.getLogger("haremq.http")

Handler = Callable[[HttpRequest], "HttpResponse | Awaitable[HttpResponse]"]
_REASONS = {s.value: s.phrase for s in HTTPStatus}
MAX_PENDING = 64
DRAIN_LIMIT = 64 * 1024 * 1024  # an oversize body read (and dropped) to answer it properly; beyond: closed
DROPPED_HEAD = 4096  # what ``too_large`` sees of a dropped body (a form's ``Action=`` comes first)


class HttpStats:
    """Counters shared by the connections of one listener (exported as metrics)."""

    def __init__(self) -> None:
        self.connections = 0
        self.requests = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.bad_requests = 0
        self.open: set[HttpServerProtocol] = set()

    def abort_all(self) -> None:
        for conn in list(self.open):
            if conn.transport is not None:
                conn.transport.abort()


def render(res: HttpResponse, keep_alive: bool) -> bytes:
    head = [f"HTTP/1.1 {res.status} {_REASONS.get(res.status, 'Unknown')}\r\n"
            f"Content-Type: {res.content_type}\r\nContent-Length: {len(res.body)}\r\n"]
    for k, v in res.headers:
        head.append(f"{k}: {v}\r\n")
    if not keep_alive:
        head.append("Connection: close\r\n")
    head.append("\r\n")
    return "".join(head).encode("latin-1") + res.body


def error(status: int, text: str) -> HttpResponse:
    return HttpResponse(status, (text + "\n").encode(), "text/plain; charset=utf-8")


class HttpServerProtocol(asyncio.Protocol):
    def __init__(self, node: Node, handler: Handler, stats: HttpStats, *, max_header: int = 65536,
                 max_body: int = 1024 * 1024, request_timeout: float = 10.0, idle_timeout: float = 60.0,
                 too_large: Callable[[HttpRequest], HttpResponse] | None = None) -> None:
        self.node = node
        self.handler = handler
        self.stats = stats
        self.max_header = max_header
        self.max_body = max_body
        self.too_large = too_large
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.loopback = False
        # (request, keep-alive, its answer when already known: an oversize body's)
        self.pending: deque[tuple[HttpRequest, bool, HttpResponse | None]] = deque()
        self.busy: asyncio.Task[None] | None = None
        self.closing = False
        self.out: list[bytes] = []
        self.paused = False
        # slowloris: a request head must arrive within ``request_timeout`` of its first byte, and a
        # connection with nothing in progress (idle keep-alive, or a stalled body) lasts ``idle_timeout``
        self.request_timeout = request_timeout
        self.idle_timeout = idle_timeout
        self._timer: asyncio.TimerHandle | None = None
        self._in_request = False
        # the request being parsed
        self._url: list[bytes] = []
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._size = 0
        self._dropped = False  # the body is over max_body and being dropped (``too_large``)
        self._error: HttpResponse | None = None

    # ---- asyncio.Protocol -------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transport is not a subclass
        self.peer, _, self.loopback = accept(transport)
        self.stats.connections += 1
        self.stats.open.add(self)
        self._arm(self.idle_timeout)

    def _arm(self, delay: float | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if delay is not None and delay > 0 and not self.closing:
            self._timer = asyncio.get_running_loop().call_later(delay, self._timed_out)

    def _timed_out(self) -> None:
        self._timer = None
        if self.busy is not None or self.pending or self.closing:
            return  # a request is being answered: the client waits for us, not the other way round
        if self._in_request:
            self._fail(error(408, "request timeout"))
        else:
            self.closing = True
        self._write_out()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.stats.connections -= 1
        self.stats.open.discard(self)
        self._arm(None)
        if self.busy is not None:
            self.busy.cancel()
            self.busy = None
        self.pending.clear()

    def data_received(self, data: bytes) -> None:
        self.stats.bytes_in += len(data)
        if self.closing:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(error(400, "upgrade not supported"))
        except httptools.HttpParserError:
            self._fail(self._error or error(400, "malformed HTTP request"))
        if not self.closing:
            self._run()
        self._write_out()

    # ---- parser callbacks ---------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._in_request = True
        self._arm(self.request_timeout)
        self._url = []
        self._headers = {}
        self._body = []
        self._size = 0
        self._dropped = False

    def on_url(self, url: bytes) -> None:
        self._size += len(url)
        if self._size > self.max_header:
            self._error = error(414, "request line too long")
            raise httptools.HttpParserError("url too long")
        self._url.append(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._size += len(name) + len(value) + 4
        if self._size > self.max_header:
            self._error = error(431, "request header fields too large")
            raise httptools.HttpParserError("headers too large")
        k = name.decode("latin-1").lower()
        v = value.decode("latin-1")
        old = self._headers.get(k)
        self._headers[k] = v if old is None else f"{old},{v}"

    def on_headers_complete(self) -> None:
        cl = self._headers.get("content-length")
        if cl is not None and (not cl.isdigit() or int(cl) > self.max_body):
            if self.too_large is not None and cl.isdigit() and int(cl) <= DRAIN_LIMIT:
                self._dropped = True
                self._body = [b""]
            else:
                self._error = self._oversize()
                raise httptools.HttpParserError("body too large")
        self._arm(self.idle_timeout)

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > self.max_body + self.max_header:
            if self.too_large is None or self._size > DRAIN_LIMIT:
                self._error = self._oversize()
                raise httptools.HttpParserError("body too large")
            if not self._dropped:
                self._dropped = True
                self._body = [b"".join(self._body)[:DROPPED_HEAD]]
        if not self._dropped:
            self._body.append(body)
        elif len(self._body[0]) < DROPPED_HEAD:
            self._body[0] += body[:DROPPED_HEAD - len(self._body[0])]

    def _request(self, body: bytes) -> HttpRequest:
        """The request parsed so far (``too_large`` sees the first ``DROPPED_HEAD`` bytes of a dropped body)."""
        try:
            url = httptools.parse_url(b"".join(self._url))
            path, query = (url.path or b"/").decode("latin-1"), (url.query or b"").decode("latin-1")
        except httptools.HttpParserInvalidURLError:
            path, query = "/", ""
        return HttpRequest(self.parser.get_method().decode("latin-1"), path, query, self._headers, body, self.peer,
                           self.loopback)

    def _oversize(self) -> HttpResponse:
        if self.too_large is None:
            return error(413, "request body too large")
        return self.too_large(self._request(b"".join(self._body)[:DROPPED_HEAD]))

    def on_message_complete(self) -> None:
        self._in_request = False
        self._arm(None)
        try:
            url = httptools.parse_url(b"".join(self._url))
        except httptools.HttpParserInvalidURLError:
            self._error = error(400, "malformed request target")
            raise httptools.HttpParserError("bad url") from None
        req = HttpRequest(self.parser.get_method().decode("latin-1"), (url.path or b"/").decode("latin-1"),
                          (url.query or b"").decode("latin-1"), self._headers, b"".join(self._body), self.peer,
                          self.loopback)
        known = self.too_large(req) if self._dropped and self.too_large is not None else None
        self.pending.append((req, self.parser.should_keep_alive(), known))
        if len(self.pending) > MAX_PENDING and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    # ---- requests -----------------------------------------------------------------------------------
    def _run(self) -> None:
        """Answer queued requests in order until one has to wait."""
        while self.pending and self.busy is None and not self.closing:
            req, keep_alive, known = self.pending.popleft()
            self.stats.requests += 1
            try:
                res = self.handler(req) if known is None else known
            except Exception:
                log.exception("HTTP handler failed for %s %s", req.method, req.path)
                res = error(500, "internal error")
            if isinstance(res, HttpResponse):
                self._answer(res, keep_alive)
            else:
                self.busy = asyncio.get_running_loop().create_task(self._later(res, keep_alive))
        self.node.flush_output()
        if self.busy is None and not self.pending and not self._in_request:
            self._arm(self.idle_timeout)
        if self.paused and len(self.pending) < MAX_PENDING // 2 and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()

    async def _later(self, res: Awaitable[HttpResponse], keep_alive: bool) -> None:
        try:
            answer = await res
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("HTTP handler failed")
            answer = error(500, "internal error")
        self.busy = None
        if self.closing:
            self._write_out()  # a bad request arrived behind this one: close now that nothing waits
            return
        self._answer(answer, keep_alive)
        self._run()
        self._write_out()

    def _answer(self, res: HttpResponse, keep_alive: bool) -> None:
        if res.status >= 400:
            self.stats.bad_requests += 1
        self.out.append(render(res, keep_alive))
        if not keep_alive:
            self.closing = True
            self.pending.clear()

    def _fail(self, res: HttpResponse) -> None:
        self.stats.bad_requests += 1
        self.pending.clear()
        if self.busy is None:  # answers must stay in order: a waiting request gets no reply
            self.out.append(render(res, False))
        self.closing = True

    def _write_out(self) -> None:
        t = self.transport
        if t is None:
            return
        if self.out:
            out, self.out = self.out, []
            self.stats.bytes_out += sum(len(b) for b in out)
            t.writelines(out)
        if self.closing and self.busy is None and not t.is_closing():
            t.close()
