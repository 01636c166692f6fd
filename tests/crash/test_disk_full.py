"""Disk full: publishes that cannot be written are refused (nack); nothing confirmed is lost, the
broker keeps serving, and publishing works again once space returns. Needs root for a tiny tmpfs."""

from __future__ import annotations

import os

import pika
import pika.exceptions
import pytest

from brokerproc import start_broker, stop_broker


def test_disk_full_refuses_publishes_and_recovers(small_fs: str, monkeypatch: pytest.MonkeyPatch) -> None:
    data_dir = os.path.join(small_fs, "data")
    monkeypatch.setenv("HAREMQ_DISK_FREE_LIMIT", str(1_000_000))
    b = start_broker(data_dir=data_dir)
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port))
    alarms: list[str] = []
    conn.add_on_connection_blocked_callback(lambda _c, m: alarms.append("blocked"))
    conn.add_on_connection_unblocked_callback(lambda _c, m: alarms.append("unblocked"))
    ch = conn.channel()
    ch.queue_declare("full", durable=True)
    ch.confirm_delivery()
    body = b"x" * 8192
    confirmed = 0
    with pytest.raises(pika.exceptions.NackError):
        for _ in range(5000):  # 40 MiB: far more than fits
            ch.basic_publish("", "full", body, pika.BasicProperties(delivery_mode=2))
            confirmed += 1
    assert confirmed > 0
    assert b.alive()
    conn.process_data_events(time_limit=1.5)
    assert alarms == ["blocked"]  # connection.blocked: below disk_free_limit
    # the publishing connection is no longer read (as RabbitMQ); a connection that only consumes is:
    # consume and ack everything, the emptied segments are deleted
    drain = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port))
    dch = drain.channel()
    got = 0
    while True:
        method, _props, _body = dch.basic_get("full", auto_ack=True)
        if method is None:
            break
        got += 1
    assert got == confirmed
    drain.close()
    conn.process_data_events(time_limit=1.5)
    assert alarms == ["blocked", "unblocked"]  # space came back
    ch2 = conn.channel()
    ch2.confirm_delivery()
    ch2.basic_publish("", "full", b"after", pika.BasicProperties(delivery_mode=2))  # confirmed again
    conn.close()
    stop_broker(b)
    b = start_broker(data_dir=data_dir)
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port))
    ch = conn.channel()
    assert ch.basic_get("full", auto_ack=True)[2] == b"after"
    conn.close()
    stop_broker(b)
