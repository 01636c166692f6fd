"""Persistent-message benchmark (issue 3): haremq (fsync=always) vs a private RabbitMQ node, same run.

Scenarios (persistent = delivery_mode 2, durable queue; publisher confirms with a window of 1,000 outstanding;
manual acks with ``multiple``, prefetch 1,000; client = bench/amqp_bench.py's lean client):
  p100   publish-only, 100-byte bodies: confirmed msg/s = count / (last confirm - first publish)
  e100   end to end, 100-byte bodies: msg/s = count / (last delivery - first publish)
  p1k    publish-only, 1 KiB bodies
  e1k    end to end, 1 KiB bodies
  recovery  publish N (default 1,000,000) persistent messages into one durable queue, stop the broker
         (SIGTERM), restart it and time "spawn -> ready" (haremq: its "ready:" line, printed after recovery;
         RabbitMQ: AMQP port accepts AND a passive declare returns N); broker RSS after recovery; then kill -9
         the recovered broker, restart and time again. An empty-node start is timed as a baseline.

The disk: ``fsync-probe`` (4 KiB append + fsync in a loop, per-call latency) runs before, between and after the
broker scenarios. haremq is started through ``_serve``, a wrapper around ``haremq.cli serve`` that wraps
``os.fsync`` to log (end time, duration) of every fsync the broker process issues to a side file - the broker
keeps counters (GroupCommit.syncs/fsyncs) but exposes none of them yet.

Encryption at rest (issue 12): ``--brokers haremq,haremq-enc`` runs the same build twice side by side, the second
with ``--encryption-key-file`` (a fresh random AES-256 key in the base dir); the last column is haremq/haremq-enc.

Examples:
  python bench/persist_bench.py --runs 3 --json-out /tmp/persist.jsonl             # everything, both brokers
  python bench/persist_bench.py --scenarios p100 --brokers haremq --count 1000000   # e.g. to profile meanwhile
  python bench/persist_bench.py --brokers haremq,haremq-enc --scenarios p100,e100,p1k,e1k --runs 3  # encryption cost
  python bench/persist_bench.py fsync-probe --seconds 5
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import amqp_bench as ab
from pamqp import commands
from rabbitmq import RabbitNode, _port_open, rss_kib

PAIR = struct.Struct("<qq")  # fsync log record: (end CLOCK_MONOTONIC ns, duration ns)


# ---------------------------------------------------------------------------------------------- fsync probe
def fsync_probe(directory: str, seconds: float, size: int = 4096) -> dict[str, Any]:
    """Append ``size`` bytes + fsync in a loop for ``seconds``; fsyncs/s and per-call latency percentiles."""
    fd, path = tempfile.mkstemp(prefix="fsync-probe-", dir=directory)
    buf = os.urandom(size)
    lat: list[int] = []
    try:
        t0 = time.monotonic_ns()
        end = t0 + int(seconds * 1e9)
        t = t0
        while t < end:
            os.write(fd, buf)
            a = time.monotonic_ns()
            os.fsync(fd)
            t = time.monotonic_ns()
            lat.append(t - a)
        elapsed = (t - t0) / 1e9
    finally:
        os.close(fd)
        os.unlink(path)
    lat.sort()
    return {"fsyncs": len(lat), "fsyncs_s": len(lat) / elapsed, "p50_ms": _pct(lat, 0.5), "p99_ms": _pct(lat, 0.99),
            "max_ms": _pct(lat, 1.0), "write_bytes": size, "dir": directory}


def _pct(vals: list[int], q: float) -> float | None:
    if not vals:
        return None
    return vals[min(len(vals) - 1, max(0, round(q * (len(vals) - 1))))] / 1e6


# ---------------------------------------------------------------------------------------------- haremq wrapper
def serve_wrapper(argv: list[str]) -> int:
    """``haremq.cli serve`` with every ``os.fsync`` of the process logged to $PERSIST_BENCH_FSYNC_LOG."""
    log_path = os.environ.get("PERSIST_BENCH_FSYNC_LOG")
    if log_path:
        real_fsync = os.fsync
        pending: list[bytes] = []
        lock = threading.Lock()
        mono = time.monotonic_ns
        pack = PAIR.pack

        def fsync(fd: int) -> None:
            a = mono()
            try:
                real_fsync(fd)
            finally:
                b = mono()
                with lock:
                    pending.append(pack(b, b - a))

        def writer() -> None:
            with open(log_path, "ab", buffering=0) as f:
                while True:
                    time.sleep(0.25)
                    with lock:
                        chunk = b"".join(pending)
                        pending.clear()
                    if chunk:
                        f.write(chunk)

        os.fsync = fsync  # the store calls os.fsync(...) through the module attribute
        threading.Thread(target=writer, daemon=True, name="fsync-log").start()
    from haremq.cli import main

    return main(["serve", *argv])


def read_fsync_log(path: str, t0: int, t1: int) -> dict[str, Any]:
    """Broker fsyncs that ended within [t0, t1] (monotonic ns): count, per second, latency percentiles."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return {}
    durs = sorted(d for end, d in PAIR.iter_unpack(data[: len(data) - len(data) % PAIR.size]) if t0 <= end <= t1)
    secs = (t1 - t0) / 1e9
    return {"broker_fsyncs": len(durs), "broker_fsyncs_s": len(durs) / secs if secs > 0 else None,
            "broker_fsync_p50_ms": _pct(durs, 0.5), "broker_fsync_p99_ms": _pct(durs, 0.99),
            "broker_fsync_busy": sum(durs) / 1e9 / secs if secs > 0 else None}


class Haremq:
    """haremq subprocess (through ``_serve``) on a free port with HAREMQ_FSYNC (default always)."""

    def __init__(self, data_dir: str, fsync: str = "always", python: str = sys.executable,
                 extra: list[str] | None = None, src: str | None = None) -> None:
        self.src = src  # haremq-base: run the package of an older checkout's src/ (--baseline-src)
        self.data_dir = data_dir
        self.fsync = fsync
        self.extra = extra or []  # more ``serve`` flags (haremq-enc: --encryption-key-file)
        self.python = python
        self.fsync_log = os.path.join(os.path.dirname(data_dir.rstrip("/")) or ".",
                                      os.path.basename(data_dir.rstrip("/")) + ".fsync.bin")
        self.stderr_path = data_dir.rstrip("/") + ".stderr.log"
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.pid = 0

    def start(self, timeout: float = 300.0) -> dict[str, Any]:
        """Spawn; return {"ready_s": spawn -> ready line, "recovered": log line or None}."""
        env = dict(os.environ, HAREMQ_FSYNC=self.fsync, PERSIST_BENCH_FSYNC_LOG=self.fsync_log)
        if self.src:
            env["PYTHONPATH"] = os.path.abspath(self.src)
        cmd = [self.python, os.path.abspath(__file__), "_serve", "--amqp-port", "0", "--stomp-port", "0",
               "--data-dir", self.data_dir, "--log-level", "info", *self.extra]
        helptext = subprocess.run([self.python, "-m", "haremq.cli", "serve", "--help"], capture_output=True,
                                  text=True, env=env).stdout
        for opt in ("--sqs-port", "--management-port"):  # newer listeners default to fixed ports: use free ones
            if opt in helptext:
                cmd += [opt, "0"]
        err = open(self.stderr_path, "a")  # noqa: SIM115
        err_off = err.tell()
        t0 = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
        err.close()
        assert self.proc.stdout is not None
        line = ""
        while time.monotonic() - t0 < timeout:
            line = self.proc.stdout.readline()
            if "ready:" in line or not line:
                break
        ready_s = time.monotonic() - t0
        if "ready:" not in line:
            self.stop()
            raise RuntimeError(f"haremq did not start: {line!r}; see {self.stderr_path}")
        addr = line.split("amqp://", 1)[1].split()[0].rstrip("/")
        self.url = f"amqp://guest:guest@{addr}/"
        self.pid = self.proc.pid
        with open(self.stderr_path) as f:
            f.seek(err_off)
            rec = [x.strip() for x in f if "recovered" in x]
        return {"ready_s": ready_s, "recovered_log": rec[-1] if rec else None}

    def stop(self, kill: bool = False) -> float:
        """SIGTERM (or SIGKILL) and wait; returns seconds until the process exited."""
        if self.proc is None:
            return 0.0
        t0 = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        return time.monotonic() - t0


# ---------------------------------------------------------------------------------------------- helpers
async def _queue_count(url: str, queue: str) -> int | None:
    """Passive declare; None if the queue is missing or the broker refuses."""
    try:
        c = await ab.connect(url)
    except Exception:
        return None
    try:
        ok = await c.rpc(commands.Queue.Declare(queue=queue, passive=True))
        return int(ok.message_count)
    except Exception:
        return None
    finally:
        with contextlib.suppress(Exception):
            await c.close()


async def _bulk_publish(url: str, queue: str, total: int, body_size: int, window: int) -> dict[str, Any]:
    """Declare a durable queue and publish ``total`` persistent messages with confirms (no time limit)."""
    await ab._topology(url, [queue], "", False, True)
    p: ab.Producer = await ab.connect(url, ab.Producer)  # type: ignore[assignment]
    await p.rpc(commands.Confirm.Select())
    p.total, p.window = total, window
    p.msg = ab.publish_prefix(1, "", queue, body_size, 2) + ab.body_frames(1, b"\x00" * body_size, p.frame_max)
    p.min_batch = max(1, window // 10)
    t0 = time.monotonic()
    p.pump()
    await p.all_confirmed
    secs = time.monotonic() - t0
    await p.close()
    return {"published": p.published, "nacks": p.nacks, "publish_s": secs, "publish_msg_s": p.published / secs}


def _du_mib(path: str) -> float:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, f)).st_blocks * 512
    return total / 2**20


SCEN = {"p100": (100, False), "e100": (100, True), "p1k": (1024, False), "e1k": (1024, True)}


def throughput(name: str, url: str, pid: int | None, args: argparse.Namespace,
               fsync_log: str | None) -> dict[str, Any]:
    size, consume = SCEN[name]
    count = args.count if size <= 100 else args.count_1k
    t0 = time.monotonic_ns()
    r = ab.run_once(url, n_queues=1, fanout=False, count=count, body_size=size, window=args.window,
                    prefetch=args.prefetch, broker_pid=pid, delivery_mode=2, durable=True, consume=consume)
    t1 = time.monotonic_ns()
    rec: dict[str, Any] = {"scenario": name, "count": count, "body_size": size}
    err = r.get("error") or r["producer"].get("error") or (r["consumer"].get("error") if consume else None)
    if not err:
        p = r["producer"]
        rec["publish_confirm_msg_s"] = p["published"] / ((p["t_confirmed"] - p["t_start"]) / 1e9)
        rec["nacks"] = p["nacks"]
        if consume:
            c = r["consumer"]
            rec["e2e_msg_s"] = c["received"] / ((c["t_last"] - p["t_start"]) / 1e9)
            if c["received"] != count:
                err = f"received {c['received']} of {count}"
            rec["msg_s"] = rec["e2e_msg_s"]
        else:
            rec["msg_s"] = rec["publish_confirm_msg_s"]
        if "broker_cpu_s" in r:
            rec["broker_cpu_us_per_msg"] = r["broker_cpu_s"] / count * 1e6
        if fsync_log:
            time.sleep(0.6)  # the wrapper appends its fsync log every 0.25 s
            # the measured interval: first publish -> last confirm/delivery
            end = max(p["t_confirmed"], r["consumer"]["t_last"] if consume else 0)
            rec.update(read_fsync_log(fsync_log, p["t_start"], end))
            if rec.get("broker_fsyncs"):
                rec["msgs_per_fsync"] = count / rec["broker_fsyncs"]
    rec["wall_s"] = (t1 - t0) / 1e9
    rec["error"] = err
    return rec


# ---------------------------------------------------------------------------------------------- recovery
def encryption_flags(base: str) -> list[str]:
    """``haremq-enc``: a fresh random AES-256 key file (encryption at rest, store/crypto.py)."""
    import base64

    path = os.path.join(base, "bench.keys")
    if not os.path.exists(path):
        with open(path, "w") as f:
            f.write(f"1: {base64.b64encode(os.urandom(32)).decode()}\n")
    return ["--encryption-key-file", path]


def make_haremq(name: str, data_dir: str, args: argparse.Namespace, base: str) -> Haremq:
    if name == "haremq-base":
        return Haremq(data_dir, args.fsync, src=args.baseline_src)
    return Haremq(data_dir, args.fsync, extra=encryption_flags(base) if name == "haremq-enc" else None)


def recovery_haremq(args: argparse.Namespace, base: str, name: str = "haremq") -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    d = os.path.join(base, f"{name}-recovery")
    h = make_haremq(name, d, args, base)
    q = "recovery.q"
    try:
        st = h.start()
        out.append({"scenario": "start-empty", **st, "rss_mib": (rss_kib(h.pid) or 0) / 1024})
        pub = ab._run(lambda: _bulk_publish(h.url, q, args.recovery_count, args.recovery_size, args.window))
        pub["rss_after_publish_mib"] = (rss_kib(h.pid) or 0) / 1024
        pub["disk_mib"] = _du_mib(d)
        out.append({"scenario": "recovery-publish", **pub})
        for variant, kill in (("sigterm", False), ("kill9", True)):
            stop_s = h.stop(kill=kill)
            st = h.start()
            rss0 = rss_kib(h.pid)
            cnt = ab._run(lambda: _queue_count(h.url, q))
            time.sleep(2)
            out.append({"scenario": f"recovery-{variant}", "stop_s": stop_s, **st, "count": cnt,
                        "rss_mib": (rss0 or 0) / 1024, "rss_2s_mib": (rss_kib(h.pid) or 0) / 1024,
                        "hwm_mib": (ab.vm_hwm_kib(h.pid) or 0) / 1024,
                        "error": None if cnt == args.recovery_count else f"count {cnt}"})
    finally:
        h.stop()
        shutil.rmtree(d, ignore_errors=True)
    return out


def _rabbit_wait_count(node: RabbitNode, q: str, want: int, t0: float, timeout: float) -> tuple[float, int | None]:
    cnt = None
    while time.monotonic() - t0 < timeout:
        cnt = ab._run(lambda: _queue_count(node.amqp_url, q))
        if cnt == want:
            break
        time.sleep(0.1)
    return time.monotonic() - t0, cnt


def _rabbit_start(node: RabbitNode, q: str, want: int | None) -> dict[str, Any]:
    t0 = time.monotonic()
    node.start(timeout=600)
    port_s = time.monotonic() - t0
    rec: dict[str, Any] = {"port_s": port_s}
    if want is not None:
        rec["ready_s"], rec["count"] = _rabbit_wait_count(node, q, want, t0, 600)
        rec["error"] = None if rec["count"] == want else f"count {rec['count']}"
    else:
        rec["ready_s"] = port_s
    return rec


def recovery_rabbit(args: argparse.Namespace, base: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    d = os.path.join(base, "rabbit-recovery")
    node = RabbitNode(d, amqp_port=args.rabbit_port, keep_dir=True)
    q = "recovery.q"
    try:
        st = _rabbit_start(node, q, None)
        out.append({"scenario": "start-empty", **st, "rss_mib": (node.rss_kib() or 0) / 1024})
        pub = ab._run(lambda: _bulk_publish(node.amqp_url, q, args.recovery_count, args.recovery_size, args.window))
        pub["rss_after_publish_mib"] = (node.rss_kib() or 0) / 1024
        pub["disk_mib"] = _du_mib(os.path.join(d, "mnesia"))
        out.append({"scenario": "recovery-publish", **pub})
        for variant, kill in (("sigterm", False), ("kill9", True)):
            t0 = time.monotonic()
            if kill:
                assert node.beam_pid and node.proc
                os.kill(node.beam_pid, signal.SIGKILL)
                node.proc.wait(60)
                while rss_kib(node.beam_pid) is not None:
                    time.sleep(0.05)
                node.proc, node.beam_pid = None, None
                while _port_open("127.0.0.1", node.amqp_port):
                    time.sleep(0.05)
            else:
                node.stop(timeout=300)
            stop_s = time.monotonic() - t0
            st = _rabbit_start(node, q, args.recovery_count)
            rss0 = node.rss_kib()
            time.sleep(2)
            out.append({"scenario": f"recovery-{variant}", "stop_s": stop_s, **st, "rss_mib": (rss0 or 0) / 1024,
                        "rss_2s_mib": (node.rss_kib() or 0) / 1024,
                        "hwm_mib": (ab.vm_hwm_kib(node.beam_pid) or 0) / 1024})
    finally:
        node.stop()
        shutil.rmtree(d, ignore_errors=True)
    return out


# ---------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_serve"]:
        return serve_wrapper(argv[1:])
    if argv[:1] == ["fsync-probe"]:
        ap = argparse.ArgumentParser(prog="persist_bench.py fsync-probe")
        ap.add_argument("--seconds", type=float, default=5.0)
        ap.add_argument("--dir", default=tempfile.gettempdir())
        a = ap.parse_args(argv[1:])
        print(json.dumps(fsync_probe(a.dir, a.seconds)))
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--brokers", default="haremq,rabbitmq",
                    help="haremq, rabbitmq, haremq-enc (encryption at rest), haremq-base (--baseline-src)")
    ap.add_argument("--baseline-src", help="an older checkout's src/ folder, run as broker haremq-base in the "
                    "same run (before/after a change)")
    ap.add_argument("--scenarios", default="p100,e100,p1k,e1k,recovery")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--count", type=int, default=200_000, help="messages per 100-byte scenario")
    ap.add_argument("--count-1k", type=int, default=100_000, help="messages per 1 KiB scenario")
    ap.add_argument("--window", type=int, default=1000)
    ap.add_argument("--prefetch", type=int, default=1000)
    ap.add_argument("--recovery-count", type=int, default=1_000_000)
    ap.add_argument("--recovery-size", type=int, default=100)
    ap.add_argument("--fsync", default="always", help="HAREMQ_FSYNC for haremq")
    ap.add_argument("--probe-seconds", type=float, default=5.0)
    ap.add_argument("--rabbit-port", type=int, default=5673)
    ap.add_argument("--base-dir", default=None, help="where data dirs go (default: a temp dir on /tmp)")
    ap.add_argument("--json-out")
    args = ap.parse_args(argv)
    brokers = [b.strip() for b in args.brokers.split(",") if b.strip()]
    scen = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    base = args.base_dir or tempfile.mkdtemp(prefix="persist-bench-")
    os.makedirs(base, exist_ok=True)
    records: list[dict[str, Any]] = []
    jout = open(args.json_out, "a") if args.json_out else None  # noqa: SIM115

    def emit(rec: dict[str, Any]) -> None:
        records.append(rec)
        line = json.dumps(rec, default=str)
        print(line, flush=True)
        if jout:
            print(line, file=jout, flush=True)

    def probe(tag: str) -> None:
        emit({"broker": "disk", "scenario": f"fsync-probe-{tag}", "loadavg": os.getloadavg()[0],
              **fsync_probe(base, args.probe_seconds)})

    print(json.dumps({"event": "start", "argv": argv, "cpus": os.cpu_count(), "base": base}), flush=True)
    tp = [s for s in scen if s in SCEN]
    started: list[Haremq] = []  # haremq and/or haremq-enc (same build, encryption at rest on)
    node: RabbitNode | None = None
    try:
        probe("before")
        if tp:
            targets: dict[str, tuple[str, int | None, str | None]] = {}
            for name in ("haremq", "haremq-base", "haremq-enc"):
                if name in brokers:
                    hq = make_haremq(name, os.path.join(base, f"{name}-tp"), args, base)
                    hq.start()
                    started.append(hq)
                    targets[name] = (hq.url, hq.pid, hq.fsync_log)
            if "rabbitmq" in brokers:
                node = RabbitNode(os.path.join(base, "rabbit-tp"), amqp_port=args.rabbit_port)
                node.start()
                targets["rabbitmq"] = (node.amqp_url, node.beam_pid, None)
            time.sleep(2)
            order = list(targets)
            for run in range(args.runs):
                for s in tp:
                    for b in (order if run % 2 == 0 else order[::-1]):
                        url, pid, flog = targets[b]
                        emit({"broker": b, "run": run + 1, "loadavg": os.getloadavg()[0],
                              **throughput(s, url, pid, args, flog)})
            for b, (_, pid, _) in targets.items():
                emit({"broker": b, "scenario": "rss-tp", "rss_mib": (rss_kib(pid) or 0) / 1024 if pid else None,
                      "hwm_mib": (ab.vm_hwm_kib(pid) or 0) / 1024})
            while started:
                started.pop().stop()
            if node:
                node.stop()
                node = None
            probe("middle")
        if "recovery" in scen:
            for name in ("haremq", "haremq-enc"):
                if name in brokers:
                    for rec in recovery_haremq(args, base, name):
                        emit({"broker": name, **rec})
            if "rabbitmq" in brokers:
                for rec in recovery_rabbit(args, base):
                    emit({"broker": "rabbitmq", **rec})
            probe("after")
    finally:
        for hq in started:
            hq.stop()
        if node:
            node.stop()
        if jout:
            jout.close()
        if not args.base_dir:
            shutil.rmtree(base, ignore_errors=True)
    print()
    summary(records, brokers)
    errs = [r for r in records if r.get("error")]
    for r in errs:
        print(f"ERROR {r['broker']} {r['scenario']} run {r.get('run')}: {r['error']}", file=sys.stderr)
    return 1 if errs else 0


def summary(records: list[dict[str, Any]], brokers: list[str]) -> None:
    def med(b: str, s: str, k: str) -> float | None:
        vals = [r[k] for r in records if r["broker"] == b and r["scenario"] == s and not r.get("error")
                and r.get(k) is not None]
        return statistics.median(vals) if vals else None

    def fmt(v: float | None, nd: int = 0) -> str:
        return "-" if v is None else f"{v:,.{nd}f}"

    hdr = ["scenario", "metric", *brokers] + ([f"{brokers[0]}/{brokers[1]}"] if len(brokers) == 2 else [])
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    rows: list[tuple[str, str, str, int]] = []
    for s in SCEN:
        rows += [(s, "msg/s", "msg_s", 0), (s, "broker CPU us/msg", "broker_cpu_us_per_msg", 1)]
        rows += [(s, "broker fsyncs/s", "broker_fsyncs_s", 0), (s, "msgs per fsync", "msgs_per_fsync", 0),
                 (s, "broker fsync p50 ms", "broker_fsync_p50_ms", 2),
                 (s, "broker fsync p99 ms", "broker_fsync_p99_ms", 2)]
    for s in ("start-empty", "recovery-sigterm", "recovery-kill9"):
        rows += [(s, "spawn -> ready s", "ready_s", 2), (s, "RSS after ready MiB", "rss_mib", 1)]
    rows += [("recovery-publish", "publish msg/s", "publish_msg_s", 0), ("recovery-publish", "disk MiB", "disk_mib", 0)]
    for s, label, k, nd in rows:
        vals = [med(b, s, k) for b in brokers]
        if all(v is None for v in vals):
            continue
        cells = [s, label, *(fmt(v, nd) for v in vals)]
        if len(brokers) == 2:
            cells.append(f"{vals[0] / vals[1]:.2f}" if vals[0] and vals[1] else "-")
        print("| " + " | ".join(cells) + " |")
    for r in records:
        if r["broker"] == "disk":
            print(f"{r['scenario']}: {r['fsyncs_s']:,.0f} fsync/s p50 {r['p50_ms']:.3f} ms p99 {r['p99_ms']:.3f} ms "
                  f"(load {r['loadavg']:.2f})")


if __name__ == "__main__":
    sys.exit(main())
