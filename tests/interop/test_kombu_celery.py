"""kombu and Celery (pyamqp transport, rpc:// result backend) against a real haremq process."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from kombu import Connection, Consumer, Exchange, Producer, Queue

pytestmark = pytest.mark.timeout(90)


def uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def kombu_url(broker: Any) -> str:
    return f"amqp://guest:guest@127.0.0.1:{broker.port}//"


def test_kombu_producer_consumer(broker: Any) -> None:
    ex = Exchange(uniq("kombu-ex"), type="direct", durable=False, auto_delete=True)
    q = Queue(uniq("kombu-q"), exchange=ex, routing_key="jobs", durable=False, auto_delete=True)
    received: list[Any] = []
    with Connection(kombu_url(broker), connect_timeout=5) as conn:
        conn.ensure_connection(max_retries=1)
        with conn.channel() as ch:
            consumer = Consumer(ch, queues=[q], accept=["json"])

            def on_message(body: Any, message: Any) -> None:
                received.append((body, message.headers, message.properties.get("correlation_id")))
                message.ack()

            consumer.register_callback(on_message)
            consumer.consume()
            producer = Producer(conn.channel(), exchange=ex, serializer="json")
            for i in range(5):
                producer.publish({"n": i, "s": "é"}, routing_key="jobs", declare=[q], headers={"h": i},
                                 correlation_id=f"c{i}")
            deadline = time.monotonic() + 10
            while len(received) < 5 and time.monotonic() < deadline:
                try:
                    conn.drain_events(timeout=0.5)
                except TimeoutError:
                    pass
            consumer.cancel()
    assert [r[0] for r in received] == [{"n": i, "s": "é"} for i in range(5)]
    assert [r[1]["h"] for r in received] == list(range(5))
    assert [r[2] for r in received] == [f"c{i}" for i in range(5)]
    assert broker.alive()


def test_kombu_simple_queue(broker: Any) -> None:
    name = uniq("kombu-simple")
    with Connection(kombu_url(broker), connect_timeout=5) as conn:
        sq = conn.SimpleQueue(name)
        try:
            sq.put({"hello": "world"})
            sq.put("plain string")
            assert sq.qsize() == 2
            m1 = sq.get(block=True, timeout=5)
            assert m1.payload == {"hello": "world"}
            m1.ack()
            m2 = sq.get(block=True, timeout=5)
            assert m2.payload == "plain string"
            m2.requeue()
            m3 = sq.get(block=True, timeout=5)
            assert m3.payload == "plain string"
            m3.ack()
            with pytest.raises(sq.Empty):
                sq.get(block=True, timeout=0.5)
        finally:
            sq.close()  # cancels the consumer first: deleting a consumed queue sends basic.cancel
            Queue(name).bind(conn.default_channel).delete()
    assert broker.alive()


CELERY_APP = """
from celery import Celery

app = Celery("haremq_interop", broker="pyamqp://guest:guest@127.0.0.1:{port}//", backend="rpc://")
app.conf.update(
    task_default_queue="{queue}", result_backend="rpc://", broker_connection_retry_on_startup=False,
    broker_connection_max_retries=1, worker_hijack_root_logger=False, worker_send_task_events=False,
    worker_enable_remote_control=False, broker_heartbeat=0, worker_prefetch_multiplier=1,
)


@app.task(name="haremq_test.add")
def add(x, y):
    return x + y


@app.task(name="haremq_test.boom")
def boom():
    raise ValueError("kaboom")
"""


def test_celery_task_round_trip(broker: Any, tmp_path: Any) -> None:
    import importlib.util
    import subprocess
    import sys

    queue = uniq("celery-q")
    mod = tmp_path / "haremq_celery_app.py"
    mod.write_text(CELERY_APP.format(port=broker.port, queue=queue))
    spec = importlib.util.spec_from_file_location("haremq_celery_app", mod)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    app = module.app
    log = open(tmp_path / "worker.log", "w")  # noqa: SIM115 - closed below
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "haremq_celery_app", "worker", "-P", "solo", "-c", "1",
         "--loglevel", "INFO", "--without-heartbeat", "--without-mingle", "--without-gossip", "-Q", queue],
        cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    try:
        assert module.add.delay(2, 3).get(timeout=20) == 5
        results = [module.add.delay(i, i) for i in range(5)]
        assert [r.get(timeout=20) for r in results] == [0, 2, 4, 6, 8]
        with pytest.raises(ValueError, match="kaboom"):
            module.boom.delay().get(timeout=20)
        assert worker.poll() is None, "worker died"
    except BaseException:
        log.flush()
        print((tmp_path / "worker.log").read_text())
        raise
    finally:
        worker.terminate()  # SIGTERM = warm shutdown
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        log.close()
        app.close()
    text = (tmp_path / "worker.log").read_text()
    assert "Connection to broker lost" not in text and "consumer: Cannot connect" not in text, text
    assert worker.returncode == 0, text
    assert broker.alive()


def test_py_amqp_queue_delete_with_own_consumer_gets_delete_ok_first(broker: Any) -> None:
    """RabbitMQ answers queue.delete-ok before the consumer's basic.cancel: py-amqp waiting for the
    delete-ok raises ConsumerCancelled (no on_cancel callback) if the cancel comes first."""
    import amqp

    conn = amqp.Connection(f"127.0.0.1:{broker.port}", userid="guest", password="guest", connect_timeout=5)
    conn.connect()
    try:
        ch = conn.channel()
        q, _, _ = ch.queue_declare(uniq("pyamqp-del"))
        ch.basic_publish(amqp.Message(b"one"), routing_key=q)
        ch.basic_publish(amqp.Message(b"two"), routing_key=q)
        ch.basic_qos(0, 1, False)
        ch.basic_consume(q, callback=lambda m: None)
        conn.drain_events(timeout=2)  # one delivered and unacked, one ready
        assert ch.queue_delete(q) == 1
        with pytest.raises(amqp.exceptions.ConsumerCancelled):
            conn.drain_events(timeout=2)
        # the channel is in step: the next synchronous method gets its own answer
        q2, _, _ = ch.queue_declare(uniq("pyamqp-after"), exclusive=True)
        assert ch.queue_delete(q2) == 0
    finally:
        conn.close()
