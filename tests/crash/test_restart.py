"""What survives a restart: durable definitions and persistent messages, in order, with their queue
arguments still in force; transient, exclusive and non-persistent things do not."""

from __future__ import annotations

import tempfile
import time

import pika
import pika.exceptions
import pytest

from brokerproc import BrokerProcess, start_broker, stop_broker

PERSISTENT = pika.BasicProperties(delivery_mode=2)


def channel(b: BrokerProcess) -> tuple[pika.BlockingConnection, pika.adapters.blocking_connection.BlockingChannel]:
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port))
    return conn, conn.channel()


@pytest.mark.parametrize("how", ["sigterm", "kill"])
def test_definitions_survive_restart(how: str) -> None:
    data_dir = tempfile.mkdtemp(prefix="haremq-restart-")
    b = start_broker(data_dir=data_dir)
    conn, ch = channel(b)
    ch.exchange_declare("dur.x", "topic", durable=True)
    ch.exchange_declare("tmp.x", "fanout", durable=False)
    ch.queue_declare("dur.q", durable=True, arguments={"x-max-length": 100})
    ch.queue_declare("tmp.q", durable=False)
    ch.queue_declare("excl.q", durable=True, exclusive=True)
    ch.queue_bind("dur.q", "dur.x", "a.#")
    ch.exchange_declare("dur.x2", "direct", durable=True)
    ch.exchange_bind("dur.x2", "dur.x", "e2e")
    ch.confirm_delivery()
    ch.basic_publish("dur.x", "a.b", b"persistent", PERSISTENT)
    ch.basic_publish("dur.x", "a.b", b"transient")
    ch.basic_publish("", "excl.q", b"gone-with-queue", PERSISTENT)
    time.sleep(0.2)
    if how == "kill":
        b.proc.kill()
        b.proc.wait(10)
    else:
        conn.close()
        stop_broker(b)
    b = start_broker(data_dir=data_dir)
    conn, ch = channel(b)
    ch.exchange_declare("dur.x", "topic", durable=True, passive=True)
    ch.exchange_declare("dur.x2", "direct", durable=True, passive=True)
    q = ch.queue_declare("dur.q", durable=True, arguments={"x-max-length": 100})  # equivalent: no 406
    assert q.method.message_count == 1
    _method, _props, body = ch.basic_get("dur.q", auto_ack=True)
    assert body == b"persistent"
    ch.basic_publish("dur.x", "a.zzz", b"routed-after-restart")
    assert ch.queue_declare("dur.q", passive=True).method.message_count == 1
    for name in ("tmp.q", "excl.q"):
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
            ch.queue_declare(name, passive=True)
        assert info.value.reply_code == 404
        ch = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker):
        ch.exchange_declare("tmp.x", "fanout", passive=True)
    conn.close()
    stop_broker(b)


def test_dlx_ttl_and_priority_queues_keep_working_after_restart() -> None:
    data_dir = tempfile.mkdtemp(prefix="haremq-restart-")
    b = start_broker(data_dir=data_dir)
    conn, ch = channel(b)
    ch.exchange_declare("dlx", "fanout", durable=True)
    ch.queue_declare("dead", durable=True)
    ch.queue_bind("dead", "dlx")
    ch.queue_declare("ttl", durable=True, arguments={"x-message-ttl": 1500, "x-dead-letter-exchange": "dlx"})
    ch.queue_declare("prio", durable=True, arguments={"x-max-priority": 9})
    ch.confirm_delivery()
    ch.basic_publish("", "ttl", b"expires-later", PERSISTENT)
    for body, p in ((b"low", 1), (b"high", 9), (b"mid", 5)):
        ch.basic_publish("", "prio", body, pika.BasicProperties(delivery_mode=2, priority=p))
    conn.close()
    b.proc.kill()
    b.proc.wait(10)
    b = start_broker(data_dir=data_dir)
    conn, ch = channel(b)
    got = [ch.basic_get("prio", auto_ack=True)[2] for _ in range(3)]
    assert got == [b"high", b"mid", b"low"]
    assert ch.queue_declare("ttl", passive=True).method.message_count == 1
    deadline = time.monotonic() + 5
    dead = None
    while time.monotonic() < deadline:
        method, props, body = ch.basic_get("dead", auto_ack=True)
        if method is not None:
            dead = (props, body)
            break
        time.sleep(0.1)
    assert dead is not None, "the recovered message did not expire into the DLX"
    assert dead[1] == b"expires-later"
    assert dead[0].headers["x-death"][0]["reason"] == "expired"
    conn.close()
    stop_broker(b)


def test_delayed_sqs_message_survives_kill_9_and_stays_delayed() -> None:
    from interop.sqs_helpers import sqs_client

    data_dir = tempfile.mkdtemp(prefix="haremq-restart-")
    b = start_broker(data_dir=data_dir)
    sqs = sqs_client(b)
    url = sqs.create_queue(QueueName="later")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="due-in-3s", DelaySeconds=3)
    sent = time.monotonic()
    b.proc.kill()  # the 200 came back: the message must survive
    b.proc.wait(10)
    b = start_broker(data_dir=data_dir)
    sqs = sqs_client(b)
    url = sqs.get_queue_url(QueueName="later")["QueueUrl"]
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attrs["ApproximateNumberOfMessagesDelayed"] == "1"
    assert "Messages" not in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0)
    got = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=10)["Messages"]
    assert [m["Body"] for m in got] == ["due-in-3s"]
    assert time.monotonic() - sent >= 2.5  # not before its time, across the restart
    stop_broker(b)
