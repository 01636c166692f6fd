"""Answers that promise a message was kept wait for the commit of every log position their command
wrote (server/durability.py), whatever protocol carries them."""

from __future__ import annotations

import asyncio
import os
import queue
import threading
import uuid
from typing import Any

import pika
import pytest
from stomp_helpers import connect


def _gated_fsync(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, threading.Event]:
    """os.fsync blocks while ``closed`` is set, until ``opened`` is set."""
    real = os.fsync
    closed, opened = threading.Event(), threading.Event()

    def fsync(fd: int) -> None:
        if closed.is_set():
            opened.wait(30)
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return closed, opened


def test_stomp_commit_receipt_waits_for_a_transactions_receiptless_persistent_send(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The COMMIT's RECEIPT covers every SEND of the transaction, also one with no receipt of its own and
    followed by a frame that writes nothing (a transient SEND)."""
    from haremq.testing import running_broker

    closed, opened = _gated_fsync(monkeypatch)
    dest = f"/queue/tx-{uuid.uuid4().hex[:8]}"
    got: queue.Queue[Any] = queue.Queue()

    def client(port: int) -> None:
        c, ls = connect(port)
        c.send(dest, "declare", headers={"persistent": "true"}, receipt="r0")
        got.put(ls.receipt(10))
        closed.set()  # from now on the group commit cannot finish
        c.begin("t1")
        c.send(dest, "kept", headers={"persistent": "true", "transaction": "t1"})
        c.send(dest, "transient", headers={"transaction": "t1"})
        c.commit("t1", receipt="c1")
        try:
            got.put(ls.receipt(1.0))
        except queue.Empty:
            got.put("no receipt while the fsync waits")
        opened.set()
        got.put(ls.receipt(10))
        c.disconnect()

    async def main() -> None:
        async with running_broker() as node:
            assert node.stomp_port is not None
            await asyncio.to_thread(client, node.stomp_port)

    try:
        asyncio.run(asyncio.wait_for(main(), 60))
    finally:
        opened.set()
    assert [got.get_nowait() for _ in range(3)] == ["r0", "no receipt while the fsync waits", "c1"]


def test_amqp_confirm_of_a_fanout_publish_waits_for_every_durable_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    """A persistent message routed to two durable queues is confirmed once both logs committed; with the
    group commit stuck, no confirm comes."""
    from haremq.testing import running_broker

    closed, opened = _gated_fsync(monkeypatch)
    got: queue.Queue[Any] = queue.Queue()

    def client(port: int) -> None:
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
        ch = conn.channel()
        ex = f"fan-{uuid.uuid4().hex[:8]}"
        ch.exchange_declare(ex, "fanout", durable=True)
        for i in range(2):
            q = ch.queue_declare(f"{ex}-{i}", durable=True).method.queue
            ch.queue_bind(q, ex)
        ch.confirm_delivery()
        ch.basic_publish(ex, "", b"warm-up", pika.BasicProperties(delivery_mode=2))  # confirmed: returns
        closed.set()
        done = threading.Event()

        def release_later() -> None:
            got.put("confirmed early" if done.wait(1.0) else "held while the fsync waits")
            opened.set()

        t = threading.Thread(target=release_later)
        t.start()
        ch.basic_publish(ex, "", b"kept", pika.BasicProperties(delivery_mode=2))  # blocks until confirmed
        done.set()
        t.join()
        got.put("confirmed")
        conn.close()

    async def main() -> None:
        async with running_broker() as node:
            await asyncio.to_thread(client, node.amqp_port)

    try:
        asyncio.run(asyncio.wait_for(main(), 60))
    finally:
        opened.set()
    assert [got.get_nowait() for _ in range(2)] == ["held while the fsync waits", "confirmed"]
