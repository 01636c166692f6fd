"""Scanning a segment: verify every record, find the end of the log, and locate damage.

The scanner is pure: it reads a buffer (an mmap of the file) and reports; the queue log
(``log.py``) decides what to repair and ``check.py`` only prints. Recovery protocol:

1. The file header must be valid (magic, version, CRC) and name the same base LSN as the file
   name. A header that is all zeros with nothing after it is a segment whose creation was torn
   by a crash: it held no record anyone was told about, so it is deleted. Any other bad header
   is damage at offset 0 (the file name still gives the base LSN, so records can be salvaged).
2. Records are read front to back. A record is valid when its length fits the file, its CRC32C
   matches, its type is known and its LSN is greater than the previous record's. A zero length
   word is the end of the log, *provided every byte after it is zero too* (otherwise a zeroed
   length word would silently hide the rest of the segment: that is damage as well).
3. At damage, the scanner resynchronises instead of giving up: the next valid record must carry
   one of the next few LSNs (LSNs are dense except where compaction dropped records), so it
   searches the buffer for those 8-byte LSN patterns (C-speed ``find``) and accepts the earliest
   candidate whose CRC checks. Scanning continues from there; every damaged range is reported.
4. Damage with no valid record after it is a *torn tail*: the bytes of a write the crash cut.

What the log does with the result (``QueueLog._repair``):

* torn tail in the newest segment -> zero the garbage (truncate), log how many bytes;
* any other damage (bad CRC in the middle, a bad header, a torn tail in an older segment) ->
  rename the file to ``*.quarantined`` (never deleted by us), log loudly, and write the valid
  records found before *and after* the damage into a fresh file under the original name.
  Records of later segments are unaffected. Recovery never raises on bad data.
"""

from __future__ import annotations

import dataclasses
import mmap
import os
from collections.abc import Iterator
from typing import Any

from haremq.store import records as R

RESYNC_WINDOW = 64  # how many LSNs past the last good one resync looks for
_ZERO = bytes(1 << 20)

Buffer = Any  # bytes | mmap.mmap: anything with slicing, find and len


@dataclasses.dataclass(slots=True)
class Damage:
    offset: int
    reason: str
    resumed_at: int | None  # offset of the next valid record, None = nothing valid after


@dataclasses.dataclass(slots=True)
class ScanResult:
    base_lsn: int
    seq_floor: int = 0
    epoch: int = 0
    header_ok: bool = True
    torn_creation: bool = False  # all-zero file: creation cut by a crash
    end: int = R.FILE_HEADER_SIZE  # offset just past the last valid record
    last_lsn: int = 0
    records: int = 0
    damage: list[Damage] = dataclasses.field(default_factory=list)
    garbage_bytes: int = 0  # non-zero bytes after the last valid record (torn tail size)

    @property
    def torn_tail_only(self) -> bool:
        """The only damage is at the end with nothing valid after it."""
        return self.header_ok and len(self.damage) == 1 and self.damage[0].resumed_at is None


def _nonzero_end(buf: Buffer, start: int, stop: int) -> int:
    """Offset just past the last non-zero byte in [start, stop), or ``start`` if all zero."""
    pos = stop
    while pos > start:
        lo = max(start, pos - len(_ZERO))
        chunk = buf[lo:pos]
        if chunk != _ZERO[:pos - lo]:
            return lo + len(bytes(chunk).rstrip(b"\0"))
        pos = lo
    return start


def _valid_at(buf: Buffer, pos: int, size: int, min_lsn: int) -> tuple[int, int, int] | None:
    """(length, type, lsn) when a valid record starts at ``pos``."""
    if pos < R.FILE_HEADER_SIZE or pos + R.REC_HEADER_SIZE > size:
        return None
    length, crc, rtype, _epoch, lsn = R.REC_HEADER.unpack_from(buf, pos)
    if length < R.REC_BODY_MIN or pos + 8 + length > size or rtype not in R.TYPES or lsn < min_lsn:
        return None
    if R.crc(buf[pos + 8:pos + 8 + length]) != crc:
        return None
    if rtype != R.DELIVERED and rtype != R.REMOVE and rtype != R.PUBLISH and rtype != R.ENC_PUBLISH:  # pragma: no cover
        return None
    if length < R.REC_BODY_MIN + 8:  # every payload starts with the message seq
        return None
    return length, rtype, lsn


def _resync(buf: Buffer, start: int, size: int, last_lsn: int) -> int | None:
    """The earliest offset > start holding a valid record with one of the next LSNs."""
    best: int | None = None
    for lsn in range(last_lsn + 1, last_lsn + 1 + RESYNC_WINDOW):
        pat = R.SEQ.pack(lsn)
        at = start + 1 + R.LSN_OFFSET
        stop = size if best is None else best + R.LSN_OFFSET
        while True:
            hit = buf.find(pat, at, stop)
            if hit < 0:
                break
            cand = hit - R.LSN_OFFSET
            if _valid_at(buf, cand, size, last_lsn + 1) is not None:
                best = cand
                break
            at = hit + 1
    return best


def scan(buf: Buffer, base_lsn: int) -> tuple[ScanResult, Iterator[tuple[int, int, int, int]]]:
    """Scan a whole segment file. Returns the result (complete once the iterator is exhausted)
    and an iterator of valid records as ``(offset, total length, type, lsn)``."""
    result = ScanResult(base_lsn=base_lsn)
    return result, _records(buf, result)


def _records(buf: Buffer, res: ScanResult) -> Iterator[tuple[int, int, int, int]]:
    size = len(buf)
    head = R.decode_file_header(bytes(buf[:R.FILE_HEADER_SIZE]))
    if head is not None and head[0] == res.base_lsn:
        _, res.seq_floor, res.epoch = head
    else:
        if _nonzero_end(buf, 0, size) == 0:
            res.torn_creation = True
            res.header_ok = False
            res.end = 0
            return
        res.header_ok = False
        res.damage.append(Damage(0, "bad file header", None))
    last_lsn = res.base_lsn - 1
    pos = R.FILE_HEADER_SIZE
    if not res.header_ok:
        first = pos if _valid_at(buf, pos, size, last_lsn + 1) else _resync(buf, pos, size, last_lsn)
        res.damage[-1].resumed_at = first
        if first is None:
            res.end = pos
            res.garbage_bytes = max(0, _nonzero_end(buf, pos, size) - pos)
            return
        pos = first
    while True:
        if pos + 4 > size:
            if pos < size and _nonzero_end(buf, pos, size) > pos:
                reason = "truncated length word"
            else:
                break
        else:
            length = int.from_bytes(buf[pos:pos + 4], "little")
            if length == 0:
                if _nonzero_end(buf, pos, size) == pos:
                    break
                reason = "zero length word followed by data"
            else:
                ok = _valid_at(buf, pos, size, last_lsn + 1)
                if ok is not None:
                    total = 8 + ok[0]
                    yield pos, total, ok[1], ok[2]
                    res.records += 1
                    last_lsn = ok[2]
                    pos += total
                    continue
                reason = _why(buf, pos, size, last_lsn)
        nxt = _resync(buf, pos, size, last_lsn)
        res.damage.append(Damage(pos, reason, nxt))
        if nxt is None:
            res.garbage_bytes = max(0, _nonzero_end(buf, pos, size) - pos)
            break
        pos = nxt
    res.end = pos
    res.last_lsn = last_lsn


def _why(buf: Buffer, pos: int, size: int, last_lsn: int) -> str:
    if pos + R.REC_HEADER_SIZE > size:
        return "record header cut at end of file"
    length, crc, rtype, _e, lsn = R.REC_HEADER.unpack_from(buf, pos)
    if length < R.REC_BODY_MIN + 8:
        return f"impossible length {length}"
    if pos + 8 + length > size:
        return f"length {length} runs past the end of the file"
    if R.crc(buf[pos + 8:pos + 8 + length]) != crc:
        return "bad crc"
    if rtype not in R.TYPES:
        return f"unknown record type {rtype}"
    return f"lsn {lsn} not after {last_lsn}"


def base_lsn_of(name: str) -> int | None:
    """The base LSN encoded in a segment file name, or None for anything else."""
    stem, dot, ext = name.partition(".")
    if ext != "seg" or not dot or len(stem) != 20 or not stem.isdigit():
        return None
    return int(stem)


def segment_name(base_lsn: int) -> str:
    return f"{base_lsn:020d}.seg"


def map_readonly(path: str) -> mmap.mmap | bytes:
    """A read-only view of a whole file (an empty file maps to b"")."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            return b""
        return mmap.mmap(fd, size, access=mmap.ACCESS_READ)
    finally:
        os.close(fd)
