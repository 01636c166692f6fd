"""Compaction: rewrite a mostly-dead sealed segment so one slow message cannot pin a whole file.

A sealed segment whose live bytes (live publish records plus the REMOVE/DELIVERED records other
files depend on, see log.py) are below ``compact_ratio`` of its used bytes is rewritten in place:

1. scan the file (CRC-checked; a damaged file is left alone and reported);
2. keep a PUBLISH only if its message is live; a DELIVERED only if its message is live and it is
   that message's current marker; a REMOVE only if the message's PUBLISH record is still on disk
   in *another* (older) file. Kept records are copied byte for byte: same LSN, same CRC, same
   order, so replay order and replication are unaffected;
3. write header + kept records to ``<name>.compact``, fsync it, rename it over the original and
   fsync the directory. A crash at any point leaves either the old or the new file, both valid
   (a stray ``*.compact`` is removed at startup);
4. swap the descriptor, rebuild the segment's index at the new offsets and release the
   references its dropped publish records held (which may let other files be deleted).

Steps 1-3 run on the store's worker thread when the node drives compaction
(``FileQueueStore.next_compaction`` / ``finish_compaction``), step 4 on the event-loop thread;
``FileQueueStore.maintain()`` runs all four inline. See ``CompactJob`` for why that split is safe.
"""

from __future__ import annotations

import logging
import mmap
import os
from array import array

from haremq.errors import InternalError
from haremq.store import records as R
from haremq.store.log import QueueLog, _write_file
from haremq.store.recovery import scan
from haremq.store.segment import LIVE, Segment

log = logging.getLogger("haremq.store")


def garbage_ratio_ok(qlog: QueueLog, seg: Segment) -> bool:
    """Is ``seg`` worth compacting?"""
    used = seg.write_pos - R.FILE_HEADER_SIZE
    keep = seg.live_bytes + seg.refs * R.SEQ_RECORD_SIZE
    return used >= qlog.config.compact_min_bytes and keep < qlog.config.compact_ratio * used


def candidates(qlog: QueueLog) -> list[Segment]:
    return [s for s in qlog.segments[:-1] if not s.compacting and garbage_ratio_ok(qlog, s)]


class CompactJob:
    """One segment's compaction in three steps, so the disk work can run off the event loop.

    ``__init__`` (loop thread) marks the segment ``compacting`` (no deletion meanwhile; it is
    sealed, so no appends either) and snapshots what decides which records to keep: the LIVE
    flags of its publish records and, from every segment up to it, the seqs whose ``marks``
    point at it (the REMOVE / DELIVERED records in it that other files depend on). It owns a dup
    of the segment's descriptor and a descriptor of the queue directory.

    ``run`` (any thread) reads, filters, writes, fsyncs and renames through those descriptors
    only: if the queue is deleted meanwhile, its directory (and the descriptor) moved into the
    trash, and nothing lands in a directory re-created under the same name.

    ``commit`` (loop thread) swaps the descriptor and rebuilds the index at the new offsets.

    Why a stale snapshot is safe: between the snapshot and the commit, the set of records that
    must stay can only shrink. The segment is sealed, so no new record (no new marker, no new
    REMOVE) can come to depend on it; a live message can only die, a marker only move to the
    active segment, a REMOVE only stop mattering. The new file keeps a superset of what the
    commit needs; a message removed meanwhile keeps its (now dead) publish record in the index.
    """

    __slots__ = ("base", "dfd", "error", "fd", "flags", "marks", "name", "new_fd", "new_offs", "pos", "qlog",
                 "seg", "seq_floor", "seqs")

    def __init__(self, qlog: QueueLog, seg: Segment) -> None:
        assert seg is not qlog.active and qlog.by_base.get(seg.base_lsn) is seg and not seg.compacting
        self.qlog = qlog
        self.seg = seg
        self.base = seg.base_lsn
        self.seq_floor = seg.seq_floor
        self.name = seg.name
        self.seqs = array("Q", seg.seqs)
        self.flags = bytes(seg.flags)
        # (seqs, marks) of every file that may depend on this one: marks only point at the
        # file a later record sits in, so files after this one cannot; with no refs, none does.
        # (A memcpy per file on the loop: the old inline pass did a bisect per record here.)
        self.marks = [(array("Q", p.seqs), array("Q", p.marks)) for p in qlog.segments
                      if p.base_lsn <= seg.base_lsn and p.seqs] if seg.refs else []
        self.new_fd = -1
        self.new_offs: dict[int, int] = {}
        self.pos = 0
        self.error: str | None = None
        self.dfd = os.open(qlog.directory, os.O_RDONLY)
        try:
            self.fd = os.dup(seg.fd)
        except OSError:
            os.close(self.dfd)
            raise
        seg.compacting = True

    # ---- any thread --------------------------------------------------------------------------
    def run(self) -> None:
        """Write the compacted file and rename it over the original. Never raises."""
        try:
            self._run()
        except OSError as exc:
            self.error = str(exc)
        finally:
            os.close(self.fd)
            self.fd = -1
            os.close(self.dfd)
            self.dfd = -1

    def _run(self) -> None:
        size = os.fstat(self.fd).st_size
        buf: mmap.mmap | bytes = mmap.mmap(self.fd, size, access=mmap.ACCESS_READ) if size else b""
        base = self.base
        live = {s for s, f in zip(self.seqs, self.flags, strict=True) if f & LIVE}
        needed = {s for seqs, marks in self.marks for s, m in zip(seqs, marks, strict=True) if m == base}
        try:
            res, recs = scan(buf, base)
            if res.damage or not res.header_ok:
                self.error = f"it is damaged ({res.damage[0].reason if res.damage else 'bad header'})"
                return
            kept: list[bytes] = []
            pos = R.FILE_HEADER_SIZE
            for off, total, rtype, _lsn in recs:
                seq = R.SEQ.unpack_from(buf, off + R.REC_HEADER_SIZE)[0]
                if rtype == R.PUBLISH or rtype == R.ENC_PUBLISH:  # (sealed records are copied as they are)
                    if seq not in live or seq in self.new_offs:  # (a duplicate: recovery indexed the first)
                        continue
                    self.new_offs[seq] = pos
                elif seq not in needed:
                    continue
                kept.append(bytes(buf[off:off + total]))
                pos += total
        finally:
            if not isinstance(buf, bytes):
                buf.close()
        self.pos = pos
        tmp = self.name + ".compact"
        _write_file(tmp, [R.encode_file_header(base, self.seq_floor, res.epoch), *kept], self.dfd)
        os.rename(tmp, self.name, src_dir_fd=self.dfd, dst_dir_fd=self.dfd)
        os.fsync(self.dfd)
        self.new_fd = os.open(self.name, os.O_RDWR, dir_fd=self.dfd)

    # ---- loop thread -------------------------------------------------------------------------
    def commit(self) -> int:
        """Apply the rewrite to the in-memory index; returns the bytes reclaimed."""
        qlog, seg = self.qlog, self.seg
        seg.compacting = False
        if qlog.by_base.get(seg.base_lsn) is not seg or seg.fd < 0:  # the queue was deleted or closed
            if self.new_fd >= 0:
                os.close(self.new_fd)
            return 0
        if self.error is not None or self.new_fd < 0:
            log.error("store %s/%s: not compacting %s: %s", qlog.vhost, qlog.name, seg.name, self.error)
            qlog._reclaim([seg])
            return 0
        before = seg.size
        with qlog.flusher.lock:
            qlog.flusher.forget(seg)
            old_fd = seg.fd
            seg.fd = self.new_fd
            seg.size = os.fstat(self.new_fd).st_size
            seg.write_pos = self.pos
        # the last reference to the replaced file: closing it frees its blocks, which may be slow
        if qlog.worker is not None and not qlog.worker.closed:
            qlog.worker.background(os.close, old_fd)
        else:
            os.close(old_fd)
        new_offs = self.new_offs
        work: list[Segment] = [seg]
        seqs: array[int] = array("Q")
        offs: array[int] = array("I")
        lens: array[int] = array("I")
        flags = bytearray()
        marks: array[int] = array("Q")
        for i, seq in enumerate(seg.seqs):
            off = new_offs.get(seq)
            if off is not None:  # still on disk (live, or removed since the snapshot)
                seqs.append(seq)
                offs.append(off)
                lens.append(seg.lens[i])
                flags.append(seg.flags[i])
                marks.append(seg.marks[i])
            else:
                if seg.flags[i] & LIVE:  # impossible (see the class docstring): never lose a message
                    raise InternalError(f"store {qlog.vhost}/{qlog.name}: compaction of {seg.name} "
                                        f"dropped live message {seq}")
                if seg.marks[i]:
                    qlog._unref(seg.marks[i], work)
        had = bool(seg.seqs)
        seg.seqs, seg.offs, seg.lens, seg.flags, seg.marks = seqs, offs, lens, flags, marks
        if had:
            if seqs:
                for k, s in enumerate(qlog.pubsegs):
                    if s is seg:
                        qlog.firsts[k] = seqs[0]
            else:
                qlog._drop_pubseg(seg)
        qlog.compactions += 1
        reclaimed = before - seg.size
        log.info("store %s/%s: compacted %s: %d live messages kept, %d bytes reclaimed",
                 qlog.vhost, qlog.name, seg.name, seg.live, reclaimed)
        qlog._reclaim(work)
        return reclaimed


def compact(qlog: QueueLog, seg: Segment) -> int:
    """Rewrite ``seg`` keeping only the records that matter, all on this thread; returns bytes reclaimed."""
    job = CompactJob(qlog, seg)
    job.run()
    return job.commit()
