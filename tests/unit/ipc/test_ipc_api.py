"""API, validation and bad-file tests for haremq.ipc.ShmQueue."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import pickle
import queue
import resource
import struct
import time
from pathlib import Path

import pytest

from haremq.ipc import IpcError, QueueFileError, ShmQueue

MODES = ["mpmc", "spsc"]
FORK = mp.get_context("fork")


@pytest.mark.parametrize("mode", MODES)
def test_roundtrip_and_counters(qname: str, mode: str) -> None:
    with ShmQueue.create(qname, 4096, 256, mode=mode) as q:  # type: ignore[arg-type]
        assert q.empty() and q.qsize() == 0
        q.put(b"a")
        q.put(bytearray(b"bc"))
        q.put(memoryview(b"def"))
        q.put(b"")
        assert q.qsize() == 4 and not q.empty()
        assert [q.get(), q.get(), q.get(), q.get()] == [b"a", b"bc", b"def", b""]
        with pytest.raises(queue.Empty):
            q.get_nowait()
        with pytest.raises(queue.Empty):
            q.get(timeout=0.01)
        assert q.stats()["put_count"] == q.stats()["get_count"] == 4
        q.unlink()
    assert not [p for p in os.listdir("/dev/shm") if p.startswith(qname)]


@pytest.mark.parametrize("mode", MODES)
def test_full_and_batches(qname: str, mode: str) -> None:
    with ShmQueue.create(qname, 1024, 100, mode=mode) as q:  # type: ignore[arg-type]
        msgs = [bytes([i]) * 40 for i in range(30)]  # 64-byte records: 16 fit in 1024
        n = q.put_many(msgs, block=False)
        assert n == 1024 // 64
        with pytest.raises(queue.Full):
            q.put_nowait(b"x" * 40)
        t0 = time.monotonic()
        with pytest.raises(queue.Full):
            q.put(b"x" * 40, timeout=0.05)
        assert time.monotonic() - t0 >= 0.05
        got = q.get_many(5)
        assert got == msgs[:5]
        assert q.put_many(msgs[n:], block=False) == 5
        rest = q.get_many(100)
        assert rest == msgs[5 : n + 5]
        q.unlink()


def test_validation(qname: str) -> None:
    with pytest.raises(ValueError, match="too small"):
        ShmQueue.create(qname, 100, 100)
    with pytest.raises(ValueError, match="mode"):
        ShmQueue.create(qname, 4096, 100, mode="lifo")  # type: ignore[arg-type]
    with ShmQueue.create(qname, 4096, 100) as q:
        with pytest.raises(ValueError, match="max_message_size"):
            q.put(b"x" * 101)
        with pytest.raises(TypeError, match="bytes-like"):
            q.put("text")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            q.put_many([b"ok", 5])  # type: ignore[list-item]
        with pytest.raises(ValueError):
            q.put_many([b"ok", b"y" * 500])
        assert q.qsize() == 0  # a bad batch writes nothing
        with pytest.raises(ValueError):
            q.get_many(0)
        with pytest.raises(FileExistsError):
            ShmQueue.create(qname, 4096, 100)
        with pytest.raises(TypeError):
            ShmQueue(q.path)
        q.unlink()


def test_open_missing() -> None:
    with pytest.raises(FileNotFoundError, match="no haremq shm queue"):
        ShmQueue.open("hq-test-definitely-missing")


def test_foreign_and_corrupt_files(qname: str, tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.write_bytes(b"PK\x03\x04" + bytes(8192))
    with pytest.raises(QueueFileError, match="bad magic"):
        ShmQueue.open(foreign)
    tiny = tmp_path / "tiny"
    tiny.write_bytes(b"hello")
    with pytest.raises(QueueFileError, match="too small"):
        ShmQueue.open(tiny)

    q = ShmQueue.create(qname, 4096, 100)
    q.close()
    path = Path(q.path)
    raw = bytearray(path.read_bytes())
    raw[16] ^= 0x40  # flip a capacity bit
    path.write_bytes(raw)
    with pytest.raises(QueueFileError, match="checksum"):
        ShmQueue.open(qname)
    raw[16] ^= 0x40
    struct.pack_into("<I", raw, 8, 99)  # future version
    path.write_bytes(raw)
    with pytest.raises(QueueFileError, match="version 99"):
        ShmQueue.open(qname)
    assert issubclass(QueueFileError, ValueError)
    ShmQueue.unlink_name(qname)


def test_corrupted_record_length_is_reported(qname: str) -> None:
    with ShmQueue.create(qname, 4096, 100) as q:
        q.put(b"abc")
        c = struct.unpack_from("<Q", q._buf, 4096)[0]
        struct.pack_into("<II", q._buf, 4096 + 8, 5000, (c & 0xFFFFFFFF) ^ 5000)
        with pytest.raises(QueueFileError, match="corrupted"):
            q.get_nowait()
        q.unlink()


def _child_get(q: ShmQueue, out: mp.SimpleQueue[object]) -> None:
    out.put(q.get(timeout=5))
    out.put(q.get(timeout=5))


@pytest.mark.parametrize("ctx", ["fork", "spawn"])
def test_pickle_and_child_processes(qname: str, ctx: str) -> None:
    with ShmQueue.create(qname, 4096, 100) as q:
        clone = pickle.loads(pickle.dumps(q))
        assert clone.path == q.path and clone.mode == q.mode
        clone.close()
        c = mp.get_context(ctx)
        out: mp.SimpleQueue[object] = c.SimpleQueue()
        p = c.Process(target=_child_get, args=(q, out))
        p.start()
        q.put(b"one")
        time.sleep(0.1)
        q.put(b"two")
        assert out.get() == b"one" and out.get() == b"two"
        p.join(10)
        assert p.exitcode == 0
        q.unlink()


def test_spsc_roles_are_exclusive(qname: str) -> None:
    with ShmQueue.create(qname, 4096, 100, mode="spsc") as q, ShmQueue.open(qname) as other:
        q.put(b"x")
        with pytest.raises(IpcError, match="live producer"):
            other.put(b"y")
        assert other.get() == b"x"
        with pytest.raises(IpcError, match="live consumer"):
            q.get_nowait()
        q.unlink()


def _idle_getter(name: str, out: mp.SimpleQueue[object]) -> None:
    q = ShmQueue.open(name)
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get(timeout=1.0)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    out.put((cpu, time.monotonic() - t0))
    t1 = time.monotonic()
    msg = q.get(timeout=5)
    out.put((msg, time.monotonic() - t1))


@pytest.mark.parametrize("mode", MODES)
def test_blocked_get_does_not_spin_and_wakes_promptly(qname: str, mode: str) -> None:
    with ShmQueue.create(qname, 4096, 100, mode=mode) as q:  # type: ignore[arg-type]
        out: mp.SimpleQueue[object] = FORK.SimpleQueue()
        p = FORK.Process(target=_idle_getter, args=(qname, out))
        p.start()
        cpu, waited = out.get()
        assert waited >= 1.0
        assert cpu < 0.1, f"idle blocked get burned {cpu:.3f}s CPU in 1s"
        time.sleep(0.3)  # the child is asleep on the FIFO by now
        t = time.monotonic()
        q.put(b"wake")
        msg, _ = out.get()
        assert msg == b"wake"
        assert time.monotonic() - t < 0.5
        p.join(5)
        q.unlink()


def test_blocked_put_wakes_when_space_frees(qname: str) -> None:
    with ShmQueue.create(qname, 1024, 100) as q:
        for size in (100, 0):
            while q.put_many([b"z" * size], block=False):
                pass
        p = FORK.Process(target=lambda: (time.sleep(0.2), ShmQueue.open(qname).get()))
        p.start()
        t = time.monotonic()
        q.put(b"late", timeout=5)
        assert 0.15 < time.monotonic() - t < 2
        p.join(5)
        q.unlink()


@pytest.mark.parametrize("mode", MODES)
def test_get_async_uses_the_event_loop(qname: str, mode: str) -> None:
    async def main(q: ShmQueue) -> list[bytes]:
        async def later() -> None:
            await asyncio.sleep(0.05)
            p = FORK.Process(target=lambda: ShmQueue.open(qname).put(b"from-child"))
            p.start()
            await asyncio.to_thread(p.join, 5)

        task = asyncio.create_task(later())
        got = [await q.get_async(timeout=5)]
        await task
        q.put(b"ready")
        got.append(await q.get_async())
        with pytest.raises(queue.Empty):
            await q.get_async(timeout=0.05)
        return got

    with ShmQueue.create(qname, 4096, 100, mode=mode) as q:  # type: ignore[arg-type]
        assert asyncio.run(main(q)) == [b"from-child", b"ready"]
        q.unlink()


def test_close_is_idempotent_and_fileno(qname: str) -> None:
    q = ShmQueue.create(qname, 4096, 100)
    assert isinstance(q.fileno(), int)
    q.close()
    q.close()
    q.unlink()
    q.unlink()


def test_spsc_head_is_published_lazily_but_qsize_is_exact(qname: str) -> None:
    with ShmQueue.create(qname, 1 << 16, 100, mode="spsc") as q, ShmQueue.open(qname) as other:
        for i in range(10):
            q.put(bytes([i]))
        # the first put takes the role on the slow path, which publishes; the next 9 stay local
        assert struct.unpack_from("<QQ", q._buf, 128) == (32, 1)
        assert other.qsize() == q.qsize() == 10  # other handles scan the commit words past head
        assert other.stats()["put_count"] == 10 and other.stats()["used_bytes"] == 10 * 32
        q.flush()
        assert struct.unpack_from("<QQ", q._buf, 128) == (10 * 32, 10)
        for _ in range(64):
            q.put(b"y")
        assert struct.unpack_from("<QQ", q._buf, 128)[1] == 64  # every 64th put publishes
        q.unlink()


def _lazy_producer_dies(name: str) -> None:
    q = ShmQueue.open(name)
    for i in range(100):  # head published at put 64; 36 committed records are never published
        q.put(i.to_bytes(2, "little"))
    os.kill(os.getpid(), 9)


def test_spsc_producer_killed_with_unpublished_head(qname: str) -> None:
    """The consumer takes records past the stale head; the next producer must resume after them."""
    with ShmQueue.create(qname, 1 << 16, 100, mode="spsc") as q:
        p = FORK.Process(target=_lazy_producer_dies, args=(qname,))
        p.start()
        p.join(10)
        assert p.exitcode == -9
        assert struct.unpack_from("<QQ", q._buf, 128)[1] < 100
        assert q.qsize() == 100
        assert [int.from_bytes(q.get(timeout=2), "little") for _ in range(100)] == list(range(100))
        q.put(b"after")  # recovers head from tail, which is past the published head
        assert q.qsize() == 1 and q.get(timeout=2) == b"after"
        with pytest.raises(queue.Empty):
            q.get_nowait()
        q.unlink()


def test_open_without_robust_mutexes_raises_ipc_error(qname: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A libc without robust process-shared mutexes (not Linux) gets a clear IpcError at open, not at import."""
    from haremq.ipc import mutex

    ShmQueue.create(qname, 4096, 100).close()
    monkeypatch.setattr(mutex, "_missing", "no pthread_mutexattr_setrobust")
    with pytest.raises(IpcError, match="robust process-shared pthread mutexes"):
        ShmQueue.open(qname)
    ShmQueue.unlink_name(qname)
