"""One segment file of a queue log: a pre-sized, memory-mapped, append-only file.

The *active* (newest) segment is mapped read-write and records are copied into the mapping;
older (*sealed*) segments are unmapped and read with ``pread``, so a backlog far larger than RAM
costs neither resident memory nor address space, and only one mapping per queue exists.

Space is reserved with ``posix_fallocate`` when a segment is created (with a store worker, ahead
of time: see ``reserve`` and ``QueueLog.prepare_spare``). That turns "disk full"
into an ``OSError(ENOSPC)`` at creation time, which we report as ``ResourceError``; writing into a
sparse mapping would instead kill the process with SIGBUS when the disk fills.

Per segment we keep a compact index of the PUBLISH records physically in the file (arrays, about
25 bytes per message): ``seqs`` (sorted, since seqs only grow), ``offs``, ``lens``, ``flags``
(LIVE, DELIVERED) and ``marks``. ``marks[i]`` names (by base LSN) the segment holding the record
that must outlive this publish record: while the message is live, its latest DELIVERED marker;
once removed, its REMOVE record if that sits in another segment (0 = none). See ``log.py`` for
the reference counting this feeds.
"""

from __future__ import annotations

import errno
import mmap
import os
from array import array

from haremq.errors import ResourceError
from haremq.store import records as R
from haremq.store.recovery import segment_name

LIVE = 1
DELIVERED = 2


class Segment:
    __slots__ = (
        "base_lsn", "compacting", "fd", "flags", "lens", "live", "live_bytes", "marks", "mm", "offs", "path", "refs",
        "seq_floor", "seqs", "size", "write_pos",
    )

    def __init__(self, path: str, fd: int, base_lsn: int, seq_floor: int, size: int, write_pos: int) -> None:
        self.path = path
        self.fd = fd
        self.base_lsn = base_lsn
        self.seq_floor = seq_floor
        self.size = size
        self.write_pos = write_pos
        self.mm: mmap.mmap | None = None
        self.seqs: array[int] = array("Q")
        self.offs: array[int] = array("I")
        self.lens: array[int] = array("I")
        self.flags = bytearray()
        self.marks: array[int] = array("Q")
        self.live = 0  # publish records of messages still in the queue
        self.live_bytes = 0
        self.refs = 0  # other records in this file that must survive (see log.py)
        self.compacting = False  # a compaction job is rewriting the file: do not delete it

    # ---- lifecycle ---------------------------------------------------------------------------
    @classmethod
    def create(cls, directory: str, base_lsn: int, seq_floor: int, epoch: int, size: int,
               suffix: str = "") -> Segment:
        """Create, reserve and map a new empty segment. Raises ResourceError when the disk is full."""
        path = os.path.join(directory, segment_name(base_lsn) + suffix)
        try:
            fd = reserve(path, size)
            try:
                return cls.adopt(path, fd, base_lsn, seq_floor, epoch, size)
            except OSError:
                os.close(fd)
                _unlink_quietly(path)
                raise
        except OSError as exc:
            raise _resource_error(exc, path, size) from exc

    @classmethod
    def adopt(cls, path: str, fd: int, base_lsn: int, seq_floor: int, epoch: int, size: int) -> Segment:
        """Turn a reserved, still empty file (``reserve``) into the segment ``path``: write its
        header and map it. Raises OSError (the caller owns ``fd`` then)."""
        os.pwrite(fd, R.encode_file_header(base_lsn, seq_floor, epoch), 0)
        seg = cls(path, fd, base_lsn, seq_floor, size, R.FILE_HEADER_SIZE)
        seg.map()
        return seg

    @classmethod
    def open(cls, path: str, base_lsn: int, seq_floor: int, write_pos: int) -> Segment:
        fd = os.open(path, os.O_RDWR)
        return cls(path, fd, base_lsn, seq_floor, os.fstat(fd).st_size, write_pos)

    def map(self) -> None:
        """Map read-write for appending (the active segment)."""
        if self.mm is None and self.size > 0:
            self.mm = mmap.mmap(self.fd, self.size, access=mmap.ACCESS_WRITE)

    def seal(self) -> None:
        """No more appends: drop the mapping (dirty pages stay in the page cache for fsync)."""
        if self.mm is not None:
            self.mm.close()
            self.mm = None

    def close(self) -> None:
        """Unmap and close the descriptor. Callers hold the group-commit lock (see groupcommit.py)."""
        self.seal()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    # ---- data --------------------------------------------------------------------------------
    def room(self) -> int:
        return self.size - self.write_pos if self.mm is not None else 0

    def append(self, rec: bytes) -> int:
        """Copy a record into the mapping; returns its offset. The caller checked ``room()``."""
        assert self.mm is not None
        off = self.write_pos
        end = off + len(rec)
        self.mm[off:end] = rec
        self.write_pos = end
        return off

    def read(self, off: int, n: int) -> bytes:
        if self.mm is not None:
            return self.mm[off:off + n]
        return os.pread(self.fd, n, off)

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    # ---- index -------------------------------------------------------------------------------
    def add(self, seq: int, off: int, length: int) -> None:
        self.seqs.append(seq)
        self.offs.append(off)
        self.lens.append(length)
        self.flags.append(LIVE)
        self.marks.append(0)
        self.live += 1
        self.live_bytes += length

    def __repr__(self) -> str:
        return f"Segment({self.name}, live={self.live}, refs={self.refs}, used={self.write_pos})"


def reserve(path: str, size: int, dir_fd: int | None = None) -> int:
    """Create ``path`` (exclusively) with ``size`` bytes reserved on disk; returns its descriptor.

    The slow part of making a segment (``posix_fallocate`` of up to ``segment_size``), so the
    node runs it ahead of need on its store worker thread (see ``QueueLog.prepare_spare``).
    Raises OSError, and leaves no file behind.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=dir_fd)
    try:
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):  # e.g. some network filesystems
                os.ftruncate(fd, size)
            else:
                raise
    except OSError:
        os.close(fd)
        _unlink_quietly(path, dir_fd)
        raise
    return fd


def _unlink_quietly(path: str, dir_fd: int | None = None) -> None:
    try:
        os.unlink(path, dir_fd=dir_fd)
    except OSError:
        pass


def _resource_error(exc: OSError, path: str, size: int) -> ResourceError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return ResourceError(f"disk full: cannot create a {size}-byte segment in {os.path.dirname(path)}")
    return ResourceError(f"cannot create segment {path}: {exc}")
