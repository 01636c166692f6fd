"""Benchmark haremq.ipc.ShmQueue against multiprocessing.Queue/Pipe, faster-fifo and pyzmq PUSH/PULL.

Two processes (fork): a producer child and a consumer parent. Prints one JSON line per result, then a table.
Throughput is counted from the first to the last message received; latency is ping-pong round trip / 2 with
the receiver idle between messages; idle CPU is what a consumer blocked in get() burns per second.

    PYTHONPATH=src python bench/ipc_bench.py [--quick] [--repeat K]

--repeat K adds the target checks on a shared, noisy host, alternated K times in the same run, medians reported:
100 B one-at-a-time spsc vs pyzmq, spsc batched vs pyzmq, and mpmc vs multiprocessing.Queue vs pyzmq with 1 and 4
producer processes into one consumer (issue 15). --only-repeat skips the single-run table.
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing as mp
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from haremq.ipc import ShmQueue

FORK = mp.get_context("fork")
BATCH = 64
_ids = itertools.count()

# A transport is a factory returning (send, recv, send_many, recv_many, close) for one end, built in each process.
Ends = tuple[Callable[[bytes], None], Callable[[], bytes], Callable[[list[bytes]], None] | None,
             Callable[[], list[bytes]] | None, Callable[[], None]]


def shm_transport(mode: str, size: int) -> tuple[Callable[[str], Ends], Callable[[], None]]:
    name = f"hq-bench-{os.getpid()}-{mode}-{size}-{next(_ids)}"
    ShmQueue.unlink_name(name)
    ShmQueue.create(name, 8 << 20, max(size, 64), mode=mode).close()  # type: ignore[arg-type]

    def end(role: str) -> Ends:
        q = ShmQueue.open(name)
        return q.put, q.get, q.put_many, lambda: q.get_many(BATCH), q.close

    return end, lambda: ShmQueue.unlink_name(name)


def mpqueue_transport(size: int) -> tuple[Callable[[str], Ends], Callable[[], None]]:
    q: Any = FORK.Queue(10_000)
    return (lambda role: (q.put, q.get, None, None, lambda: None)), lambda: None


def pipe_transport(size: int) -> tuple[Callable[[str], Ends], Callable[[], None]]:
    r, w = FORK.Pipe(duplex=False)
    return (lambda role: (w.send_bytes, r.recv_bytes, None, None, lambda: None)), lambda: None


def fastfifo_transport(size: int) -> tuple[Callable[[str], Ends], Callable[[], None]]:
    from faster_fifo import Queue

    q = Queue(max_size_bytes=8 << 20)

    def end(role: str) -> Ends:
        return (q.put, q.get, q.put_many, lambda: q.get_many(max_messages_to_get=BATCH), lambda: None)

    return end, lambda: None


def zmq_transport(size: int) -> tuple[Callable[[str], Ends], Callable[[], None]]:
    import zmq

    path = os.path.join(tempfile.gettempdir(), f"hq-bench-zmq-{os.getpid()}-{size}-{next(_ids)}")
    addr = f"ipc://{path}"

    def end(role: str) -> Ends:
        ctx = zmq.Context()
        # the HWM is set before connect/bind: set after, it does not apply to the pipe already made, and with
        # several PUSH peers closing at once messages went missing (the receiver then waited forever)
        if role == "send":
            s = ctx.socket(zmq.PUSH)
            s.setsockopt(zmq.SNDHWM, 100_000)
            s.connect(addr)
        else:
            s = ctx.socket(zmq.PULL)
            s.setsockopt(zmq.RCVHWM, 100_000)
            s.bind(addr)

        def close() -> None:
            s.close(linger=-1)  # -1: never drop queued messages (1 s could lose some under load)
            ctx.term()

        return (lambda b: s.send(b, copy=True)), s.recv, None, None, close

    def cleanup() -> None:
        if os.path.exists(path):
            os.unlink(path)

    return end, cleanup


def _producer(make: Callable[[str], Ends], n: int, size: int, batched: bool) -> None:
    send, _, send_many, _, close = make("send")
    msg = b"x" * size
    if batched and send_many is not None:
        chunk = [msg] * BATCH
        for _ in range(n // BATCH):
            send_many(chunk)
    else:
        for _ in range(n):
            send(msg)
    close()


def throughput(make: Callable[[str], Ends], n: int, size: int, batched: bool, producers: int = 1) -> float:
    """Messages per second into one consumer from `producers` processes sending n in total."""
    each = n // producers // BATCH * BATCH
    n = each * producers
    procs = [FORK.Process(target=_producer, args=(make, each, size, batched)) for _ in range(producers)]
    for p in procs:  # forked before the receiving end exists: no live zmq context is forked
        p.start()
    _, recv, _, recv_many, close = make("recv")
    got = 0
    if batched and recv_many is not None:
        first = recv_many()
        t0 = time.perf_counter()
        got = len(first)
        while got < n:
            got += len(recv_many())
    else:
        recv()
        t0 = time.perf_counter()
        got = 1
        while got < n:
            recv()
            got += 1
    t1 = time.perf_counter()
    for p in procs:
        p.join()
    close()
    return (got - 1) / (t1 - t0)


def _echo(make_a: Callable[[str], Ends], make_b: Callable[[str], Ends], rounds: int) -> None:
    _, recv, _, _, close_a = make_a("recv")
    send, _, _, _, close_b = make_b("send")
    for _ in range(rounds):
        send(recv())
    close_a()
    close_b()


def latency(factory: Callable[[], tuple[Callable[[str], Ends], Callable[[], None]]], rounds: int) -> list[float]:
    """Ping-pong round trip / 2 in microseconds; each side is idle (blocked in get) while waiting."""
    (make_a, clean_a), (make_b, clean_b) = factory(), factory()
    p = FORK.Process(target=_echo, args=(make_a, make_b, rounds))
    p.start()
    send, _, _, _, close_a = make_a("send")
    _, recv, _, _, close_b = make_b("recv")
    msg = b"x" * 100
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        send(msg)
        recv()
        out.append((time.perf_counter_ns() - t0) / 2000)
    p.join()
    close_a()
    close_b()
    clean_a()
    clean_b()
    return out[rounds // 10 :]


def idle_cpu(seconds: float) -> float:
    """CPU seconds per wall second burned by a consumer blocked on an empty ShmQueue."""
    name = f"hq-bench-idle-{os.getpid()}"
    ShmQueue.unlink_name(name)
    with ShmQueue.create(name, 1 << 16, 100) as q:
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        try:
            q.get(timeout=seconds)
        except Exception:
            pass
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        q.unlink()
    return ((r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)) / seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer messages (smoke run)")
    ap.add_argument("--repeat", type=int, default=0, help="alternate the target comparisons K times, report medians")
    ap.add_argument("--only-repeat", action="store_true", help="skip the single-run table and latency")
    args = ap.parse_args()
    scale = 0.1 if args.quick else 1.0
    rows: list[dict[str, Any]] = []

    def emit(row: dict[str, Any]) -> None:
        rows.append(row)
        print(json.dumps(row), flush=True)

    peers: list[tuple[str, Callable[[int], tuple[Callable[[str], Ends], Callable[[], None]]], bool]] = [
        ("haremq-shm-spsc", lambda s: shm_transport("spsc", s), True),
        ("haremq-shm-mpmc", lambda s: shm_transport("mpmc", s), True),
        ("mp.Queue", mpqueue_transport, False),
        ("mp.Pipe send_bytes", pipe_transport, False),
        ("faster-fifo", fastfifo_transport, True),
        ("pyzmq PUSH/PULL ipc", zmq_transport, False),
    ]
    for size in () if args.only_repeat else (100, 4096):
        n = int((500_000 if size == 100 else 100_000) * scale)
        n -= n % BATCH
        for label, factory, batchable in peers:
            for batched in (False, True) if batchable else (False,):
                make, clean = factory(size)
                rate = throughput(make, n, size, batched)
                clean()
                emit({"bench": "throughput", "transport": label, "size": size, "batched": batched,
                      "messages": n, "msg_per_s": round(rate), "MB_per_s": round(rate * size / 1e6, 1)})
    rounds = int(20_000 * scale)
    for label, factory, _ in [] if args.only_repeat else peers:
        if label == "mp.Queue":
            continue  # needs its own feeder thread per end; measured by others at ~30-60 us
        lat = latency(lambda f=factory: f(100), rounds)  # type: ignore[misc]
        q = statistics.quantiles(lat, n=100)
        emit({"bench": "latency_one_way_us", "transport": label, "size": 100, "rounds": rounds,
              "p50": round(q[49], 2), "p99": round(q[98], 2)})
    if args.repeat:
        n = int(500_000 * scale) // BATCH * BATCH
        by_label = {label: factory for label, factory, _ in peers}
        # (transport, batched, producers): every case runs once per round, rounds alternate
        cases = [("haremq-shm-spsc", False, 1), ("haremq-shm-spsc", True, 1), ("pyzmq PUSH/PULL ipc", False, 1),
                 ("haremq-shm-mpmc", False, 1), ("mp.Queue", False, 1),
                 ("haremq-shm-mpmc", False, 4), ("mp.Queue", False, 4), ("pyzmq PUSH/PULL ipc", False, 4)]
        runs: dict[tuple[str, bool, int], list[float]] = {c: [] for c in cases}
        for _ in range(args.repeat):
            for label, batched, producers in cases:
                try:
                    make, clean = by_label[label](100)
                except ImportError:
                    continue
                rate = throughput(make, n, 100, batched, producers)
                clean()
                runs[(label, batched, producers)].append(rate)
                print(f"# {label} batched={batched} producers={producers}: {rate:,.0f} msg/s", file=sys.stderr)
        for (label, batched, producers), rates in runs.items():
            if rates:
                emit({"bench": "throughput_repeated", "transport": label, "size": 100, "batched": batched,
                      "producers": producers, "messages": n, "runs": len(rates),
                      "median_msg_per_s": round(statistics.median(rates)), "all": [round(r) for r in rates]})
    if not args.only_repeat:
        emit({"bench": "idle_cpu", "transport": "haremq-shm", "cpu_per_wall_s": round(idle_cpu(2.0), 4)})

    print()
    print(f"{'transport':24} {'size':>5} {'batched':>8} {'msg/s':>12} {'MB/s':>8}")
    for r in rows:
        if r["bench"] == "throughput":
            print(f"{r['transport']:24} {r['size']:>5} {r['batched']!s:>8} {r['msg_per_s']:>12,} {r['MB_per_s']:>8}")
    print(f"\n{'transport':24} {'p50 us':>8} {'p99 us':>8}   (one-way, 100 B, ping-pong / 2)")
    for r in rows:
        if r["bench"] == "latency_one_way_us":
            print(f"{r['transport']:24} {r['p50']:>8} {r['p99']:>8}")
    print()
    for r in rows:
        if r["bench"] == "throughput_repeated":
            how = "batched" if r["batched"] else "single"
            print(f"{r['transport']:24} 100 B {how:7} x{r['producers']} producers, median of {r['runs']}: "
                  f"{r['median_msg_per_s']:>10,} msg/s")
    for r in rows:
        if r["bench"] == "idle_cpu":
            print(f"\nidle blocked consumer: {r['cpu_per_wall_s'] * 100:.2f}% of one core")


if __name__ == "__main__":
    main()
