"""SQS API benchmark: haremq vs moto_server in the same run, with a lean asyncio HTTP client.

    .venv/bin/python bench/sqs_bench.py [--seconds 3] [--depths 1000,100000,1000000] [--no-moto]

Scenarios: SendMessage with 1 and 8 requests in flight, SendMessageBatch(10), and
ReceiveMessage(10) + DeleteMessageBatch with the queue preloaded to each depth (cost per call must
stay flat as the queue grows). Requests are SigV4-signed by a small signer here (haremq verifies
every signature; moto verifies none). Prints one JSON line per result and a table at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

KEY, SECRET, REGION = "guest", "guest", "us-east-1"


def sign(host: str, target: str, body: bytes) -> bytes:
    now = datetime.datetime.now(datetime.UTC)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    date = amz_date[:8]
    headers = {"content-type": "application/x-amz-json-1.0", "host": host, "x-amz-date": amz_date,
               "x-amz-target": target}
    signed = ";".join(sorted(headers))
    canon = "".join(f"{k}:{headers[k]}\n" for k in sorted(headers))
    creq = f"POST\n/\n\n{canon}\n{signed}\n{hashlib.sha256(body).hexdigest()}"
    scope = f"{date}/{REGION}/sqs/aws4_request"
    sts = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(creq.encode()).hexdigest()}"
    k = hmac.new(b"AWS4" + SECRET.encode(), date.encode(), hashlib.sha256).digest()
    for part in (REGION, "sqs", "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    sig = hmac.new(k, sts.encode(), hashlib.sha256).hexdigest()
    auth = f"AWS4-HMAC-SHA256 Credential={KEY}/{scope}, SignedHeaders={signed}, Signature={sig}"
    head = (f"POST / HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-amz-json-1.0\r\n"
            f"X-Amz-Date: {amz_date}\r\nX-Amz-Target: {target}\r\nAuthorization: {auth}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


class Conn:
    """One keep-alive connection; reconnects when the server closes (moto's werkzeug may)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.r: asyncio.StreamReader | None = None
        self.w: asyncio.StreamWriter | None = None

    async def call(self, action: str, doc: dict[str, Any]) -> dict[str, Any]:
        if self.w is None:
            self.r, self.w = await asyncio.open_connection(self.host, self.port)
        assert self.r is not None
        self.w.write(sign(f"{self.host}:{self.port}", f"AmazonSQS.{action}", json.dumps(doc).encode()))
        head = await self.r.readuntil(b"\r\n\r\n")
        m = re.search(rb"(?i)content-length:\s*(\d+)", head)
        body = await self.r.readexactly(int(m.group(1))) if m else await self.r.read()
        if re.search(rb"(?i)connection:\s*close", head) or not m or head.startswith(b"HTTP/1.0"):
            self.w.close()
            self.w = None
        status = int(head.split(b" ", 2)[1])
        out = json.loads(body) if body else {}
        if status != 200:
            raise RuntimeError(f"{action}: {status} {out}")
        return out


async def timed(n_inflight: int, seconds: float, make: Any, host: str, port: int,
                max_ops: int | None = None) -> tuple[int, list[float], float]:
    """Run ``make(conn)`` coroutines from n workers for ``seconds``; returns (ops, latencies, elapsed)."""
    lat: list[float] = []
    ops = 0
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal ops
        c = Conn(host, port)
        while time.perf_counter() < stop and (max_ops is None or ops < max_ops):
            t0 = time.perf_counter()
            n = await make(c)
            lat.append(time.perf_counter() - t0)
            ops += n

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(n_inflight)))
    return ops, lat, time.perf_counter() - t0


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] * 1000


async def preload(host: str, port: int, url: str, total: int) -> None:
    entries = [{"Id": str(i), "MessageBody": "x" * 100} for i in range(10)]
    left = total // 10

    async def worker() -> None:
        nonlocal left
        c = Conn(host, port)
        while left > 0:
            left -= 1
            await c.call("SendMessageBatch", {"QueueUrl": url, "Entries": entries})

    await asyncio.gather(*(worker() for _ in range(8)))


async def run_target(name: str, host: str, port: int, seconds: float, depths: list[int]) -> list[dict[str, Any]]:
    c = Conn(host, port)
    results: list[dict[str, Any]] = []
    qn = f"bench-{os.getpid()}-{int(time.time())}"
    url = (await c.call("CreateQueue", {"QueueName": qn}))["QueueUrl"]
    body = "x" * 100

    async def send(conn: Conn) -> int:
        await conn.call("SendMessage", {"QueueUrl": url, "MessageBody": body})
        return 1

    batch = [{"Id": str(i), "MessageBody": body} for i in range(10)]

    async def send_batch(conn: Conn) -> int:
        await conn.call("SendMessageBatch", {"QueueUrl": url, "Entries": batch})
        return 10

    for label, n, fn in (("SendMessage x1", 1, send), ("SendMessage x8", 8, send),
                         ("SendMessageBatch(10)", 1, send_batch)):
        ops, lat, el = await timed(n, seconds, fn, host, port)
        r = {"target": name, "scenario": label, "msg_per_s": round(ops / el), "p50_ms": round(pct(lat, .5), 3),
             "p99_ms": round(pct(lat, .99), 3), "calls": len(lat)}
        print(json.dumps(r), flush=True)
        results.append(r)
    await c.call("DeleteQueue", {"QueueUrl": url})

    for depth in depths:
        qn2 = f"{qn}-d{depth}"
        url2 = (await c.call("CreateQueue", {"QueueName": qn2}))["QueueUrl"]
        t0 = time.perf_counter()
        await preload(host, port, url2, depth)
        load_s = time.perf_counter() - t0

        async def recv_del(conn: Conn, url2: str = url2) -> int:
            got = (await conn.call("ReceiveMessage", {"QueueUrl": url2, "MaxNumberOfMessages": 10}))
            msgs = got.get("Messages", [])
            if msgs:
                await conn.call("DeleteMessageBatch", {"QueueUrl": url2, "Entries": [
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(msgs)]})
            return len(msgs)

        # keep the depth roughly constant: receive at most a tenth of it
        ops, lat, el = await timed(1, seconds, recv_del, host, port, max_ops=max(depth // 10, 10))
        r = {"target": name, "scenario": f"Receive(10)+DeleteBatch @{depth}", "msg_per_s": round(ops / el),
             "p50_ms": round(pct(lat, .5), 3), "p99_ms": round(pct(lat, .99), 3), "calls": len(lat),
             "preload_msg_per_s": round(depth / load_s)}
        print(json.dumps(r), flush=True)
        results.append(r)
        await c.call("DeleteQueue", {"QueueUrl": url2})
    return results


def start_haremq() -> tuple[subprocess.Popen[str], int]:
    data = tempfile.mkdtemp(prefix="haremq-sqsbench-")
    proc = subprocess.Popen([sys.executable, "-m", "haremq.cli", "serve", "--amqp-port", "0", "--no-stomp",
                             "--sqs-port", "0", "--no-management", "--data-dir", data, "--log-level", "warning"],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    m = re.search(r"sqs://[^:]+:(\d+)", line)
    if not m:
        proc.kill()
        raise SystemExit(f"haremq did not start: {line!r}")
    return proc, int(m.group(1))


def start_moto(port: int = 5001) -> subprocess.Popen[bytes] | None:
    exe = shutil.which("moto_server") or os.path.join(os.path.dirname(sys.executable), "moto_server")
    if not os.path.exists(exe):
        return None
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    import socket

    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--depths", default="1000,100000,1000000")
    ap.add_argument("--no-moto", action="store_true")
    args = ap.parse_args()
    depths = [int(x) for x in args.depths.split(",") if x]
    results = []
    proc, port = start_haremq()
    try:
        results += asyncio.run(run_target("haremq", "127.0.0.1", port, args.seconds, depths))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    if not args.no_moto:
        moto = start_moto()
        if moto is None:
            print("moto_server not found; skipped", file=sys.stderr)
        else:
            try:
                results += asyncio.run(run_target("moto", "127.0.0.1", 5001, args.seconds, [1000]))
            finally:
                moto.send_signal(signal.SIGINT)
                moto.wait(10)
    print()
    print(f"{'target':8} {'scenario':36} {'msg/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for r in results:
        print(f"{r['target']:8} {r['scenario']:36} {r['msg_per_s']:>10} {r['p50_ms']:>8} {r['p99_ms']:>8}")
    by = {(r["target"], r["scenario"]): r["msg_per_s"] for r in results}
    for s in ("SendMessage x1", "SendMessage x8", "SendMessageBatch(10)"):
        if by.get(("moto", s)):
            print(f"haremq/moto {s}: {by[('haremq', s)] / by[('moto', s)]:.0f}x")



if __name__ == "__main__":
    main()
