"""Memory of a large persistent backlog: N x SIZE persistent messages in one durable queue.

Drives the broker core and the file store directly (no sockets: the server holds no messages),
then restarts them from the data directory. Prints JSON lines and a table.

    .venv/bin/python bench/paging_rss.py --count 1000000 --size 1024
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import tempfile
import time

from haremq.core.broker import Broker
from haremq.message import Message, Properties
from haremq.store.file import FileQueueStore
from haremq.store.memory import MemoryMetadataStore
from haremq.testing import session_for


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def broker(data_dir: str, limit: int) -> tuple[Broker, FileQueueStore]:
    store = FileQueueStore(data_dir, fsync="interval")
    b = Broker(store=store, metadata=MemoryMetadataStore())
    b.page_out_bytes = limit
    return b, store


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=1_000_000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--limit", type=int, default=64 * 1024 * 1024, help="queue_memory_limit (bytes)")
    args = ap.parse_args()
    data_dir = tempfile.mkdtemp(prefix="haremq-paging-")
    gc.freeze()
    rows = []
    try:
        base = rss_mib()
        b, store = broker(data_dir, args.limit)
        s, _ = session_for(b)
        b.queue_declare(s, "backlog", durable=True)
        props = Properties(delivery_mode=2)
        body = b"x" * args.size
        t0 = time.perf_counter()
        for i in range(args.count):
            b.publish(s, "", Message("", "backlog", props, body))
            if i % 10000 == 0:
                store.sync()
        store.sync()
        elapsed = time.perf_counter() - t0
        rows.append({"phase": "publish", "messages": args.count, "seconds": round(elapsed, 2),
                     "msg_per_s": round(args.count / elapsed), "rss_mib": round(rss_mib()),
                     "baseline_rss_mib": round(base)})
        print(json.dumps(rows[-1]), flush=True)
        store.close()
        del b, s, store
        gc.collect()
        t0 = time.perf_counter()
        b, store = broker(data_dir, args.limit)
        b.restore_definitions({"queues": [{"vhost": "/", "name": "backlog", "durable": True,
                                           "auto_delete": False, "arguments": {}}]})
        b.restore_messages(store.recover(load_bodies=False, body_budget=args.limit))
        elapsed = time.perf_counter() - t0
        q = b.vhosts["/"].queues["backlog"]
        rows.append({"phase": "recover", "messages": q.message_count, "seconds": round(elapsed, 2),
                     "msg_per_s": round(q.message_count / elapsed), "rss_mib": round(rss_mib()),
                     "baseline_rss_mib": round(base)})
        print(json.dumps(rows[-1]), flush=True)
        s, _ = session_for(b)
        t0 = time.perf_counter()
        n = 0
        while n < 100_000 and b.get(s, "backlog", no_ack=True) is not None:
            n += 1
        elapsed = time.perf_counter() - t0
        rows.append({"phase": "drain 100k", "messages": n, "seconds": round(elapsed, 2),
                     "msg_per_s": round(n / elapsed), "rss_mib": round(rss_mib()), "baseline_rss_mib": round(base)})
        print(json.dumps(rows[-1]), flush=True)
        store.close()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    print(f"\n| phase | messages | seconds | msg/s | RSS MiB (process baseline {rows[0]['baseline_rss_mib']}) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['phase']} | {r['messages']:,} | {r['seconds']} | {r['msg_per_s']:,} | {r['rss_mib']} |")


if __name__ == "__main__":
    main()
