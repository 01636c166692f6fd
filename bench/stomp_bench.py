"""STOMP 1.2 broker benchmark with a lean raw-socket asyncio client (issue 4).

stomp-py costs ~13x the CPU per message of a raw client (PEERS.md), so this file carries a minimal
one: SEND frames are pre-encoded once per scenario, MESSAGE frames are split out of each read by
``content-length`` and only the ``ack`` header is looked at. Producer and consumer are two
connections on one uvloop event loop in a client process separate from the broker.

Scenarios (100-byte bodies, ``/queue/<random>``, consumer in ``ack:client`` mode with
``prefetch-count:1000`` and one cumulative ACK per socket read; producer window of 1,000 messages
bounded by a RECEIPT every 500 sends):
  t  end-to-end throughput: N messages, msg/s from first send to last delivery
  l  end-to-end latency p50/p99 at fixed offered rates (default 1,000 and 5,000 msg/s), the send
     time (CLOCK_MONOTONIC, shared by processes) in the body

Output: one JSON line per (broker, scenario, run) on stdout, then a table of medians.

Examples:
  python bench/stomp_bench.py --port 61613                 # an already running broker
  python bench/stomp_bench.py --compare --runs 3           # fresh haremq subprocess + private RabbitMQ node
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None

BODY_SIZE = 100


def frame(command: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    head = "".join(f"{k}:{v}\n" for k, v in headers.items())
    if body:
        head += f"content-length:{len(body)}\n"
    return f"{command}\n{head}\n".encode() + body + b"\x00"


class Client(asyncio.Protocol):
    """A minimal STOMP 1.2 connection: CONNECT, pre-encoded SENDs, MESSAGE/RECEIPT parsing."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.connected: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.receipts: dict[str, asyncio.Future[None]] = {}
        self.on_messages: Any = None  # callable(list of (ack id, body)) per read
        self.ack_mode = "client"
        self.error: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.connected.done():
            self.connected.set_exception(ConnectionError("closed"))
        for f in self.receipts.values():
            if not f.done():
                f.set_exception(ConnectionError(self.error or "closed"))

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        pos = 0
        n = len(buf)
        batch: list[tuple[bytes, bytes]] = []
        while pos < n:
            while pos < n and buf[pos] in (10, 13):
                pos += 1
            end = buf.find(b"\n\n", pos)
            if end < 0:
                break
            head = bytes(buf[pos:end])
            start = end + 2
            i = head.find(b"content-length:")
            if i >= 0:
                j = head.find(b"\n", i)
                length = int(head[i + 15:j if j >= 0 else None])
                stop = start + length
                if stop >= n:
                    break
            else:
                stop = buf.find(b"\x00", start)
                if stop < 0:
                    break
            body = bytes(buf[start:stop])
            pos = stop + 1
            if head.startswith(b"MESSAGE"):
                a = head.find(b"\nack:")
                ack = head[a + 5:head.find(b"\n", a + 5) if head.find(b"\n", a + 5) >= 0 else None] if a >= 0 else b""
                batch.append((ack, body))
            elif head.startswith(b"RECEIPT"):
                rid = head.split(b"receipt-id:", 1)[1].split(b"\n", 1)[0].decode()
                f = self.receipts.pop(rid, None)
                if f is not None and not f.done():
                    f.set_result(None)
            elif head.startswith(b"CONNECTED"):
                self.connected.set_result(None)
            elif head.startswith(b"ERROR"):
                self.error = head.decode(errors="replace") + body.decode(errors="replace")
                print("ERROR frame:", self.error, file=sys.stderr)
        del buf[:pos]
        if batch and self.on_messages is not None:
            self.on_messages(batch)
            if self.ack_mode == "client" and self.transport is not None:
                self.transport.write(b"ACK\nid:" + batch[-1][0] + b"\n\n\x00")

    def receipt(self, rid: str) -> asyncio.Future[None]:
        f = self.receipts[rid] = asyncio.get_running_loop().create_future()
        return f

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)


async def open_client(host: str, port: int) -> Client:
    loop = asyncio.get_running_loop()
    _, c = await loop.create_connection(Client, host, port)
    c.write(frame("CONNECT", {"accept-version": "1.2", "host": "/", "login": "guest", "passcode": "guest",
                              "heart-beat": "0,0"}))
    await asyncio.wait_for(c.connected, 10)
    return c


async def subscribe(c: Client, dest: str, prefetch: int = 1000) -> None:
    c.write(frame("SUBSCRIBE", {"destination": dest, "id": "s", "ack": "client", "prefetch-count": str(prefetch),
                                "receipt": "sub"}))
    await asyncio.wait_for(c.receipt("sub"), 10)


async def close(c: Client) -> None:
    with contextlib.suppress(Exception):
        f = c.receipt("bye")
        c.write(frame("DISCONNECT", {"receipt": "bye"}))
        await asyncio.wait_for(f, 5)
    if c.transport is not None:
        c.transport.close()


# ---- scenarios -------------------------------------------------------------------------------------------------
async def throughput(host: str, port: int, count: int) -> dict[str, Any]:
    dest = f"/queue/bench-{uuid.uuid4().hex[:8]}"
    cons = await open_client(host, port)
    prod = await open_client(host, port)
    await subscribe(cons, dest)
    got = 0
    done = asyncio.get_running_loop().create_future()

    def on_messages(batch: list[tuple[bytes, bytes]]) -> None:
        nonlocal got
        got += len(batch)
        if got >= count and not done.done():
            done.set_result(time.perf_counter())

    cons.on_messages = on_messages
    send = frame("SEND", {"destination": dest}, b"x" * BODY_SIZE)
    window, every = 1000, 500
    pending: list[asyncio.Future[None]] = []
    t0 = time.perf_counter()
    sent = 0
    while sent < count:
        k = min(every, count - sent)
        rid = f"r{sent}"
        f = prod.receipt(rid)
        prod.write(send * (k - 1) + frame("SEND", {"destination": dest, "receipt": rid}, b"x" * BODY_SIZE))
        sent += k
        pending.append(f)
        while len(pending) * every > window:
            await asyncio.wait_for(pending.pop(0), 30)
    t1 = await asyncio.wait_for(done, 120)
    await close(prod)
    await close(cons)
    return {"scenario": "t", "messages": count, "msg_per_s": round(count / (t1 - t0))}


async def latency(host: str, port: int, rate: int, seconds: float) -> dict[str, Any]:
    dest = f"/queue/bench-{uuid.uuid4().hex[:8]}"
    cons = await open_client(host, port)
    prod = await open_client(host, port)
    await subscribe(cons, dest)
    total = int(rate * seconds)
    warm = rate // 2  # the first half second is warm-up
    lat: list[int] = []
    seen = 0
    done = asyncio.get_running_loop().create_future()
    pad = b"x" * (BODY_SIZE - 20)

    def on_messages(batch: list[tuple[bytes, bytes]]) -> None:
        nonlocal seen
        now = time.monotonic_ns()
        for _, body in batch:
            seen += 1
            if seen > warm:
                lat.append(now - int(body[:20]))
        if seen >= total and not done.done():
            done.set_result(None)

    cons.on_messages = on_messages
    head = f"SEND\ndestination:{dest}\ncontent-length:{BODY_SIZE}\n\n".encode()
    t0 = time.monotonic()
    sent = 0
    while sent < total:
        due = min(total, int((time.monotonic() - t0) * rate) + 1)
        if due > sent:
            now = time.monotonic_ns()
            prod.write(b"".join(head + b"%020d" % now + pad + b"\x00" for _ in range(due - sent)))
            sent = due
        await asyncio.sleep(0.0005)
    await asyncio.wait_for(done, 60)
    await close(prod)
    await close(cons)
    lat.sort()
    return {"scenario": "l", "rate": rate, "messages": total,
            "p50_ms": round(lat[len(lat) // 2] / 1e6, 3), "p99_ms": round(lat[int(len(lat) * 0.99)] / 1e6, 3),
            "max_ms": round(lat[-1] / 1e6, 3)}


async def run_all(host: str, port: int, count: int, rates: list[int], seconds: float) -> list[dict[str, Any]]:
    out = [await throughput(host, port, count)]
    for r in rates:
        out.append(await latency(host, port, r, seconds))
    return out


def run_client(host: str, port: int, count: int, rates: list[int], seconds: float) -> list[dict[str, Any]]:
    if uvloop is not None:
        uvloop.install()
    return asyncio.run(run_all(host, port, count, rates, seconds))


# ---- brokers ---------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def haremq_broker() -> Any:
    data_dir = tempfile.mkdtemp(prefix="haremq-bench-")
    proc = subprocess.Popen([sys.executable, "-m", "haremq.cli", "serve", "--amqp-port", "0", "--stomp-port", "0",
                             "--data-dir", data_dir, "--log-level", "warning"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = None
        for line in proc.stdout:
            m = re.search(r"stomp://[^:]+:(\d+)", line)
            if m:
                port = int(m.group(1))
                break
        if port is None:
            raise RuntimeError("haremq did not start")
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def table(rows: list[dict[str, Any]]) -> str:
    by: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for r in rows:
        by.setdefault((r["broker"], r["scenario"], r.get("rate", 0)), []).append(r)
    lines = ["| broker | scenario | msg/s | p50 ms | p99 ms |", "|---|---|---|---|---|"]
    for (broker, sc, rate), rs in sorted(by.items()):
        if sc == "t":
            lines.append(f"| {broker} | throughput (median of {len(rs)}) | "
                         f"{statistics.median(r['msg_per_s'] for r in rs):,.0f} | | |")
        else:
            lines.append(f"| {broker} | latency at {rate:,} msg/s (median of {len(rs)}) | | "
                         f"{statistics.median(r['p50_ms'] for r in rs):.2f} | "
                         f"{statistics.median(r['p99_ms'] for r in rs):.2f} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, help="STOMP port of a running broker")
    ap.add_argument("--compare", action="store_true", help="fresh haremq + private RabbitMQ (bench/rabbitmq.py)")
    ap.add_argument("--no-rabbit", action="store_true", help="with --compare: haremq only")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--count", type=int, default=100_000)
    ap.add_argument("--rates", default="1000,5000")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rabbit-amqp-port", type=int, default=5674)
    ap.add_argument("--rabbit-stomp-port", type=int, default=61615)
    args = ap.parse_args()
    rates = [int(r) for r in args.rates.split(",") if r]
    rows: list[dict[str, Any]] = []

    def bench(name: str, port: int) -> None:
        for run in range(args.runs):
            for r in run_client(args.host, port, args.count, rates, args.seconds):
                r.update(broker=name, run=run)
                print(json.dumps(r), flush=True)
                rows.append(r)

    if args.port:
        bench("broker", args.port)
    elif args.compare:
        with haremq_broker() as port:
            bench("haremq", port)
        if not args.no_rabbit:
            from rabbitmq import RabbitNode

            # ports and node name of our own, so a node another benchmark runs (5673/61614) is left alone
            with RabbitNode(amqp_port=args.rabbit_amqp_port, stomp_port=args.rabbit_stomp_port,
                            mgmt_port=args.rabbit_amqp_port + 10000, node_name="stompbench@localhost") as node:
                time.sleep(2)  # let the STOMP listener come up after AMQP
                bench("rabbitmq", node.stomp_port)
    else:
        ap.error("give --port or --compare")
    print(table(rows))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
