"""The per-queue ``CommitLog`` port, one suite over every queue store: appends move ``appended_lsn``,
``committed_lsn`` follows once the store has made them durable (memory: at once; file: after the group
commit's fsync and ``advance_commits`` on the loop thread; fsync off: at once)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from store_fakes import FakeQueue

from haremq.errors import ResourceError
from haremq.store import records as R
from haremq.store.api import QueueId
from haremq.store.file import FileQueueStore
from haremq.store.memory import MemoryQueueStore

KINDS = ["memory", "file-always", "file-interval", "file-off"]


def _make(kind: str, path: str, epoch: int = 0) -> Any:
    if kind == "memory":
        return MemoryQueueStore()
    store = FileQueueStore(path, fsync=kind.split("-", 1)[1], segment_size=16 * 1024, min_segment_size=4 * 1024,
                           epoch=epoch)
    store.recover()
    return store


def _commit(store: Any) -> list[Any]:
    """What the node's flusher does: fsync off the loop, then advance on it."""
    if isinstance(store, FileQueueStore):
        store.sync()
    return list(store.advance_commits())


def _waits(kind: str) -> bool:
    return kind in ("file-always", "file-interval")


@pytest.fixture(params=KINDS)
def kind_store(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[tuple[str, Any]]:
    store = _make(request.param, str(tmp_path))
    yield request.param, store
    store.close()


def test_each_append_moves_the_queue_logs_appended_lsn_by_one(kind_store: tuple[str, Any]) -> None:
    _, store = kind_store
    q = FakeQueue("q")
    a, b = q.entry(b"a"), q.entry(b"b")
    log = store.publish(q, a)
    assert log.appended_lsn == 1
    assert store.publish(q, b) is log and log.appended_lsn == 2
    assert store.mark_delivered(q, a) is log and log.appended_lsn == 3
    assert store.remove(q, a) is log and log.appended_lsn == 4
    assert store.log(QueueId("/", "q")) is log
    assert log.epoch == 0 and log.failed is None


def test_settling_what_the_log_does_not_hold_appends_nothing(kind_store: tuple[str, Any]) -> None:
    _, store = kind_store
    q = FakeQueue("q")
    e = q.entry()
    log = store.publish(q, e)
    assert store.remove(q, e) is log
    assert store.remove(q, e) is None and store.mark_delivered(q, e) is None
    assert log.appended_lsn == 2
    assert store.remove(FakeQueue("other"), e) is None


def test_committed_lsn_reaches_appended_lsn_once_the_store_committed(kind_store: tuple[str, Any]) -> None:
    kind, store = kind_store
    q = FakeQueue("q")
    log = store.publish(q, q.entry())
    store.publish(q, q.entry())
    if _waits(kind):
        assert log.committed_lsn == 0  # appended, not fsynced: nothing may be confirmed yet
    else:
        assert log.committed_lsn == 2  # memory, fsync off: committed at append
    moved = _commit(store)
    assert log.committed_lsn == log.appended_lsn == 2
    assert moved == ([log] if _waits(kind) else [])


def test_one_group_commit_covers_the_logs_of_many_queues(kind_store: tuple[str, Any]) -> None:
    kind, store = kind_store
    qs = [FakeQueue(f"q{i}") for i in range(3)]
    logs = [store.publish(q, q.entry()) for q in qs]
    assert len({id(log) for log in logs}) == 3
    fsyncs = store.flusher.fsyncs if isinstance(store, FileQueueStore) else 0
    moved = _commit(store)
    assert all(log.committed_lsn == 1 for log in logs)
    if _waits(kind):
        assert {id(log) for log in moved} == {id(log) for log in logs}
        assert store.flusher.syncs == 1 and store.flusher.fsyncs - fsyncs == 3  # one pass, one fsync per segment


def test_committed_lsn_moves_only_when_the_loop_advances_after_the_fsync(tmp_path: Any) -> None:
    """The fsync runs on a worker thread; the answers also wait for definitions written meanwhile, so
    ``committed_lsn`` moves on the loop thread (``advance_commits``), never inside ``sync``."""
    store = _make("file-always", str(tmp_path))
    q = FakeQueue("q")
    log = store.publish(q, q.entry())
    store.sync()
    assert log.committed_lsn == 0
    store.publish(q, q.entry())  # appended after that sync: the next one covers it
    assert store.advance_commits() == [log] and log.committed_lsn == 1
    assert store.advance_commits() == [] and log.committed_lsn == 1
    _commit(store)
    assert log.committed_lsn == 2
    store.close()


def test_a_failed_fsync_marks_the_logs_failed_and_commits_nothing(tmp_path: Any,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    store = _make("file-always", str(tmp_path))
    q = FakeQueue("q")
    log = store.publish(q, q.entry())

    def broken(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(ResourceError):
        store.sync()
    assert store.advance_commits() == [] and log.committed_lsn == 0
    assert isinstance(log.failed, OSError)
    monkeypatch.undo()
    store.close()


def _first_record_epoch(store: FileQueueStore, key: tuple[str, str]) -> tuple[int, int]:
    qlog = store.logs[key]
    with open(qlog.segments[0].path, "rb") as f:
        buf = f.read()
    header = R.decode_file_header(buf)
    assert header is not None
    return header[2], R.REC_HEADER.unpack_from(buf, R.FILE_HEADER_SIZE)[3]


def test_records_carry_the_logs_epoch_and_a_restart_keeps_it(tmp_path: Any) -> None:
    store = _make("file-always", str(tmp_path), epoch=3)
    q = FakeQueue("q")
    log = store.publish(q, q.entry())
    assert log.epoch == 3
    store.close()
    store = _make("file-always", str(tmp_path), epoch=0)  # a node restarting: the log says which epoch
    assert _first_record_epoch(store, ("/", "q")) == (3, 3)
    log = store.log(QueueId("/", "q"))
    assert log is not None and log.epoch == 3 and log.committed_lsn == log.appended_lsn == 1
    log.set_epoch(4)  # a new leader: records from now on carry its epoch
    assert store.publish(q, q.entry()) is log and log.epoch == 4
    with pytest.raises(Exception, match="epoch"):
        log.set_epoch(2)
    store.close()


def test_a_deleted_queues_log_refuses_appends(tmp_path: Any) -> None:
    store = _make("file-always", str(tmp_path))
    q = FakeQueue("q")
    log = store.publish(q, q.entry())
    store.delete_queue(QueueId("/", "q"))
    assert store.log(QueueId("/", "q")) is None
    with pytest.raises(Exception, match="deleted"):
        log.publish(5, "", "q", None, b"late")
    store.close()
