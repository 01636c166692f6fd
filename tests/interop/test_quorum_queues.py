"""Quorum queues on a node without a cluster: RabbitMQ 3.10's quorum rules (durable only, refusals with its
texts, delivery limit, ``x-delivery-count``, every message on disk) with one replica, said so in the
management API and the log. Real pika/kombu/Celery clients against a real broker process."""

from __future__ import annotations

import base64
import json
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

import pika
import pika.exceptions
import pytest

from brokerproc import BrokerProcess, start_broker, stop_broker
from pikahelp import params

pytestmark = pytest.mark.timeout(120)

QUORUM = {"x-queue-type": "quorum"}


def uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def channel(b: BrokerProcess) -> tuple[pika.BlockingConnection, Any]:
    conn = pika.BlockingConnection(params(b.port))
    return conn, conn.channel()


def mgmt(b: BrokerProcess, path: str) -> Any:
    req = urllib.request.Request(b.management_url + path, headers={
        "Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()})
    with urllib.request.urlopen(req, timeout=10) as res:
        return json.loads(res.read())


def refused(b: BrokerProcess, name: str, **kw: Any) -> tuple[int, str]:
    conn, ch = channel(b)
    try:
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
            ch.queue_declare(name, **kw)
        return info.value.reply_code, info.value.reply_text
    finally:
        conn.close()


def test_quorum_declare_refusals_are_rabbitmq_406s_with_its_texts(broker: BrokerProcess) -> None:
    q = uniq("qq-bad")
    where = f"queue '{q}' in vhost '/'"
    cases: list[tuple[dict[str, Any], str]] = [
        ({"durable": False, "arguments": QUORUM}, f"PRECONDITION_FAILED - invalid property 'non-durable' for {where}"),
        ({"durable": True, "exclusive": True, "arguments": QUORUM},
         f"PRECONDITION_FAILED - invalid property 'exclusive-owner' for {where}"),
        ({"durable": True, "auto_delete": True, "arguments": QUORUM},
         f"PRECONDITION_FAILED - invalid property 'auto-delete' for {where}"),
        ({"durable": True, "arguments": {**QUORUM, "x-max-priority": 5}},
         f"PRECONDITION_FAILED - invalid arg 'x-max-priority' for {where} of queue type rabbit_quorum_queue"),
        ({"durable": True, "arguments": {**QUORUM, "x-queue-mode": "lazy"}},
         f"PRECONDITION_FAILED - invalid arg 'x-queue-mode' for {where} of queue type rabbit_quorum_queue"),
        ({"durable": True, "arguments": {**QUORUM, "x-queue-master-locator": "min-masters"}},
         f"PRECONDITION_FAILED - invalid arg 'x-queue-master-locator' for {where} of queue type "
         "rabbit_quorum_queue"),
        ({"durable": True, "arguments": {**QUORUM, "x-quorum-initial-group-size": 0}},
         f"PRECONDITION_FAILED - invalid arg 'x-quorum-initial-group-size' for {where}: {{value_zero,0}}"),
        ({"durable": True, "arguments": {**QUORUM, "x-delivery-limit": "three"}},
         f"PRECONDITION_FAILED - invalid arg 'x-delivery-limit' for {where}: {{unacceptable_type,longstr}}"),
        ({"durable": True, "arguments": {**QUORUM, "x-dead-letter-strategy": "sometimes"}},
         f"PRECONDITION_FAILED - invalid arg 'x-dead-letter-strategy' for {where}: invalid_dlx_strategy"),
        ({"durable": True, "arguments": {**QUORUM, "x-max-in-memory-length": -1}},
         f"PRECONDITION_FAILED - invalid arg 'x-max-in-memory-length' for {where}: {{value_negative,-1}}"),
    ]
    for kw, text in cases:
        assert refused(broker, q, **kw) == (406, text), kw
    assert refused(broker, "", durable=True, arguments=QUORUM) == (
        406, "PRECONDITION_FAILED - Cannot declare a server-named queue for type rabbit_quorum_queue")
    # nothing was created by the refusals; the broker serves on
    conn, ch = channel(broker)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        ch.queue_declare(q, passive=True)
    assert info.value.reply_code == 404
    conn.close()
    assert broker.alive()


def test_quorum_queue_is_single_replica_in_management_and_log(broker: BrokerProcess) -> None:
    q = uniq("qq-mgmt")
    conn, ch = channel(broker)
    ch.queue_declare(q, durable=True, arguments={**QUORUM, "x-quorum-initial-group-size": 3})
    conn.close()
    info = mgmt(broker, f"/api/queues/%2F/{q}")
    node = info["node"]
    assert (info["type"], info["durable"], info["leader"], info["members"], info["online"]) == (
        "quorum", True, node, [node], [node])
    assert "leader" not in mgmt(broker, "/api/queues/%2F/" + _classic(broker))
    deadline = time.monotonic() + 5
    while f"quorum queue '{q}' in vhost '/' has a single replica" not in broker.log():
        assert time.monotonic() < deadline, broker.log()
        time.sleep(0.05)
    flags = {f["name"]: f["desc"] for f in mgmt(broker, "/api/feature-flags")}
    assert "single replica" in flags["quorum_queue"]


def test_management_api_declares_quorum_queues_by_the_same_rules(broker: BrokerProcess) -> None:
    q = uniq("qq-http")

    def put(body: dict[str, Any]) -> tuple[int, Any]:
        req = urllib.request.Request(broker.management_url + f"/api/queues/%2F/{q}", data=json.dumps(body).encode(),
                                     method="PUT", headers={"Content-Type": "application/json", "Authorization":
                                                            "Basic " + base64.b64encode(b"guest:guest").decode()})
        try:
            with urllib.request.urlopen(req, timeout=10) as res:
                return res.status, None
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    status, err = put({"durable": False, "arguments": QUORUM})
    assert status == 400 and f"invalid property 'non-durable' for queue '{q}' in vhost '/'" in err["reason"], err
    assert put({"durable": True, "arguments": QUORUM}) == (201, None)
    info = mgmt(broker, f"/api/queues/%2F/{q}")
    assert (info["type"], info["members"]) == ("quorum", [info["node"]])


def _classic(b: BrokerProcess) -> str:
    name = uniq("classic")
    conn, ch = channel(b)
    ch.queue_declare(name, durable=True)
    conn.close()
    return name


def test_quorum_deliveries_carry_x_delivery_count(broker: BrokerProcess) -> None:
    q = uniq("qq-count")
    conn, ch = channel(broker)
    ch.queue_declare(q, durable=True, arguments=QUORUM)
    ch.confirm_delivery()
    ch.basic_publish("", q, b"m", pika.BasicProperties(headers={"own": 1}))
    seen: list[tuple[bool, Any]] = []
    for method, props, _body in ch.consume(q, inactivity_timeout=5):
        assert method is not None
        seen.append((method.redelivered, (props.headers or {}).get("x-delivery-count")))
        assert props.headers["own"] == 1
        if len(seen) == 3:
            ch.cancel()  # first, so the nack below cannot bring it back to this consumer
            ch.basic_nack(method.delivery_tag, requeue=True)
            break
        ch.basic_nack(method.delivery_tag, requeue=True)
    # as RabbitMQ: no header on the first delivery to a consumer, then the returns so far
    assert seen == [(False, None), (True, 1), (True, 2)]
    method, props, _body = ch.basic_get(q)
    assert props.headers["x-delivery-count"] == 3 and method.redelivered
    ch.basic_ack(method.delivery_tag)
    ch.basic_publish("", q, b"fresh")
    _m, props, _b = ch.basic_get(q, auto_ack=True)
    assert props.headers["x-delivery-count"] == 0  # basic.get always carries it
    conn.close()


def test_quorum_delivery_limit_dead_letters_poison_messages(broker: BrokerProcess) -> None:
    q, dlq, dlx = uniq("qq-limit"), uniq("qq-dlq"), uniq("qq-dlx")
    conn, ch = channel(broker)
    ch.exchange_declare(dlx, "fanout", durable=True)
    ch.queue_declare(dlq, durable=True)
    ch.queue_bind(dlq, dlx)
    ch.queue_declare(q, durable=True, arguments={**QUORUM, "x-delivery-limit": 2, "x-dead-letter-exchange": dlx})
    ch.confirm_delivery()
    ch.basic_publish("", q, b"poison", pika.BasicProperties(delivery_mode=2))
    deliveries = 0
    while True:
        method, _props, _body = ch.basic_get(q)
        if method is None:
            break
        deliveries += 1
        ch.basic_nack(method.delivery_tag, requeue=True)
    assert deliveries == 3  # limit 2: returned twice, the third return dead-letters it
    method, props, body = ch.basic_get(dlq, auto_ack=True)
    assert body == b"poison"
    death = props.headers["x-death"][0]
    assert (death["reason"], death["queue"], death["count"]) == ("delivery_limit", q, 1)
    assert "x-delivery-count" not in props.headers
    assert ch.queue_declare(q, passive=True).method.message_count == 0
    conn.close()


def test_quorum_delivery_limit_drops_without_dlx_and_counts_closed_channels(broker: BrokerProcess) -> None:
    q = uniq("qq-drop")
    conn, ch = channel(broker)
    ch.queue_declare(q, durable=True, arguments={**QUORUM, "x-delivery-limit": 1})
    ch.confirm_delivery()
    ch.basic_publish("", q, b"x")
    conn.close()
    for _ in range(2):  # a consumer dies holding it: that is a return too (RabbitMQ's return_all)
        conn, ch = channel(broker)
        method, _props, _body = ch.basic_get(q)
        assert method is not None
        conn.close()
    conn, ch = channel(broker)
    assert ch.basic_get(q)[0] is None
    assert ch.queue_declare(q, passive=True).method.message_count == 0
    conn.close()


def test_quorum_delivery_limit_from_a_policy(broker: BrokerProcess) -> None:
    q = uniq("qq-pol")
    body = json.dumps({"pattern": f"^{q}$", "apply-to": "queues", "definition": {"delivery-limit": 0}}).encode()
    req = urllib.request.Request(broker.management_url + f"/api/policies/%2F/{q}", data=body, method="PUT", headers={
        "Authorization": "Basic " + base64.b64encode(b"guest:guest").decode(), "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as res:
        assert res.status in (201, 204)
    conn, ch = channel(broker)
    ch.queue_declare(q, durable=True, arguments=QUORUM)
    ch.confirm_delivery()
    ch.basic_publish("", q, b"once")
    method, _p, _b = ch.basic_get(q)
    ch.basic_nack(method.delivery_tag, requeue=True)
    assert ch.basic_get(q)[0] is None  # limit 0: never redelivered
    conn.close()


def test_quorum_queue_refuses_consumers_under_global_qos(broker: BrokerProcess) -> None:
    q = uniq("qq-gqos")
    conn, ch = channel(broker)
    ch.queue_declare(q, durable=True, arguments=QUORUM)
    ch.basic_qos(prefetch_count=10)  # per consumer: fine
    ch.basic_consume(q, lambda *a: None)
    ch.basic_qos(prefetch_count=10, global_qos=True)
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as info:
        ch.basic_consume(q, lambda *a: None)
    assert (info.value.reply_code, info.value.reply_text) == (
        540, f"NOT_IMPLEMENTED - queue '{q}' in vhost '/' does not support global qos")
    conn, ch = channel(broker)  # a classic queue takes it
    ch.basic_qos(prefetch_count=10, global_qos=True)
    ch.basic_consume(_classic(broker), lambda *a: None)
    conn.close()


def test_classic_queue_ignores_delivery_limit_and_stamps_nothing(broker: BrokerProcess) -> None:
    q = uniq("classic-limit")
    conn, ch = channel(broker)
    ch.queue_declare(q, durable=True)
    ch.confirm_delivery()
    ch.basic_publish("", q, b"c")
    for _ in range(3):
        method, props, _b = ch.basic_get(q)
        assert method is not None and not (props.headers or {}).get("x-delivery-count")
        ch.basic_nack(method.delivery_tag, requeue=True)
    conn.close()


def test_transient_publish_to_quorum_queue_survives_kill_9() -> None:
    data_dir = tempfile.mkdtemp(prefix="haremq-quorum-")
    b = start_broker(data_dir=data_dir)
    conn, ch = channel(b)
    ch.queue_declare("qq", durable=True, arguments=QUORUM)
    ch.queue_declare("classic", durable=True)
    ch.confirm_delivery()
    for i in range(3):
        ch.basic_publish("", "qq", f"t{i}".encode(), pika.BasicProperties(delivery_mode=1))
    ch.basic_publish("", "classic", b"transient")  # confirmed too, but a classic queue keeps it in RAM only
    method, _p, body = ch.basic_get("qq")
    assert body == b"t0"
    ch.basic_ack(method.delivery_tag)
    method, _p, body = ch.basic_get("qq")  # delivered, unacked when the process dies
    assert body == b"t1"
    b.proc.kill()
    b.proc.wait(10)
    b = start_broker(data_dir=data_dir)
    try:
        conn, ch = channel(b)
        assert ch.queue_declare("qq", durable=True, arguments=QUORUM).method.message_count == 2
        assert ch.queue_declare("classic", durable=True).method.message_count == 0
        got = []
        for _ in range(2):
            method, props, body = ch.basic_get("qq", auto_ack=True)
            got.append((body, method.redelivered, props.delivery_mode))
        assert got == [(b"t1", True, 1), (b"t2", False, 1)]
        conn.close()
    finally:
        stop_broker(b)


def test_kombu_quorum_queue_declare_publish_consume(broker: BrokerProcess) -> None:
    from kombu import Connection, Consumer, Exchange, Producer, Queue

    ex = Exchange(uniq("kq-ex"), type="direct", durable=True)
    q = Queue(uniq("kq"), exchange=ex, routing_key="jobs", durable=True, queue_arguments=QUORUM)
    received: list[Any] = []
    with Connection(f"amqp://guest:guest@127.0.0.1:{broker.port}//", connect_timeout=5,
                    transport_options={"confirm_publish": True}) as conn:
        producer = Producer(conn.channel(), exchange=ex, serializer="json")
        for i in range(3):
            producer.publish({"n": i}, routing_key="jobs", declare=[q])
        with conn.channel() as ch:
            consumer = Consumer(ch, queues=[q], accept=["json"])
            consumer.register_callback(lambda body, message: (received.append(body), message.ack()))
            consumer.consume()
            deadline = time.monotonic() + 10
            while len(received) < 3 and time.monotonic() < deadline:
                conn.drain_events(timeout=1)
            q.bind(conn.default_channel).declare()  # a redeclare (kombu does it on every reconnect) is fine
    assert received == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert mgmt(broker, f"/api/queues/%2F/{q.name}")["type"] == "quorum"


CELERY_APP = """
from celery import Celery

app = Celery("haremq_quorum", broker="pyamqp://guest:guest@127.0.0.1:{port}//", backend="rpc://")
app.conf.update(
    task_default_queue="{queue}", task_default_queue_type="quorum", result_backend="rpc://",
    broker_transport_options={{"confirm_publish": True}}, broker_connection_retry_on_startup=False,
    broker_connection_max_retries=1, worker_hijack_root_logger=False, worker_send_task_events=False,
    worker_enable_remote_control=False, broker_heartbeat=0, worker_prefetch_multiplier=1,
)


@app.task(name="haremq_quorum.add")
def add(x, y):
    return x + y
"""


def test_celery_worker_on_quorum_queues(broker: BrokerProcess, tmp_path: Any) -> None:
    import importlib.util
    import subprocess
    import sys

    queue = uniq("celery-qq")
    mod = tmp_path / "haremq_quorum_app.py"
    mod.write_text(CELERY_APP.format(port=broker.port, queue=queue))
    spec = importlib.util.spec_from_file_location("haremq_quorum_app", mod)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    app = module.app
    log = open(tmp_path / "worker.log", "w")  # noqa: SIM115 - closed below
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "haremq_quorum_app", "worker", "-P", "solo", "-c", "1",
         "--loglevel", "INFO", "--without-heartbeat", "--without-mingle", "--without-gossip", "-Q", queue],
        cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    try:
        assert module.add.delay(2, 3).get(timeout=30) == 5
        assert [r.get(timeout=30) for r in [module.add.delay(i, i) for i in range(3)]] == [0, 2, 4]
        assert worker.poll() is None, "worker died"
    except BaseException:
        log.flush()
        print((tmp_path / "worker.log").read_text())
        raise
    finally:
        worker.terminate()
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        log.close()
        app.close()
    info = mgmt(broker, f"/api/queues/%2F/{queue}")
    assert (info["type"], info["durable"], info["members"]) == ("quorum", True, [info["node"]])
    assert broker.alive()
