"""``POST /api/exchanges/{vhost}/{name}/publish``: the 200 covers a message that is kept (on disk when
persistent, as RabbitMQ's publish waits for its confirm), and a message no AMQP consumer could be
sent is refused, not stored (real broker process, pika consumer)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pika
import pytest

from brokerproc import BrokerProcess, start_broker, stop_broker

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def slow_sync_broker() -> Iterator[BrokerProcess]:
    """At most one group commit a second: right after one, the next durable answer visibly waits."""
    b = start_broker(env={"HAREMQ_FSYNC": "interval", "HAREMQ_FSYNC_INTERVAL": "1.0"})
    yield b
    assert stop_broker(b) == 0, b.log()


def call(b: BrokerProcess, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    return b.api(method, path, body)


def publish(b: BrokerProcess, q: str, payload: str, props: dict[str, Any]) -> tuple[int, Any]:
    return call(b, "POST", "/api/exchanges/%2F/amq.default/publish",
                {"routing_key": q, "payload": payload, "payload_encoding": "string", "properties": props})


def test_http_publish_of_a_persistent_message_answers_once_it_is_on_disk(slow_sync_broker: BrokerProcess) -> None:
    q = f"mgmt-pub-{uuid.uuid4().hex[:8]}"
    assert call(slow_sync_broker, "PUT", f"/api/queues/%2F/{q}", {"durable": True})[0] == 201
    assert publish(slow_sync_broker, q, "primer", {"delivery_mode": 2}) == (200, {"routed": True})
    started = time.monotonic()  # right after a group commit: the next is about a second away
    assert publish(slow_sync_broker, q, "hello", {"delivery_mode": 2}) == (200, {"routed": True})
    assert time.monotonic() - started > 0.5  # sooner: answered before the message was durable


def test_http_publish_refuses_headers_an_amqp_consumer_could_not_be_sent(slow_sync_broker: BrokerProcess) -> None:
    q = f"mgmt-pub-{uuid.uuid4().hex[:8]}"
    assert call(slow_sync_broker, "PUT", f"/api/queues/%2F/{q}", {"durable": True})[0] == 201
    st, body = publish(slow_sync_broker, q, "poison", {"headers": {"x": 2 ** 70}})
    assert st == 400, body
    assert publish(slow_sync_broker, q, "fine", {"headers": {"x": 1, "y": {"z": [1, "a", None]}}})[0] == 200
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", slow_sync_broker.amqp_port))
    try:
        ch = conn.channel()
        got = []
        for method, props, body in ch.consume(q, inactivity_timeout=1):
            if method is None:
                break
            got.append((body, props.headers))
            ch.basic_ack(method.delivery_tag)
        assert got == [(b"fine", {"x": 1, "y": {"z": [1, "a", None]}})]
    finally:
        conn.close()


def test_http_publish_after_a_failed_fsync_is_a_server_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Once an fsync failed nothing can be made durable: a persistent publish is refused with a 503 (the
    server's fault, retryable), not a 400 that blames the request."""
    import asyncio
    import os

    from haremq.testing import running_broker

    async def main() -> None:
        async with running_broker() as node:
            assert node.http is not None and node.http.management_port is not None
            b = BrokerProcess(None, 0, "", {"http": node.http.management_port})  # type: ignore[arg-type]
            q = f"mgmt-pub-{uuid.uuid4().hex[:8]}"
            assert (await asyncio.to_thread(call, b, "PUT", f"/api/queues/%2F/{q}", {"durable": True}))[0] == 201
            assert (await asyncio.to_thread(publish, b, q, "ok", {"delivery_mode": 2}))[0] == 200

            def broken_fsync(fd: int) -> None:
                raise OSError(5, "Input/output error")

            monkeypatch.setattr(os, "fsync", broken_fsync)
            for _ in range(2):  # the publish that meets the failure, and one after it
                st, body = await asyncio.to_thread(publish, b, q, "lost?", {"delivery_mode": 2})
                assert st == 503, (st, body)

    asyncio.run(asyncio.wait_for(main(), 60))
