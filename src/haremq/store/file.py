"""``FileQueueStore``: the persistent queue store, one append-only log per durable queue.

Layout::

    DATA_DIR/queues/<vhost, encoded>/<queue name, encoded>/
        queue.json                      {"vhost": ..., "name": ...} (the real names)
        00000000000000000001.seg        segments, named by base LSN (see records.py)
        00000000000000004711.seg
        00000000000000000001.seg.quarantined   a damaged file kept for forensics (never read)
        <uuid>.prealloc                 the next segment, reserved ahead by the store worker
    DATA_DIR/queues/.trash/             deleted queues on their way out (and the first segment of the
                                        next new queue, reserved ahead); emptied at startup

Names are encoded to ``[A-Za-z0-9_-]`` plus ``%XX`` escapes (``""`` is ``%``); long names are
cut and suffixed with a hash, ``queue.json`` keeps the truth.

Threading: every method except ``sync()`` runs on the event-loop thread. ``sync()`` (= the shared
``GroupCommit.sync``) may run on a worker thread; see groupcommit.py for the protocol. After
``start_worker()`` the store keeps blocking housekeeping off the loop on its own thread (see
worker.py): directory removal on queue delete, compaction (``next_compaction`` ->
``CompactJob.run`` there -> ``finish_compaction``) and preallocation of the next segment.
Without it (tests, tools, startup) all of that runs inline.

Integration, in short: ``recover()`` once at startup (before any publish), then ``publish`` /
``mark_delivered`` / ``remove`` as the core moves entries (each returns the queue's ``QueueLog``,
a ``CommitLog``: answers wait for its ``committed_lsn``); the server runs ``sync()`` in an executor
every ``flusher.delay`` seconds, then ``advance_commits()`` on the loop, and ``maintain()`` now and
then to compact.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Collection

from haremq.errors import NotFound, ResourceError
from haremq.store import compaction
from haremq.store.api import CommitLog, QueueId, QueueRef, RecoveredMessage, StoredEntry
from haremq.store.compaction import CompactJob
from haremq.store.crypto import RecordCipher
from haremq.store.groupcommit import GroupCommit
from haremq.store.log import LogConfig, MiB, QueueLog, RecoveryReport, drop_spare, reserve_spare
from haremq.store.worker import Housekeeper

log = logging.getLogger("haremq.store")

_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
META = "queue.json"
TRASH = ".trash"


def encode_name(name: str) -> str:
    """A file-system-safe, reversible (unless hashed) directory name for a vhost or queue name."""
    if not name:
        return "%"
    raw = name.encode("utf-8", "surrogatepass")
    out = "".join(chr(b) if b in _SAFE else f"%{b:02X}" for b in raw)
    if len(out) > 120:
        out = out[:80] + "~" + hashlib.sha256(raw).hexdigest()[:16]
    return out


@dataclasses.dataclass(slots=True, frozen=True)
class QueueStoreStats:
    bytes_on_disk: int
    segments: int
    live_messages: int
    oldest_segment: str | None  # the oldest file still on disk: what pins the log's tail
    oldest_segment_live: int
    compactions: int
    deleted_segments: int


class FileQueueStore:
    """Persistent messages of durable queues, in per-queue segment logs under ``data_dir``."""

    def __init__(self, data_dir: str | os.PathLike[str], *, flusher: GroupCommit | None = None,
                 fsync: str = "interval", sync_interval: float = 0.005, segment_size: int = 64 * MiB,
                 min_segment_size: int = 1 * MiB, compact_ratio: float = 0.25,
                 compact_min_bytes: int | None = None, epoch: int = 0, cipher: RecordCipher | None = None) -> None:
        """``cipher``: encrypt new PUBLISH records at rest (crypto.py); None writes them plain."""
        self.root = os.path.join(os.fspath(data_dir), "queues")
        self.flusher = flusher if flusher is not None else GroupCommit(fsync, sync_interval)
        self.config = LogConfig(segment_size, min_segment_size, compact_ratio, compact_min_bytes, epoch, cipher)
        self.logs: dict[tuple[str, str], QueueLog] = {}
        self._opened = False
        self._closed = False
        self.worker: Housekeeper | None = None
        # with a worker: the first segment of the next new queue, reserved ahead in the trash
        # directory (strays there are removed at startup); its future descriptor and path
        self._first: concurrent.futures.Future[int] | None = None
        self._first_path = ""

    def start_worker(self) -> Housekeeper:
        """From now on run blocking housekeeping on a worker thread (the node calls this once its
        loop runs); ``close()`` drains and stops it."""
        if self.worker is None:
            self._ensure_open()
            self.worker = Housekeeper()
            for qlog in self.logs.values():
                qlog.worker = self.worker
            self._reserve_first()
        return self.worker

    def _reserve_first(self) -> None:
        if self.worker is None or self.worker.closed:
            return
        trash = os.path.join(self.root, TRASH)
        try:
            os.makedirs(trash, exist_ok=True)
            dfd = os.open(trash, os.O_RDONLY)
        except OSError:
            return  # new queues reserve their first segment synchronously
        name = f"{uuid.uuid4().hex}.prealloc"
        self._first_path = os.path.join(trash, name)
        self._first = self.worker.submit(reserve_spare, name, self.config.min_segment_size, dfd)

    # ---- startup -----------------------------------------------------------------------------
    def _ensure_open(self) -> None:
        if self._opened:
            return
        self._opened = True
        os.makedirs(self.root, exist_ok=True)
        trash = os.path.join(self.root, TRASH)
        if os.path.isdir(trash):
            shutil.rmtree(trash, ignore_errors=True)
        for vdir in sorted(os.listdir(self.root)):
            vpath = os.path.join(self.root, vdir)
            if vdir == TRASH or not os.path.isdir(vpath):
                continue
            for qdir in sorted(os.listdir(vpath)):
                qpath = os.path.join(vpath, qdir)
                if os.path.isdir(qpath):
                    self._open_dir(qpath)

    def _open_dir(self, qpath: str) -> None:
        if self._never_committed(qpath):
            # a kill -9 before the queue's first group commit: queue.json was not written back yet.
            # The commit fsyncs queue.json before it declares any record of the directory durable,
            # so nothing here was confirmed; remove it (else it leaks and the queue's next
            # directory becomes ``~2``)
            log.warning("store: removing %s: its %s is empty (created, never committed)", qpath, META)
            dest = os.path.join(self.root, TRASH, uuid.uuid4().hex)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            os.rename(qpath, dest)
            shutil.rmtree(dest, ignore_errors=True)
            return
        try:
            with open(os.path.join(qpath, META), encoding="utf-8") as f:
                meta = json.load(f)
            key = (str(meta["vhost"]), str(meta["name"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("store: skipping %s: unreadable %s (%s)", qpath, META, exc)
            return
        for fname in os.listdir(qpath):
            if fname.endswith((".compact", ".salvage", ".new", ".prealloc")):  # a rewrite cut by a crash: the
                # original is intact (or an unused spare segment)
                os.unlink(os.path.join(qpath, fname))
        qlog = QueueLog(qpath, key[0], key[1], self.flusher, self.config, self.worker)
        qlog.open()
        self.logs[key] = qlog

    @staticmethod
    def _never_committed(qpath: str) -> bool:
        """``queue.json`` missing or empty, and only files this store writes in the directory."""
        try:
            names = os.listdir(qpath)
            if META in names and os.path.getsize(os.path.join(qpath, META)) > 0:
                return False
        except OSError:
            return False
        ours = (".seg", ".prealloc", ".compact", ".salvage", ".new", ".tmp", META)
        return all(n.endswith(ours) and os.path.isfile(os.path.join(qpath, n)) for n in names)

    def recover(self, *, load_bodies: bool = True,
                body_budget: int | None = None) -> dict[tuple[str, str], list[RecoveredMessage]]:
        """Open every queue log (scan, verify, repair) and return each queue's live messages in
        seq order. Call once at startup, before any publish; later calls return the current state.
        ``body_budget``: per queue, load bodies only up to that many bytes (the rest stays paged out)."""
        self._ensure_open()
        return {key: list(qlog.messages(load_bodies, body_budget)) for key, qlog in self.logs.items()}

    def recovery_reports(self) -> dict[tuple[str, str], RecoveryReport]:
        self._ensure_open()
        return {key: qlog.report for key, qlog in self.logs.items()}

    def last_seq(self, vhost: str, name: str) -> int:
        self._ensure_open()
        qlog = self.logs.get((vhost, name))
        return 0 if qlog is None else qlog.max_seq

    # ---- the QueueStore protocol (event-loop thread) -----------------------------------------
    def log(self, queue: QueueId) -> QueueLog | None:
        return self.logs.get((queue.vhost, queue.name))

    def _log(self, queue: QueueRef) -> QueueLog:
        key = (queue.vhost.name, queue.name)
        qlog = self.logs.get(key)
        if qlog is None:
            self._ensure_open()
            qlog = self.logs.get(key)
            if qlog is None:
                qlog = self._create(key)
        return qlog

    def _create(self, key: tuple[str, str]) -> QueueLog:
        try:
            return self._create_dir(key)
        except OSError as exc:
            raise ResourceError(f"cannot create the log directory of queue {key[1]!r}: {exc}") from exc

    def _create_dir(self, key: tuple[str, str]) -> QueueLog:
        vpath = os.path.join(self.root, encode_name(key[0]))
        qpath = os.path.join(vpath, encode_name(key[1]))
        n = 1
        while os.path.exists(qpath):  # a hashed name collided (or a stray dir): pick another
            n += 1
            qpath = os.path.join(vpath, f"{encode_name(key[1])}~{n}")
        os.makedirs(qpath)
        tmp = os.path.join(qpath, META + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"vhost": key[0], "name": key[1]}, f)
        os.rename(tmp, os.path.join(qpath, META))
        # No fsync here (on the loop): the group commit fsyncs the file and the directories before
        # it declares durable any record appended from now on, i.e. before the first confirm of a
        # message in this queue. A crash before that loses only unconfirmed messages.
        self.flusher.file_changed(os.path.join(qpath, META))
        self.flusher.dir_changed(qpath)
        self.flusher.dir_changed(vpath)
        self.flusher.dir_changed(self.root)
        qlog = QueueLog(qpath, key[0], key[1], self.flusher, self.config, self.worker)
        if self._first is not None:  # its first segment: the one reserved ahead (see _rotate)
            qlog.give_spare(self._first, self._first_path, self.config.min_segment_size)
            self._first = None
            self._reserve_first()
        self.logs[key] = qlog
        return qlog

    def publish(self, queue: QueueRef, entry: StoredEntry) -> QueueLog:
        """Append the entry's message (no fsync: wait for the log's ``committed_lsn``). Raises
        ResourceError on a full disk."""
        msg = entry.msg
        qlog = self._log(queue)
        qlog.publish(entry.seq, msg.exchange, msg.routing_key, msg.props, msg.body)
        return qlog

    def mark_delivered(self, queue: QueueRef, entry: StoredEntry) -> QueueLog | None:
        qlog = self.logs.get((queue.vhost.name, queue.name))
        return qlog if qlog is not None and qlog.mark_delivered(entry.seq) else None

    def remove(self, queue: QueueRef, entry: StoredEntry) -> QueueLog | None:
        qlog = self.logs.get((queue.vhost.name, queue.name))
        return qlog if qlog is not None and qlog.remove(entry.seq) else None

    @property
    def can_page(self) -> bool:
        return True

    def read_message(self, queue: QueueRef, seq: int) -> RecoveredMessage:
        qlog = self.logs.get((queue.vhost.name, queue.name))
        if qlog is None:
            raise NotFound(f"no log for queue {queue.name!r}")
        return qlog.read_message(seq)

    def read_body(self, queue: QueueRef, seq: int) -> bytes:
        qlog = self.logs.get((queue.vhost.name, queue.name))
        if qlog is None:
            raise NotFound(f"no log for queue {queue.name!r}")
        return qlog.read_body(seq)

    def delete_queue(self, queue: QueueRef | QueueId) -> None:
        self._ensure_open()
        key = (queue.vhost, queue.name) if isinstance(queue, QueueId) else (queue.vhost.name, queue.name)
        qlog = self.logs.pop(key, None)
        if qlog is None:
            return
        qlog.close()
        trash = os.path.join(self.root, TRASH)
        os.makedirs(trash, exist_ok=True)
        dest = os.path.join(trash, uuid.uuid4().hex)
        os.rename(qlog.directory, dest)  # atomic: a crash leaves the queue either whole or gone
        self.flusher.dir_changed(os.path.dirname(qlog.directory))
        # the files are closed and the directory is out of the way: removing it may take long
        # (see worker.py for why no job can race it)
        if self.worker is not None:
            self.worker.background(shutil.rmtree, dest, True)
        else:
            shutil.rmtree(dest, ignore_errors=True)

    # ---- durability ----------------------------------------------------------------------------
    @property
    def ticket(self) -> int:
        return self.flusher.ticket

    @property
    def durable_ticket(self) -> int:
        return self.flusher.durable_ticket

    def sync(self) -> int:
        """fsync everything appended so far (any thread); returns the durable ticket."""
        return self.flusher.sync()

    def advance_commits(self) -> list[CommitLog]:
        """Loop thread, after ``sync()`` returned: move the synced logs' ``committed_lsn``."""
        return [qlog for qlog in self.flusher.advance() if isinstance(qlog, QueueLog)]

    # ---- space ---------------------------------------------------------------------------------
    def maintain(self, budget_bytes: int | None = None) -> int:
        """Compact mostly-dead segments, at most about ``budget_bytes`` of files read (default: one
        segment's worth). Returns the bytes reclaimed. Event-loop thread; call it every few seconds."""
        budget = self.config.segment_size if budget_bytes is None else budget_bytes
        reclaimed = 0
        for qlog in list(self.logs.values()):
            for seg in compaction.candidates(qlog):
                if qlog.by_base.get(seg.base_lsn) is not seg or not compaction.garbage_ratio_ok(qlog, seg):
                    continue  # deleted or unpinned by the previous compaction's cascade
                if budget <= 0:
                    return reclaimed
                budget -= seg.write_pos
                reclaimed += compaction.compact(qlog, seg)
        return reclaimed

    def next_compaction(self, exclude: Collection[object] = ()) -> CompactJob | None:
        """The next segment worth compacting (not in ``exclude``), as a job: run ``job.run`` on a
        worker thread, then ``finish_compaction(job)`` here. One job at a time (the node awaits each)."""
        for qlog in self.logs.values():
            for seg in compaction.candidates(qlog):
                if seg not in exclude:
                    return CompactJob(qlog, seg)
        return None

    def finish_compaction(self, job: CompactJob) -> int:
        """Apply a job whose ``run`` returned; returns the bytes reclaimed."""
        return job.commit()

    @property
    def prealloc_used(self) -> int:
        """Segment rotations that found their successor preallocated by the worker."""
        return 0 if self.worker is None else self.worker.prealloc_used

    @property
    def prealloc_missed(self) -> int:
        """Rotations that had to reserve the next segment on the loop thread (the worker was late)."""
        return 0 if self.worker is None else self.worker.prealloc_missed

    def stats(self, vhost: str, name: str) -> QueueStoreStats | None:
        qlog = self.logs.get((vhost, name))
        if qlog is None:
            return None
        oldest = qlog.oldest_pinned()
        return QueueStoreStats(qlog.bytes_on_disk(), len(qlog.segments), qlog.live_count(),
                               None if oldest is None else oldest[0], 0 if oldest is None else oldest[1],
                               qlog.compactions, qlog.deleted_segments)

    def close(self) -> None:
        """Make everything durable (unless fsync=off) and release files. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self.worker is not None:
            self.worker.close()  # finish queued jobs first: they may hold descriptors of our files
            if self._first is not None:
                drop_spare(self._first, self._first_path)
                self._first = None
        try:
            if self.flusher.failed is None:
                self.flusher.sync()
        finally:
            for qlog in self.logs.values():
                qlog.close()
            self.logs.clear()
