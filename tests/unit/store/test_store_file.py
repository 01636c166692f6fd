"""File-store specifics: segments, reclaiming, compaction, group commit, disk full."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from store_fakes import FakeQueue

from haremq.errors import ConfigError, InternalError, ResourceError
from haremq.store import records as R
from haremq.store.file import FileQueueStore, encode_name
from haremq.store.groupcommit import GroupCommit

KiB = 1024


def make(path: Path, **kw: Any) -> FileQueueStore:
    kw.setdefault("segment_size", 64 * KiB)
    kw.setdefault("min_segment_size", 64 * KiB)
    s = FileQueueStore(path, **kw)
    s.recover()
    return s


def qdir(path: Path, q: FakeQueue) -> Path:
    return path / "queues" / encode_name(q.vhost.name) / encode_name(q.name)


def seg_files(path: Path, q: FakeQueue) -> list[str]:
    return sorted(f for f in os.listdir(qdir(path, q)) if f.endswith(".seg"))


def test_rotation_names_sort_and_sizes_grow(tmp_path: Path) -> None:
    s = make(tmp_path, segment_size=64 * KiB, min_segment_size=8 * KiB)
    q = FakeQueue("q")
    for _ in range(200):
        s.publish(q, q.entry(b"x" * 1000))
    names = seg_files(tmp_path, q)
    assert len(names) > 3 and all(len(n) == 24 for n in names)
    bases = [int(n[:20]) for n in names]
    assert bases == sorted(bases) and bases[0] == 1
    sizes = [os.path.getsize(qdir(tmp_path, q) / n) for n in names]
    assert sizes[:4] == [8 * KiB, 16 * KiB, 32 * KiB, 64 * KiB] and max(sizes) == 64 * KiB
    st = s.stats("/", "q")
    assert st is not None and st.live_messages == 200 and st.bytes_on_disk == sum(sizes)
    s.close()


def test_oversized_message_gets_its_own_segment(tmp_path: Path) -> None:
    s = make(tmp_path)
    q = FakeQueue("q")
    big = os.urandom(300 * KiB)
    s.publish(q, q.entry(b"small"))
    s.publish(q, q.entry(big))
    s.publish(q, q.entry(b"after"))
    s.close()
    s = make(tmp_path)
    assert [m.body for m in s.recover()[("/", "q")]] == [b"small", big, b"after"]
    s.close()


def test_segments_deleted_when_all_removed(tmp_path: Path) -> None:
    s = make(tmp_path, segment_size=16 * KiB, min_segment_size=16 * KiB)
    q = FakeQueue("q")
    es = [q.entry(b"y" * 1000) for _ in range(100)]
    for e in es:
        s.publish(q, e)
    assert len(seg_files(tmp_path, q)) >= 6
    for e in es:
        s.remove(q, e)
    # only the active segment is left: it holds the remove records and remembers the last seq
    assert len(seg_files(tmp_path, q)) <= 2
    s.close()
    s = make(tmp_path, segment_size=16 * KiB, min_segment_size=16 * KiB)
    assert s.recover()[("/", "q")] == []
    assert s.last_seq("/", "q") == 100
    with pytest.raises(InternalError):
        s.publish(q, type(es[0])(5, es[0].msg))  # a seq going backwards would corrupt the log
    s.close()


def test_remove_records_pin_until_publish_gone(tmp_path: Path) -> None:
    """A REMOVE in a newer segment must not be deleted while its PUBLISH is still on disk."""
    s = make(tmp_path, segment_size=8 * KiB, min_segment_size=8 * KiB)
    q = FakeQueue("q")
    slow, first = q.entry(b"slow" * 100), q.entry(b"first" * 100)
    s.publish(q, slow)
    s.publish(q, first)
    fill = [q.entry(b"f" * 1000) for _ in range(30)]
    for e in fill:
        s.publish(q, e)
    s.remove(q, first)  # REMOVE lands in a late segment; segment 1 is pinned by `slow`
    for e in fill:
        s.remove(q, e)
    for _ in range(30):  # push the remove record's segment into the past
        s.publish(q, q.entry(b"g" * 1000))
    s.close()
    s = make(tmp_path, segment_size=8 * KiB, min_segment_size=8 * KiB)
    got = [m.seq for m in s.recover()[("/", "q")]]
    assert got[:1] == [slow.seq] and first.seq not in got and len(got) == 31
    s.close()


def test_compaction_unpins_slow_message(tmp_path: Path) -> None:
    kw: dict[str, Any] = {"segment_size": 64 * KiB, "min_segment_size": 64 * KiB, "compact_min_bytes": 16 * KiB}
    s = make(tmp_path, **kw)
    q = FakeQueue("q")
    slow = q.entry(b"slow")
    s.publish(q, slow)
    s.mark_delivered(q, slow)
    es = [q.entry(os.urandom(1000)) for _ in range(400)]
    for e in es:
        s.publish(q, e)
    for e in es[:-5]:
        s.remove(q, e)
    before = s.stats("/", "q")
    assert before is not None and before.oldest_segment == seg_files(tmp_path, q)[0]
    reclaimed = s.maintain()
    after = s.stats("/", "q")
    assert after is not None and reclaimed > 0 and after.bytes_on_disk < before.bytes_on_disk
    assert after.compactions >= 1
    assert os.path.getsize(qdir(tmp_path, q) / seg_files(tmp_path, q)[0]) < 4 * KiB
    assert s.read_body(q, slow.seq) == b"slow"
    assert s.maintain() == 0  # nothing left worth compacting
    s.close()
    s = make(tmp_path, **kw)
    got = s.recover()[("/", "q")]
    assert [(m.seq, m.redelivered) for m in got] == [(slow.seq, True)] + [(e.seq, False) for e in es[-5:]]
    assert [m.body for m in got[1:]] == [e.msg.body for e in es[-5:]]
    s.remove(q, slow)
    s.close()
    s = make(tmp_path, **kw)
    assert [m.seq for m in s.recover()[("/", "q")]] == [e.seq for e in es[-5:]]
    s.close()


@pytest.mark.parametrize("stray_name", ["00000000000000000001.seg.compact", "0123abcd.prealloc"])
def test_stray_rewrite_files_are_removed(tmp_path: Path, stray_name: str) -> None:
    """A rewrite cut by a crash, or a spare segment reserved ahead and never used."""
    s = make(tmp_path)
    q = FakeQueue("q")
    s.publish(q, q.entry(b"a"))
    s.close()
    stray = qdir(tmp_path, q) / stray_name
    stray.write_bytes(b"half written")
    s = make(tmp_path)
    assert not stray.exists() and [m.body for m in s.recover()[("/", "q")]] == [b"a"]
    s.close()


# ---- group commit ---------------------------------------------------------------------------
def test_tickets_become_durable_after_sync(tmp_path: Path) -> None:
    s = make(tmp_path, fsync="interval")
    q = FakeQueue("q")
    woken: list[int] = []
    s.flusher.on_dirty = lambda: woken.append(s.ticket)
    s.publish(q, q.entry())
    t = s.ticket
    s.publish(q, q.entry())
    assert t == 1 and s.ticket == 2 and s.durable_ticket == 0 and s.flusher.pending
    assert woken == [1]  # once per batch: on the first record after a sync
    assert s.sync() == 2 and s.durable_ticket == 2 and not s.flusher.pending
    assert s.flusher.fsyncs >= 1 and s.flusher.delay == 0.005
    s.close()


def test_fsync_off_is_durable_at_once(tmp_path: Path) -> None:
    s = make(tmp_path, fsync="off")
    q = FakeQueue("q")
    s.publish(q, q.entry())
    assert s.durable_ticket == s.ticket == 1 and s.flusher.delay is None
    s.sync()
    assert s.flusher.fsyncs == 0
    s.close()


def test_fsync_always_and_bad_policy(tmp_path: Path) -> None:
    assert GroupCommit("always").delay == 0.0
    with pytest.raises(ConfigError):
        GroupCommit("sometimes")


def test_sync_from_worker_thread_during_appends(tmp_path: Path) -> None:
    """Appends on one thread, fsyncs on another, with rotation and deletion in between."""
    s = make(tmp_path, segment_size=16 * KiB, min_segment_size=16 * KiB, fsync="always")
    q = FakeQueue("q")
    stop = threading.Event()
    durable: list[int] = []
    errors: list[BaseException] = []

    def flusher() -> None:
        try:
            while not stop.is_set():
                durable.append(s.sync())
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    th = threading.Thread(target=flusher)
    th.start()
    try:
        for _ in range(3000):
            e = q.entry(b"z" * 300)
            s.publish(q, e)
            s.remove(q, e)
    finally:
        stop.set()
        th.join()
    assert not errors and durable == sorted(durable)
    assert s.sync() == s.ticket == 6000
    s.close()


def test_failed_fsync_is_sticky(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = make(tmp_path)
    q = FakeQueue("q")
    s.publish(q, q.entry())

    def bad_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "fsync", bad_fsync)
    with pytest.raises(ResourceError):
        s.sync()
    monkeypatch.undo()
    with pytest.raises(ResourceError):
        s.sync()
    assert s.durable_ticket == 0
    s.close()


# ---- disk full ----------------------------------------------------------------------------
def test_disk_full_raises_resource_error_and_keeps_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = make(tmp_path, segment_size=8 * KiB, min_segment_size=8 * KiB)
    q = FakeQueue("q")
    kept = [q.entry(b"k" * 1000) for _ in range(5)]
    for e in kept:
        s.publish(q, e)

    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(ResourceError, match="disk full"):
        for _ in range(20):
            s.publish(q, q.entry(b"n" * 1000))
    assert [f for f in os.listdir(qdir(tmp_path, q)) if f.endswith(".seg")] == ["00000000000000000001.seg"]
    monkeypatch.undo()
    # the failed entry's seq was skipped by the caller; later publishes go on
    late = q.entry(b"late")
    s.publish(q, late)
    s.close()
    s = make(tmp_path, segment_size=8 * KiB, min_segment_size=8 * KiB)
    bodies = [m.body for m in s.recover()[("/", "q")]]
    assert bodies[:5] == [b"k" * 1000] * 5 and bodies[-1] == b"late"
    s.close()


def test_record_layout_is_documented(tmp_path: Path) -> None:
    rec = R.encode_record(R.REMOVE, 7, 42, R.SEQ.pack(9))
    length, crc, rtype, epoch, lsn = R.REC_HEADER.unpack_from(rec)
    assert (len(rec), length, rtype, epoch, lsn) == (R.SEQ_RECORD_SIZE, len(rec) - 8, R.REMOVE, 7, 42)
    assert crc == R.crc(rec[8:]) and R.CRC_NAME in ("crc32c", "crc32c-python")
    assert R.decode_file_header(R.encode_file_header(5, 6, 7)) == (5, 6, 7)


def test_compaction_cascade_over_many_segments(tmp_path: Path) -> None:
    """Acks of a whole backlog but one message: compacting one file may delete other candidates."""
    kw: dict[str, Any] = {"segment_size": 16 * KiB, "min_segment_size": 4 * KiB, "compact_min_bytes": 2 * KiB}
    s = make(tmp_path, **kw)
    q = FakeQueue("q")
    es = [q.entry(bytes([i % 256]) * 1000) for i in range(600)]
    for e in es:
        s.publish(q, e)
    keep = es[300]
    for e in es:
        if e is not keep:
            s.remove(q, e)
    s.maintain(budget_bytes=10**9)
    st = s.stats("/", "q")
    assert st is not None and st.segments <= 3 and st.live_messages == 1
    s.close()
    s = make(tmp_path, **kw)
    assert [(m.seq, m.body) for m in s.recover()[("/", "q")]] == [(keep.seq, keep.msg.body)]
    s.close()
