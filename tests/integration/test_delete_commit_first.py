"""Deletes of durable definitions go check -> commit -> apply -> answer: while the metadata store's
disk is held (the SlowDisk of test_definitions_hold), the object or binding still works for everyone
(a crash now would keep it); once the delete is durable it is gone; a failed delete keeps it and the
client gets an error."""

from __future__ import annotations

import time
import urllib.error
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pika
import pika.exceptions
import pytest
from test_definitions_hold import BrokenDisk, SlowDisk, http

from haremq.testing.server import BrokerThread

Slow = tuple[BrokerThread, SlowDisk]


@pytest.fixture
def slowed() -> Iterator[Slow]:
    with BrokerThread() as bt:
        assert bt.node is not None
        metadata: Any = bt.node.broker.metadata
        disk = SlowDisk(metadata.db)
        metadata.db = disk
        try:
            yield bt, disk
        finally:
            disk.gate.set()


def connect(bt: BrokerThread) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", bt.port))


def in_thread(pool: ThreadPoolExecutor, call: Callable[[], Any]) -> Future[Any]:
    fut = pool.submit(call)
    time.sleep(0.4)
    assert not fut.done(), "answered before the delete was durable"
    return fut


def stored_bindings(bt: BrokerThread) -> list[tuple[str, str]]:
    assert bt.node is not None
    return [(b["source"], b["destination"]) for b in bt.node.broker.metadata.load()["bindings"]]  # type: ignore[attr-defined]


def bound(bt: BrokerThread, source: str, dest: str) -> bool:
    assert bt.node is not None
    return any(d.name == dest for d, _, _ in bt.node.broker.vhosts["/"].exchanges[source].bindings)


def durable_pair(bt: BrokerThread, disk: SlowDisk, ch: Any, x: str, q: str) -> None:
    disk.gate.set()
    ch.exchange_declare(x, "fanout", durable=True)
    ch.queue_declare(q, durable=True)
    ch.queue_bind(q, x)
    disk.gate.clear()


def test_a_durable_queue_unbind_routes_until_its_delete_is_durable(slowed: Slow) -> None:
    bt, disk = slowed
    unbinder, other = connect(bt), connect(bt)
    uch, och = unbinder.channel(), other.channel()
    och.confirm_delivery()
    durable_pair(bt, disk, uch, "unb-x", "unb-q")
    with ThreadPoolExecutor(1) as pool:
        fut = in_thread(pool, lambda: uch.queue_unbind("unb-q", "unb-x"))
        och.basic_publish("unb-x", "", b"still routed", mandatory=True)  # a crash now would keep the binding
        disk.gate.set()
        fut.result(10)
    with pytest.raises(pika.exceptions.UnroutableError):
        och.basic_publish("unb-x", "", b"gone", mandatory=True)
    assert och.queue_declare("unb-q", passive=True).method.message_count == 1
    assert stored_bindings(bt) == []
    unbinder.close()
    other.close()


def test_a_durable_exchange_unbind_routes_until_its_delete_is_durable(slowed: Slow) -> None:
    bt, disk = slowed
    unbinder = connect(bt)
    uch = unbinder.channel()
    disk.gate.set()
    uch.exchange_declare("e2e-src", "fanout", durable=True)
    uch.exchange_declare("e2e-dst", "fanout", durable=True)
    uch.exchange_bind("e2e-dst", "e2e-src")
    disk.gate.clear()
    with ThreadPoolExecutor(1) as pool:
        fut = in_thread(pool, lambda: uch.exchange_unbind("e2e-dst", "e2e-src"))
        assert bound(bt, "e2e-src", "e2e-dst")
        disk.gate.set()
        fut.result(10)
    assert not bound(bt, "e2e-src", "e2e-dst")
    assert stored_bindings(bt) == []
    unbinder.close()


def test_a_management_binding_delete_routes_until_durable(slowed: Slow) -> None:
    bt, disk = slowed
    conn = connect(bt)
    durable_pair(bt, disk, conn.channel(), "mub-x", "mub-q")
    port = bt.management_port
    with ThreadPoolExecutor(1) as pool:
        fut = in_thread(pool, lambda: http(port, "DELETE", "/api/bindings/%2F/e/mub-x/q/mub-q/mub-q"))
        assert bound(bt, "mub-x", "mub-q")
        disk.gate.set()
        assert fut.result(10) == 204
    assert not bound(bt, "mub-x", "mub-q")
    assert stored_bindings(bt) == []
    conn.close()


def test_a_failed_unbind_commit_keeps_the_binding_and_is_refused() -> None:
    with BrokerThread() as bt:
        assert bt.node is not None
        conn = connect(bt)
        ch = conn.channel()
        ch.exchange_declare("fail-x", "fanout", durable=True)
        ch.queue_declare("fail-q", durable=True)
        ch.queue_bind("fail-q", "fail-x")
        metadata: Any = bt.node.broker.metadata
        metadata.db = BrokenDisk(metadata.db)
        with pytest.raises(pika.exceptions.AMQPConnectionError):
            ch.queue_unbind("fail-q", "fail-x")  # no unbind-ok: the connection is dropped
        assert bound(bt, "fail-x", "fail-q")
        with pytest.raises(urllib.error.HTTPError) as info:
            http(bt.management_port, "DELETE", "/api/bindings/%2F/e/fail-x/q/fail-q/fail-q")
        assert info.value.code >= 500
        assert bound(bt, "fail-x", "fail-q")
