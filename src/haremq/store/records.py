"""The on-disk record format of a queue log, and the message payload codec.

Segment file layout
===================

A segment is ``<base lsn, 20 digits>.seg``: a 32-byte file header followed by records, then zeros
up to the pre-sized length. Names sort in log order because the base LSN is zero-padded.

File header (little-endian, 32 bytes)::

    0   4s   magic  b"HMQS"
    4   u16  format version (1)
    6   u16  flags (0)
    8   u64  base lsn      the LSN the first record in this file had when it was created
    16  u64  seq floor     highest message seq the queue had logged when the file was created
    24  u32  epoch         leader epoch at creation
    28  u32  crc32c of bytes 0..28

Record (little-endian, 21-byte header + payload)::

    0   u32  length   bytes that follow the crc field (type .. end of payload); 0 = end of log
    4   u32  crc32c   over those ``length`` bytes
    8   u8   type     PUBLISH (1) | REMOVE (2) | DELIVERED (3) | ENC_PUBLISH (0x81)
    9   u32  epoch    leader epoch that wrote the record (0 on a single node)
    13  u64  lsn      log sequence number: +1 per record, per queue, never reused
    21  ...  payload

Invariants:

* LSNs strictly increase through a segment and from one segment to the next. Compaction drops
  records but never renumbers or rewrites one, so a follower can replay records byte for byte.
* ``length`` is never 0 for a real record (type + epoch + lsn alone are 13 bytes), so the zero
  fill of a pre-sized file reads as "end of log".
* Every payload starts with the message ``seq`` (u64) the record is about: the queue's own
  sequence number (``Entry.seq``), unique for the queue's lifetime.

PUBLISH payload::

    u64 seq | u16 len + exchange utf-8 | u16 len + routing key utf-8 | u32 len + properties | body

ENC_PUBLISH (type 0x81 = PUBLISH | ENCRYPTED, encryption at rest; see crypto.py)::

    u64 seq | u32 key id | 12-byte nonce | AES-256-GCM(PUBLISH payload after the seq) + 16-byte tag

The header and the seq stay in clear (recovery finds boundaries, LSNs and seqs without a key) and
are authenticated as associated data; the CRC covers the ciphertext, so damage (bad CRC) and a
wrong key (valid CRC, failed tag) are told apart. The high bit of ``type`` marks an encrypted
record, so plain and encrypted records coexist in one log (turning encryption on, or off for a
plain rollout, needs no rewrite). REMOVE and DELIVERED records are never encrypted (only a seq).

REMOVE and DELIVERED payload: ``u64 seq``. REMOVE means the message left the queue for good;
DELIVERED is a lease marker: the message was handed to a consumer, so after a crash it comes back
flagged redelivered.

Properties are a u16 presence mask over ``PROPERTY_NAMES`` followed by each present value in
the tagged value encoding below (the same one encodes header tables). It is lossless for every
type an AMQP field table, STOMP header or SQS attribute can hold, and never fails: an unknown
type is stored as its ``repr`` string.
"""

from __future__ import annotations

import datetime
import decimal
import struct
from collections.abc import Callable
from typing import Any

from haremq.message import PROPERTY_NAMES

try:  # hardware-accelerated CRC32C (the Castagnoli polynomial, as in iSCSI/ext4/Kafka)
    from crc32c import crc32c as _crc32c  # type: ignore[import-not-found, unused-ignore]

    def crc(data: bytes | bytearray | memoryview) -> int:
        return int(_crc32c(data))

    CRC_NAME = "crc32c"
except ImportError:  # pragma: no cover - only when the `crc32c` wheel is missing
    # NOTE: deliberately not zlib.crc32: that is a different polynomial, and a data directory
    # written with one would read as corrupt everywhere with the other. This table-driven CRC32C
    # is compatible with the wheel but ~100x slower; install `crc32c` (a declared dependency).
    def _table() -> list[int]:
        out = []
        for i in range(256):
            c = i
            for _ in range(8):
                c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
            out.append(c)
        return out

    _TABLE = _table()

    def crc(data: bytes | bytearray | memoryview) -> int:
        c = 0xFFFFFFFF
        t = _TABLE
        for b in bytes(data):
            c = t[(c ^ b) & 0xFF] ^ (c >> 8)
        return c ^ 0xFFFFFFFF

    CRC_NAME = "crc32c-python"

MAGIC = b"HMQS"
VERSION = 1
FILE_HEADER = struct.Struct("<4sHHQQI")  # + u32 crc appended
FILE_HEADER_SIZE = FILE_HEADER.size + 4  # 32

REC_PREFIX = struct.Struct("<II")  # length, crc
REC_HEADER = struct.Struct("<IIBIQ")  # length, crc, type, epoch, lsn
REC_HEADER_SIZE = REC_HEADER.size  # 21
REC_BODY_MIN = REC_HEADER_SIZE - REC_PREFIX.size  # 13: what `length` covers at least
SEQ = struct.Struct("<Q")
SEQ_RECORD_SIZE = REC_HEADER_SIZE + SEQ.size  # 29: a REMOVE / DELIVERED record
LSN_OFFSET = 13  # where the lsn sits inside a record (for resync after damage)

PUBLISH, REMOVE, DELIVERED = 1, 2, 3
ENCRYPTED = 0x80  # type flag: the payload after the seq is sealed (crypto.py)
ENC_PUBLISH = PUBLISH | ENCRYPTED
TYPES = frozenset((PUBLISH, REMOVE, DELIVERED, ENC_PUBLISH))
TYPE_NAMES = {PUBLISH: "publish", REMOVE: "remove", DELIVERED: "delivered", ENC_PUBLISH: "publish-encrypted"}

MAX_RECORD = 0xFFFF_FFFF - 64

_H16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_I64 = struct.Struct("<q")
_F64 = struct.Struct("<d")


# ---- file header -----------------------------------------------------------------------------
def encode_file_header(base_lsn: int, seq_floor: int, epoch: int) -> bytes:
    head = FILE_HEADER.pack(MAGIC, VERSION, 0, base_lsn, seq_floor, epoch)
    return head + _U32.pack(crc(head))


def decode_file_header(buf: bytes) -> tuple[int, int, int] | None:
    """(base lsn, seq floor, epoch), or None when the header is not a valid v1 header."""
    if len(buf) < FILE_HEADER_SIZE:
        return None
    magic, version, _flags, base, floor, epoch = FILE_HEADER.unpack_from(buf, 0)
    if magic != MAGIC or version != VERSION:
        return None
    if _U32.unpack_from(buf, FILE_HEADER.size)[0] != crc(buf[:FILE_HEADER.size]):
        return None
    return base, floor, epoch


# ---- records ---------------------------------------------------------------------------------
def encode_record(rtype: int, epoch: int, lsn: int, payload: bytes) -> bytes:
    """One framed, checksummed record."""
    body = struct.pack("<BIQ", rtype, epoch, lsn) + payload
    return REC_PREFIX.pack(len(body), crc(body)) + body


class PropsCache:
    """The last properties object encoded and its encoding: publishers repeat one set, so an
    identity check saves re-encoding it for every message (14% of a persistent publish in a profile).

    Owned by one writer (a ``QueueLog``): it lives and dies with it and holds one entry.
    """

    __slots__ = ("encoded", "props")

    def __init__(self) -> None:
        self.props: Any = None
        self.encoded = b""

    def encode(self, props: Any) -> bytes:
        # Properties are immutable and shared between messages with identical headers (the AMQP
        # codec caches them per raw header), so the same object means the same encoding.
        if props is self.props and props is not None:
            return self.encoded
        pr = encode_properties(props)
        if type(props).__name__ == "Properties":  # frozen: safe to reuse while it is the same object
            self.props, self.encoded = props, pr
        return pr


def encode_publish_payload(seq: int, exchange: str, routing_key: str, props: Any, body: bytes,
                           cache: PropsCache | None = None) -> bytes:
    ex = exchange.encode()
    rk = routing_key.encode()
    pr = encode_properties(props) if cache is None else cache.encode(props)
    return b"".join((
        SEQ.pack(seq), _H16.pack(len(ex)), ex, _H16.pack(len(rk)), rk, _U32.pack(len(pr)), pr, body,
    ))


class PublishView:
    """The parts of a PUBLISH payload, decoded on demand from a record buffer."""

    __slots__ = ("body_off", "exchange", "props_raw", "routing_key", "seq")

    def __init__(self, rec: bytes) -> None:
        """``rec`` is a whole record (header included)."""
        p = REC_HEADER_SIZE
        self.seq: int = SEQ.unpack_from(rec, p)[0]
        p += 8
        n = _H16.unpack_from(rec, p)[0]
        self.exchange = rec[p + 2:p + 2 + n].decode()
        p += 2 + n
        n = _H16.unpack_from(rec, p)[0]
        self.routing_key = rec[p + 2:p + 2 + n].decode()
        p += 2 + n
        n = _U32.unpack_from(rec, p)[0]
        self.props_raw = rec[p + 4:p + 4 + n]
        self.body_off = p + 4 + n


def body_offset(rec_head: bytes) -> int:
    """Offset of the body inside a whole PUBLISH record."""
    p: int = REC_HEADER_SIZE + 8
    p += 2 + int(_H16.unpack_from(rec_head, p)[0])
    p += 2 + int(_H16.unpack_from(rec_head, p)[0])
    return p + 4 + int(_U32.unpack_from(rec_head, p)[0])


# ---- properties and tagged values ------------------------------------------------------------
def encode_properties(props: Any) -> bytes:
    """Presence mask + tagged values of the AMQP basic properties found as attributes on ``props``.

    ``props`` may be a Properties dataclass, any object with those attributes, a dict, or None.
    """
    if props is None:
        return b"\0\0"
    get: Callable[[str], Any] = props.get if isinstance(props, dict) else (lambda n: getattr(props, n, None))
    mask = 0
    parts: list[bytes] = []
    for i, name in enumerate(PROPERTY_NAMES):
        v = get(name)
        if v is not None:
            mask |= 1 << i
            _enc_value(v, parts)
    return _H16.pack(mask) + b"".join(parts)


def decode_properties(raw: bytes) -> dict[str, Any]:
    """The present properties as a dict (absent ones are left out)."""
    mask = _H16.unpack_from(raw, 0)[0]
    out: dict[str, Any] = {}
    pos = 2
    for i, name in enumerate(PROPERTY_NAMES):
        if mask & (1 << i):
            out[name], pos = _dec_value(raw, pos)
    return out


def _enc_str(tag: bytes, data: bytes, parts: list[bytes]) -> None:
    parts.append(tag)
    parts.append(_U32.pack(len(data)))
    parts.append(data)


def _enc_value(v: Any, parts: list[bytes]) -> None:
    # tags: N none, T/F bool, i int64, I big int (decimal text), d float64, s str, b bytes,
    # l list, m map (str keys), t datetime (ISO text), D Decimal (text), r repr of anything else
    if v is None:
        parts.append(b"N")
    elif v is True:
        parts.append(b"T")
    elif v is False:
        parts.append(b"F")
    elif isinstance(v, int):
        if -(1 << 63) <= v < (1 << 63):
            parts.append(b"i" + _I64.pack(v))
        else:
            _enc_str(b"I", str(v).encode(), parts)
    elif isinstance(v, float):
        parts.append(b"d" + _F64.pack(v))
    elif isinstance(v, str):
        _enc_str(b"s", v.encode("utf-8", "surrogatepass"), parts)
    elif isinstance(v, bytes | bytearray | memoryview):
        _enc_str(b"b", bytes(v), parts)
    elif isinstance(v, list | tuple):
        parts.append(b"l" + _U32.pack(len(v)))
        for x in v:
            _enc_value(x, parts)
    elif isinstance(v, dict):
        parts.append(b"m" + _U32.pack(len(v)))
        for k, x in v.items():
            kb = str(k).encode("utf-8", "surrogatepass")
            parts.append(_U32.pack(len(kb)))
            parts.append(kb)
            _enc_value(x, parts)
    elif isinstance(v, datetime.datetime):
        _enc_str(b"t", v.isoformat().encode(), parts)
    elif isinstance(v, decimal.Decimal):
        _enc_str(b"D", str(v).encode(), parts)
    else:
        _enc_str(b"r", repr(v).encode("utf-8", "surrogatepass"), parts)


def _dec_value(raw: bytes, pos: int) -> tuple[Any, int]:
    tag = raw[pos:pos + 1]
    pos += 1
    if tag == b"N":
        return None, pos
    if tag == b"T":
        return True, pos
    if tag == b"F":
        return False, pos
    if tag == b"i":
        return _I64.unpack_from(raw, pos)[0], pos + 8
    if tag == b"d":
        return _F64.unpack_from(raw, pos)[0], pos + 8
    if tag == b"l":
        n = _U32.unpack_from(raw, pos)[0]
        pos += 4
        items = []
        for _ in range(n):
            x, pos = _dec_value(raw, pos)
            items.append(x)
        return items, pos
    if tag == b"m":
        n = _U32.unpack_from(raw, pos)[0]
        pos += 4
        table: dict[str, Any] = {}
        for _ in range(n):
            kn = _U32.unpack_from(raw, pos)[0]
            key = raw[pos + 4:pos + 4 + kn].decode("utf-8", "surrogatepass")
            table[key], pos = _dec_value(raw, pos + 4 + kn)
        return table, pos
    n = _U32.unpack_from(raw, pos)[0]
    data = raw[pos + 4:pos + 4 + n]
    pos += 4 + n
    if tag == b"b":
        return bytes(data), pos
    text = data.decode("utf-8", "surrogatepass")
    if tag in (b"s", b"r"):
        return text, pos
    if tag == b"I":
        return int(text), pos
    if tag == b"t":
        return datetime.datetime.fromisoformat(text), pos
    if tag == b"D":
        return decimal.Decimal(text), pos
    raise ValueError(f"unknown value tag {tag!r} at {pos - 1}")


def encode_table(table: dict[str, Any]) -> bytes:
    """A header/argument table in the tagged encoding (used by the metadata store too)."""
    parts: list[bytes] = []
    _enc_value(table, parts)
    return b"".join(parts)


def decode_table(raw: bytes) -> dict[str, Any]:
    value, _ = _dec_value(raw, 0)
    if not isinstance(value, dict):
        raise ValueError("not a table")
    return value
