"""Defects found reviewing the HTTP front ends and STOMP, against a real broker process."""

from __future__ import annotations

import base64
import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from brokerproc import BrokerProcess, start_broker, stop_broker

ADMIN = "Basic " + base64.b64encode(b"guest:guest").decode()


@pytest.fixture(scope="module")
def hb() -> Iterator[BrokerProcess]:
    b = start_broker(env={"HAREMQ_HANDSHAKE_TIMEOUT": "0.5", "HAREMQ_HTTP_IDLE_TIMEOUT": "2"})
    yield b
    assert stop_broker(b) == 0, b.log()


def call(b: BrokerProcess, method: str, path: str, body: Any = None, auth: str = ADMIN) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(b.management_url + path, data=data, method=method,
                                 headers={"Content-Type": "application/json", "Authorization": auth})
    try:
        with urllib.request.urlopen(req, timeout=10) as res:
            raw, status = res.read(), res.status
    except urllib.error.HTTPError as e:
        raw, status = e.read(), e.code
    return status, json.loads(raw) if raw else None


def test_monitoring_user_cannot_read_password_hashes_or_foreign_messages(hb: BrokerProcess) -> None:
    """A ``monitoring`` user with no permission anywhere could read every user's password hash
    (/api/users, /api/definitions) and the payloads of messages in vhosts it cannot access.
    RabbitMQ: users, permissions and definitions are administrator-only; getting messages needs
    read access to the queue."""
    assert call(hb, "PUT", "/api/users/mon", {"password": "pw", "tags": "monitoring"})[0] in (201, 204)
    assert call(hb, "PUT", "/api/vhosts/secret")[0] in (201, 204)
    assert call(hb, "PUT", "/api/queues/secret/payroll", {"durable": False})[0] in (201, 204)
    assert call(hb, "POST", "/api/bindings/secret/e/amq.direct/q/payroll", {"routing_key": "payroll"})[0] == 201
    st, res = call(hb, "POST", "/api/exchanges/secret/amq.direct/publish",
                   {"routing_key": "payroll", "payload": "salary: 1M", "properties": {}})
    assert st == 200 and res == {"routed": True}
    mon = "Basic " + base64.b64encode(b"mon:pw").decode()
    assert call(hb, "GET", "/api/overview", auth=mon)[0] == 200  # monitoring may look at totals
    for path in ("/api/users", "/api/users/guest", "/api/definitions", "/api/permissions",
                 "/api/permissions/%2F/guest"):
        st, res = call(hb, "GET", path, auth=mon)
        assert st == 403, (path, res)
    st, res = call(hb, "POST", "/api/queues/secret/payroll/get", {"count": 1}, auth=mon)
    assert st == 403, res
    # the administrator (who has access to the vhost) still can
    assert call(hb, "PUT", "/api/permissions/secret/guest", {"configure": ".*", "write": ".*", "read": ".*"})[0] \
        in (201, 204)
    st, res = call(hb, "POST", "/api/queues/secret/payroll/get", {"count": 1})
    assert st == 200 and res[0]["payload"] == "salary: 1M"


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


def _stomp(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(5)
    s.sendall(b"CONNECT\naccept-version:1.2\nhost:/\nlogin:guest\npasscode:guest\n\n\x00")
    assert _frame(s)[0] == "CONNECTED"
    return s


_BUF: dict[int, bytes] = {}


def _frame(s: socket.socket) -> tuple[str, dict[str, str], bytes]:
    buf = _BUF.get(s.fileno(), b"")
    while b"\x00" not in buf:
        chunk = s.recv(65536)
        assert chunk, "connection closed"
        buf += chunk
    raw, _, rest = buf.partition(b"\x00")
    _BUF[s.fileno()] = rest.lstrip(b"\n")
    head, _, body = raw.lstrip(b"\n").partition(b"\n\n")
    lines = head.decode().split("\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers.setdefault(k, v)
    return lines[0], headers, body


def test_stomp_late_ack_after_resubscribe_with_same_id_acks_nothing_new(hb: BrokerProcess) -> None:
    """Each subscription numbered its deliveries from 1 and the ack id was ``T_<id>@@<n>``: after
    UNSUBSCRIBE + SUBSCRIBE with the same id, a late ACK meant for the old subscription acknowledged
    the new subscription's delivery n, a message the client never processed (lost)."""
    s = _stomp(hb.stomp_port)
    try:
        for body in (b"first", b"second"):
            s.sendall(b"SEND\ndestination:/queue/review-resub\n\n" + body + b"\x00")
        s.sendall(b"SUBSCRIBE\nid:1\ndestination:/queue/review-resub\nack:client-individual\nprefetch-count:1\n\n\x00")
        cmd, h, body = _frame(s)
        assert cmd == "MESSAGE" and body == b"first"
        old_ack = h["ack"]
        # the client acks "first" late, after it re-subscribed with the same id
        s.sendall(b"UNSUBSCRIBE\nid:1\n\n\x00")
        s.sendall(b"SUBSCRIBE\nid:1\ndestination:/queue/review-resub\nack:client-individual\nprefetch-count:1\n\n\x00")
        cmd, h, body = _frame(s)
        assert cmd == "MESSAGE" and body == b"first"  # requeued by the UNSUBSCRIBE
        new_ack = h["ack"]
        assert new_ack != old_ack
        s.sendall(b"ACK\nid:" + old_ack.encode() + b"\nreceipt:r1\n\n\x00")
        cmd, h, _ = _frame(s)
        assert cmd == "RECEIPT", (cmd, h)
        s.sendall(b"DISCONNECT\nreceipt:bye\n\n\x00")
        assert _frame(s)[0] == "RECEIPT"
    finally:
        s.close()
    # "first" was never acked for the subscription that holds it: it must still be in the queue
    s = _stomp(hb.stomp_port)
    try:
        s.sendall(b"SUBSCRIBE\nid:9\ndestination:/queue/review-resub\nack:auto\n\n\x00")
        got = {_frame(s)[2], _frame(s)[2]}
        assert got == {b"first", b"second"}
    finally:
        s.close()
