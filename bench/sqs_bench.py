"""SQS API benchmark: haremq vs moto_server in the same run, with a lean asyncio HTTP client.

    .venv/bin/python bench/sqs_bench.py [--seconds 3] [--depths 1000,100000,1000000] [--no-moto]
    .venv/bin/python bench/sqs_bench.py --wrk [--seconds 5] [--wrk-runs 3] [--wrk-conns 1,8]
        [--wrk-fsync always,interval]         # server-side SendMessage rate with wrk (Debian package)

Scenarios: SendMessage with 1 and 8 requests in flight, SendMessageBatch(10), and
ReceiveMessage(10) + DeleteMessageBatch with the queue preloaded to each depth (cost per call must
stay flat as the queue grows). Requests are SigV4-signed by a small signer here (haremq verifies
every signature; moto verifies none). Prints one JSON line per result and a table at the end.

``--wrk``: the Python client may be the limit with one request in flight, so this mode drives SendMessage with
``wrk`` instead (one unsigned keep-alive POST in flight per connection; haremq started with
``--sqs-any-credentials``, one haremq per ``HAREMQ_FSYNC`` value, plus moto_server), runs interleaved, and prints
JSON lines and a Markdown table of medians with the haremq/moto ratio and the server's CPU per request.
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


def start_haremq(extra: tuple[str, ...] = (),
                 env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], int]:
    data = tempfile.mkdtemp(prefix="haremq-sqsbench-")
    proc = subprocess.Popen([sys.executable, "-m", "haremq.cli", "serve", "--amqp-port", "0", "--no-stomp",
                             "--sqs-port", "0", "--no-management", "--data-dir", data, "--log-level", "warning",
                             *extra], stdout=subprocess.PIPE, text=True,
                            env=None if env is None else {**os.environ, **env})
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
    ap.add_argument("--wrk", action="store_true",
                    help="measure the servers with wrk (C client, unsigned SendMessage POSTs) instead")
    ap.add_argument("--wrk-conns", default="1,8", help="--wrk: connections per run (one request in flight each)")
    ap.add_argument("--wrk-threads", type=int, default=1, help="--wrk: wrk threads (1 leaves a core to the server)")
    ap.add_argument("--wrk-runs", type=int, default=3, help="--wrk: runs per configuration; the table shows medians")
    ap.add_argument("--wrk-fsync", default="always,interval", help="--wrk: HAREMQ_FSYNC values, one haremq each")
    args = ap.parse_args()
    if args.wrk:
        wrk_main(args)
        return
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



# ---- --wrk: measure the servers, not this Python client ------------------------------------------------
# wrk (Debian package ``wrk``) sends the same pre-built request over keep-alive connections, one request in
# flight per connection. The request is unsigned: haremq runs with --sqs-any-credentials (moto checks no
# signature anyway). A Lua ``done`` hook prints wrk's own counters as one JSON line that we parse. After each run
# the queue's ApproximateNumberOfMessages is read back (``queued_after``): it must be >= wrk's request count,
# which proves the 200s were real sends.

WRK_LUA = r"""
wrk.method = "POST"
wrk.path = "/"
wrk.body = [[%(body)s]]
wrk.headers["Content-Type"] = "application/x-amz-json-1.0"
wrk.headers["X-Amz-Target"] = "AmazonSQS.SendMessage"
-- unsigned, but moto picks the service from the credential scope: without it moto answers 200 with an S3
-- ListBuckets document and queues nothing. haremq (--sqs-any-credentials) reads only the region from it.
wrk.headers["Authorization"] = "AWS4-HMAC-SHA256 Credential=guest/20240101/us-east-1/sqs/aws4_request, " ..
  "SignedHeaders=host, Signature=0000000000000000000000000000000000000000000000000000000000000000"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKJSON {"requests":%%d,"duration_us":%%d,"err_connect":%%d,"err_read":%%d,' ..
    '"err_write":%%d,"err_status":%%d,"err_timeout":%%d,"lat_mean_us":%%.1f,"lat_p50_us":%%d,' ..
    '"lat_p90_us":%%d,"lat_p99_us":%%d,"lat_max_us":%%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_wrk(port: int, url: str, conns: int, threads: int, seconds: float, pid: int) -> dict[str, Any]:
    body = json.dumps({"QueueUrl": url, "MessageBody": "x" * 100})
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(WRK_LUA % {"body": body})
        script = f.name
    try:
        cpu0 = _cpu_s(pid)
        out = subprocess.run(["wrk", "-t", str(min(threads, conns)), "-c", str(conns),
                              "-d", f"{max(1, round(seconds))}s",  # wrk takes whole seconds
                              "--timeout", "5s", "-s", script, f"http://127.0.0.1:{port}/"],
                             capture_output=True, text=True, check=True).stdout
        cpu = _cpu_s(pid) - cpu0
    finally:
        os.unlink(script)
    line = next((ln for ln in out.splitlines() if ln.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    w = json.loads(line[len("WRKJSON "):])
    dur = w["duration_us"] / 1e6
    return {"req_per_s": round(w["requests"] / dur), "requests": w["requests"],
            "errors": w["err_connect"] + w["err_read"] + w["err_write"] + w["err_status"] + w["err_timeout"],
            "err_status": w["err_status"], "p50_ms": w["lat_p50_us"] / 1000, "p90_ms": w["lat_p90_us"] / 1000,
            "p99_ms": w["lat_p99_us"] / 1000, "max_ms": w["lat_max_us"] / 1000,
            "mean_ms": round(w["lat_mean_us"] / 1000, 3),
            "server_cpu_pct": round(100 * cpu / dur, 1),
            "server_cpu_us_per_req": round(cpu * 1e6 / w["requests"], 1) if w["requests"] else None}


def wrk_main(args: argparse.Namespace) -> None:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install -y wrk")
    conns = [int(x) for x in args.wrk_conns.split(",") if x]

    def call(port: int, action: str, doc: dict[str, Any]) -> dict[str, Any]:
        # bounded: a server that stops answering (e.g. HAREMQ_FSYNC=off spinning in its flush loop) fails the run
        return asyncio.run(asyncio.wait_for(Conn("127.0.0.1", port).call(action, doc), 30))

    targets: list[tuple[str, str, int, int]] = []  # (name, fsync, port, pid)
    procs: list[subprocess.Popen[Any]] = []
    try:
        for mode in [m for m in args.wrk_fsync.split(",") if m]:
            proc, port = start_haremq(("--sqs-any-credentials",), {"HAREMQ_FSYNC": mode})
            procs.append(proc)
            targets.append(("haremq", mode, port, proc.pid))
        if not args.no_moto:
            mport = _free_port()
            moto = start_moto(mport)
            if moto is None:
                print("moto_server not found; skipped", file=sys.stderr)
            else:
                procs.append(moto)
                targets.append(("moto", "-", mport, moto.pid))
        print(json.dumps({"event": "start", "load_avg": os.getloadavg(), "cpus": os.cpu_count(),
                          "targets": [{"target": t, "fsync": m, "port": p, "pid": pid}
                                      for t, m, p, pid in targets],
                          "argv": sys.argv[1:]}), flush=True)
        results: list[dict[str, Any]] = []
        for run in range(1, args.wrk_runs + 1):
            for name, mode, port, pid in targets:  # interleaved: every target in every run
                for c in conns:
                    qn = f"wrk-{os.getpid()}-{run}-{c}-{int(time.time() * 1000)}"
                    url = call(port, "CreateQueue", {"QueueName": qn})["QueueUrl"]
                    load1 = os.getloadavg()[0]
                    r = run_wrk(port, url, c, args.wrk_threads, args.seconds, pid)
                    attrs = call(port, "GetQueueAttributes", {"QueueUrl": url,
                                                             "AttributeNames": ["ApproximateNumberOfMessages"]})
                    call(port, "DeleteQueue", {"QueueUrl": url})
                    r = {"target": name, "fsync": mode, "conns": c, "run": run, **r, "load1": round(load1, 2),
                         "queued_after": int(attrs.get("Attributes", {}).get("ApproximateNumberOfMessages", -1))}
                    print(json.dumps(r), flush=True)
                    results.append(r)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM if p.args[0] == sys.executable else signal.SIGINT)
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()

    def med(xs: list[float]) -> float:
        xs = sorted(xs)
        return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2

    print()
    print("| target | fsync | conns | req/s (median) | per run | p50 ms | p99 ms | server CPU % | CPU us/req "
          "| x moto |")
    print("|---|---|---:|---:|---|---:|---:|---:|---:|---:|")
    moto_rate = {c: med([r["req_per_s"] for r in results if r["target"] == "moto" and r["conns"] == c])
                 for c in conns if any(r["target"] == "moto" and r["conns"] == c for r in results)}
    for name, mode, _, _ in targets:
        for c in conns:
            rs = [r for r in results if r["target"] == name and r["fsync"] == mode and r["conns"] == c]
            rate = med([r["req_per_s"] for r in rs])
            ratio = f"{rate / moto_rate[c]:.0f}x" if c in moto_rate and name != "moto" else ""
            per_run = " / ".join(f"{r['req_per_s']:,}" for r in rs)
            p50, p99 = med([r["p50_ms"] for r in rs]), med([r["p99_ms"] for r in rs])
            cpu, us = med([r["server_cpu_pct"] for r in rs]), med([r["server_cpu_us_per_req"] or 0 for r in rs])
            print(f"| {name} | {mode} | {c} | {rate:,.0f} | {per_run} | {p50:.3f} | {p99:.3f} | {cpu:.0f} | {us:.0f} "
                  f"| {ratio} |")
    short = [r for r in results if r["queued_after"] < r["requests"]]
    if short:
        print(f"\nWARNING: {len(short)} runs queued fewer messages than wrk counted requests (see queued_after)")
    bad = [r for r in results if r["errors"]]
    if bad:
        print(f"\nruns with wrk errors (non-2xx, socket): {len(bad)}; see the JSON lines")


if __name__ == "__main__":
    main()
