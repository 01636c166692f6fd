"""The queue file's layout, record format and sync protocol; header building and validation.

The block comment below is the reference for the memory layout and the synchronization protocol; the code
that implements it lives in shm_queue.py (ring, indexes, crash recovery), wait.py (waiting and wake-ups)
and locks.py (fcntl locks). Underscored names are internal to haremq.ipc (its modules share them).
"""

from __future__ import annotations

import os
import secrets
import struct
import zlib
from typing import Final

from .errors import QueueFileError

# ----------------------------------------------------------------------------------------------------------
# File layout (all integers little-endian)
#
#   offset  size  field
#   0       8     magic b"HAREMQSQ"
#   8       4     format version (1)
#   12      4     mode: 0 = mpmc, 1 = spsc
#   16      8     capacity in bytes of the data ring (multiple of 16)
#   24      8     max_message_size
#   32      8     salt: random per queue, mixed into every commit word
#   40      4     crc32 of bytes 0..40 -- a foreign or damaged file is refused at open
#   128     ...   producer cache line: head (u64), put_count (u64), unused (u64), recoveries (u64)
#   256     ...   consumer cache line: tail (u64), get_count (u64), unused (u64), intent tail (u64),
#                 intent count (u64), lost (u64), recoveries (u64)
#   512     ...   wait area for consumers: flag byte, then NSLOTS u64 deadlines (monotonic ns)
#   1024    ...   wait area for producers: same shape
#   1536    64    producer mutex (robust, process-shared pthread_mutex_t; mpmc)
#   1600    64    consumer mutex (same)
#   4090    2     spsc role lock bytes (never read or written; only fcntl byte-range locked)
#   4096    cap   the data ring
#
# Record in the ring (16-byte aligned so a pad header always fits at the ring end; never split across it):
#   +0  u64 commit  = position ^ salt, written LAST
#   +8  u32 length  (0xFFFFFFFF = pad: skip to the ring start)
#   +12 u32 check   = (commit & 0xFFFFFFFF) ^ length
#   +16 payload, padded to 16
# "position" is the absolute, ever-growing stream offset of a record; its ring offset is position % capacity.
#
# Synchronization protocol (why it is safe without compare-and-swap)
# ------------------------------------------------------------------
# * Every shared word has exactly one writer at a time. Producers write records and head/put_count; consumers
#   write tail/get_count. In spsc mode there is one of each (enforced by an exclusive fcntl lock taken once per
#   role);
#   in mpmc mode each side serializes itself with a robust process-shared pthread mutex in the header
#   (mutex.py: user space when uncontended; when its holder dies the kernel hands the next locker EOWNERDEAD,
#   so a killed process never wedges the queue and its successor knows to recover). The mutex is per thread,
#   so it also serializes threads sharing one handle.
# * A record becomes visible when its commit word equals position ^ salt. The producer writes payload, then
#   length+check, then the commit word, each as one aligned store; x86-64 keeps stores in program order (TSO)
#   so a consumer that sees the commit sees the payload. A producer killed before the commit store leaves
#   bytes that do not match (stale laps carry other positions; the random 64-bit salt makes a payload that
#   happens to look like a header a 2**-64 event), so a torn record is never read. The length check word
#   catches a length not yet visible or damaged. Weakly-ordered CPUs (ARM) would need fences Python cannot
#   express: this module targets x86-64.
# * Consumers never read head: readiness is the commit word. Producers read tail only when their cached copy
#   says the ring is full. Space check: head + record (+ pad to the ring end) - tail <= capacity.
# * Consuming commits with one store of tail. Before it, an mpmc consumer records the tail it is about to
#   publish and how many messages it takes (the intent); before unlocking it zeroes the intent count. A
#   successor that gets EOWNERDEAD knows the holder died inside the critical section: if tail already equals
#   the intent tail and the count is non-zero, the dead process took those messages with it (counted in `lost`
#   and logged), otherwise nothing happened and they are re-read. A producer that died holding the lock may
#   have committed records without publishing head, so its successor rebuilds head by scanning commit words
#   forward (the index is a cache; the records are truth). An exception inside a put does the same scan
#   before unlocking.
# * spsc publishes head lazily. The consumer never reads head (readiness is the commit word, above), so a late
#   head can delay no delivery and needs no handshake with the consumer; it only feeds qsize/full/stats and
#   the restart scan. The rule: the spsc put() fast path publishes head+put_count every 64th put and whenever
#   the consumer wait flag is set (the same check that wakes a sleeping consumer); every slow-path call (a
#   put that wraps, refreshes tail or blocks, put_many), flush() and close() publish too. Readers in other
#   handles (qsize/full/stats) add the committed records past the published head by scanning at most
#   _SCAN_MAX commit words, so they are exact whenever no put is in flight. A producer killed between
#   publishes leaves head behind (even behind tail, once the consumer took those records); its successor
#   scans forward from max(head, tail) -- records in [max(head, tail), true head) are unconsumed, hence
#   intact, and stale laps carry other positions, so the scan stops exactly at the true head.
# * Waiting: spin briefly (a handoff costs ~1 us), then register in a wait slot (a deadline a few ms ahead),
#   re-check, and sleep in poll() on a FIFO next to the queue file. Whoever makes progress checks the side's
#   flag byte and writes one byte to the FIFO if a slot is still live. Without a store-load fence a wakeup
#   can be missed in a nanosecond-wide race; the slot deadline bounds the damage to one sleep slice (20 ms),
#   and an idle waiter costs ~50 wakeups/s. A waiter killed while registered expires with its deadline.
# ----------------------------------------------------------------------------------------------------------

MAGIC: Final = b"HAREMQSQ"
VERSION: Final = 2  # 2: mpmc claims with pthread mutexes (1 used fcntl locks; the two must not mix)
HEADER_SIZE: Final = 4096
_HDR = struct.Struct("<8sII QQQ")  # magic, version, mode, capacity, max_message_size, salt
_CRC_OFF: Final = 40
HEAD_OFF: Final = 128
TAIL_OFF: Final = 256
_P_RECOV: Final = HEAD_OFF + 24
_C_INTENT: Final = TAIL_OFF + 24  # intent tail, intent count
_C_LOST: Final = TAIL_OFF + 40
_C_RECOV: Final = TAIL_OFF + 48
CWAIT_OFF: Final = 512
PWAIT_OFF: Final = 1024
PMUTEX_OFF: Final = 1536
CMUTEX_OFF: Final = 1600
NSLOTS: Final = 32
_LOCK_PROD_ROLE: Final = 4090
_LOCK_CONS_ROLE: Final = 4091

REC_HDR: Final = 16
PAD: Final = 0xFFFFFFFF
_M32: Final = 0xFFFFFFFF
_M64: Final = 0xFFFFFFFFFFFFFFFF
MODES: Final = {"mpmc": 0, "spsc": 1}

_Q = struct.Struct("<Q")
_QQ = struct.Struct("<QQ")
_II = struct.Struct("<II")
_QII = struct.Struct("<QII")
_SLOTS = struct.Struct(f"<{NSLOTS}Q")

# Indexes of u64 words in the mapping, for the hot paths' memoryview(buf).cast("Q") (an item store is one
# aligned 8-byte memcpy, ~2x cheaper than a Struct.pack_into call).
_HEAD_W: Final = HEAD_OFF >> 3
_CNT_W: Final = _HEAD_W + 1
_TAIL_W: Final = TAIL_OFF >> 3
_GOT_W: Final = _TAIL_W + 1
_CINT_W: Final = _C_INTENT >> 3  # intent tail; the intent count is the next word
_CWAIT_W: Final = CWAIT_OFF >> 3  # the flag byte is the low byte; the other 7 bytes are always 0
_PWAIT_W: Final = PWAIT_OFF >> 3
_PUBLISH_EVERY: Final = 64  # spsc put() publishes head at least every this many puts (a power of 2)
_SCAN_MAX: Final = 4 * _PUBLISH_EVERY  # qsize & co scan at most this many commit words past head


def _resolve(name: str | os.PathLike[str]) -> str:
    """A bare name lives in /dev/shm; anything with a slash is a path."""
    s = os.fspath(name)
    if not s or s in (".", ".."):
        raise ValueError(f"invalid queue name {s!r}")
    if "/" in s:
        return os.path.abspath(s)
    return os.path.join("/dev/shm", s)


def _fifo_paths(path: str) -> tuple[str, str]:
    return path + ".notempty", path + ".notfull"


def _record_size(n: int) -> int:
    return (n + REC_HDR + 15) & ~15


def _pack_header(mode: int, cap: int, max_message_size: int) -> bytes:
    """A new queue's header page: the fields, a fresh random salt, the crc; the rest zero."""
    header = bytearray(HEADER_SIZE)
    _HDR.pack_into(header, 0, MAGIC, VERSION, mode, cap, max_message_size,
                   secrets.randbits(64) | 1)
    struct.pack_into("<I", header, _CRC_OFF, zlib.crc32(header[:_CRC_OFF]))
    return bytes(header)


def _read_header(fd: int, path: str) -> tuple[int, int, int, int, int]:
    """Validate an open queue file's header; return (file size, mode, capacity, max_message_size, salt).

    Raises QueueFileError for a foreign, other-version, damaged or inconsistent file.
    """
    size = os.fstat(fd).st_size
    if size < HEADER_SIZE:
        raise QueueFileError(f"{path}: {size} bytes is too small to be a haremq shm queue")
    raw = os.pread(fd, HEADER_SIZE, 0)
    magic, version, mode, cap, maxmsg, salt = _HDR.unpack_from(raw, 0)
    if magic != MAGIC:
        raise QueueFileError(f"{path}: not a haremq shm queue (bad magic {magic!r})")
    if version != VERSION:
        raise QueueFileError(f"{path}: format version {version}, this haremq reads {VERSION}")
    (crc,) = struct.unpack_from("<I", raw, _CRC_OFF)
    if crc != zlib.crc32(raw[:_CRC_OFF]):
        raise QueueFileError(f"{path}: header checksum mismatch (file corrupted)")
    if mode not in (0, 1) or cap % 16 or cap < 64 or size != HEADER_SIZE + cap or maxmsg > cap:
        raise QueueFileError(f"{path}: inconsistent header (mode={mode} capacity={cap} size={size})")
    return size, mode, cap, maxmsg, salt
