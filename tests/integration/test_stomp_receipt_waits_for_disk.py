"""A STOMP RECEIPT for a persistent SEND is sent only once the message is on disk (real broker process,
slow group commit)."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator

import pytest

from brokerproc import BrokerProcess, start_broker, stop_broker

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def slow_sync_broker() -> Iterator[BrokerProcess]:
    """At most one group commit a second: right after one, the next confirm visibly waits for the disk."""
    b = start_broker(env={"HAREMQ_FSYNC": "interval", "HAREMQ_FSYNC_INTERVAL": "1.0"})
    yield b
    stop_broker(b)


def test_stomp_receipt_of_persistent_send_waits_for_the_disk(slow_sync_broker: BrokerProcess) -> None:
    q = f"stomp-durable-{uuid.uuid4().hex[:8]}"
    with socket.create_connection(("127.0.0.1", slow_sync_broker.stomp_port), timeout=5) as s:
        s.sendall(b"CONNECT\naccept-version:1.2\nhost:/\nlogin:guest\npasscode:guest\n\n\x00")
        buf = b""
        while b"\x00" not in buf:
            buf += s.recv(4096)
        assert buf.startswith(b"CONNECTED"), buf
        s.sendall(f"SEND\ndestination:/queue/{q}\npersistent:true\nreceipt:r0\n\nprimer\x00".encode())
        buf = b""
        while b"\x00" not in buf:
            buf += s.recv(4096)
        assert b"receipt-id:r0" in buf, buf  # synced at once: the next group commit is a full interval away
        started = time.monotonic()
        s.sendall(f"SEND\ndestination:/queue/{q}\npersistent:true\nreceipt:r1\n\nhello\x00".encode())
        buf = b""
        while b"\x00" not in buf:
            buf += s.recv(4096)
        elapsed = time.monotonic() - started
        assert buf.startswith(b"RECEIPT") and b"receipt-id:r1" in buf, buf
        # fsync interval is 1 s: a receipt much sooner was sent before the message was durable
        assert elapsed > 0.5, elapsed
