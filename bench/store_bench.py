"""Queue-store benchmark: a large persistent backlog in one queue, and what it costs in memory.

    .venv/bin/python bench/store_bench.py [--messages 1000000] [--size 1024] [--dir PATH]

Phases, each in a fresh process so resident memory is measured from scratch:

1. publish N persistent messages of SIZE bytes into one durable queue (group commit every
   10,000 publishes, as the server's flusher would), keeping no message objects around;
2. restart: ``recover(load_bodies=False)`` (scan + CRC check every segment, rebuild the index and
   the message list), then read a sample of bodies back from disk as deliveries would;
3. ack everything but one message in the middle, then ``maintain()``: segments are deleted and
   the one holding the slow message is compacted.

RSS is reported as VmRSS (what `ps` shows: anonymous + file pages currently mapped) and
RssAnon (the Python heap). Target: phase 2 with N = 1,000,000 and SIZE = 1 KiB stays <= 400 MiB.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from types import SimpleNamespace
from typing import Any

MiB = 1 << 20


def rss() -> dict[str, float]:
    out: dict[str, float] = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, val = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key] = round(int(val.split()[0]) / 1024, 1)
    return out


def queue() -> Any:
    return SimpleNamespace(name="backlog", vhost=SimpleNamespace(name="/"))


def entry(seq: int, body: bytes) -> Any:
    props = SimpleNamespace(delivery_mode=2, content_type="application/octet-stream", headers=None)
    return SimpleNamespace(seq=seq, msg=SimpleNamespace(exchange="amq.direct", routing_key="backlog",
                                                        props=props, body=body))


def phase_publish(path: str, n: int, size: int) -> dict[str, Any]:
    from haremq.store.file import FileQueueStore

    store = FileQueueStore(path, fsync="interval")
    store.recover()
    q = queue()
    filler = os.urandom(size)
    t0 = time.perf_counter()
    for seq in range(1, n + 1):
        store.publish(q, entry(seq, seq.to_bytes(8, "little") + filler[8:]))
        if seq % 10_000 == 0:
            store.sync()
    store.sync()
    dt = time.perf_counter() - t0
    st = store.stats("/", "backlog")
    result = {"phase": "publish", "messages": n, "seconds": round(dt, 2), "msgs_per_s": round(n / dt),
              "fsyncs": store.flusher.fsyncs, "rss_mib": rss(),
              "disk_mib": round(st.bytes_on_disk / MiB, 1) if st else 0, "segments": st.segments if st else 0}
    store.close()
    return result


def phase_recover(path: str, n: int) -> dict[str, Any]:
    from haremq.store.file import FileQueueStore

    base = rss()
    store = FileQueueStore(path)
    t0 = time.perf_counter()
    msgs = store.recover(load_bodies=False)[("/", "backlog")]
    dt = time.perf_counter() - t0
    assert len(msgs) == n and msgs[0].seq == 1 and msgs[-1].seq == n
    q = queue()
    t1 = time.perf_counter()
    sample = range(1, n + 1, max(1, n // 20_000))
    for seq in sample:
        assert store.read_body(q, seq)[:8] == seq.to_bytes(8, "little")
    reads = len(sample) / (time.perf_counter() - t1)
    result = {"phase": "recover", "seconds": round(dt, 2), "msgs_per_s": round(n / dt), "rss_before_mib": base,
              "rss_mib": rss(), "read_body_per_s": round(reads)}
    store.close()
    return result


def phase_reclaim(path: str, n: int) -> dict[str, Any]:
    from haremq.store.file import FileQueueStore

    store = FileQueueStore(path, fsync="interval")
    store.recover(load_bodies=False)
    q = queue()
    t0 = time.perf_counter()
    slow = n // 2  # one message never acked, in the middle of the backlog
    for seq in range(1, n + 1):
        if seq != slow:
            store.remove(q, SimpleNamespace(seq=seq))
    store.sync()
    dt = time.perf_counter() - t0
    before = store.stats("/", "backlog")
    reclaimed = store.maintain()
    after = store.stats("/", "backlog")
    assert before and after
    result = {"phase": "ack+compact", "acks_per_s": round((n - 1) / dt), "disk_mib_before_compact":
              round(before.bytes_on_disk / MiB, 1), "disk_mib_after": round(after.bytes_on_disk / MiB, 1),
              "reclaimed_mib": round(reclaimed / MiB, 1), "segments_after": after.segments,
              "oldest": after.oldest_segment, "rss_mib": rss()}
    store.close()
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=1_000_000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--dir")
    ap.add_argument("--phase")
    args = ap.parse_args()
    if args.phase:
        if args.phase == "publish":
            result = phase_publish(args.dir, args.messages, args.size)
        elif args.phase == "recover":
            result = phase_recover(args.dir, args.messages)
        else:
            result = phase_reclaim(args.dir, args.messages)
        print(json.dumps(result))
        return
    path = args.dir or tempfile.mkdtemp(prefix="haremq-store-bench-")
    try:
        for phase in ("publish", "recover", "reclaim"):
            out = subprocess.run([sys.executable, __file__, "--phase", phase, "--dir", path, "--messages",
                                  str(args.messages), "--size", str(args.size)], check=True, capture_output=True,
                                 text=True).stdout
            print(out.strip(), flush=True)
    finally:
        if not args.dir:
            shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    main()
