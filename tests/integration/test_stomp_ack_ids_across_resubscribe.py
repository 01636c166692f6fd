"""A STOMP ack id names one delivery of one subscription: a late ACK after re-subscribing with the same id
acknowledges nothing new (real broker process)."""

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
            s.sendall(b"SEND\ndestination:/queue/resub-acks\n\n" + body + b"\x00")
        s.sendall(b"SUBSCRIBE\nid:1\ndestination:/queue/resub-acks\nack:client-individual\nprefetch-count:1\n\n\x00")
        cmd, h, body = _frame(s)
        assert cmd == "MESSAGE" and body == b"first"
        old_ack = h["ack"]
        # the client acks "first" late, after it re-subscribed with the same id
        s.sendall(b"UNSUBSCRIBE\nid:1\n\n\x00")
        s.sendall(b"SUBSCRIBE\nid:1\ndestination:/queue/resub-acks\nack:client-individual\nprefetch-count:1\n\n\x00")
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
        s.sendall(b"SUBSCRIBE\nid:9\ndestination:/queue/resub-acks\nack:auto\n\n\x00")
        got = {_frame(s)[2], _frame(s)[2]}
        assert got == {b"first", b"second"}
    finally:
        s.close()
