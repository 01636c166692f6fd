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

It runs on the event-loop thread from ``FileQueueStore.maintain()`` with a byte budget; the
file written is at most ``compact_ratio`` of a segment.
"""

from __future__ import annotations

import bisect
import logging
import os
from array import array

from haremq.store import records as R
from haremq.store.log import QueueLog, _fsync_dir, _write_file
from haremq.store.recovery import map_readonly, scan
from haremq.store.segment import LIVE, Segment

log = logging.getLogger("haremq.store")


def garbage_ratio_ok(qlog: QueueLog, seg: Segment) -> bool:
    """Is ``seg`` worth compacting?"""
    used = seg.write_pos - R.FILE_HEADER_SIZE
    keep = seg.live_bytes + seg.refs * R.SEQ_RECORD_SIZE
    return used >= qlog.config.compact_min_bytes and keep < qlog.config.compact_ratio * used


def candidates(qlog: QueueLog) -> list[Segment]:
    return [s for s in qlog.segments[:-1] if garbage_ratio_ok(qlog, s)]


def compact(qlog: QueueLog, seg: Segment) -> int:
    """Rewrite ``seg`` keeping only the records that matter; returns bytes reclaimed."""
    assert seg is not qlog.active and qlog.by_base.get(seg.base_lsn) is seg
    before = seg.size
    buf = map_readonly(seg.path)
    try:
        res, recs = scan(buf, seg.base_lsn)
        kept: list[bytes] = []
        new_offs: dict[int, int] = {}
        pos = R.FILE_HEADER_SIZE
        for off, total, rtype, _lsn in recs:
            seq = R.SEQ.unpack_from(buf, off + R.REC_HEADER_SIZE)[0]
            if rtype == R.PUBLISH:
                j = bisect.bisect_left(seg.seqs, seq)
                keep = j < len(seg.seqs) and seg.seqs[j] == seq and bool(seg.flags[j] & LIVE)
                if keep:
                    new_offs[seq] = pos
            elif rtype == R.DELIVERED:
                loc = qlog._live(seq)
                keep = loc is not None and loc[0].marks[loc[1]] == seg.base_lsn
            else:
                loc = qlog._locate(seq)
                keep = loc is not None and loc[0] is not seg
            if keep:
                kept.append(bytes(buf[off:off + total]))
                pos += total
        if res.damage or not res.header_ok:
            log.error("store %s/%s: not compacting %s: it is damaged (%s)", qlog.vhost, qlog.name, seg.name,
                      res.damage[0].reason if res.damage else "bad header")
            return 0
    finally:
        if not isinstance(buf, bytes):
            buf.close()

    tmp = seg.path + ".compact"
    _write_file(tmp, [R.encode_file_header(seg.base_lsn, seg.seq_floor, res.epoch), *kept])
    os.rename(tmp, seg.path)
    _fsync_dir(qlog.directory)

    # swap the descriptor and rebuild the index at the new offsets
    new_fd = os.open(seg.path, os.O_RDWR)
    with qlog.flusher.lock:
        qlog.flusher.forget(seg)
        os.close(seg.fd)
        seg.fd = new_fd
        seg.size = os.fstat(new_fd).st_size
        seg.write_pos = pos
    work: list[Segment] = [seg]
    seqs: array[int] = array("Q")
    offs: array[int] = array("I")
    lens: array[int] = array("I")
    flags = bytearray()
    marks: array[int] = array("Q")
    for i, seq in enumerate(seg.seqs):
        if seg.flags[i] & LIVE:
            seqs.append(seq)
            offs.append(new_offs[seq])
            lens.append(seg.lens[i])
            flags.append(seg.flags[i])
            marks.append(seg.marks[i])
        elif seg.marks[i]:
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
