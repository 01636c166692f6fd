"""haremq.ipc example: a producer process and two consumer processes sharing one /dev/shm queue.

    PYTHONPATH=src python examples/ipc_example.py
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import queue

from haremq.ipc import ShmQueue

NAME = f"haremq-example-{os.getpid()}"


def consumer(q: ShmQueue, who: str) -> None:
    # q arrived pickled (spawn) or inherited (fork): either way it reopened the same file by name
    n = 0
    while True:
        for msg in q.get_many(32):
            if msg == b"stop":
                q.put(b"stop")  # pass the pill on to the other consumer
                print(f"{who}: got {n} messages")
                return
            n += 1


async def async_consumer(name: str) -> None:
    with ShmQueue.open(name) as q:
        msg = await q.get_async(timeout=5)  # the event loop sleeps on the queue's wakeup FIFO, no polling
        print("async consumer got", msg)


def main() -> None:
    # mpmc (the default) is safe for any number of producers and consumers
    with ShmQueue.create(NAME, capacity_bytes=1 << 20, max_message_size=4096) as q:
        try:
            workers = [mp.Process(target=consumer, args=(q, f"consumer-{i}")) for i in range(2)]
            for w in workers:
                w.start()
            q.put_many(f"job {i}".encode() for i in range(10_000))  # one index publish per batch
            q.put(b"stop")
            for w in workers:
                w.join()

            q.get_nowait()  # the last pill
            try:
                q.get(timeout=0.1)
            except queue.Empty:
                print("queue drained; stats:", q.stats())

            q.put(b"hello from sync code")
            asyncio.run(async_consumer(NAME))
        finally:
            q.unlink()  # removes the file and its FIFOs from /dev/shm


if __name__ == "__main__":
    main()
