"""The HTTP listeners (SQS, management) close half-sent and idle connections (slowloris), against a real
broker process."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from brokerproc import BrokerProcess, start_broker, stop_broker


@pytest.fixture(scope="module")
def hb() -> Iterator[BrokerProcess]:
    b = start_broker(env={"HAREMQ_HANDSHAKE_TIMEOUT": "0.5", "HAREMQ_HTTP_IDLE_TIMEOUT": "2"})
    yield b
    assert stop_broker(b) == 0, b.log()


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        while True:
            if sock.recv(4096) == b"":
                return True
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


@pytest.mark.parametrize("listener", ["sqs", "http"])
def test_http_half_sent_or_idle_request_does_not_hold_the_connection(hb: BrokerProcess, listener: str) -> None:
    """Slowloris: a peer that opens a connection and sends half a request (or nothing) held the
    connection and its state forever; the HTTP listeners had no timeout at all."""
    port = hb.ports[listener]
    head = socket.create_connection(("127.0.0.1", port))
    head.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nX-a: b\r\n")  # classic slowloris: the head never ends
    half = socket.create_connection(("127.0.0.1", port))
    half.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    idle = socket.create_connection(("127.0.0.1", port))
    try:
        assert _closed_within(head, 3.0), "a half-sent request head kept the connection open"
        assert _closed_within(half, 5.0), "a half-sent request kept the connection open"
        assert _closed_within(idle, 10.0), "an idle connection was kept open"
    finally:
        head.close()
        half.close()
        idle.close()
    # a normal keep-alive exchange still works
    s = socket.create_connection(("127.0.0.1", hb.management_port))
    try:
        s.sendall(b"GET /api/overview HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(5)
        assert s.recv(4096).startswith(b"HTTP/1.1 401")
    finally:
        s.close()
