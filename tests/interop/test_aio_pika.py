"""aio-pika (robust connection, iterator consumers, RPC patterns) against a real haremq process."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
import pytest

pytestmark = pytest.mark.timeout(60)


def uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def run(broker: Any, fn: Callable[[aio_pika.abc.AbstractRobustConnection], Awaitable[None]]) -> None:
    async def main() -> None:
        conn = await asyncio.wait_for(
            aio_pika.connect_robust(host="127.0.0.1", port=broker.port, login="guest", password="guest",
                                    virtualhost="/"), 10)
        try:
            await asyncio.wait_for(fn(conn), 30)
        finally:
            await asyncio.wait_for(conn.close(), 10)

    asyncio.run(main())
    assert broker.alive()


def test_declare_publish_consume_iterator(broker: Any) -> None:
    async def body(conn: Any) -> None:
        ch = await conn.channel(publisher_confirms=True)
        await ch.set_qos(prefetch_count=10)
        ex = await ch.declare_exchange(uniq("aio-ex"), aio_pika.ExchangeType.TOPIC, auto_delete=True)
        q = await ch.declare_queue(uniq("aio-q"), exclusive=True)
        await q.bind(ex, "orders.#")
        for i in range(20):
            await ex.publish(aio_pika.Message(f"m{i}".encode(), headers={"i": i}, content_type="text/plain",
                                              delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                             routing_key=f"orders.eu.{i}")
        await ex.publish(aio_pika.Message(b"other"), routing_key="invoices.eu")
        got = []
        async with q.iterator() as it:
            async for msg in it:
                async with msg.process():
                    assert msg.headers["i"] == len(got)
                    assert msg.content_type == "text/plain"
                    assert msg.routing_key == f"orders.eu.{len(got)}"
                    assert not msg.redelivered
                    got.append(msg.body)
                if len(got) == 20:
                    break
        assert got == [f"m{i}".encode() for i in range(20)]
        # everything acked, nothing else routed here
        assert await q.get(no_ack=True, fail=False) is None
        declared = await ch.declare_queue(q.name, passive=True)
        assert declared.declaration_result.message_count == 0

    run(broker, body)


def test_reject_requeue_and_get(broker: Any) -> None:
    async def body(conn: Any) -> None:
        ch = await conn.channel()
        q = await ch.declare_queue(uniq("aio-rej"), auto_delete=False)
        await ch.default_exchange.publish(aio_pika.Message(b"x"), routing_key=q.name)
        m = await q.get(timeout=5)
        assert m.body == b"x" and not m.redelivered
        await m.reject(requeue=True)
        m2 = await q.get(timeout=5)
        assert m2.body == b"x" and m2.redelivered
        await m2.ack()
        assert await q.get(fail=False) is None
        await q.delete()

    run(broker, body)


def test_rpc_with_explicit_reply_queue(broker: Any) -> None:
    async def body(conn: Any) -> None:
        server_ch = await conn.channel()
        client_ch = await conn.channel()
        rpc_q = await server_ch.declare_queue(uniq("aio-rpc"), exclusive=True)

        async def serve(msg: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with msg.process():
                n = int(msg.body)
                await server_ch.default_exchange.publish(
                    aio_pika.Message(str(n * n).encode(), correlation_id=msg.correlation_id),
                    routing_key=msg.reply_to)

        await rpc_q.consume(serve)
        reply_q = await client_ch.declare_queue("", exclusive=True)
        futures: dict[str, asyncio.Future[bytes]] = {}

        async def on_reply(msg: aio_pika.abc.AbstractIncomingMessage) -> None:
            fut = futures.pop(msg.correlation_id or "", None)
            if fut is not None:
                fut.set_result(msg.body)

        await reply_q.consume(on_reply, no_ack=True)
        loop = asyncio.get_running_loop()
        calls = {}
        for n in range(1, 6):
            cid = str(uuid.uuid4())
            futures[cid] = calls[n] = loop.create_future()
            await client_ch.default_exchange.publish(
                aio_pika.Message(str(n).encode(), correlation_id=cid, reply_to=reply_q.name),
                routing_key=rpc_q.name)
        results = {n: int(await asyncio.wait_for(f, 10)) for n, f in calls.items()}
        assert results == {n: n * n for n in range(1, 6)}

    run(broker, body)


def test_rpc_with_direct_reply_to(broker: Any) -> None:
    async def body(conn: Any) -> None:
        server_ch = await conn.channel()
        client_ch = await conn.channel()
        rpc_q = await server_ch.declare_queue(uniq("aio-drt"), exclusive=True)
        seen_reply_to: list[str] = []

        async def serve(msg: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with msg.process():
                assert msg.reply_to is not None
                seen_reply_to.append(msg.reply_to)
                await server_ch.default_exchange.publish(
                    aio_pika.Message(msg.body[::-1], correlation_id=msg.correlation_id),
                    routing_key=msg.reply_to)

        await rpc_q.consume(serve)
        # the pseudo-queue: consume it with no_ack before publishing with reply_to set to it
        reply_q = await client_ch.get_queue("amq.rabbitmq.reply-to", ensure=False)
        replies: asyncio.Queue[aio_pika.abc.AbstractIncomingMessage] = asyncio.Queue()

        async def on_reply(msg: aio_pika.abc.AbstractIncomingMessage) -> None:
            await replies.put(msg)

        await reply_q.consume(on_reply, no_ack=True)
        for word in ("hello", "world"):
            cid = str(uuid.uuid4())
            await client_ch.default_exchange.publish(
                aio_pika.Message(word.encode(), correlation_id=cid, reply_to="amq.rabbitmq.reply-to"),
                routing_key=rpc_q.name)
            reply = await asyncio.wait_for(replies.get(), 10)
            assert reply.body == word[::-1].encode()
            assert reply.correlation_id == cid
        # the server saw the rewritten, routable name, not the bare pseudo-queue name
        assert len(seen_reply_to) == 2
        assert all(r.startswith("amq.rabbitmq.reply-to.") for r in seen_reply_to)

    run(broker, body)


def test_direct_reply_to_without_consumer_is_406(broker: Any) -> None:
    async def body(conn: Any) -> None:
        ch = await conn.channel()
        with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed):
            await ch.default_exchange.publish(aio_pika.Message(b"x", reply_to="amq.rabbitmq.reply-to"),
                                              routing_key="anything")
            await ch.declare_queue(uniq("after"), exclusive=True)  # forces a round trip

    run(broker, body)


def test_rpc_pattern_round_trip_and_close(broker: Any) -> None:
    """aio-pika's RPC ``close()`` unbinds its reply queue after cancelling its consumer, which
    auto-deleted the queue (and the auto-delete DLX): RabbitMQ answers unbind-ok, so must we."""

    async def body(conn: Any) -> None:
        from aio_pika.patterns import RPC

        server = await RPC.create(await conn.channel())
        client = await RPC.create(await conn.channel())

        async def square(*, n: int) -> int:
            return n * n

        name = uniq("square")
        await server.register(name, square, auto_delete=True)
        assert await client.call(name, kwargs={"n": 7}) == 49
        await client.close()
        await server.close()
        ch = await conn.channel()  # the connection is unharmed
        await ch.declare_queue(uniq("after-rpc"), exclusive=True)

    run(broker, body)
