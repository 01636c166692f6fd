"""Deletes of durable definitions go check -> commit -> apply -> answer: while the metadata store's
disk is held (the SlowDisk of test_definitions_hold), the object or binding still works for everyone
(a crash now would keep it); once the delete is durable it is gone; a failed delete keeps it and the
client gets an error."""

from __future__ import annotations

import threading
import time
import urllib.error
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import boto3
import pika
import pika.exceptions
import pytest
from botocore.config import Config
from test_definitions_hold import BrokenDisk, SlowDisk, http

from haremq.testing.server import BrokerThread

Slow = tuple[BrokerThread, SlowDisk]



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


def test_a_durable_queue_unbind_routes_until_its_delete_is_durable(slow: Slow) -> None:
    bt, disk = slow
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


def test_a_durable_exchange_unbind_routes_until_its_delete_is_durable(slow: Slow) -> None:
    bt, disk = slow
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


def test_a_management_binding_delete_routes_until_durable(slow: Slow) -> None:
    bt, disk = slow
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


def sqs_client(bt: BrokerThread) -> Any:
    return boto3.client("sqs", endpoint_url=bt.sqs_endpoint_url, region_name="us-east-1",
                        aws_access_key_id="guest", aws_secret_access_key="guest",
                        config=Config(retries={"max_attempts": 1}))


def queue_exists(sqs: Any, name: str) -> bool:
    try:
        sqs.get_queue_url(QueueName=name)
    except sqs.exceptions.QueueDoesNotExist:
        return False
    return True


def test_sqs_delete_queue_keeps_the_queue_until_its_delete_is_durable(slow: Slow) -> None:
    bt, disk = slow
    sqs = sqs_client(bt)
    disk.gate.set()
    url = sqs.create_queue(QueueName="sqs-del")["QueueUrl"]
    disk.gate.clear()
    with ThreadPoolExecutor(1) as pool:
        fut = in_thread(pool, lambda: sqs_client(bt).delete_queue(QueueUrl=url))
        assert queue_exists(sqs, "sqs-del")  # a crash now would keep it: so it is still there
        assert sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        disk.gate.set()
        fut.result(10)
    assert not queue_exists(sqs, "sqs-del")
    assert bt.node is not None
    assert "sqs-del" not in [q["name"] for q in bt.node.broker.metadata.load()["queues"]]  # type: ignore[attr-defined]


def test_a_failed_sqs_delete_queue_keeps_the_queue_and_is_a_server_error() -> None:
    with BrokerThread() as bt:
        assert bt.node is not None
        sqs = sqs_client(bt)
        url = sqs.create_queue(QueueName="sqs-kept")["QueueUrl"]
        metadata: Any = bt.node.broker.metadata
        metadata.db = BrokenDisk(metadata.db)
        with pytest.raises(sqs.exceptions.ClientError) as err:
            sqs.delete_queue(QueueUrl=url)
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] >= 500
        assert queue_exists(sqs, "sqs-kept")


def test_a_management_exchange_to_exchange_bind_routes_only_once_durable(slow: Slow) -> None:
    bt, disk = slow
    conn = connect(bt)
    ch = conn.channel()
    disk.gate.set()
    ch.exchange_declare("mb-src", "fanout", durable=True)
    ch.exchange_declare("mb-dst", "fanout", durable=True)
    disk.gate.clear()
    port = bt.management_port
    with ThreadPoolExecutor(1) as pool:
        fut = in_thread(pool, lambda: http(port, "POST", "/api/bindings/%2F/e/mb-src/e/mb-dst", {"routing_key": "k"}))
        assert not bound(bt, "mb-src", "mb-dst")  # a crash now would lose it: so it does not route yet
        disk.gate.set()
        assert fut.result(10) == 201
    assert bound(bt, "mb-src", "mb-dst")
    assert stored_bindings(bt) == [("mb-src", "mb-dst")]
    conn.close()


def test_a_failed_management_exchange_to_exchange_bind_is_a_server_error_and_binds_nothing() -> None:
    with BrokerThread() as bt:
        assert bt.node is not None
        conn = connect(bt)
        ch = conn.channel()
        ch.exchange_declare("mbf-src", "fanout", durable=True)
        ch.exchange_declare("mbf-dst", "fanout", durable=True)
        metadata: Any = bt.node.broker.metadata
        metadata.db = BrokenDisk(metadata.db)
        with pytest.raises(urllib.error.HTTPError) as info:
            http(bt.management_port, "POST", "/api/bindings/%2F/e/mbf-src/e/mbf-dst", {"routing_key": "k"})
        assert info.value.code >= 500
        assert not bound(bt, "mbf-src", "mbf-dst")


def test_a_vhost_delete_keeps_the_vhost_until_durable_then_removes_everything_in_one_commit(slow: Slow) -> None:
    bt, disk = slow
    assert bt.node is not None
    port = bt.management_port
    disk.gate.set()
    assert http(port, "PUT", "/api/vhosts/gone-vh") == 201
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", bt.port, virtual_host="gone-vh"))
    ch = conn.channel()
    ch.exchange_declare("vh-x", "fanout", durable=True)
    ch.queue_declare("vh-q", durable=True)
    ch.queue_bind("vh-q", "vh-x")
    conn.close()
    revision = bt.node.broker.metadata.revision
    disk.gate.clear()
    with ThreadPoolExecutor(1) as pool:
        fut = in_thread(pool, lambda: http(port, "DELETE", "/api/vhosts/gone-vh"))
        assert http(port, "GET", "/api/queues/gone-vh/vh-q") == 200  # a crash now would keep it all
        disk.gate.set()
        assert fut.result(10) == 204
    with pytest.raises(urllib.error.HTTPError) as info:
        http(port, "GET", "/api/vhosts/gone-vh")
    assert info.value.code == 404
    assert bt.node.broker.metadata.revision == revision + 1  # the vhost's delete drops everything in it
    kept: Any = bt.node.broker.metadata.load()
    assert [q["name"] for q in kept["queues"] if q["vhost"] == "gone-vh"] == []
    assert [b for b in kept["bindings"] if b["vhost"] == "gone-vh"] == []


def test_a_failed_vhost_delete_keeps_the_vhost_and_is_a_server_error() -> None:
    with BrokerThread() as bt:
        assert bt.node is not None
        port = bt.management_port
        assert http(port, "PUT", "/api/vhosts/kept-vh") == 201
        assert http(port, "PUT", "/api/queues/kept-vh/kept-q", {"durable": True}) == 201
        metadata: Any = bt.node.broker.metadata
        metadata.db = BrokenDisk(metadata.db)
        with pytest.raises(urllib.error.HTTPError) as info:
            http(port, "DELETE", "/api/vhosts/kept-vh")
        assert info.value.code >= 500
        assert http(port, "GET", "/api/queues/kept-vh/kept-q") == 200


def test_a_durable_auto_delete_queue_stays_until_its_delete_is_durable(slow: Slow) -> None:
    bt, disk = slow
    consumer, other = connect(bt), connect(bt)
    cch = consumer.channel()
    disk.gate.set()
    cch.queue_declare("ad-q", durable=True, auto_delete=True)
    tag = cch.basic_consume("ad-q", lambda *a: None)
    disk.gate.clear()
    with ThreadPoolExecutor(1) as pool:
        fut = in_thread(pool, lambda: cch.basic_cancel(tag))  # the last consumer goes: the queue is deleted
        # a crash now would keep the queue: so it is still there for everyone
        assert other.channel().queue_declare("ad-q", passive=True).method.queue == "ad-q"
        disk.gate.set()
        fut.result(10)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        other.channel().queue_declare("ad-q", passive=True)
    assert info.value.reply_code == 404
    assert bt.node is not None
    assert "ad-q" not in [q["name"] for q in bt.node.broker.metadata.load()["queues"]]  # type: ignore[attr-defined]
    consumer.close()
    other.close()


class HeldExchangeDeletes:
    """The metadata store's disk, where only exchange deletes wait for ``gate``."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.gate = threading.Event()

    def execute(self, *args: Any) -> Any:
        if str(args[0]).startswith("DELETE FROM exchanges"):
            self.gate.wait(10)
        return self.real.execute(*args)

    def close(self) -> None:
        self.real.close()


def test_a_durable_auto_delete_exchange_stays_until_its_delete_is_durable() -> None:
    with BrokerThread() as bt:
        assert bt.node is not None
        metadata: Any = bt.node.broker.metadata
        disk = HeldExchangeDeletes(metadata.db)
        metadata.db = disk
        try:
            conn = connect(bt)
            ch = conn.channel()
            ch.exchange_declare("ad-x", "fanout", durable=True, auto_delete=True)
            ch.queue_declare("ad-xq", durable=True)
            ch.queue_bind("ad-xq", "ad-x")
            ch.queue_unbind("ad-xq", "ad-x")  # its last binding: the exchange's delete is submitted
            vh = bt.node.broker.vhosts["/"]
            time.sleep(0.3)
            assert "ad-x" in vh.exchanges  # a crash now would keep it: so it is still there
            assert ch.exchange_declare("ad-x", passive=True)
            disk.gate.set()
            deadline = time.monotonic() + 5
            while "ad-x" in vh.exchanges and time.monotonic() < deadline:
                time.sleep(0.02)
            assert "ad-x" not in vh.exchanges
            assert "ad-x" not in [e["name"] for e in metadata.load()["exchanges"]]
            conn.close()
        finally:
            disk.gate.set()


def test_a_failed_auto_delete_commit_keeps_the_queue() -> None:
    with BrokerThread() as bt:
        assert bt.node is not None
        conn = connect(bt)
        ch = conn.channel()
        ch.queue_declare("adf-q", durable=True, auto_delete=True)
        tag = ch.basic_consume("adf-q", lambda *a: None)
        metadata: Any = bt.node.broker.metadata
        metadata.db = BrokenDisk(metadata.db)
        with pytest.raises(pika.exceptions.AMQPConnectionError):
            ch.basic_cancel(tag)  # no cancel-ok: the delete it caused is not durable
        assert "adf-q" in bt.node.broker.vhosts["/"].queues
