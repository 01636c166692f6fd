"""Multi-process stress and crash tests: nothing lost, nothing duplicated, per-producer order kept."""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import struct
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from haremq.ipc import ShmQueue

FORK = mp.get_context("fork")
MSG = struct.Struct("<II")  # producer id, sequence number
STOP = b"STOP"


def _payload(pid: int, seq: int) -> bytes:
    return MSG.pack(pid, seq) + b"p" * (seq % 29)  # variable sizes exercise the wrap paths


def _producer(name: str, pid: int, start: int, count: int, batch: int) -> None:
    q = ShmQueue.open(name)
    seq, end = start, start + count
    while seq < end:
        if batch == 1 or (seq // batch) % 8 == 7:  # mix single puts into the batched stream
            q.put(_payload(pid, seq))
            seq += 1
        else:
            n = min(batch, end - seq)
            assert q.put_many([_payload(pid, s) for s in range(seq, seq + n)]) == n
            seq += n
    q.close()


def _consumer(name: str, nprod: int, per: int, out_dir: str, idx: int, batch: int) -> None:
    """Check order locally; write one 0/1 byte per (producer, seq) so the parent can sum across consumers."""
    q = ShmQueue.open(name)
    seen = [bytearray(per) for _ in range(nprod)]
    last = [-1] * nprod
    unpack = MSG.unpack_from
    while True:
        msgs = q.get_many(batch) if batch > 1 else [q.get()]
        for m in msgs:
            if m == STOP:  # pass the one poison pill on (a batch could swallow several pills)
                if q.mode == "mpmc":
                    q.put(STOP)
                for p in range(nprod):
                    Path(out_dir, f"c{idx}-p{p}").write_bytes(seen[p])
                q.close()
                return
            p, s = unpack(m)
            assert m == _payload(p, s), "payload damaged"
            assert s > last[p], f"order broken for producer {p}: {s} after {last[p]}"
            assert not seen[p][s], f"duplicate {p}/{s}"
            last[p] = s
            seen[p][s] = 1


def _run(name: str, mode: str, nprod: int, ncons: int, total: int, out: Path, batch: int) -> None:
    per = total // nprod
    q = ShmQueue.create(name, 1 << 20, 256, mode=mode)  # type: ignore[arg-type]
    try:
        cons = [FORK.Process(target=_consumer, args=(name, nprod, per, str(out), i, batch)) for i in range(ncons)]
        prods = [FORK.Process(target=_producer, args=(name, p, 0, per, batch)) for p in range(nprod)]
        for proc in cons + prods:
            proc.start()
        for proc in prods:
            proc.join(120)
            assert proc.exitcode == 0
        q.put(STOP)
        for proc in cons:
            proc.join(120)
            assert proc.exitcode == 0
        assert q.stats()["lost"] == 0
        full = int.from_bytes(b"\x01" * per, "little")
        for p in range(nprod):
            # each byte is 0/1 and there are <= 4 consumers, so a sum without carries equals all-ones iff
            # every sequence number arrived exactly once
            parts = [int.from_bytes(Path(out, f"c{i}-p{p}").read_bytes(), "little") for i in range(ncons)]
            assert sum(parts) == full, f"producer {p}: lost or duplicated messages"
    finally:
        q.close()
        q.unlink()


def test_mpmc_4x4_one_million(qname: str, tmp_path: Path) -> None:
    _run(qname, "mpmc", 4, 4, 1_000_000, tmp_path, batch=64)


def test_mpmc_2x2_unbatched(qname: str, tmp_path: Path) -> None:
    _run(qname, "mpmc", 2, 2, 40_000, tmp_path, batch=1)


def test_spsc_one_million(qname: str, tmp_path: Path) -> None:
    _run(qname, "spsc", 1, 1, 1_000_000, tmp_path, batch=64)


def test_spsc_unbatched(qname: str, tmp_path: Path) -> None:
    _run(qname, "spsc", 1, 1, 200_000, tmp_path, batch=1)


# ---------------------------------------------------------------------------- deterministic crash points


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _crash_child(name: str, where: str) -> None:
    q = ShmQueue.open(name)
    if where == "producer-before-commit":
        q._prod_enter()
        h = q._head % q.capacity_bytes
        q._buf[4096 + h + 16 : 4096 + h + 21] = b"TORN!"  # payload written, header and commit never
        struct.pack_into("<II", q._buf, 4096 + h + 8, 5, 0)
    elif where == "producer-after-commit":
        q._prod_enter()
        q._write([b"committed"], 0)  # committed, head not published, lock still held
    elif where == "consumer-before-commit":
        q._cons_enter()
    elif where == "consumer-after-commit":
        q._cons_enter()
        q._read([], 1)  # tail committed; the message dies with this process
    _die()


@pytest.mark.parametrize(
    ("where", "expect", "lost"),
    [
        ("producer-before-commit", [b"first", b"after"], 0),
        ("producer-after-commit", [b"first", b"committed", b"after"], 0),
        ("consumer-before-commit", [b"first", b"after"], 0),
        ("consumer-after-commit", [b"after"], 1),
    ],
)
def test_death_inside_the_critical_section(
    qname: str, where: str, expect: list[bytes], lost: int, caplog: pytest.LogCaptureFixture
) -> None:
    with ShmQueue.create(qname, 4096, 100) as q:
        q.put(b"first")
        p = FORK.Process(target=_crash_child, args=(qname, where))
        p.start()
        p.join(10)
        assert p.exitcode == -signal.SIGKILL
        q.put(b"after", timeout=2)  # would deadlock if the dead holder's lock survived
        assert [q.get(timeout=2) for _ in expect] == expect
        assert q.empty()
        st = q.stats()
        assert st["lost"] == lost
        assert st["producer_recoveries"] + st["consumer_recoveries"] == 1
        assert "died" in caplog.text
        q.unlink()


def _die_holding_consumer_mutex(name: str) -> None:
    q = ShmQueue.open(name)
    q._cons_enter()  # takes the consumer mutex, reads nothing
    _die()


def test_consumer_death_after_a_completed_get_loses_nothing(qname: str, caplog: pytest.LogCaptureFixture) -> None:
    """The intent of a finished get is spent: a later holder that dies before reading is not blamed for it."""
    with ShmQueue.create(qname, 4096, 100) as q:
        q.put_many([b"first", b"second"])
        assert q.get_many(1) == [b"first"]  # a completed get leaves its intent (tail, 1) behind
        p = FORK.Process(target=_die_holding_consumer_mutex, args=(qname,))
        p.start()
        p.join(10)
        assert p.exitcode == -signal.SIGKILL
        assert q.get(timeout=2) == b"second"
        st = q.stats()
        assert st["consumer_recoveries"] == 1
        assert st["lost"] == 0
        assert "nothing was taken" in caplog.text
        q.unlink()


def _hold_producer_mutex(name: str, seconds: float, held: Any) -> None:
    q = ShmQueue.open(name)
    q._prod_enter()
    held.set()
    time.sleep(seconds)
    q._prod_exit()
    q.close()


def test_mpmc_put_waits_for_a_live_holder_of_the_producer_mutex(qname: str) -> None:
    """Contended claim: put() sleeps on the mutex (not an error, not a recovery) until the holder leaves."""
    with ShmQueue.create(qname, 4096, 100) as q:
        held = FORK.Event()
        p = FORK.Process(target=_hold_producer_mutex, args=(qname, 0.3, held))
        p.start()
        assert held.wait(10)
        t0 = time.monotonic()
        q.put(b"after the holder")
        assert time.monotonic() - t0 >= 0.2
        p.join(10)
        assert p.exitcode == 0
        assert q.get(timeout=2) == b"after the holder"
        assert q.stats()["producer_recoveries"] == 0
        q.unlink()


def test_mpmc_threads_share_one_handle(qname: str) -> None:
    """The mutex is per thread: threads putting and getting through one handle lose and duplicate nothing."""
    with ShmQueue.create(qname, 1 << 14, 64) as q:
        per, nthreads = 5_000, 4
        got: list[bytes] = []

        def produce(k: int) -> None:
            for s in range(per):
                q.put(MSG.pack(k, s))

        def consume() -> None:
            while len(got) < per * nthreads:
                try:
                    got.append(q.get(timeout=0.2))
                except queue.Empty:
                    pass

        threads = [threading.Thread(target=produce, args=(k,)) for k in range(nthreads)]
        threads += [threading.Thread(target=consume) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sorted(got) == sorted(MSG.pack(k, s) for k in range(nthreads) for s in range(per))
        q.unlink()


# ---------------------------------------------------------------------------- kill -9 mid-stream


def _endless_producer(name: str, pid: int, batch: int) -> None:
    q = ShmQueue.open(name)
    seq = 0
    while True:
        if batch > 1:
            seq += q.put_many([_payload(pid, s) for s in range(seq, seq + batch)])
        else:
            q.put(_payload(pid, seq))
            seq += 1


def _logging_consumer(name: str, log_path: str, stop_after: int) -> None:
    """Consume, appending every (producer, seq) to a file as soon as it is received (the victim's ledger)."""
    q = ShmQueue.open(name)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    n = 0
    while True:
        m = q.get()
        if m == STOP:
            os.close(fd)
            return
        os.write(fd, m[:8])
        n += 1
        if n == stop_after:
            time.sleep(3600)  # park: the parent will kill us (or STOP never comes)


def _ledger(path: Path) -> list[tuple[int, int]]:
    raw = path.read_bytes() if path.exists() else b""
    return [MSG.unpack_from(raw, i) for i in range(0, len(raw) - len(raw) % 8, 8)]


@pytest.mark.parametrize(("mode", "victim_batch"), [("mpmc", 16), ("mpmc", 1), ("spsc", 1)])
def test_kill_producer_and_consumer_mid_stream(qname: str, tmp_path: Path, mode: str, victim_batch: int) -> None:
    """Victims are killed while streaming; survivors finish and every committed message is accounted for.

    mpmc with victim_batch=1 kills the producer inside the inlined put() (mutex taken by trylock).
    """
    q = ShmQueue.create(qname, 1 << 16, 256, mode=mode)  # type: ignore[arg-type]
    try:
        per = 30_000
        ledgers = [tmp_path / f"ledger{i}" for i in range(3)]
        # victims: producer 9 (endless), consumer 0 (killed while running)
        vp = FORK.Process(target=_endless_producer, args=(qname, 9, victim_batch))
        vc = FORK.Process(target=_logging_consumer, args=(qname, str(ledgers[0]), 0))
        vp.start()
        vc.start()
        time.sleep(0.3)
        for v in (vp, vc):
            os.kill(v.pid or 0, signal.SIGKILL)
            v.join(10)
        # survivors: in spsc one role at a time, so they take over from the dead ones
        n_survivor_prod = 1 if mode == "spsc" else 2
        n_survivor_cons = 1 if mode == "spsc" else 2
        cons = [
            FORK.Process(target=_logging_consumer, args=(qname, str(ledgers[i + 1]), 0))
            for i in range(n_survivor_cons)
        ]
        prods = [
            FORK.Process(target=_producer, args=(qname, p, 0, per, 1 if mode == "spsc" else 32))
            for p in range(n_survivor_prod)
        ]
        for proc in cons + prods:
            proc.start()
        for proc in prods:
            proc.join(60)
            assert proc.exitcode == 0
        for _ in cons:
            q.put(STOP)
        for proc in cons:
            proc.join(60)
            assert proc.exitcode == 0
        got = [e for led in ledgers for e in _ledger(led)]
        assert len(got) == len(set(got)), "a message was delivered twice"
        missing_allowed = 1  # the victim consumer's in-flight message, at most
        for p in range(n_survivor_prod):
            seqs = {s for pp, s in got if pp == p}
            assert len(seqs) >= per - missing_allowed and seqs <= set(range(per))
        victim = sorted(s for pp, s in got if pp == 9)
        assert victim, "the victim producer should have committed something"
        # the victim producer's committed messages form a prefix: none torn, none skipped
        assert len(set(range(victim[-1] + 1)) - set(victim)) <= missing_allowed
        for led in ledgers:  # per-producer order within each consumer
            last: dict[int, int] = {}
            for pp, s in _ledger(led):
                assert s > last.get(pp, -1)
                last[pp] = s
        assert q.stats()["lost"] <= missing_allowed
    finally:
        q.close()
        q.unlink()
