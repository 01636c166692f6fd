"""Store housekeeping never blocks the event loop (issue 10, item 6).

The disk is made slow on purpose (``SLOW`` seconds per fsync / posix_fallocate / rmtree / unlink):
a call on the loop thread then shows up as a gap of a 1 ms asyncio ticker, or as a slow store
call, of at least ``SLOW``; work done on the store's worker thread does not.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from store_fakes import FakeQueue

from haremq.server.node import compaction_pass
from haremq.store.file import TRASH, FileQueueStore, encode_name

KiB = 1024
SLOW = 0.2
BOUND = 0.1  # worst tolerated stall: well under SLOW, well over scheduling noise


@pytest.fixture
def slow_disk(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every blocking disk call sleeps SLOW; yields the names of those made on the main thread."""
    on_loop: list[str] = []

    def slow(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kw: Any) -> Any:
            if threading.current_thread() is threading.main_thread():
                on_loop.append(name)
            time.sleep(SLOW)
            return fn(*args, **kw)
        return wrapper

    monkeypatch.setattr(os, "fsync", slow("fsync", os.fsync))
    monkeypatch.setattr(os, "posix_fallocate", slow("posix_fallocate", os.posix_fallocate))
    monkeypatch.setattr(os, "unlink", slow("unlink", os.unlink))
    monkeypatch.setattr(shutil, "rmtree", slow("rmtree", shutil.rmtree))
    yield on_loop


def make(path: Path, **kw: Any) -> FileQueueStore:
    kw.setdefault("segment_size", 64 * KiB)
    kw.setdefault("min_segment_size", 64 * KiB)
    s = FileQueueStore(path, **kw)
    s.recover()
    return s


async def ticking(body: Callable[[], Any]) -> float:
    """Run ``body`` (a coroutine function) next to a 1 ms ticker; returns the ticker's worst gap."""
    loop = asyncio.get_running_loop()
    worst = 0.0
    done = False

    async def ticker() -> None:
        nonlocal worst
        last = loop.time()
        while not done:
            await asyncio.sleep(0.001)
            now = loop.time()
            worst = max(worst, now - last)
            last = now

    task = loop.create_task(ticker())
    await asyncio.sleep(0.01)
    try:
        await body()
    finally:
        done = True
        await task
    return worst


def test_compaction_pass_runs_its_disk_work_off_the_loop(tmp_path: Path, slow_disk: list[str]) -> None:
    kw: dict[str, Any] = {"compact_min_bytes": 16 * KiB}
    s = make(tmp_path, **kw)
    q = FakeQueue("q")
    slow_msg = q.entry(b"slow")
    s.publish(q, slow_msg)
    s.mark_delivered(q, slow_msg)
    es = [q.entry(os.urandom(1000)) for _ in range(400)]
    for e in es:
        s.publish(q, e)
    for e in es[:-5]:
        s.remove(q, e)
    before = s.stats("/", "q")
    assert before is not None
    slow_disk.clear()

    async def main() -> float:
        s.start_worker()
        reclaimed = 0

        async def run() -> None:
            nonlocal reclaimed
            reclaimed = await compaction_pass(s, 10**9)

        worst = await ticking(run)
        assert reclaimed > 0
        return worst

    worst = asyncio.run(main())
    after = s.stats("/", "q")
    assert after is not None and after.compactions >= 1 and after.bytes_on_disk < before.bytes_on_disk
    assert "fsync" not in slow_disk and worst < BOUND, (slow_disk, worst)
    s.close()
    s = make(tmp_path, **kw)
    got = s.recover()[("/", "q")]
    assert [(m.seq, m.redelivered) for m in got] == [(slow_msg.seq, True)] + [(e.seq, False) for e in es[-5:]]
    s.close()


def test_segment_growth_uses_a_file_preallocated_off_the_loop(tmp_path: Path, slow_disk: list[str]) -> None:
    s = make(tmp_path, segment_size=256 * KiB, min_segment_size=64 * KiB)
    q = FakeQueue("q")
    sent = []

    async def main() -> float:
        s.start_worker()
        await asyncio.sleep(2 * SLOW)  # the first segment of the next new queue is reserved ahead too
        worst_call = 0.0
        for i in range(200):  # ~200 KiB: segments of 64, 128 and 256 KiB
            e = q.entry(bytes([i % 256]) * 1000)
            started = time.perf_counter()
            s.publish(q, e)
            worst_call = max(worst_call, time.perf_counter() - started)
            sent.append(e)
            await asyncio.sleep(0.01)  # traffic, not a flood: the worker keeps ahead
        return worst_call

    worst_call = asyncio.run(main())
    assert s.prealloc_used == 3 and s.prealloc_missed == 0, (s.prealloc_used, s.prealloc_missed)
    assert "posix_fallocate" not in slow_disk and worst_call < BOUND, (slow_disk, worst_call)
    s.close()
    qdir = tmp_path / "queues" / encode_name("/") / encode_name("q")
    assert not [f for f in os.listdir(qdir) if f.endswith(".prealloc")]
    s = make(tmp_path, segment_size=256 * KiB, min_segment_size=64 * KiB)
    assert [(m.seq, m.body) for m in s.recover()[("/", "q")]] == [(e.seq, e.msg.body) for e in sent]
    s.close()


def test_rotation_falls_back_to_a_synchronous_grow_when_the_spare_is_late(tmp_path: Path) -> None:
    s = make(tmp_path, segment_size=64 * KiB, min_segment_size=16 * KiB)
    q = FakeQueue("q")
    worker = s.start_worker()
    gate = threading.Event()
    worker.submit(gate.wait, 10)  # the worker is busy: no spare will be ready in time
    sent = [q.entry(b"z" * 1000) for _ in range(40)]
    for e in sent:
        s.publish(q, e)
    gate.set()
    assert s.prealloc_missed >= 1
    s.close()
    s = make(tmp_path, segment_size=64 * KiB, min_segment_size=16 * KiB)
    assert [m.seq for m in s.recover()[("/", "q")]] == [e.seq for e in sent]
    s.close()


def test_queue_delete_removes_files_off_the_loop_and_a_new_queue_of_that_name_is_safe(
        tmp_path: Path, slow_disk: list[str]) -> None:
    kw: dict[str, Any] = {"segment_size": 16 * KiB, "min_segment_size": 16 * KiB, "compact_min_bytes": 2 * KiB}
    s = make(tmp_path, **kw)
    q = FakeQueue("q")
    old = [q.entry(os.urandom(1000)) for _ in range(100)]
    for e in old:
        s.publish(q, e)
    for e in old[1:]:
        s.remove(q, e)  # segment 1 (pinned by old[0]) is a compaction candidate
    slow_disk.clear()
    worker = s.start_worker()
    job = s.next_compaction()
    assert job is not None
    fut = worker.submit(job.run)  # in flight on the worker while the queue goes and comes back
    started = time.perf_counter()
    s.delete_queue(q)
    took = time.perf_counter() - started
    q2 = FakeQueue("q")
    new = [q2.entry(f"new {i}".encode()) for i in range(30)]
    for e in new:
        s.publish(q2, e)  # (its first segment is reserved on the loop: the worker is busy)
    fut.result(timeout=30)
    assert s.finish_compaction(job) == 0  # the queue it belonged to is gone
    assert not {"rmtree", "unlink"} & set(slow_disk) and took < BOUND, (slow_disk, took)
    s.sync()
    s.close()
    trash = tmp_path / "queues" / TRASH
    assert not trash.exists() or not [f for f in os.listdir(trash) if not f.endswith(".prealloc")]
    s = make(tmp_path, **kw)
    assert [(m.seq, m.body) for m in s.recover()[("/", "q")]] == [(e.seq, e.msg.body) for e in new]
    s.close()


def test_queue_json_is_fsynced_by_the_group_commit_not_on_create(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    s = make(tmp_path)
    synced: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    q = FakeQueue("q")
    s.publish(q, q.entry(b"first"))
    assert synced == []  # creating the queue's directory waited for no disk
    s.sync()
    meta = str(tmp_path / "queues" / encode_name("/") / encode_name("q") / "queue.json")
    assert meta in synced and s.durable_ticket == s.ticket
    s.close()


def test_compaction_commit_is_correct_when_the_queue_moved_on_during_the_job(tmp_path: Path) -> None:
    """Acks, deliveries and publishes between a job's snapshot and its commit: the rewritten file
    keeps a superset of what the commit needs, and a restart sees exactly the queue's state."""
    kw: dict[str, Any] = {"segment_size": 64 * KiB, "min_segment_size": 64 * KiB, "compact_min_bytes": 16 * KiB}
    s = make(tmp_path, **kw)
    q = FakeQueue("q")
    es = [q.entry(os.urandom(1000)) for _ in range(400)]
    for e in es:
        s.publish(q, e)
    keep = es[:10]  # in the first (soon compacted) segment
    for e in es[10:]:
        if e.seq % 50:
            s.remove(q, e)
    for e in keep[:5]:
        s.mark_delivered(q, e)
    worker = s.start_worker()
    job = s.next_compaction()
    assert job is not None and job.seg.base_lsn == 1
    gate = threading.Event()
    worker.submit(gate.wait, 10)
    fut = worker.submit(job.run)  # snapshot taken; the file is rewritten only after the gate
    for e in keep[:3]:
        s.remove(q, e)  # live at the snapshot: their publish records stay in the new file
    for e in keep[3:7]:
        s.mark_delivered(q, e)  # a newer marker in the active segment
    late = [q.entry(b"late") for _ in range(20)]
    for e in late:
        s.publish(q, e)
    gate.set()
    fut.result(timeout=30)
    assert s.finish_compaction(job) > 0
    assert s.read_body(q, keep[3].seq) == keep[3].msg.body  # reads use the new offsets
    live = [e for e in es if e in keep[3:] or (e not in keep and e.seq % 50 == 0)] + late
    s.close()
    s = make(tmp_path, **kw)
    got = s.recover()[("/", "q")]
    assert [(m.seq, m.body) for m in got] == [(e.seq, e.msg.body) for e in live]
    assert {m.seq for m in got if m.redelivered} == {e.seq for e in keep[3:7]}
    s.close()
