"""The log of one durable queue: numbered segments, the message index, and reclaiming space.

Reference counting (when may a segment file go?)
================================================

A record may be dropped from disk only when replaying the log without it gives the same queue.

* A PUBLISH record must stay while its message is live (``Segment.live``).
* A REMOVE record for message ``m`` must stay while m's PUBLISH record is still on disk in an
  *older* segment, or replay would resurrect m. (If both sit in the same file they go together.)
* A DELIVERED record must stay while its message is live and it is the newest marker, or the
  message would lose its redelivered flag after a crash.

``Segment.refs`` counts the REMOVE and DELIVERED records in a file that must stay; ``marks[i]``
of a publish record points at the file holding the record that depends on it, so that when the
publish record goes (its file is deleted or compacted) the other file's ``refs`` is released:

* deliver m (publish in P, marker in T):  T.refs += 1, marks = T; an older marker's file -= 1;
* remove m (REMOVE appended to A):        the marker's file -= 1; if A is not P: A.refs += 1,
  marks = A, else marks = 0;
* P's publish records go away:            for every removed m in P with marks = A: A.refs -= 1.

A sealed (non-active) segment with ``live == 0 and refs == 0`` is deleted at once; deletions
cascade through a worklist. The active segment is never deleted, so the newest file always
remembers the highest seq the queue used (its header's seq floor and its records). A segment
that is mostly garbage is rewritten by ``compaction.py``.

Ordering on disk: REMOVE(m) is always appended after PUBLISH(m), so "older segment" above is
exactly "smaller base LSN". With a store worker the unlinks run there, in the order they were
decided (one FIFO thread), after the segment left the index and its descriptor was closed; a file
whose unlink is still queued is exactly a file a crash could resurrect. Unlinks are not fsynced one
by one; a crash may bring a deleted file back, which is safe: a resurrected file only holds records
whose effect is already void (its messages were removed by records in files that were removed
*after* it, and on ext4/xfs the journal commits unlinks in order).
"""

from __future__ import annotations

import bisect
import concurrent.futures
import logging
import os
import uuid
from collections.abc import Iterator
from typing import Any

from haremq.errors import InternalError, NotFound, ResourceError
from haremq.store import records as R
from haremq.store.api import RecoveredMessage
from haremq.store.crypto import EncryptionKeyError, RecordCipher, key_id_of, no_key_message
from haremq.store.groupcommit import GroupCommit
from haremq.store.recovery import ScanResult, base_lsn_of, map_readonly, scan, segment_name
from haremq.store.segment import DELIVERED, LIVE, Segment, reserve
from haremq.store.worker import Housekeeper

log = logging.getLogger("haremq.store")

MiB = 1 << 20


class LogConfig:
    """Sizes and thresholds shared by the logs of a store."""

    __slots__ = ("cipher", "compact_min_bytes", "compact_ratio", "epoch", "min_segment_size", "segment_size")

    def __init__(self, segment_size: int = 64 * MiB, min_segment_size: int = 1 * MiB,
                 compact_ratio: float = 0.25, compact_min_bytes: int | None = None, epoch: int = 0,
                 cipher: RecordCipher | None = None) -> None:
        self.segment_size = segment_size
        # the first segment of a queue starts small and sizes double up to segment_size, so a
        # thousand quiet durable queues do not reserve a thousand x 64 MiB
        self.min_segment_size = min(min_segment_size, segment_size)
        self.compact_ratio = compact_ratio
        self.compact_min_bytes = segment_size // 4 if compact_min_bytes is None else compact_min_bytes
        self.epoch = epoch  # the epoch of a new queue's log (a recovered log keeps its own)
        self.cipher = cipher  # encryption at rest: None = new records are written plain


class RecoveryReport:
    """What recovery found in one queue log."""

    __slots__ = ("quarantined", "records", "segments", "torn_bytes", "torn_creations")

    def __init__(self) -> None:
        self.segments = 0
        self.records = 0
        self.torn_bytes = 0
        self.torn_creations = 0
        self.quarantined: list[str] = []


class QueueLog:
    """One durable queue's log; implements the ``CommitLog`` port (store/api.py): ``appended_lsn``
    moves with each record, ``committed_lsn`` when the group commit that covered it is done."""

    def __init__(self, directory: str, vhost: str, name: str, flusher: GroupCommit, config: LogConfig,
                 worker: Housekeeper | None = None) -> None:
        self.directory = directory
        self.vhost = vhost
        self.name = name
        self.flusher = flusher
        self.config = config
        self.segments: list[Segment] = []  # by base lsn
        self.by_base: dict[int, Segment] = {}
        self.pubsegs: list[Segment] = []  # segments with publish records, by first seq
        self.firsts: list[int] = []  # first seq of each pubseg (for bisect)
        self.next_lsn = 1
        self.appended_lsn = 0  # the lsn of the newest record (a plain attribute: read per publish)
        self.committed_lsn = 0  # moved by GroupCommit (advance, or at append with fsync off)
        self.epoch = config.epoch  # recovered from the segment headers; records carry it
        self.unlogged_removes = 0  # acks that could not be logged (disk full)
        self.max_seq = 0
        self.report = RecoveryReport()
        self.compactions = 0
        self.deleted_segments = 0
        self._props = R.PropsCache()  # the last properties encoded by this log's appends
        self.cipher = config.cipher  # None: plain appends, and no encrypted record may exist
        self._verified_keys: set[int] = set()  # key ids proven right on one record at recovery
        self.worker = worker
        # the next segment's file, being reserved on the worker (see prepare_spare): its future
        # descriptor, file name and size
        self.spare: concurrent.futures.Future[int] | None = None
        self.spare_path = ""
        self.spare_size = 0
        self.closed = False

    @property
    def active(self) -> Segment | None:
        return self.segments[-1] if self.segments else None

    # ---- the CommitLog port ------------------------------------------------------------------
    @property
    def failed(self) -> BaseException | None:
        return self.flusher.failed

    def set_epoch(self, epoch: int) -> None:
        """Records appended from now on carry ``epoch`` (a new leader; never goes back)."""
        if epoch < self.epoch:
            raise InternalError(f"store {self.vhost}/{self.name}: epoch {epoch} < {self.epoch}")
        self.epoch = epoch

    # ---- recovery ----------------------------------------------------------------------------
    def open(self) -> None:
        """Scan every segment in order, repair damage, rebuild the index (see recovery.py)."""
        names = sorted(n for n in os.listdir(self.directory) if base_lsn_of(n) is not None)
        for i, fname in enumerate(names):
            base = base_lsn_of(fname)
            assert base is not None
            path = os.path.join(self.directory, fname)
            self._open_segment(path, base, last=i == len(names) - 1)
        self._reclaim([s for s in self.segments[:-1]])
        self.appended_lsn = self.committed_lsn = self.next_lsn - 1  # recovered: what the disk has
        if self.segments:
            last = self.segments[-1]
            if last.write_pos < last.size:
                last.map()

    def _open_segment(self, path: str, base: int, last: bool) -> None:
        buf = map_readonly(path)
        try:
            res, recs = scan(buf, base)
            entries = [(off, total, rtype, lsn, R.SEQ.unpack_from(buf, off + R.REC_HEADER_SIZE)[0])
                       for off, total, rtype, lsn in recs]
            # before any repair: a missing or wrong key must stop the start, never look like damage
            self._check_keys(path, buf, entries)
            if res.torn_creation:
                log.warning("store %s/%s: removing %s, an empty segment whose creation was cut by a crash",
                            self.vhost, self.name, os.path.basename(path))
                self.report.torn_creations += 1
                os.unlink(path)
                return
            if res.damage:
                path = self._repair(path, buf, res, entries, last)
        finally:
            if not isinstance(buf, bytes):
                buf.close()
        seg = Segment.open(path, base, res.seq_floor, res.end)
        self.report.segments += 1
        self.report.records += len(entries)
        self.segments.append(seg)
        self.by_base[base] = seg
        self.max_seq = max(self.max_seq, res.seq_floor)
        self.epoch = max(self.epoch, res.epoch)
        for off, total, rtype, lsn, seq in entries:
            self.next_lsn = lsn + 1
            if seq > self.max_seq:
                self.max_seq = seq
            if rtype == R.PUBLISH or rtype == R.ENC_PUBLISH:
                if self._locate(seq) is not None:
                    continue  # a duplicate seq cannot be written by us; keep the first
                if not seg.seqs:
                    self._add_pubseg(seg, seq)
                elif seq <= seg.seqs[-1]:
                    continue
                seg.add(seq, off, total)
            elif rtype == R.REMOVE:
                self._apply_remove(seq, seg)
            else:
                self._apply_delivered(seq, seg)
        self.next_lsn = max(self.next_lsn, base)

    def _check_keys(self, path: str, buf: Any, entries: list[tuple[int, int, int, int, int]]) -> None:
        """Open the first encrypted record of each key id in this log (one AES-GCM tag check per
        key id): a record the CRC accepts but the tag refuses means a wrong key, not damage."""
        for off, total, rtype, _lsn, _seq in entries:
            if rtype != R.ENC_PUBLISH:
                continue
            rec = bytes(buf[off:off + total])
            kid = key_id_of(rec)
            if kid in self._verified_keys:
                continue
            where = f"queue {self.name!r} in vhost {self.vhost!r} ({os.path.basename(path)} offset {off})"
            if self.cipher is None:
                raise EncryptionKeyError(f"{no_key_message(kid)}: {where}")
            try:
                self.cipher.open(rec)
            except EncryptionKeyError as exc:
                raise EncryptionKeyError(f"{exc}: {where}") from None
            self._verified_keys.add(kid)

    def _repair(self, path: str, buf: Any, res: ScanResult, entries: list[tuple[int, int, int, int, int]],
                last: bool) -> str:
        fname = os.path.basename(path)
        if last and res.torn_tail_only:
            # torn tail of the newest segment: zero the cut write so appends continue cleanly
            start = res.damage[0].offset
            log.warning("store %s/%s: %s: torn tail at offset %d, truncating %d bytes (%s)",
                        self.vhost, self.name, fname, start, res.garbage_bytes, res.damage[0].reason)
            self.report.torn_bytes += res.garbage_bytes
            fd = os.open(path, os.O_RDWR)
            try:
                end = start + res.garbage_bytes
                for p in range(start, end, MiB):
                    os.pwrite(fd, bytes(min(MiB, end - p)), p)
                os.fsync(fd)
            finally:
                os.close(fd)
            return path
        # anything else: keep the damaged file for forensics, salvage every valid record
        qpath = path + ".quarantined"
        n = 1
        while os.path.exists(qpath):
            n += 1
            qpath = f"{path}.quarantined.{n}"
        for d in res.damage:
            log.error("store %s/%s: CORRUPTION in %s at offset %d: %s (%s)", self.vhost, self.name, fname,
                      d.offset, d.reason,
                      "no valid record after it" if d.resumed_at is None else f"resumed at {d.resumed_at}")
        log.error("store %s/%s: quarantining %s as %s; salvaged %d valid records into a fresh %s",
                  self.vhost, self.name, fname, os.path.basename(qpath), len(entries), fname)
        os.rename(path, qpath)
        self.report.quarantined.append(qpath)
        # rewrite: same header, the valid records at new offsets
        header = R.encode_file_header(res.base_lsn, res.seq_floor, res.epoch)
        chunks = [header]
        pos = len(header)
        for k, (off, total, rtype, lsn, seq) in enumerate(entries):
            chunks.append(bytes(buf[off:off + total]))
            entries[k] = (pos, total, rtype, lsn, seq)
            pos += total
        tmp = path + ".salvage"
        _write_file(tmp, chunks)
        os.rename(tmp, path)
        _fsync_dir(self.directory)
        res.end = pos
        return path

    # ---- index -------------------------------------------------------------------------------
    def _add_pubseg(self, seg: Segment, first_seq: int) -> None:
        self.pubsegs.append(seg)
        self.firsts.append(first_seq)

    def _drop_pubseg(self, seg: Segment) -> None:
        for i, s in enumerate(self.pubsegs):
            if s is seg:
                del self.pubsegs[i]
                del self.firsts[i]
                return

    def _locate(self, seq: int) -> tuple[Segment, int] | None:
        """The segment and index slot of message ``seq``'s publish record, if it is on disk."""
        i = bisect.bisect_right(self.firsts, seq) - 1
        if i < 0:
            return None
        seg = self.pubsegs[i]
        j = bisect.bisect_left(seg.seqs, seq)
        if j < len(seg.seqs) and seg.seqs[j] == seq:
            return seg, j
        return None

    def _live(self, seq: int) -> tuple[Segment, int] | None:
        loc = self._locate(seq)
        if loc is not None and loc[0].flags[loc[1]] & LIVE:
            return loc
        return None

    def _unref(self, base: int, work: list[Segment]) -> None:
        seg = self.by_base.get(base)
        if seg is not None:
            seg.refs -= 1
            work.append(seg)

    def _apply_remove(self, seq: int, at: Segment | None) -> list[Segment]:
        work: list[Segment] = []
        loc = self._live(seq)
        if loc is None:
            return work
        seg, i = loc
        seg.flags[i] = 0
        seg.live -= 1
        seg.live_bytes -= seg.lens[i]
        if seg.marks[i]:
            self._unref(seg.marks[i], work)
        if at is not None and at is not seg:
            at.refs += 1
            seg.marks[i] = at.base_lsn
        else:
            seg.marks[i] = 0
        work.append(seg)
        return work

    def _apply_delivered(self, seq: int, at: Segment) -> list[Segment]:
        work: list[Segment] = []
        loc = self._live(seq)
        if loc is None:
            return work
        seg, i = loc
        if seg.marks[i]:
            self._unref(seg.marks[i], work)
        at.refs += 1
        seg.marks[i] = at.base_lsn
        seg.flags[i] |= DELIVERED
        return work

    # ---- appends (event-loop thread) ---------------------------------------------------------
    def _append(self, rtype: int, payload: bytes) -> tuple[Segment, int, int]:
        rec = R.encode_record(rtype, self.epoch, self.next_lsn, payload)
        if len(rec) > R.MAX_RECORD:
            raise ResourceError(f"record of {len(rec)} bytes is too large for the store")
        seg = self.active
        if seg is None or seg.room() < len(rec):
            seg = self._rotate(len(rec))
        off = seg.append(rec)
        lsn = self.appended_lsn = self.next_lsn
        self.next_lsn = lsn + 1
        self.flusher.appended(seg, self, lsn)
        if seg.write_pos * 2 > seg.size and self.spare is None and self.worker is not None:
            self.prepare_spare()
        return seg, off, len(rec)

    def _next_size(self, old: Segment | None) -> int:
        if old is None:
            return self.config.min_segment_size
        return min(self.config.segment_size, max(self.config.min_segment_size, old.size * 2))

    # ---- preallocation -----------------------------------------------------------------------
    # With a worker, once the active segment is half full the next one's file is reserved there
    # (``posix_fallocate``, the slow part) under a temporary ``<uuid>.prealloc`` name; the
    # rotation then only writes the header, renames and maps it. If the spare is not ready (or
    # too small, or failed, e.g. disk full) the rotation reserves synchronously, as without a
    # worker, and counts a miss. Stray ``.prealloc`` files are removed at startup.
    def prepare_spare(self) -> None:
        """Start reserving the file the next rotation will need (loop thread)."""
        worker = self.worker
        if worker is None or worker.closed or self.spare is not None:
            return
        try:
            dfd = os.open(self.directory, os.O_RDONLY)
        except OSError:
            return  # the rotation will reserve synchronously (and report any real problem)
        name = f"{uuid.uuid4().hex}.prealloc"
        self.spare_path = os.path.join(self.directory, name)
        self.spare_size = self._next_size(self.active)
        self.spare = worker.submit(reserve_spare, name, self.spare_size, dfd)

    def give_spare(self, fut: concurrent.futures.Future[int], path: str, size: int) -> None:
        """Use a file reserved elsewhere (the store's spare for new queues) as the next segment."""
        assert self.spare is None
        self.spare, self.spare_path, self.spare_size = fut, path, size

    def _take_spare(self, size: int) -> Segment | None:
        """The preallocated file as the new active segment (still under its spare name), if it is
        ready and big enough; otherwise None (and the spare is discarded)."""
        fut, self.spare = self.spare, None
        if fut is None:
            return None
        path = self.spare_path
        if not fut.done() or fut.exception() is not None or self.spare_size < size:
            self._discard_spare(fut, path)
            return None
        fd = fut.result()
        try:
            return Segment.adopt(path, fd, self.next_lsn, self.max_seq, self.epoch, self.spare_size)
        except OSError:
            os.close(fd)
            self._discard_spare(None, path)
            return None

    def _discard_spare(self, fut: concurrent.futures.Future[int] | None, path: str) -> None:
        if self.worker is not None and not self.worker.closed:
            self.worker.background(drop_spare, fut, path)  # FIFO: runs after the reserve job
        else:
            drop_spare(fut, path)

    def _rotate(self, need: int) -> Segment:
        old = self.active
        size = max(self._next_size(old), R.FILE_HEADER_SIZE + need)
        # An active segment without a single record (a recovered file cut right after its
        # header) has the name the new one needs: write the new file aside, then rename it over
        # the empty one, so the seq floor in its header is never missing from disk.
        replace = old is not None and old.base_lsn == self.next_lsn
        smallest = max(self.config.min_segment_size, R.FILE_HEADER_SIZE + need)
        expected = self.spare is not None or old is not None
        new = self._take_spare(size)
        rename = new is not None or replace
        if new is not None:
            assert self.worker is not None
            self.worker.prealloc_used += 1
        else:
            if expected and self.worker is not None:
                self.worker.prealloc_missed += 1
            try:
                new = Segment.create(self.directory, self.next_lsn, self.max_seq, self.epoch, size,
                                     ".new" if replace else "")
            except ResourceError:
                if size <= smallest:
                    raise
                # nearly full disk: a smaller segment may still fit where the doubled one does not
                new = Segment.create(self.directory, self.next_lsn, self.max_seq, self.epoch, smallest,
                                     ".new" if replace else "")
        if replace:
            assert old is not None and not old.seqs and not old.refs
        if rename:  # a file made aside (header written): give it its name, atomically
            final = os.path.join(self.directory, segment_name(new.base_lsn))
            try:
                os.rename(new.path, final)
            except OSError as exc:
                with self.flusher.lock:
                    new.close()
                raise ResourceError(f"cannot create segment {final}: {exc}") from exc
            new.path = final
        self.flusher.dir_changed(self.directory)
        with self.flusher.lock:
            if replace:
                assert old is not None
                self.flusher.forget(old)
                old.close()
                self.segments.remove(old)
                del self.by_base[old.base_lsn]
            self.segments.append(new)
            self.by_base[new.base_lsn] = new
            if old is not None:
                old.seal()
        if old is not None and not replace:
            self._reclaim([old])
        return new

    def publish(self, seq: int, exchange: str, routing_key: str, props: Any, body: bytes) -> None:
        if self.closed:
            raise InternalError(f"store {self.vhost}/{self.name}: publish to a deleted queue's log")
        if seq <= self.max_seq:
            if self._live(seq) is not None:
                return  # idempotent: already logged (e.g. a recovered message put back)
            raise InternalError(f"store {self.vhost}/{self.name}: seq {seq} <= last logged seq {self.max_seq}")
        payload = R.encode_publish_payload(seq, exchange, routing_key, props, bytes(body), self._props)
        if self.cipher is None:
            seg, off, n = self._append(R.PUBLISH, payload)
        else:
            seg, off, n = self._append(R.ENC_PUBLISH, self.cipher.seal(self.epoch, self.next_lsn, payload))
            self._verified_keys.add(self.cipher.active_id)
        if not seg.seqs:
            self._add_pubseg(seg, seq)
        seg.add(seq, off, n)
        self.max_seq = seq

    def remove(self, seq: int) -> bool:
        """Log that ``seq`` is gone; True when a REMOVE record was appended."""
        if self._live(seq) is None:
            return False
        try:
            at: Segment | None = self._append(R.REMOVE, R.SEQ.pack(seq))[0]
        except ResourceError:
            # Disk full. Refusing the ack would deadlock: acks are what free the disk. Forget the
            # message in memory so its segment can still be reclaimed; with no REMOVE record it may
            # come back after a crash (at-least-once), but it is never lost.
            self.unlogged_removes += 1
            at = None
        self._reclaim(self._apply_remove(seq, at))
        return at is not None

    def mark_delivered(self, seq: int) -> bool:
        """Log that ``seq`` was handed out; True when a DELIVERED record was appended."""
        loc = self._live(seq)
        if loc is None:
            return False
        try:
            at, _, _ = self._append(R.DELIVERED, R.SEQ.pack(seq))
        except ResourceError:
            return False  # disk full: after a crash this delivery is just not flagged redelivered
        self._reclaim(self._apply_delivered(seq, at))
        return True

    def read_message(self, seq: int) -> RecoveredMessage:
        loc = self._locate(seq)
        if loc is None:
            raise NotFound(f"message {seq} is not in the log of {self.vhost}/{self.name}")
        seg, i = loc
        rec = seg.read(seg.offs[i], seg.lens[i])
        if self.cipher is not None:
            rec = self._plain(rec)
        v = R.PublishView(rec)
        body = rec[v.body_off:]
        return RecoveredMessage(seq, v.exchange, v.routing_key, R.decode_properties(v.props_raw), body,
                                bool(seg.flags[i] & DELIVERED), len(body))

    def read_body(self, seq: int) -> bytes:
        loc = self._locate(seq)
        if loc is None:
            raise NotFound(f"message {seq} is not in the log of {self.vhost}/{self.name}")
        seg, i = loc
        rec = seg.read(seg.offs[i], seg.lens[i])
        if self.cipher is not None:
            rec = self._plain(rec)
        return rec[R.body_offset(rec):]

    def _plain(self, rec: bytes) -> bytes:
        """A PUBLISH record as written, or an ENC_PUBLISH record opened (same header layout)."""
        if rec[8] == R.ENC_PUBLISH:
            if self.cipher is None:  # (recovery refuses such a log; a record written since cannot be one)
                raise EncryptionKeyError(no_key_message(key_id_of(rec)))
            try:
                return self.cipher.open(rec)
            except EncryptionKeyError as exc:
                kid = key_id_of(rec)
                seq = R.SEQ.unpack_from(rec, R.REC_HEADER_SIZE)[0]
                if kid in self._verified_keys:  # the key opened another record: this one was changed
                    raise EncryptionKeyError(
                        f"queue {self.name!r} in vhost {self.vhost!r}: message {seq} fails authentication "
                        f"under key id {kid}, which opens other records: the record was altered "
                        f"(haremq store-check lists it)") from None
                raise EncryptionKeyError(f"queue {self.name!r} in vhost {self.vhost!r}: message {seq}: {exc}") from None
        return rec

    # ---- reclaiming --------------------------------------------------------------------------
    def _reclaim(self, work: list[Segment]) -> None:
        """Delete every candidate sealed segment nothing depends on any more (cascading)."""
        while work:
            seg = work.pop()
            if (seg.live or seg.refs or seg.compacting or seg is self.active
                    or self.by_base.get(seg.base_lsn) is not seg):
                continue  # (a segment being compacted is reclaimed when its job commits)
            self._delete_segment(seg, work)

    def _delete_segment(self, seg: Segment, work: list[Segment]) -> None:
        for i in range(len(seg.seqs)):
            if seg.marks[i]:
                self._unref(seg.marks[i], work)
        with self.flusher.lock:
            self.flusher.forget(seg)
            seg.close()
            self.segments.remove(seg)
            del self.by_base[seg.base_lsn]
        if seg.seqs:
            self._drop_pubseg(seg)
        dfd = -1
        if self.worker is not None and not self.worker.closed:
            try:
                dfd = os.open(self.directory, os.O_RDONLY)
            except OSError:
                dfd = -1
        if dfd >= 0:
            # freeing a big file's blocks can take milliseconds: unlink on the worker, relative to
            # a descriptor of this directory (a queue re-created under the same name gets a new
            # directory, which a late unlink can never reach); FIFO keeps the unlink order
            assert self.worker is not None
            self.worker.background(_unlink_at, dfd, seg.name)
        else:
            try:
                os.unlink(seg.path)
            except FileNotFoundError:
                pass
        self.flusher.dir_changed(self.directory)
        self.deleted_segments += 1

    # ---- reading back ------------------------------------------------------------------------
    def messages(self, load_bodies: bool = True, body_budget: int | None = None) -> Iterator[RecoveredMessage]:
        """The live messages in seq order, as they would be rebuilt after a restart.

        With ``body_budget``, bodies are loaded (whatever ``load_bodies`` says) until their total
        would exceed it: the head of a long queue in RAM, the rest left in the log (paged out).
        """
        budget = -1 if body_budget is None else body_budget
        cache: dict[bytes, dict[str, Any]] = {}  # identical property sets share one dict
        names: dict[str, str] = {}  # ... and identical exchange / routing key strings one str
        cipher = self.cipher
        for seg in list(self.pubsegs):
            if not seg.live:
                continue
            for i in range(len(seg.seqs)):
                fl = seg.flags[i]
                if not fl & LIVE:
                    continue
                rec = seg.read(seg.offs[i], seg.lens[i])
                if cipher is not None:
                    rec = self._plain(rec)
                v = R.PublishView(rec)
                props = cache.get(v.props_raw)
                if props is None:
                    props = R.decode_properties(v.props_raw)
                    if len(cache) < 4096:
                        cache[v.props_raw] = props
                ex = names.setdefault(v.exchange, v.exchange) if len(names) < 65536 else v.exchange
                rk = names.setdefault(v.routing_key, v.routing_key) if len(names) < 65536 else v.routing_key
                size = len(rec) - v.body_off
                load = load_bodies if budget < 0 else size <= budget
                if load and budget >= 0:
                    budget -= size
                yield RecoveredMessage(seg.seqs[i], ex, rk, props, rec[v.body_off:] if load else None,
                                       bool(fl & DELIVERED), size)

    def live_count(self) -> int:
        return sum(s.live for s in self.segments)

    def bytes_on_disk(self) -> int:
        return sum(s.size for s in self.segments)

    def oldest_pinned(self) -> tuple[str, int] | None:
        """(file name, live messages) of the oldest segment still on disk, if any."""
        seg = self.segments[0] if self.segments else None
        return None if seg is None else (seg.name, seg.live)

    def close(self) -> None:
        self.closed = True
        if self.spare is not None:
            fut, self.spare = self.spare, None
            self._discard_spare(fut, self.spare_path)
        with self.flusher.lock:
            for seg in self.segments:
                self.flusher.forget(seg)
                seg.close()
        self.segments.clear()
        self.by_base.clear()
        self.pubsegs.clear()
        self.firsts.clear()


def reserve_spare(name: str, size: int, dir_fd: int) -> int:
    """Worker thread: reserve a spare segment file in the directory ``dir_fd`` names."""
    try:
        return reserve(name, size, dir_fd)
    finally:
        os.close(dir_fd)


def _unlink_at(dir_fd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    finally:
        os.close(dir_fd)


def drop_spare(fut: concurrent.futures.Future[int] | None, path: str) -> None:
    """Close and remove an unused spare (its reserve job has finished: same FIFO worker)."""
    if fut is not None:
        try:
            os.close(fut.result(timeout=60))
        except Exception:  # the reservation failed: it left no file
            return
    try:
        os.unlink(path)
    except OSError:
        pass


def _write_file(path: str, chunks: list[bytes], dir_fd: int | None = None) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644, dir_fd=dir_fd)
    try:
        for c in chunks:
            view = memoryview(c)
            while view:
                n = os.write(fd, view)
                view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = ["LogConfig", "QueueLog", "RecoveryReport", "segment_name"]
