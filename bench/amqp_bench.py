"""AMQP 0-9-1 broker benchmark with a lean asyncio client (issue 2, section 5).

Stock clients (aiormq, pika) top out below a broker's speed, so this file carries its own minimal client:
the handshake and the rare synchronous methods are built and parsed with pamqp; the hot frames (Basic.Publish
+ content header + body, Basic.Deliver, Basic.Ack) are pre-encoded with ``struct`` once per scenario and parsed
by hand. Producer and consumer run in separate processes (fork), each on its own uvloop event loop.

Scenarios (100-byte transient bodies unless said otherwise; publisher confirms with a window of outstanding
publishes; manual acks with ``multiple`` once per socket read; prefetch 1000):
  a  1 producer -> 1 queue -> 1 consumer, end-to-end msg/s
  b  end-to-end latency p50/p99 at fixed offered rates (default 1,000 and 5,000 msg/s); timestamp in the body
  c  fanout exchange -> 4 queues -> 4 consumers, deliveries/s
  d  64 KiB bodies, end-to-end msg/s

Output: one JSON line per (broker, scenario, run) on stdout, then a table of medians.

Examples:
  python bench/amqp_bench.py --url amqp://guest:guest@127.0.0.1:5672/ [--pid BROKER_PID]
  python bench/amqp_bench.py --compare --runs 3      # fresh haremq subprocess + private RabbitMQ node
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import ssl
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from pamqp import commands, frame, header

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rabbitmq import RabbitNode, rss_kib

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None

# ---------------------------------------------------------------------------------------------- wire constants
FRAME_HDR = struct.Struct(">BHI")
U32 = struct.Struct(">I")
U64 = struct.Struct(">Q")
END = b"\xce"
DELIVER = (60 << 16) | 60
ACK = (60 << 16) | 80
NACK = (60 << 16) | 120
RETURN = (60 << 16) | 50
HEARTBEAT = b"\x08\x00\x00\x00\x00\x00\x00\xce"
CLIENT_FRAME_MAX = 131072


def now_ns() -> int:
    return time.monotonic_ns()  # CLOCK_MONOTONIC: comparable across processes on one machine


def _sstr(s: str) -> bytes:
    b = s.encode()
    return bytes([len(b)]) + b


def publish_prefix(ch: int, exchange: str, routing_key: str, body_size: int, delivery_mode: int = 1) -> bytes:
    """Basic.Publish method frame + content header frame (delivery_mode 1 = transient, 2 = persistent)."""
    m = struct.pack(">HHH", 60, 40, 0) + _sstr(exchange) + _sstr(routing_key) + b"\x00"
    h = struct.pack(">HHQH", 60, 0, body_size, 0x1000) + bytes([delivery_mode])
    return FRAME_HDR.pack(1, ch, len(m)) + m + END + FRAME_HDR.pack(2, ch, len(h)) + h + END


def body_frames(ch: int, body: bytes, frame_max: int) -> bytes:
    step = frame_max - 8
    return b"".join(FRAME_HDR.pack(3, ch, len(body[i:i + step])) + body[i:i + step] + END
                    for i in range(0, len(body), step))


def ack_frame(ch: int, tag: int, multiple: bool) -> bytes:
    return FRAME_HDR.pack(1, ch, 13) + struct.pack(">HHQB", 60, 80, tag, 1 if multiple else 0) + END


# ---------------------------------------------------------------------------------------------- lean client
class AmqpError(Exception):
    pass


class Conn(asyncio.Protocol):
    """One AMQP connection with one channel (1). Subclasses hook into the hot path."""

    def __init__(self, user: str, password: str, vhost: str) -> None:
        self.loop = asyncio.get_running_loop()
        self.user, self.password, self.vhost = user, password, vhost
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.ready: asyncio.Future[None] = self.loop.create_future()
        self.closed: asyncio.Future[None] = self.loop.create_future()
        self.rpc_waiters: list[asyncio.Future[Any]] = []
        self.frame_max = CLIENT_FRAME_MAX
        self.error: BaseException | None = None
        # consumer state
        self.received = 0
        self.last_tag = 0
        self.acked_tag = 0
        self.t_first = 0
        self.t_last = 0
        self.want_ts = False
        self.ts_next = False
        self.lat: array[int] = array("q")
        # producer state
        self.conf_upto = 0
        self.conf_singles: set[int] = set()
        self.nacks = 0
        self.returns = 0

    # --- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            import socket

            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.write(header.ProtocolHeader().marshal())

    def connection_lost(self, exc: Exception | None) -> None:
        err = self.error or AmqpError(f"connection lost: {exc}")
        for fut in (self.ready, self.closed, *self.rpc_waiters):
            if not fut.done():
                if fut is self.closed:
                    fut.set_result(None)
                else:
                    fut.set_exception(err)
        self.on_error(err)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        n = len(buf)
        pos = 0
        t = now_ns()
        unpack_hdr = FRAME_HDR.unpack_from
        u32 = U32.unpack_from
        u64 = U64.unpack_from
        while pos + 7 <= n:
            ftype, _ch, size = unpack_hdr(buf, pos)
            end = pos + 7 + size
            if end >= n:
                break
            if ftype == 1:
                cm = u32(buf, pos + 7)[0]
                if cm == DELIVER:
                    self.received += 1
                    self.last_tag = u64(buf, pos + 12 + buf[pos + 11])[0]
                elif cm == ACK:
                    self._confirm(u64(buf, pos + 11)[0], buf[pos + 19] & 1)
                elif cm == NACK:
                    self.nacks += 1
                    self._confirm(u64(buf, pos + 11)[0], buf[pos + 19] & 1)
                else:
                    self._method(bytes(buf[pos:end + 1]))
            elif ftype == 3:
                if self.ts_next:
                    self.ts_next = False
                    self.lat.append(t - u64(buf, pos + 7)[0])
            elif ftype == 2:
                self.ts_next = self.want_ts
            elif ftype == 8:
                assert self.transport is not None
                self.transport.write(HEARTBEAT)
            else:
                self._fail(AmqpError(f"unexpected frame type {ftype}"))
                return
            pos = end + 1
        if pos:
            del buf[:pos]
        self.after_read(t)

    # --- hooks
    def after_read(self, t: int) -> None:
        pass

    def on_confirmed(self) -> None:
        pass

    def on_error(self, err: BaseException) -> None:
        pass

    # --- confirms
    def _confirm(self, tag: int, multiple: int) -> None:
        if multiple:
            if tag > self.conf_upto:
                self.conf_upto = tag
                if self.conf_singles:
                    self.conf_singles = {x for x in self.conf_singles if x > tag}
        elif tag == self.conf_upto + 1:
            self.conf_upto = tag
            s = self.conf_singles
            while self.conf_upto + 1 in s:
                self.conf_upto += 1
                s.discard(self.conf_upto)
        else:
            self.conf_singles.add(tag)
        self.on_confirmed()

    @property
    def confirmed(self) -> int:
        return self.conf_upto + len(self.conf_singles)

    # --- slow path: handshake and synchronous methods, via pamqp
    def _fail(self, err: BaseException) -> None:
        self.error = err
        for fut in (self.ready, *self.rpc_waiters):
            if not fut.done():
                fut.set_exception(err)
        self.on_error(err)
        if self.transport is not None:
            self.transport.close()

    def _send(self, ch: int, method: Any) -> None:
        assert self.transport is not None
        self.transport.write(frame.marshal(method, ch))

    def _method(self, raw: bytes) -> None:
        _, ch, m = frame.unmarshal(raw)
        if isinstance(m, commands.Connection.Start):
            resp = f"\0{self.user}\0{self.password}"
            self._send(0, commands.Connection.StartOk(
                client_properties={"product": "haremq-bench", "capabilities": {"publisher_confirms": True}},
                mechanism="PLAIN", response=resp, locale="en_US"))
        elif isinstance(m, commands.Connection.Tune):
            self.frame_max = min(m.frame_max or CLIENT_FRAME_MAX, CLIENT_FRAME_MAX)
            self._send(0, commands.Connection.TuneOk(channel_max=m.channel_max or 2047, frame_max=self.frame_max,
                                                     heartbeat=0))
            self._send(0, commands.Connection.Open(virtual_host=self.vhost))
        elif isinstance(m, commands.Connection.OpenOk):
            self._send(1, commands.Channel.Open())
        elif isinstance(m, commands.Channel.OpenOk) and not self.ready.done():
            self.ready.set_result(None)
        elif isinstance(m, commands.Connection.Close):
            self._send(0, commands.Connection.CloseOk())
            self._fail(AmqpError(f"connection closed by broker: {m.reply_code} {m.reply_text}"))
        elif isinstance(m, commands.Channel.Close):
            self._send(ch, commands.Channel.CloseOk())
            self._fail(AmqpError(f"channel closed by broker: {m.reply_code} {m.reply_text}"))
        elif isinstance(m, commands.Connection.CloseOk):
            assert self.transport is not None
            self.transport.close()
        elif isinstance(m, commands.Basic.Return):
            self.returns += 1
        elif self.rpc_waiters:
            fut = self.rpc_waiters.pop(0)
            if not fut.done():
                fut.set_result(m)

    async def rpc(self, method: Any) -> Any:
        fut: asyncio.Future[Any] = self.loop.create_future()
        self.rpc_waiters.append(fut)
        self._send(1, method)
        return await asyncio.wait_for(fut, 30)

    async def close(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self._send(0, commands.Connection.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.closed), 5)
        self.transport.close()


def client_tls() -> ssl.SSLContext:
    """The benchmark's TLS client: encrypts, does not verify the (self-signed) bench certificate; what
    a broker spends on TLS is the same either way."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def bench_certificate(directory: str) -> tuple[str, str]:
    """A self-signed certificate and key for the TLS scenarios (openssl CLI)."""
    cert, key = os.path.join(directory, "bench-cert.pem"), os.path.join(directory, "bench-key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-keyout", key, "-out", cert], check=True, capture_output=True)
    os.chmod(key, 0o644)  # the RabbitMQ node runs as this user too, but be sure it can read it
    return cert, key


async def connect(url: str, factory: Callable[..., Conn] = Conn, **kw: Any) -> Conn:
    u = urlsplit(url)
    vhost = "/" if u.path in ("", "/") else unquote(u.path[1:])
    loop = asyncio.get_running_loop()
    tls = u.scheme == "amqps"
    _, proto = await loop.create_connection(
        lambda: factory(unquote(u.username or "guest"), unquote(u.password or "guest"), vhost, **kw),
        u.hostname or "127.0.0.1", u.port or (5671 if tls else 5672), ssl=client_tls() if tls else None)
    await asyncio.wait_for(proto.ready, 30)
    return proto


# ---------------------------------------------------------------------------------------------- roles
class Consumer(Conn):
    def __init__(self, user: str, password: str, vhost: str, expected: int = 0, want_ts: bool = False) -> None:
        super().__init__(user, password, vhost)
        self.expected = expected
        self.want_ts = want_ts
        self.done: asyncio.Future[None] = self.loop.create_future()

    def after_read(self, t: int) -> None:
        if self.last_tag > self.acked_tag:
            assert self.transport is not None
            self.transport.write(ack_frame(1, self.last_tag, True))
            self.acked_tag = self.last_tag
            if not self.t_first:
                self.t_first = t
            self.t_last = t
        if self.received >= self.expected and not self.done.done():
            self.done.set_result(None)

    def on_error(self, err: BaseException) -> None:
        if not self.done.done():
            self.done.set_exception(err)


class Producer(Conn):
    def __init__(self, user: str, password: str, vhost: str) -> None:
        super().__init__(user, password, vhost)
        self.total = 0
        self.published = 0
        self.window = 1000
        self.min_batch = 1
        self.msg = b""
        self.paced = False
        self.all_confirmed: asyncio.Future[None] = self.loop.create_future()
        self.window_open: asyncio.Event = asyncio.Event()

    def pump(self) -> None:
        room = self.window - (self.published - self.confirmed)
        left = self.total - self.published
        n = room if room < left else left
        if n <= 0 or (n < self.min_batch and n < left):
            return
        assert self.transport is not None
        self.transport.write(self.msg * n)
        self.published += n

    def on_confirmed(self) -> None:
        if self.paced:
            if self.published - self.confirmed < self.window:
                self.window_open.set()
        else:
            self.pump()
        if self.confirmed >= self.total and not self.all_confirmed.done():
            self.all_confirmed.set_result(None)

    def on_error(self, err: BaseException) -> None:
        if not self.all_confirmed.done():
            self.all_confirmed.set_exception(err)


# ---------------------------------------------------------------------------------------------- child processes
def _run(coro_fn: Callable[[], Any]) -> Any:
    if uvloop is not None:
        return uvloop.run(coro_fn())
    return asyncio.run(coro_fn())


def consumer_proc(url: str, queues: list[str], expected: int, want_ts: bool, prefetch: int, idle_timeout: float,
                  pipe: Any) -> None:
    async def main() -> dict[str, Any]:
        conns: list[Consumer] = []
        for q in queues:
            c: Consumer = await connect(url, Consumer, expected=expected, want_ts=want_ts)  # type: ignore[assignment]
            await c.rpc(commands.Basic.Qos(prefetch_count=prefetch))
            await c.rpc(commands.Basic.Consume(queue=q, no_ack=False))
            conns.append(c)
        pipe.send({"ready": True})
        pending = {c.done for c in conns}
        last = -1
        error = None
        while pending:
            _, pending = await asyncio.wait(pending, timeout=idle_timeout)
            got = sum(c.received for c in conns)
            if pending and got == last:
                error = f"stalled: received {got} of {expected * len(conns)}"
                break
            last = got
        for c in conns:
            if c.done.done() and c.done.exception() is not None:
                error = str(c.done.exception())
        lat = array("q")
        for c in conns:
            lat.extend(c.lat)
        res = {"received": sum(c.received for c in conns), "t_first": min(c.t_first or 1 << 62 for c in conns),
               "t_last": max(c.t_last for c in conns), "error": error, "lat": lat.tobytes() if want_ts else b""}
        for c in conns:
            with contextlib.suppress(Exception):
                await c.close()
        return res

    try:
        pipe.send(_run(main))
    except BaseException as exc:  # report, never hang the parent
        pipe.send({"error": f"{type(exc).__name__}: {exc}"})


def producer_proc(url: str, exchange: str, routing_key: str, total: int, body_size: int, window: int,
                  rate: float, pipe: Any, delivery_mode: int = 1) -> None:
    async def main() -> dict[str, Any]:
        p: Producer = await connect(url, Producer)  # type: ignore[assignment]
        await p.rpc(commands.Confirm.Select())
        prefix = publish_prefix(1, exchange, routing_key, body_size, delivery_mode)
        p.total, p.window = total, window
        t0 = now_ns()
        if rate <= 0:
            p.msg = prefix + body_frames(1, b"\x00" * body_size, p.frame_max)
            p.min_batch = max(1, window // 10)
            p.pump()
        else:
            assert body_size + 8 <= p.frame_max and body_size >= 8
            p.paced = True
            pre = prefix + FRAME_HDR.pack(3, 1, body_size)
            post = b"\x00" * (body_size - 8) + END
            pack_ts = U64.pack
            interval = 1e9 / rate
            write = p.transport.write  # type: ignore[union-attr]
            while p.published < total:
                t = now_ns()
                due = min(total, int((t - t0) / interval) + 1)
                k = min(due - p.published, window - (p.published - p.confirmed))
                if k > 0:
                    ts = pack_ts(t)
                    write(b"".join(pre + ts + post for _ in range(k)))
                    p.published += k
                elif p.published - p.confirmed >= window:
                    p.window_open.clear()
                    await p.window_open.wait()
                    continue
                await asyncio.sleep(0.001)
        t_pub = now_ns()
        await asyncio.wait_for(p.all_confirmed, 120)
        t_conf = now_ns()
        res = {"t_start": t0, "t_published": t_pub, "t_confirmed": t_conf, "published": p.published,
               "nacks": p.nacks, "returns": p.returns}
        await p.close()
        return res

    try:
        pipe.send(_run(main))
    except BaseException as exc:
        pipe.send({"error": f"{type(exc).__name__}: {exc}"})


# ---------------------------------------------------------------------------------------------- orchestration
def proc_cpu_s(pid: int | None) -> float | None:
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return None


def vm_hwm_kib(pid: int | None) -> int | None:
    if not pid:
        return None
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return None


async def _topology(url: str, queues: list[str], exchange: str, delete: bool, durable: bool = False) -> None:
    c = await connect(url)
    try:
        if delete:
            for q in queues:
                await c.rpc(commands.Queue.Delete(queue=q))
            if exchange:
                await c.rpc(commands.Exchange.Delete(exchange=exchange))
            return
        if exchange:
            await c.rpc(commands.Exchange.Declare(exchange=exchange, exchange_type="fanout", durable=durable,
                                                  auto_delete=False))
        for q in queues:
            await c.rpc(commands.Queue.Declare(queue=q, durable=durable, auto_delete=False))
            await c.rpc(commands.Queue.Purge(queue=q))
            if exchange:
                await c.rpc(commands.Queue.Bind(queue=q, exchange=exchange, routing_key=""))
    finally:
        await c.close()


def _recv(pipe: Any, timeout: float, what: str) -> dict[str, Any]:
    if not pipe.poll(timeout):
        return {"error": f"{what}: no answer within {timeout}s"}
    res: dict[str, Any] = pipe.recv()
    return res


def run_once(url: str, *, n_queues: int, fanout: bool, count: int, body_size: int, window: int, prefetch: int,
             rate: float = 0.0, broker_pid: int | None = None, delivery_mode: int = 1, durable: bool = False,
             consume: bool = True) -> dict[str, Any]:
    """One producer process, one consumer process (one connection per queue). Returns raw measurements.

    ``delivery_mode=2, durable=True`` publishes persistent messages to durable queues/exchange; ``consume=False``
    starts no consumer (publish-only: the queue keeps the messages until it is deleted at the end)."""
    rid = uuid.uuid4().hex[:8]
    queues = [f"bench.{rid}.q{i}" for i in range(n_queues)]
    exchange = f"bench.{rid}.fanout" if fanout else ""
    routing_key = "" if fanout else queues[0]
    _run(lambda: _topology(url, queues, exchange, False, durable))
    ctx = mp.get_context("fork")
    c_parent, c_child = ctx.Pipe()
    p_parent, p_child = ctx.Pipe()
    cons = ctx.Process(target=consumer_proc, args=(url, queues, count, rate > 0, prefetch, 15.0, c_child))
    if consume:
        cons.start()
        ready = _recv(c_parent, 60, "consumer setup")
    else:
        ready = {}
    out: dict[str, Any] = {}
    if ready.get("error"):
        out["error"] = ready["error"]
    else:
        cpu0 = proc_cpu_s(broker_pid)
        prod = ctx.Process(target=producer_proc,
                           args=(url, exchange, routing_key, count, body_size, window, rate, p_child, delivery_mode))
        prod.start()
        pres = _recv(p_parent, 600, "producer")
        cres = _recv(c_parent, 600, "consumer") if consume else {}
        cpu1 = proc_cpu_s(broker_pid)
        prod.join(10)
        out = {"producer": pres, "consumer": cres}
        if cpu0 is not None and cpu1 is not None:
            out["broker_cpu_s"] = cpu1 - cpu0
    if consume:
        cons.join(10)
    for pr in ctx.active_children():
        pr.kill()
    with contextlib.suppress(Exception):
        _run(lambda: _topology(url, queues, exchange, True))
    return out


def _pct(sorted_vals: list[int], q: float) -> float:
    if not sorted_vals:
        return float("nan")
    i = min(len(sorted_vals) - 1, max(0, round(q * (len(sorted_vals) - 1))))
    return sorted_vals[i] / 1e6


def scenario(name: str, url: str, args: argparse.Namespace, broker_pid: int | None) -> list[dict[str, Any]]:
    """Run one scenario against one broker; return result records (b yields one record per rate)."""
    recs: list[dict[str, Any]] = []
    if name == "b":
        for rate in args.lat_rates:
            count = int(rate * args.lat_seconds)
            r = run_once(url, n_queues=1, fanout=False, count=count, body_size=args.size, window=args.window,
                         prefetch=args.prefetch, rate=rate, broker_pid=broker_pid)
            rec: dict[str, Any] = {"scenario": f"b@{int(rate)}", "offered_msg_s": rate, "count": count}
            err = r.get("error") or r["producer"].get("error") or r["consumer"].get("error")
            if not err:
                lat = array("q")
                lat.frombytes(r["consumer"]["lat"])
                vals = sorted(lat[int(rate * args.lat_warmup):])  # drop the warm-up second(s)
                p, c = r["producer"], r["consumer"]
                rec.update({"p50_ms": _pct(vals, 0.5), "p99_ms": _pct(vals, 0.99), "p999_ms": _pct(vals, 0.999),
                            "max_ms": _pct(vals, 1.0), "samples": len(vals), "received": c["received"],
                            "achieved_msg_s": c["received"] / ((c["t_last"] - p["t_start"]) / 1e9)})
                if "broker_cpu_s" in r:
                    rec["broker_cpu_us_per_msg"] = r["broker_cpu_s"] / count * 1e6
            rec["error"] = err
            _add_rss(rec, broker_pid)
            recs.append(rec)
        return recs
    if name == "a":
        kw = {"n_queues": 1, "fanout": False, "count": args.count_a, "body_size": args.size, "window": args.window}
    elif name == "c":
        kw = {"n_queues": 4, "fanout": True, "count": args.count_c, "body_size": args.size, "window": args.window}
    elif name == "d":
        kw = {"n_queues": 1, "fanout": False, "count": args.count_d, "body_size": args.big_size,
              "window": args.window_d}
    else:
        raise SystemExit(f"unknown scenario {name}")
    r = run_once(url, prefetch=args.prefetch, broker_pid=broker_pid, **kw)  # type: ignore[arg-type]
    rec = {"scenario": name, "count": kw["count"], "body_size": kw["body_size"], "window": kw["window"]}
    err = r.get("error") or r["producer"].get("error") or r["consumer"].get("error")
    if not err:
        p, c = r["producer"], r["consumer"]
        secs = (c["t_last"] - p["t_start"]) / 1e9
        deliveries = c["received"]
        expected = kw["count"] * kw["n_queues"]
        rec.update({"e2e_s": secs, "deliveries": deliveries,
                    "publish_confirm_msg_s": p["published"] / ((p["t_confirmed"] - p["t_start"]) / 1e9),
                    "nacks": p["nacks"]})
        if name == "c":
            rec["deliveries_s"] = deliveries / secs
        else:
            rec["e2e_msg_s"] = deliveries / secs
            if name == "d":
                rec["e2e_MiB_s"] = deliveries * kw["body_size"] / secs / 2**20
        if "broker_cpu_s" in r:
            rec["broker_cpu_s"] = r["broker_cpu_s"]
            rec["broker_cpu_us_per_delivery"] = r["broker_cpu_s"] / max(1, deliveries) * 1e6
        if deliveries != expected:
            err = f"received {deliveries} of {expected}"
    rec["error"] = err
    recs.append(rec)
    _add_rss(rec, broker_pid)
    return recs


def _add_rss(rec: dict[str, Any], pid: int | None) -> None:
    """Broker RSS right after the scenario (queues already deleted) and its peak so far (VmHWM)."""
    rss, hwm = rss_kib(pid) if pid else None, vm_hwm_kib(pid)
    if rss:
        rec["broker_rss_mib"] = round(rss / 1024, 1)
    if hwm:
        rec["broker_hwm_mib"] = round(hwm / 1024, 1)


# ---------------------------------------------------------------------------------------------- brokers
class HaremqProc:
    def __init__(self, python: str, tls: tuple[str, str] | None = None, src: str | None = None) -> None:
        """``src``: run the haremq package found in that source folder instead of the installed one
        (``--baseline-src``: an older checkout measured in the same run)."""
        self.dir = tempfile.mkdtemp(prefix="haremq-bench-")
        env = dict(os.environ, PYTHONPATH=os.path.abspath(src)) if src else None
        cmd = [python, "-m", "haremq.cli", "serve", "--amqp-port", "0", "--data-dir", self.dir,
               "--log-level", "warning"]
        helptext = subprocess.run([python, "-m", "haremq.cli", "serve", "--help"], capture_output=True,
                                  text=True, env=env).stdout
        # other listeners on free ports, so runs never collide on fixed ports
        for opt in ("--stomp-port", "--sqs-port", "--management-port", "--amqps-port", "--stomps-port",
                    "--sqs-https-port", "--management-https-port"):
            if opt in helptext:
                cmd += [opt, "0"]
        if tls is not None:
            cmd += ["--tls-cert", tls[0], "--tls-key", tls[1]]
        self.cmd = cmd
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=None, text=True, env=env)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 30
        line = ""
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if "ready:" in line or not line:
                break
        if "ready:" not in line:
            self.stop()
            raise RuntimeError(f"haremq did not start: {line!r}")
        addr = line.split("amqp://", 1)[1].split()[0].rstrip("/")  # the line may list other listeners too
        self.url = f"amqp://guest:guest@{addr}/"
        self.tls_url = None
        if "amqps://" in line:
            self.tls_url = f"amqps://guest:guest@{line.split('amqps://', 1)[1].split()[0].rstrip('/')}/"
        self.pid = self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- reporting
METRICS = {"a": ("e2e_msg_s", "msg/s e2e", True), "c": ("deliveries_s", "deliveries/s", True),
           "d": ("e2e_msg_s", "msg/s e2e (64 KiB)", True)}


def _median(vals: list[float]) -> float | None:
    vals = [v for v in vals if v is not None and v == v]
    return statistics.median(vals) if vals else None


def _fmt(v: float | None, nd: int = 0) -> str:
    if v is None:
        return "-"
    return f"{v:,.{nd}f}"


def summarize(records: list[dict[str, Any]], brokers: list[str]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    by: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        by.setdefault((r["broker"], r["scenario"]), []).append(r)
    scen = sorted({r["scenario"] for r in records if r["scenario"] != "rss"}, key=lambda s: (s[0], len(s), s))

    def med(b: str, s: str, k: str) -> float | None:
        return _median([r.get(k) for r in by.get((b, s), []) if not r.get("error")])

    for s in scen:
        if s.startswith("b@"):
            for k, label in (("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"), ("max_ms", "max ms"),
                             ("broker_cpu_us_per_msg", "broker CPU us/msg")):
                rows.append((s, label, *(_fmt(med(b, s, k), 3 if k.endswith("_ms") else 1) for b in brokers)))
        else:
            k, label, _ = METRICS[s[0]]
            rows.append((s, label, *(_fmt(med(b, s, k)) for b in brokers)))
            rows.append((s, "broker CPU us/delivery", *(_fmt(med(b, s, "broker_cpu_us_per_delivery"), 1)
                                                         for b in brokers)))
    for k, label in (("idle_rss_mib", "RSS idle MiB"), ("after_rss_mib", "RSS after run MiB"),
                     ("peak_rss_mib", "RSS peak (VmHWM) MiB")):
        rows.append(("rss", label, *(_fmt(med(b, "rss", k), 1) for b in brokers)))
    return rows


def print_table(rows: list[tuple[str, ...]], brokers: list[str], out: Any = sys.stdout) -> None:
    hdr = ("scenario", "metric", *brokers)
    if len(brokers) == 2:
        hdr = (*hdr, f"{brokers[0]}/{brokers[1]}")
    lines = [hdr]
    for r in rows:
        if len(brokers) == 2:
            try:
                ratio = float(r[2].replace(",", "")) / float(r[3].replace(",", ""))
                r = (*r, f"{ratio:.2f}")
            except (ValueError, ZeroDivisionError):
                r = (*r, "-")
        lines.append(r)
    print("| " + " | ".join(lines[0]) + " |", file=out)
    print("|" + "---|" * len(lines[0]), file=out)
    for r in lines[1:]:
        print("| " + " | ".join(r) + " |", file=out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="AMQP URL of a running broker, e.g. amqp://guest:guest@127.0.0.1:5672/")
    ap.add_argument("--name", default="broker", help="label for --url results")
    ap.add_argument("--pid", type=int, help="broker PID for RSS/CPU readings in --url mode")
    ap.add_argument("--compare", action="store_true", help="start a fresh haremq and a private RabbitMQ node")
    ap.add_argument("--brokers", default="haremq,rabbitmq",
                    help="with --compare: which to run; haremq-tls / rabbitmq-tls: the same node over AMQPS")
    ap.add_argument("--rabbit-tls-port", type=int, default=5674, help="RabbitMQ's AMQPS port (rabbitmq-tls)")
    ap.add_argument("--haremq-python", default=sys.executable, help="python that has haremq installed")
    ap.add_argument("--baseline-src", help="with broker haremq-base: an older checkout's src/ folder, measured "
                    "in the same run (before/after a change)")
    ap.add_argument("--rabbit-dir", help="RabbitMQ state folder (default: temporary)")
    ap.add_argument("--rabbit-port", type=int, default=5673)
    ap.add_argument("--scenarios", default="a,b,c,d")
    ap.add_argument("--runs", type=int, default=1, help="runs per scenario; the table shows medians")
    ap.add_argument("--count-a", type=int, default=300_000)
    ap.add_argument("--count-c", type=int, default=100_000, help="messages published (x4 deliveries)")
    ap.add_argument("--count-d", type=int, default=20_000)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--big-size", type=int, default=64 * 1024)
    ap.add_argument("--window", type=int, default=1000, help="publisher-confirm window (outstanding publishes)")
    ap.add_argument("--window-d", type=int, default=200, help="confirm window for 64 KiB bodies")
    ap.add_argument("--prefetch", type=int, default=1000)
    ap.add_argument("--lat-rates", default="1000,5000")
    ap.add_argument("--lat-seconds", type=float, default=6.0)
    ap.add_argument("--lat-warmup", type=float, default=1.0, help="seconds of latency samples dropped")
    ap.add_argument("--json-out", help="also append JSON lines to this file")
    args = ap.parse_args(argv)
    args.lat_rates = [float(x) for x in args.lat_rates.split(",") if x]
    scen = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    if not args.compare and not args.url:
        ap.error("give --url or --compare")

    records: list[dict[str, Any]] = []
    jout = open(args.json_out, "a") if args.json_out else None  # noqa: SIM115

    def emit(rec: dict[str, Any]) -> None:
        records.append(rec)
        line = json.dumps(rec, default=str)
        print(line, flush=True)
        if jout:
            print(line, file=jout, flush=True)

    targets: dict[str, tuple[str, int | None]] = {}
    cleanup: list[Callable[[], None]] = []
    try:
        if args.compare:
            names = [b.strip() for b in args.brokers.split(",") if b.strip()]
            tls = bench_certificate(tempfile.mkdtemp(prefix="bench-tls-")) if any(
                b.endswith("-tls") for b in names) else None
            started: dict[str, Any] = {}
            for b in names:
                kind = b.removesuffix("-tls")
                if kind == "haremq":
                    if kind not in started:
                        started[kind] = h = HaremqProc(args.haremq_python, tls if "haremq-tls" in names else None)
                        cleanup.append(h.stop)
                    h = started[kind]
                    targets[b] = (h.tls_url if b.endswith("-tls") else h.url, h.pid)
                elif kind == "rabbitmq":
                    if kind not in started:
                        tls_port = args.rabbit_tls_port if "rabbitmq-tls" in names else None
                        started[kind] = node = RabbitNode(args.rabbit_dir, amqp_port=args.rabbit_port,
                                                          amqps_port=tls_port, tls_files=tls)
                        node.start()
                        cleanup.append(node.stop)
                    node = started[kind]
                    targets[b] = (node.amqps_url if b.endswith("-tls") else node.amqp_url, node.beam_pid)
                elif b == "haremq-base":
                    if not args.baseline_src:
                        ap.error("haremq-base needs --baseline-src")
                    hb = HaremqProc(args.haremq_python, src=args.baseline_src)
                    cleanup.append(hb.stop)
                    targets[b] = (hb.url, hb.pid)
                else:
                    ap.error(f"unknown broker {b}")
            time.sleep(3)  # let both settle before the idle reading
        else:
            targets[args.name] = (args.url, args.pid)
        brokers = list(targets)
        idle = {b: rss_kib(pid) if pid else None for b, (_, pid) in targets.items()}
        meta = {"event": "start", "brokers": {b: {"url": u, "pid": p} for b, (u, p) in targets.items()},
                "cpus": os.cpu_count(), "uvloop": uvloop is not None, "argv": sys.argv[1:]}
        print(json.dumps(meta), flush=True)
        for run in range(args.runs):
            for s in scen:
                order = brokers if run % 2 == 0 else brokers[::-1]  # alternate who goes first
                for b in order:
                    url, pid = targets[b]
                    for rec in scenario(s, url, args, pid):
                        emit({"broker": b, "run": run + 1, **rec})
        for b, (_, pid) in targets.items():
            after = rss_kib(pid) if pid else None
            hwm = vm_hwm_kib(pid)
            emit({"broker": b, "scenario": "rss", "idle_rss_mib": idle[b] / 1024 if idle[b] else None,
                  "after_rss_mib": after / 1024 if after else None, "peak_rss_mib": hwm / 1024 if hwm else None})
        print()
        print_table(summarize(records, brokers), brokers)
        errs = [r for r in records if r.get("error")]
        for r in errs:
            print(f"ERROR {r['broker']} {r['scenario']} run {r.get('run')}: {r['error']}", file=sys.stderr)
        return 1 if errs else 0
    finally:
        for fn in reversed(cleanup):
            with contextlib.suppress(Exception):
                fn()
        if jout:
            jout.close()


if __name__ == "__main__":
    sys.exit(main())
