"""A broker's event loop keeps ticking while its disk is slow: creating a durable queue's log,
growing its segments and deleting the queue do their blocking disk work on the store's worker
thread (an in-process broker, so the disk calls can be slowed down; SQLite is not affected)."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Callable
from typing import Any

import aio_pika
import pytest

from haremq.testing import running_broker

SLOW = 0.25  # seconds per fsync / posix_fallocate / rmtree
BOUND = 0.15  # the worst 1 ms ticker gap tolerated


def test_slow_disk_does_not_stall_the_loop_during_queue_churn_and_growth(monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        async with running_broker(fsync="interval") as node:
            conn = await aio_pika.connect(f"amqp://guest:guest@127.0.0.1:{node.amqp_port}/")
            ch = await conn.channel(publisher_confirms=False)
            await asyncio.sleep(0.1)  # the node has started its store worker

            def slow(fn: Callable[..., Any]) -> Callable[..., Any]:
                def wrapper(*args: Any, **kw: Any) -> Any:
                    time.sleep(SLOW)
                    return fn(*args, **kw)
                return wrapper

            for mod, name in ((os, "fsync"), (os, "posix_fallocate"), (shutil, "rmtree")):
                monkeypatch.setattr(mod, name, slow(getattr(mod, name)))
            loop = asyncio.get_running_loop()
            gaps: list[float] = []
            done = False

            async def ticker() -> None:
                last = loop.time()
                while not done:
                    await asyncio.sleep(0.001)
                    now = loop.time()
                    gaps.append(now - last)
                    last = now

            tick = loop.create_task(ticker())
            body = os.urandom(32 * 1024)
            for i in range(5):  # queue churn: each new queue gets a log directory and a first segment
                await asyncio.sleep(3 * SLOW)  # ... reserved ahead by the worker (busy with the last rmtree)
                name = f"churn-{i}"
                await ch.declare_queue(name, durable=True)
                await ch.default_exchange.publish(aio_pika.Message(b"x", delivery_mode=2), routing_key=name)
                await ch.queue_delete(name)
            await asyncio.sleep(2 * SLOW)
            await ch.declare_queue("grow", durable=True)
            for _ in range(80):  # 2.5 MiB: the 1 MiB first segment, then a 2 MiB one reserved ahead
                await ch.default_exchange.publish(aio_pika.Message(body, delivery_mode=2), routing_key="grow")
                await asyncio.sleep(0.03)  # the 2 MiB one is reserved while the first fills
            await ch.queue_delete("grow")
            await asyncio.sleep(0.05)
            done = True
            await tick
            monkeypatch.undo()
            store: Any = node.broker.store
            assert max(gaps) < BOUND, sorted(gaps)[-5:]
            assert store.prealloc_used == 7 and store.prealloc_missed == 0, (store.prealloc_used,
                                                                             store.prealloc_missed)
            await conn.close()

    asyncio.run(asyncio.wait_for(main(), 60))
