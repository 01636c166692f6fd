"""A durable exchange or queue exists for nobody before its definition is durable: declares go
check -> commit (the metadata store's writer thread) -> apply -> answer. While the disk is slow
(the SlowDisk of test_definitions_hold), other clients see no such object yet; the declaring
connection's next commands wait for it; racing declares and deletes are ordered by the store."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import boto3
import pika
import pika.exceptions
import pytest
from amqp_raw import RawAmqp
from pamqp import body as pbody
from pamqp import commands as C
from pamqp import frame as pframe
from pamqp import header as pheader
from test_definitions_hold import BrokenDisk, SlowDisk, http

from haremq.protocol.sqs.attributes import SQS_ARGUMENT
from haremq.testing.server import BrokerThread

Slow = tuple[BrokerThread, SlowDisk]



def connect(bt: BrokerThread) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", bt.port))


def in_thread(pool: ThreadPoolExecutor, call: Callable[[], Any]) -> Future[Any]:
    fut = pool.submit(call)
    time.sleep(0.4)
    assert not fut.done(), "answered before the definition was durable"
    return fut


def stored(bt: BrokerThread, kind: str) -> list[str]:
    assert bt.node is not None
    return [d["name"] for d in bt.node.broker.metadata.load()[kind]]  # type: ignore[attr-defined]


def test_another_connection_cannot_route_to_a_queue_whose_declare_is_not_durable(slow: Slow) -> None:
    bt, disk = slow
    declarer, other = connect(bt), connect(bt)
    dch, och = declarer.channel(), other.channel()
    och.confirm_delivery()
    with ThreadPoolExecutor(1) as pool:
        fut = in_thread(pool, lambda: dch.queue_declare("not-yet-q", durable=True))
        with pytest.raises(pika.exceptions.UnroutableError):
            och.basic_publish("", "not-yet-q", b"early", mandatory=True)  # returned: no such queue yet
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
            other.channel().queue_declare("not-yet-q", passive=True)
        assert info.value.reply_code == 404
        disk.gate.set()
        fut.result(10)
    och.basic_publish("", "not-yet-q", b"late", mandatory=True)
    assert och.queue_declare("not-yet-q", passive=True).method.message_count == 1
    declarer.close()
    other.close()


def test_another_connection_cannot_bind_to_an_exchange_whose_declare_is_not_durable(slow: Slow) -> None:
    bt, disk = slow
    declarer, other = connect(bt), connect(bt)
    dch = declarer.channel()
    q = other.channel().queue_declare("", exclusive=True).method.queue
    with ThreadPoolExecutor(1) as pool:
        fut = in_thread(pool, lambda: dch.exchange_declare("not-yet-x", "fanout", durable=True))
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
            other.channel().queue_bind(q, "not-yet-x")
        assert info.value.reply_code == 404
        disk.gate.set()
        fut.result(10)
    other.channel().queue_bind(q, "not-yet-x")
    assert "not-yet-x" in stored(bt, "exchanges")
    declarer.close()
    other.close()


def test_a_publish_pipelined_after_a_declare_on_the_same_channel_reaches_the_queue(slow: Slow) -> None:
    bt, disk = slow
    with RawAmqp(bt.port) as raw:
        raw.handshake()
        raw.open_channel(1)
        # one write: the declare, a publish to it and a passive declare reach the broker in one read
        body = b"right after"
        raw.send(pframe.marshal(C.Queue.Declare(queue="piped-q", durable=True), 1)
                 + pframe.marshal(C.Basic.Publish(exchange="", routing_key="piped-q"), 1)
                 + pframe.marshal(pheader.ContentHeader(0, len(body), C.Basic.Properties()), 1)
                 + pframe.marshal(pbody.ContentBody(body), 1)
                 + pframe.marshal(C.Queue.Declare(queue="piped-q", passive=True), 1))
        time.sleep(0.4)
        raw.sock.setblocking(False)
        try:
            assert raw.sock.recv(4096) == b"", "answered before the definition was durable"
        except BlockingIOError:
            pass  # nothing yet: held
        raw.sock.setblocking(True)
        disk.gate.set()
        assert raw.expect(C.Queue.DeclareOk)[1].queue == "piped-q"
        assert raw.expect(C.Queue.DeclareOk)[1].message_count == 1  # the publish saw the queue


def test_two_connections_declaring_one_new_durable_queue_get_one_queue_once_durable(slow: Slow) -> None:
    bt, disk = slow
    first, second, odd = connect(bt), connect(bt), connect(bt)
    args = {"x-max-length": 10}
    with ThreadPoolExecutor(2) as pool:
        a = in_thread(pool, lambda: first.channel().queue_declare("twin-q", durable=True, arguments=args))
        # the equivalent second declare waits for the first (no 406, no second queue, no early answer)
        b = in_thread(pool, lambda: second.channel().queue_declare("twin-q", durable=True, arguments=args))
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:  # an inequivalent one: 406 at once
            odd.channel().queue_declare("twin-q", durable=True)
        assert info.value.reply_code == 406
        disk.gate.set()
        assert a.result(10).method.queue == b.result(10).method.queue == "twin-q"
    assert bt.node is not None
    vh = bt.node.broker.vhosts["/"]
    assert "twin-q" in vh.queues and not vh.pending_queues
    assert stored(bt, "queues") == ["twin-q"]
    for c in (first, second, odd):
        c.close()


def test_a_delete_of_a_queue_whose_declare_is_pending_wins_after_it(slow: Slow) -> None:
    bt, disk = slow
    declarer, deleter = connect(bt), connect(bt)
    with ThreadPoolExecutor(2) as pool:
        declared = in_thread(pool, lambda: declarer.channel().queue_declare("doomed-q", durable=True))
        deleted = in_thread(pool, lambda: deleter.channel().queue_delete("doomed-q"))
        disk.gate.set()
        assert declared.result(10).method.queue == "doomed-q"
        deleted.result(10)
    assert bt.node is not None
    vh = bt.node.broker.vhosts["/"]
    assert "doomed-q" not in vh.queues and "doomed-q" not in vh.pending_queues
    assert "doomed-q" not in stored(bt, "queues")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker):
        declarer.channel().queue_declare("doomed-q", passive=True)
    declarer.close()
    deleter.close()


def test_sqs_create_queue_is_invisible_until_durable_and_a_racing_create_gets_the_same_queue(slow: Slow) -> None:
    bt, disk = slow

    def client() -> Any:
        return boto3.client("sqs", endpoint_url=bt.sqs_endpoint_url, region_name="us-east-1",
                            aws_access_key_id="guest", aws_secret_access_key="guest")

    sqs = client()
    with ThreadPoolExecutor(2) as pool:
        a = in_thread(pool, lambda: client().create_queue(QueueName="sqs-pending"))
        b = in_thread(pool, lambda: client().create_queue(QueueName="sqs-pending"))
        assert "QueueUrls" not in sqs.list_queues(QueueNamePrefix="sqs-")
        with pytest.raises(sqs.exceptions.QueueDoesNotExist):
            sqs.get_queue_url(QueueName="sqs-pending")
        disk.gate.set()
        assert a.result(10)["QueueUrl"] == b.result(10)["QueueUrl"]
    url = sqs.get_queue_url(QueueName="sqs-pending")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="after")
    assert stored(bt, "queues") == ["sqs-pending"]


def test_management_queue_put_is_invisible_until_durable(slow: Slow) -> None:
    bt, disk = slow
    port = bt.management_port
    with ThreadPoolExecutor(1) as pool:
        put = in_thread(pool, lambda: http(port, "PUT", "/api/queues/%2F/mgmt-q", {"durable": True}))
        with pytest.raises(urllib.error.HTTPError) as info:
            http(port, "GET", "/api/queues/%2F/mgmt-q")
        assert info.value.code == 404
        disk.gate.set()
        assert put.result(10) == 201
    assert http(port, "GET", "/api/queues/%2F/mgmt-q") == 200


def test_a_failed_declare_commit_applies_nothing() -> None:
    with BrokerThread() as bt:
        assert bt.node is not None
        metadata: Any = bt.node.broker.metadata
        metadata.db = BrokenDisk(metadata.db)
        vh = bt.node.broker.vhosts["/"]
        conn = connect(bt)
        with pytest.raises(pika.exceptions.AMQPConnectionError):
            conn.channel().queue_declare("lost-q", durable=True)
        assert "lost-q" not in vh.queues and "lost-q" not in vh.pending_queues
        req = urllib.request.Request(f"http://127.0.0.1:{bt.management_port}/api/queues/%2F/lost-m", method="PUT",
                                     data=json.dumps({"durable": True}).encode(),
                                     headers={"Authorization": "Basic Z3Vlc3Q6Z3Vlc3Q=",
                                              "Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(req, timeout=10)
        assert info.value.code == 503
        assert "lost-m" not in vh.queues and "lost-m" not in vh.pending_queues
        sqs = boto3.client("sqs", endpoint_url=bt.sqs_endpoint_url, region_name="us-east-1",
                           aws_access_key_id="guest", aws_secret_access_key="guest")
        with pytest.raises(sqs.exceptions.ClientError) as err:
            sqs.create_queue(QueueName="lost-s")
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] >= 500
        assert "lost-s" not in vh.queues and "lost-s" not in vh.pending_queues


class Stomp:
    """A raw STOMP 1.2 client: one frame out, the next frame in."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""
        assert self.frame("CONNECT", **{"accept-version": "1.2", "host": "/", "login": "guest",
                                        "passcode": "guest"}).startswith(b"CONNECTED")

    def send(self, command: str, body: str = "", **headers: str) -> None:
        self.sock.sendall((command + "\n" + "".join(f"{k}:{v}\n" for k, v in headers.items()) + "\n" + body
                           + "\0").encode())

    def read(self) -> bytes:
        while b"\0" not in self.buf:
            got = self.sock.recv(4096)
            if not got:
                raise ConnectionError("closed")
            self.buf += got
        frame, _, self.buf = self.buf.partition(b"\0")
        return frame.lstrip(b"\n")

    def frame(self, command: str, **headers: str) -> bytes:
        self.send(command, **headers)
        return self.read()


def test_stomp_subscribe_creating_a_durable_queue_consumes_once_it_is_durable(slow: Slow) -> None:
    bt, disk = slow
    assert bt.node is not None and bt.node.stomp_port is not None
    stomp = Stomp(bt.node.stomp_port)
    other = connect(bt)
    och = other.channel()
    och.confirm_delivery()
    with ThreadPoolExecutor(1) as pool:
        # SUBSCRIBE then a SEND to the same new queue, in one write: the SEND waits for the queue too
        fut = in_thread(pool, lambda: (stomp.send("SUBSCRIBE", id="1", destination="/queue/stomp-q", receipt="r1"),
                                       stomp.send("SEND", "own", destination="/queue/stomp-q"),
                                       stomp.read())[-1])
        with pytest.raises(pika.exceptions.UnroutableError):
            och.basic_publish("", "stomp-q", b"early", mandatory=True)  # not there yet for anyone else
        disk.gate.set()
        assert fut.result(10).startswith(b"RECEIPT")
    got = stomp.read()
    assert got.startswith(b"MESSAGE") and got.endswith(b"own")
    stomp.sock.close()
    other.close()


def test_stomp_subscribe_whose_queue_definition_fails_gets_an_error_and_no_queue() -> None:
    with BrokerThread() as bt:
        assert bt.node is not None and bt.node.stomp_port is not None
        metadata: Any = bt.node.broker.metadata
        metadata.db = BrokenDisk(metadata.db)
        stomp = Stomp(bt.node.stomp_port)
        assert stomp.frame("SUBSCRIBE", id="1", destination="/queue/stomp-lost", receipt="r1").startswith(b"ERROR")
        vh = bt.node.broker.vhosts["/"]
        assert "stomp-lost" not in vh.queues and "stomp-lost" not in vh.pending_queues
        stomp.sock.close()


def test_sqs_set_queue_attributes_apply_once_durable_and_racing_sets_both_stick(slow: Slow) -> None:
    bt, disk = slow

    def client() -> Any:
        return boto3.client("sqs", endpoint_url=bt.sqs_endpoint_url, region_name="us-east-1",
                            aws_access_key_id="guest", aws_secret_access_key="guest")

    sqs = client()
    disk.gate.set()
    url = sqs.create_queue(QueueName="sqs-attrs")["QueueUrl"]
    disk.gate.clear()

    def get(name: str) -> str:
        return str(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[name])["Attributes"][name])

    with ThreadPoolExecutor(2) as pool:
        a = in_thread(pool, lambda: client().set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "99"}))
        b = in_thread(pool, lambda: client().set_queue_attributes(QueueUrl=url, Attributes={"DelaySeconds": "7"}))
        assert get("VisibilityTimeout") == "30"  # not before it is durable
        disk.gate.set()
        a.result(10)
        b.result(10)
    assert (get("VisibilityTimeout"), get("DelaySeconds")) == ("99", "7")
    assert bt.node is not None
    kept = bt.node.broker.metadata.load()["queues"][0]["arguments"][SQS_ARGUMENT]["attributes"]  # type: ignore[attr-defined]
    assert (kept["VisibilityTimeout"], kept["DelaySeconds"]) == ("99", "7")


def test_a_durable_binding_routes_only_once_durable(slow: Slow) -> None:
    bt, disk = slow
    binder, other = connect(bt), connect(bt)
    bch, och = binder.channel(), other.channel()
    och.confirm_delivery()
    disk.gate.set()
    bch.exchange_declare("bind-x", "fanout", durable=True)
    bch.queue_declare("bind-q", durable=True)
    disk.gate.clear()
    with ThreadPoolExecutor(1) as pool:
        fut = in_thread(pool, lambda: bch.queue_bind("bind-q", "bind-x"))
        with pytest.raises(pika.exceptions.UnroutableError):
            och.basic_publish("bind-x", "", b"early", mandatory=True)  # the binding is not there yet
        disk.gate.set()
        fut.result(10)
    och.basic_publish("bind-x", "", b"late", mandatory=True)
    assert och.queue_declare("bind-q", passive=True).method.message_count == 1
    assert bt.node is not None
    assert [b["destination"] for b in bt.node.broker.metadata.load()["bindings"]] == ["bind-q"]  # type: ignore[attr-defined]
    binder.close()
    other.close()


def test_a_durable_queue_deleted_stays_until_its_delete_is_durable(slow: Slow) -> None:
    bt, disk = slow
    deleter, other = connect(bt), connect(bt)
    disk.gate.set()
    deleter.channel().queue_declare("del-q", durable=True)
    disk.gate.clear()
    with ThreadPoolExecutor(1) as pool:
        fut = in_thread(pool, lambda: deleter.channel().queue_delete("del-q"))
        # a crash now would keep the queue: so it is still there for everyone
        assert other.channel().queue_declare("del-q", passive=True).method.queue == "del-q"
        disk.gate.set()
        fut.result(10)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        other.channel().queue_declare("del-q", passive=True)
    assert info.value.reply_code == 404
    assert "del-q" not in stored(bt, "queues")
    deleter.close()
    other.close()


def test_a_durable_exchange_deleted_routes_until_its_delete_is_durable(slow: Slow) -> None:
    bt, disk = slow
    deleter, other = connect(bt), connect(bt)
    och = other.channel()
    och.confirm_delivery()
    disk.gate.set()
    deleter.channel().exchange_declare("del-x", "fanout", durable=True)
    q = och.queue_declare("", exclusive=True).method.queue
    och.queue_bind(q, "del-x")
    disk.gate.clear()
    with ThreadPoolExecutor(1) as pool:
        fut = in_thread(pool, lambda: deleter.channel().exchange_delete("del-x"))
        och.basic_publish("del-x", "", b"still routed", mandatory=True)  # a crash now would keep it
        disk.gate.set()
        fut.result(10)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        other.channel().exchange_declare("del-x", passive=True)
    assert info.value.reply_code == 404
    assert "del-x" not in stored(bt, "exchanges")
    deleter.close()
    other.close()
