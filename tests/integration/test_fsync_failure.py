"""A failed fsync is fatal for durability: waiting confirms are nacked, later persistent publishes are
refused, transient traffic goes on (an in-process broker, so os.fsync can be made to fail)."""

from __future__ import annotations

import asyncio
import os

import aio_pika
import aiormq.exceptions
import pytest

from haremq.testing import running_broker


def test_failed_fsync_nacks_and_refuses_persistent_publishes(monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        async with running_broker() as node:
            conn = await aio_pika.connect(f"amqp://guest:guest@127.0.0.1:{node.amqp_port}/")
            ch = await conn.channel(publisher_confirms=True)
            await ch.declare_queue("dur", durable=True)
            await ch.default_exchange.publish(aio_pika.Message(b"ok", delivery_mode=2), routing_key="dur")

            def broken_fsync(fd: int) -> None:
                raise OSError(5, "Input/output error")

            monkeypatch.setattr(os, "fsync", broken_fsync)
            with pytest.raises(aiormq.exceptions.DeliveryError):
                await ch.default_exchange.publish(aio_pika.Message(b"lost?", delivery_mode=2), routing_key="dur")
            assert node.broker.store_broken
            with pytest.raises(aiormq.exceptions.DeliveryError):  # refused at once from now on
                await ch.default_exchange.publish(aio_pika.Message(b"no", delivery_mode=2), routing_key="dur")
            await ch.default_exchange.publish(aio_pika.Message(b"transient"), routing_key="dur")
            q = await ch.declare_queue("dur", passive=True)
            assert q.declaration_result.message_count == 3  # ok, the nacked one (in RAM) and transient
            await conn.close()

    asyncio.run(asyncio.wait_for(main(), 30))
