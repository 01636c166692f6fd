"""Event-loop stalls of a real broker during store housekeeping (issue 10, item 6).

A broker node runs in this process (``haremq.testing.running_broker``, default settings: fsync=always,
64 MiB segments) next to a 1 ms asyncio ticker on the same loop; every wake-up records the gap since the
previous one. A load process (pika, forked from this script) drives three phases and announces each on its
stdout, so the gaps are attributed to the phase in progress:

  grow      publish ``--mib`` MiB of persistent 64 KiB messages into one durable queue: segments are
            created and doubled up to 64 MiB (each one ``posix_fallocate``d)
  consume   consume them all, ack 7 of every 8 (fully acked segments are deleted)
  compact   wait ``--compact-wait`` s: the node's maintenance pass (every 5 s) rewrites the mostly-dead
            sealed segments (read, write, fsync, rename)
  declare   ``--queues`` times: declare a durable queue, publish one persistent message to it (this creates
            its directory, ``queue.json`` and first segment), delete it (the directory is removed)

A gap is the time between two ticker wake-ups (ideal: 1 ms); "worst" is the largest stall the loop had,
"p99"/"p999" the percentiles. Output: one JSON line, then a table.

  .venv/bin/python bench/loop_stall.py                      # defaults: --mib 256 --queues 1000
  .venv/bin/python bench/loop_stall.py --mib 64 --queues 200 --json-out /tmp/stall.jsonl
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from typing import Any

PHASES = ("grow", "consume", "compact", "declare")


def load(port: int, mib: int, queues: int, compact_wait: float) -> None:
    """The client side (a separate process so its CPU does not count as broker stalls)."""
    import pika

    params = pika.ConnectionParameters("127.0.0.1", port, heartbeat=0, blocked_connection_timeout=None)
    conn = pika.BlockingConnection(params)
    ch = conn.channel()
    ch.queue_declare("stall-big", durable=True)
    ch.confirm_delivery()
    props = pika.BasicProperties(delivery_mode=2)
    body = os.urandom(64 * 1024)

    print("phase grow", flush=True)
    n = mib * 16
    for _ in range(n):
        ch.basic_publish("", "stall-big", body, props)

    print("phase consume", flush=True)
    ch.basic_qos(prefetch_count=500)
    for got, (method, _props, _body) in enumerate(ch.consume("stall-big", inactivity_timeout=5), 1):
        if method is None:
            break
        if got % 8:
            ch.basic_ack(method.delivery_tag)
        if got >= n:
            break
    ch.cancel()
    ch.close()  # the unacked 1/8 go back to the queue and stay (live messages pin their segments)
    print("phase compact", flush=True)
    time.sleep(compact_wait)

    print("phase declare", flush=True)
    ch = conn.channel()
    ch.confirm_delivery()
    small = b"x" * 100
    for i in range(queues):
        name = f"stall-q-{i}"
        ch.queue_declare(name, durable=True)
        ch.basic_publish("", name, small, props)
        ch.queue_delete(name)
    print("phase done", flush=True)
    conn.close()


def _pct(xs: list[float], p: float) -> float:
    if not xs:
        return 0.0
    s = sorted(xs)
    return s[min(len(s) - 1, int(p * len(s)))]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from haremq.testing import running_broker

    gaps: dict[str, list[float]] = {p: [] for p in PHASES}
    phase = ["idle"]
    async with running_broker() as node:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()

        async def ticker() -> None:
            last = loop.time()
            while not stop.is_set():
                await asyncio.sleep(0.001)
                now = loop.time()
                if phase[0] in gaps:
                    gaps[phase[0]].append(now - last)
                last = now

        tick = loop.create_task(ticker())
        proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--role", "load", "--port", str(node.amqp_port), "--mib", str(args.mib),
            "--queues", str(args.queues), "--compact-wait", str(args.compact_wait),
            stdout=subprocess.PIPE)
        assert proc.stdout is not None
        started = {}
        while True:
            line = await proc.stdout.readline()
            if not line:
                break
            word = line.decode().split()[-1]
            phase[0] = word
            started[word] = time.monotonic()
        await proc.wait()
        stop.set()
        await tick
        store = node.broker.store
        stats = store.stats("/", "stall-big") if hasattr(store, "stats") else None
        extra = {k: getattr(store, k) for k in ("prealloc_used", "prealloc_missed") if hasattr(store, k)}
        data_dir = node.settings.data_dir
    shutil.rmtree(data_dir, ignore_errors=True)  # running_broker leaves its temporary data dir behind
    out: dict[str, Any] = {"bench": "loop_stall", "mib": args.mib, "queues": args.queues,
                           "rc": proc.returncode,
                           "compactions": None if stats is None else stats.compactions, **extra}
    for p in PHASES:
        xs = gaps[p]
        out[p] = {"ticks": len(xs), "worst_ms": round(max(xs, default=0) * 1000, 2),
                  "p99_ms": round(_pct(xs, 0.99) * 1000, 2), "p999_ms": round(_pct(xs, 0.999) * 1000, 2)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mib", type=int, default=256, help="MiB of 64 KiB persistent messages in the grow phase")
    ap.add_argument("--queues", type=int, default=1000, help="queues declared, published to and deleted")
    ap.add_argument("--compact-wait", type=float, default=12.0, help="seconds to let maintenance compact")
    ap.add_argument("--json-out", help="append the JSON line to this file")
    ap.add_argument("--bound-ms", type=float, help="exit 1 if the worst gap of the store phases (compact, declare) "
                    "exceeds this")
    ap.add_argument("--role", default="bench", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role == "load":
        load(args.port, args.mib, args.queues, args.compact_wait)
        return
    res = asyncio.run(run(args))
    line = json.dumps(res)
    print(line)
    if args.json_out:
        with open(args.json_out, "a") as f:
            f.write(line + "\n")
    print("\n| phase | ticks | worst gap ms | p99 gap ms | p99.9 gap ms |\n|---|---|---|---|---|")
    for p in PHASES:
        r = res[p]
        print(f"| {p} | {r['ticks']} | {r['worst_ms']} | {r['p99_ms']} | {r['p999_ms']} |")
    if args.bound_ms is not None:
        over = {p: res[p]["worst_ms"] for p in ("compact", "declare") if res[p]["worst_ms"] > args.bound_ms}
        if over:
            print(f"\nstalls over the {args.bound_ms} ms bound: {over}")
            sys.exit(1)


if __name__ == "__main__":
    main()
