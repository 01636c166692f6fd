"""The HTTP server closes a connection it can no longer serve (a bad request behind a long poll, a
half-sent request past its timeout), with a fake transport."""

from __future__ import annotations

import asyncio
from typing import Any

from haremq.protocol.http import HttpRequest, HttpResponse
from haremq.server.http.server import HttpServerProtocol, HttpStats


class FakeTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else None

    def writelines(self, data: list[bytes]) -> None:
        self.written.extend(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


class FakeNode:
    def flush_output(self) -> None: ...


def test_bad_request_behind_a_long_poll_closes_the_connection() -> None:
    """A malformed request pipelined behind a parked (long-poll) request: once the long poll
    finished, the server neither answered nor closed, so the socket stayed open until the peer left."""

    async def run() -> FakeTransport:
        done: asyncio.Future[HttpResponse] = asyncio.get_running_loop().create_future()

        def handler(req: HttpRequest) -> Any:
            return done

        p = HttpServerProtocol(FakeNode(), handler, HttpStats())  # type: ignore[arg-type]
        t = FakeTransport()
        p.connection_made(t)  # type: ignore[arg-type]
        p.data_received(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        p.data_received(b"GARBAGE \x01\r\n\r\n")
        assert not t.closed  # the long poll is still waiting: its answer must come first
        done.set_result(HttpResponse(200, b"{}"))
        for _ in range(5):
            await asyncio.sleep(0)
        return t

    t = asyncio.run(run())
    assert t.closed


def test_half_sent_request_times_out() -> None:
    async def run() -> FakeTransport:
        p = HttpServerProtocol(FakeNode(), lambda req: HttpResponse(200), HttpStats(),  # type: ignore[arg-type]
                               request_timeout=0.05, idle_timeout=0.2)
        t = FakeTransport()
        p.connection_made(t)  # type: ignore[arg-type]
        p.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n")
        await asyncio.sleep(0.1)
        return t

    t = asyncio.run(run())
    assert t.closed and t.written and t.written[0].startswith(b"HTTP/1.1 408")
