"""AMQP 0-9-1 wire codec: frames, the hot-path methods by hand, everything else through pamqp.

Frame: ``type:u8 channel:u16 size:u32 payload[size] 0xCE``. Method payload: ``class:u16
method:u16 arguments``. Content = one content-header frame (``class:u16 weight:u16 body_size:u64
flags:u16 properties``) then body frames until ``body_size`` bytes arrived.

pamqp decodes a Basic.Publish + header + body in ~11 us and encodes a Basic.Deliver triple in
~11 us (PEERS.md); that alone caps a broker near 45k msg/s on one core. So ``basic.publish``,
the content header, ``basic.deliver``, ``basic.ack/nack/reject`` and confirms are packed and
unpacked here with ``struct`` (~1-2 us); pamqp handles the long tail, unvalidated on the way out
(pamqp's name regexes are stricter than RabbitMQ, which accepts any UTF-8 name).
"""

from __future__ import annotations

import datetime
import inspect
import struct
from decimal import Decimal
from typing import Any

from pamqp import commands, decode, encode

from haremq.errors import CommandInvalid, FrameError, SyntaxError_
from haremq.message import BASIC_PROPERTIES, Properties

FRAME_METHOD, FRAME_HEADER, FRAME_BODY, FRAME_HEARTBEAT = 1, 2, 3, 8
FRAME_END = 0xCE
FRAME_END_BYTE = b"\xce"
PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
HEARTBEAT_FRAME = b"\x08\x00\x00\x00\x00\x00\x00\xce"
FRAME_MIN_SIZE = 4096

Buf = bytes | bytearray | memoryview
_frame_hdr = struct.Struct(">BHI")
_u16 = struct.Struct(">H")
_u16u16 = struct.Struct(">HH")
_u32 = struct.Struct(">I")
_u64 = struct.Struct(">Q")
_content_hdr = struct.Struct(">HHQH")
_deliver_tail = struct.Struct(">QB")
_ack = struct.Struct(">HHQB")  # class, method, delivery tag, bits


# ---- frames -----------------------------------------------------------------------------------
def frame(ftype: int, channel: int, payload: bytes) -> bytes:
    return _frame_hdr.pack(ftype, channel, len(payload)) + payload + FRAME_END_BYTE


def method_frame(channel: int, method: Any) -> bytes:
    """Encode a pamqp method object (already built, maybe unvalidated)."""
    return frame(FRAME_METHOD, channel, _u32.pack(method.index) + method.marshal())


def build(cls: type[Any], **kwargs: Any) -> Any:
    """A pamqp method object with pamqp's own defaults that marshals without pamqp's validation.

    pamqp's ``marshal`` refuses names outside its ``[\\w:.-]`` pattern; RabbitMQ accepts any UTF-8 short
    string, so a declare-ok for ``"queue ü%"`` must encode. The object is an instance of a cached
    subclass of ``cls`` whose ``validate`` does nothing (``isinstance(obj, cls)`` still holds).
    """
    defaults = _DEFAULTS.get(cls)
    if defaults is None:
        defaults = _DEFAULTS[cls] = {
            n: p.default for n, p in inspect.signature(cls.__init__).parameters.items()
            if p.default is not inspect.Parameter.empty
        }
        # no __slots__ of its own: marshal's ``self.__slots__`` still finds the method's fields
        _UNVALIDATED[cls] = type(cls.__name__, (cls,), {"validate": _no_validation})
    obj: Any = object.__new__(_UNVALIDATED[cls])
    for slot in cls.__slots__:
        setattr(obj, slot, kwargs[slot] if slot in kwargs else defaults.get(slot))
    return obj


def _no_validation(self: Any) -> None:
    """Outgoing methods are built by us from values already checked (or echoed from the wire)."""


_DEFAULTS: dict[type[Any], dict[str, Any]] = {}
_UNVALIDATED: dict[type[Any], type[Any]] = {}


def decode_method(payload: Buf) -> Any:
    """Decode any method frame payload with pamqp. Raises FrameError/SyntaxError_ on bad input."""
    if len(payload) < 4:
        raise FrameError("method frame too short")
    index = _u32.unpack_from(payload, 0)[0]
    cls: Any = commands.INDEX_MAPPING.get(index)
    if cls is None:
        raise CommandInvalid(f"unknown method {index >> 16}.{index & 0xFFFF}",
                             class_id=index >> 16, method_id=index & 0xFFFF)
    method = object.__new__(cls)
    try:
        method.unmarshal(bytes(payload[4:]))
    except (struct.error, ValueError, UnicodeDecodeError, KeyError, IndexError, TypeError) as exc:
        raise SyntaxError_(f"cannot decode {cls.name}: {exc}",
                           class_id=index >> 16, method_id=index & 0xFFFF) from None
    return method


# ---- short strings ----------------------------------------------------------------------------
def _sstr(value: str) -> bytes:
    b = value.encode("utf-8")
    if len(b) > 255:
        # only another protocol (a STOMP destination or header) brings a longer one: AMQP cannot carry
        # it, so it is clipped rather than failing the delivery (and the consumer's connection)
        b = b[:255].decode("utf-8", "ignore").encode("utf-8")
    return bytes((len(b),)) + b


def read_sstr(buf: Buf, pos: int) -> tuple[str, int]:
    n = buf[pos]
    end = pos + 1 + n
    if end > len(buf):
        raise IndexError("short string overruns frame")
    return bytes(buf[pos + 1:end]).decode("utf-8"), end


# ---- basic.publish (in) -----------------------------------------------------------------------
def decode_publish(payload: Buf) -> tuple[str, str, bool, bool]:
    """Basic.Publish arguments: (exchange, routing key, mandatory, immediate)."""
    try:
        pos = 6  # class, method, ticket
        exchange, pos = read_sstr(payload, pos)
        rk, pos = read_sstr(payload, pos)
        bits = payload[pos]
    except (IndexError, UnicodeDecodeError) as exc:
        raise SyntaxError_(f"cannot decode Basic.Publish: {exc}", class_id=60, method_id=40) from None
    return exchange, rk, bool(bits & 1), bool(bits & 2)


def decode_ack(payload: Buf) -> tuple[int, int, int]:
    """Basic.Ack / Nack / Reject: (method id, delivery tag, bits)."""
    if len(payload) < 13:
        raise SyntaxError_("ack frame too short", class_id=60)
    _, mid, tag, bits = _ack.unpack_from(payload, 0)
    return mid, tag, bits


# ---- content header ---------------------------------------------------------------------------
# property flag bits and field types: the one list, owned by the message model
_PROPS = BASIC_PROPERTIES


def decode_content_header(payload: Buf) -> tuple[int, int, Properties, bytes]:
    """(class id, body size, properties, raw property bytes incl. flags) from a header frame.

    Decodes every time; a connection decodes through its ``PropertiesCache``.
    """
    if len(payload) < 14:
        raise FrameError("content header too short")
    class_id, _weight, body_size, flags = _content_hdr.unpack_from(payload, 0)
    raw = bytes(payload[12:])
    if flags == 0:
        return class_id, body_size, EMPTY, raw
    return class_id, body_size, _decode_properties(payload, flags), raw


class PropertiesCache:
    """Decoded content-header properties by their raw bytes, for the connections of one node.

    Publishers repeat the same properties, so most headers decode to an object already made:
    decoded ``Properties`` are immutable and shared, which also lets the store's identity check
    skip re-encoding them. At most ``limit`` entries; emptied when full (a churn of distinct
    headers, as per-message ids make, costs one decode each, as without a cache).
    """

    __slots__ = ("_by_raw", "limit")

    def __init__(self, limit: int = 512) -> None:
        self.limit = limit
        self._by_raw: dict[bytes, Properties] = {}

    def __len__(self) -> int:
        return len(self._by_raw)

    def decode_content_header(self, payload: Buf) -> tuple[int, int, Properties, bytes]:
        """As the module's ``decode_content_header``, answering repeated headers from the cache."""
        if len(payload) < 14:
            raise FrameError("content header too short")
        class_id, _weight, body_size, flags = _content_hdr.unpack_from(payload, 0)
        raw = bytes(payload[12:])
        if flags == 0:
            return class_id, body_size, EMPTY, raw
        by_raw = self._by_raw
        props = by_raw.get(raw)
        if props is None:
            props = _decode_properties(payload, flags)
            if len(by_raw) >= self.limit:
                by_raw.clear()
            by_raw[raw] = props
        return class_id, body_size, props, raw


def _decode_properties(payload: Buf, flags: int) -> Properties:
    """The property list after the 14-byte content header prefix (``flags`` already read)."""
    if flags & 1:
        raise SyntaxError_("property flag continuation is not supported")
    values: dict[str, Any] = {}
    pos = 14
    try:
        for name, bit, kind in _PROPS:
            if not flags & bit:
                continue
            if kind == "s":
                values[name], pos = read_sstr(payload, pos)
            elif kind == "o":
                values[name] = payload[pos]
                pos += 1
            elif kind == "T":
                values[name] = _u64.unpack_from(payload, pos)[0]
                pos += 8
            else:
                n = _u32.unpack_from(payload, pos)[0]
                if pos + 4 + n > len(payload):
                    raise IndexError("table overruns frame")
                used, table = decode.field_table(bytes(payload[pos:pos + 4 + n]))
                values[name] = table
                pos += used
    except (IndexError, struct.error, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise SyntaxError_(f"cannot decode content header: {exc}") from None
    return Properties(**values)


EMPTY = Properties()


def encode_properties(p: Properties) -> bytes:
    """flags:u16 + property list, the tail of a content header frame."""
    flags = 0
    parts: list[bytes] = []
    for name, bit, kind in _PROPS:
        v = getattr(p, name)
        if v is None:
            continue
        flags |= bit
        if kind == "s":
            parts.append(_sstr(v if isinstance(v, str) else str(v)))
        elif kind == "o":
            parts.append(bytes((int(v) & 0xFF,)))
        elif kind == "T":
            parts.append(_u64.pack(int(v) & 0xFFFFFFFFFFFFFFFF))
        else:
            parts.append(encode_table(v))
    return _u16.pack(flags) + b"".join(parts)


def encode_table(table: dict[str, Any]) -> bytes:
    return bytes(encode.field_table(_for_pamqp(table)))


def _for_pamqp(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _for_pamqp(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_for_pamqp(x) for x in v]
    if isinstance(v, float | int | str | bytes | bool | Decimal | datetime.datetime | bytearray) or v is None:
        return v
    return str(v)


def decode_table(raw: bytes) -> dict[str, Any]:
    _, table = decode.field_table(raw)
    return dict(table)


def content_frames(channel: int, props_raw: bytes, body: bytes, frame_max: int) -> list[bytes]:
    """Content header + body frames for one message (``props_raw`` = flags + property list)."""
    out: list[bytes] = []
    append_content(out, channel, props_raw, body, frame_max)
    return out


def append_content(out: list[bytes], channel: int, props_raw: bytes, body: bytes, frame_max: int) -> None:
    """``content_frames`` appended to ``out`` (the delivery path: no list per message)."""
    n = len(body)
    out.append(frame(FRAME_HEADER, channel, _content_hdr.pack(60, 0, n, 0)[:12] + props_raw))
    if n:
        chunk = frame_max - 8
        if n <= 4096:
            out.append(_frame_hdr.pack(FRAME_BODY, channel, n) + body + FRAME_END_BYTE)
        elif n <= chunk:
            # large body: hand it to writelines as is rather than copying it into a new frame
            out += (_frame_hdr.pack(FRAME_BODY, channel, n), body, FRAME_END_BYTE)
        else:
            for i in range(0, n, chunk):
                out.append(frame(FRAME_BODY, channel, body[i:i + chunk]))


# ---- basic.deliver / get-ok / return (out) ----------------------------------------------------
_DELIVER_ID = _u16u16.pack(60, 60)
_GET_OK_ID = _u16u16.pack(60, 71)
_RETURN_ID = _u16u16.pack(60, 50)


def deliver_method(channel: int, consumer_tag_sstr: bytes, delivery_tag: int, redelivered: bool,
                   exchange: str, routing_key: str) -> bytes:
    payload = b"".join((
        _DELIVER_ID, consumer_tag_sstr, _deliver_tail.pack(delivery_tag, redelivered),
        _sstr(exchange), _sstr(routing_key),
    ))
    return _frame_hdr.pack(FRAME_METHOD, channel, len(payload)) + payload + FRAME_END_BYTE


def get_ok_method(channel: int, delivery_tag: int, redelivered: bool, exchange: str, routing_key: str,
                  message_count: int) -> bytes:
    payload = b"".join((
        _GET_OK_ID, _deliver_tail.pack(delivery_tag, redelivered), _sstr(exchange), _sstr(routing_key),
        _u32.pack(message_count),
    ))
    return frame(FRAME_METHOD, channel, payload)


def return_method(channel: int, reply_code: int, reply_text: str, exchange: str, routing_key: str) -> bytes:
    payload = b"".join((_RETURN_ID, _u16.pack(reply_code), _sstr(reply_text), _sstr(exchange),
                        _sstr(routing_key)))
    return frame(FRAME_METHOD, channel, payload)


def sstr(value: str) -> bytes:
    """A short string on the wire (length byte + UTF-8)."""
    return _sstr(value)


def clip_sstr(text: str) -> str:
    """``text`` cut to 255 bytes of UTF-8 on a character boundary (reply texts quote long names)."""
    raw = text.encode("utf-8", "replace")
    if len(raw) <= 255:
        return text
    return raw[:255].decode("utf-8", "ignore")


def confirm_frame(channel: int, tag: int, multiple: bool, nack: bool = False) -> bytes:
    """Basic.Ack (or Basic.Nack, requeue=false) from broker to publisher."""
    if nack:
        return frame(FRAME_METHOD, channel, _ack.pack(60, 120, tag, 1 if multiple else 0))
    return frame(FRAME_METHOD, channel, _ack.pack(60, 80, tag, 1 if multiple else 0))
