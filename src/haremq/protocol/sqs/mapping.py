"""SQS messages <-> haremq messages: bodies, message attributes <-> AMQP headers, and the MD5s.

| SQS                                   | AMQP 0-9-1 (haremq ``Message``)                                   |
|---------------------------------------|-------------------------------------------------------------------|
| Body (UTF-8 text)                     | body bytes (UTF-8)                                                |
| MessageId                             | ``message_id`` property                                           |
| SentTimestamp                         | ``timestamp`` property (seconds; SQS shows it x 1000)             |
| SenderId                              | ``user_id`` property (the authenticated user)                     |
| attribute, DataType ``String``        | header, long string                                               |
| attribute, DataType ``Binary``        | header, byte array                                                |
| attribute, DataType ``Number`` / custom ``X.y`` | header, long string, + ``x-sqs-attribute-types`` {name: DataType} |
| MessageGroupId                        | header ``x-sqs-message-group-id``                                 |
| MessageDeduplicationId                | header ``x-deduplication-id``                                     |
| (messages published over AMQP)        |                                                                   |
| header str / bytes / bool             | attribute String / Binary / String "true"/"false"                 |
| header int / float / Decimal          | attribute Number                                                  |
| body that is not valid UTF-8          | Body base64, attribute ``haremq.body-encoding`` = ``base64``      |
| headers of other types (tables, lists, ``x-death``), reserved ``x-sqs-*`` | not shown as attributes          |

MD5OfMessageAttributes follows the SQS algorithm: for each attribute sorted by name, the
4-byte big-endian length + UTF-8 bytes of the name, of the data type, then one transport byte
(1 = string/number, 2 = binary), then the length-prefixed value.
"""

from __future__ import annotations

import base64
import decimal
import hashlib
import re
import struct
from typing import Any

from haremq.errors import InvalidMessageContents, InvalidParameterValue
from haremq.protocol.sqs.attributes import DEDUP_HEADER, DELAY_HEADER, GROUP_HEADER, SOURCE_HEADER

TYPES_HEADER = "x-sqs-attribute-types"
BODY_ENCODING = "haremq.body-encoding"
TRACE_HEADER = "x-amzn-trace-id"  # AWSTraceHeader: a system attribute, not a message attribute
# headers haremq itself keeps in the message: never shown as (nor taken from) message attributes
RESERVED = frozenset({TYPES_HEADER, GROUP_HEADER, DEDUP_HEADER, SOURCE_HEADER, DELAY_HEADER, TRACE_HEADER})
MAX_ATTRIBUTES = 10
_NAME_RE = re.compile(r"^[A-Za-z0-9_\-.]{1,256}$")
_TYPE_RE = re.compile(r"^(String|Number|Binary)(\.[^\s]{1,255})?$")
# characters SQS allows in a body and in string attribute values
_BAD_CHARS = re.compile("[^\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

Attribute = tuple[str, str | bytes]  # (DataType, value)


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def md5_of_attributes(attrs: dict[str, Attribute]) -> str:
    out = bytearray()
    pack = struct.Struct(">I").pack
    for name in sorted(attrs):
        dtype, value = attrs[name]
        n, t = name.encode(), dtype.encode()
        out += pack(len(n)) + n + pack(len(t)) + t
        v = value if isinstance(value, bytes) else value.encode()
        out += (b"\x02" if isinstance(value, bytes) else b"\x01") + pack(len(v)) + v
    return md5_hex(bytes(out))


def check_body(body: str) -> None:
    if not body:
        raise InvalidParameterValue("The request must contain the parameter MessageBody.")
    if _BAD_CHARS.search(body):
        raise InvalidMessageContents("Invalid binary character in message body.")


def parse_attributes(raw: Any, what: str = "MessageAttributes") -> dict[str, Attribute]:
    """Validate the JSON ``MessageAttributes`` map of a send."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InvalidParameterValue(f"{what} must be a map.")
    if len(raw) > MAX_ATTRIBUTES:
        raise InvalidParameterValue(f"Number of message attributes [{len(raw)}] exceeds the allowed maximum "
                                    f"[{MAX_ATTRIBUTES}].")
    out: dict[str, Attribute] = {}
    for name, spec in raw.items():
        if (not isinstance(name, str) or not _NAME_RE.match(name) or name.startswith(".") or name.endswith(".")
                or ".." in name or name.lower().startswith(("aws.", "amazon.")) or name in RESERVED):
            raise InvalidParameterValue(f"Message attribute name '{str(name)[:256]}' is invalid.")
        if not isinstance(spec, dict) or not isinstance(spec.get("DataType"), str):
            raise InvalidParameterValue(f"The message attribute '{name}' must contain a non-empty attribute type.")
        dtype = spec["DataType"]
        if not _TYPE_RE.match(dtype):
            raise InvalidParameterValue(f"The type of message attribute '{name}' is invalid. You must use only the "
                                        "following supported type prefixes: Binary, Number, String.")
        if dtype.startswith("Binary"):
            b64 = spec.get("BinaryValue")
            if not isinstance(b64, str) or not b64:
                raise InvalidParameterValue(f"The message attribute '{name}' with type 'Binary' must use field "
                                            "'Binary'.")
            try:
                value: str | bytes = base64.b64decode(b64, validate=True)
            except ValueError:
                raise InvalidParameterValue(f"The message attribute '{name}' has an invalid binary value.") from None
        else:
            sv = spec.get("StringValue")
            if not isinstance(sv, str) or not sv:
                raise InvalidParameterValue(f"The message attribute '{name}' must contain a non-empty message "
                                            "attribute value for message attribute type "
                                            f"'{dtype.split('.')[0]}'.")
            if _BAD_CHARS.search(sv):
                raise InvalidParameterValue(f"The message attribute '{name}' contains invalid characters.")
            if dtype.startswith("Number"):
                try:
                    d = decimal.Decimal(sv)
                except decimal.InvalidOperation:
                    d = decimal.Decimal("NaN")
                if not d.is_finite():
                    raise InvalidParameterValue(f"Can't cast the value of message (user) attribute '{name}' to a "
                                                "number.")
            value = sv
        out[name] = (dtype, value)
    return out


def attributes_size(attrs: dict[str, Attribute]) -> int:
    return sum(len(n.encode()) + len(t.encode()) + (len(v) if isinstance(v, bytes) else len(v.encode()))
               for n, (t, v) in attrs.items())


def to_headers(attrs: dict[str, Attribute]) -> dict[str, Any]:
    headers: dict[str, Any] = {}
    types: dict[str, Any] = {}
    for name, (dtype, value) in attrs.items():
        headers[name] = value
        if dtype not in ("String", "Binary"):
            types[name] = dtype
    if types:
        headers[TYPES_HEADER] = types
    return headers


def from_headers(headers: dict[str, Any] | None) -> dict[str, Attribute]:
    if not headers:
        return {}
    types = headers.get(TYPES_HEADER)
    types = types if isinstance(types, dict) else {}
    out: dict[str, Attribute] = {}
    for name, v in headers.items():
        if name in RESERVED or not _NAME_RE.match(name):
            continue
        dtype = types.get(name)
        if isinstance(dtype, bytes):
            dtype = dtype.decode("utf-8", "replace")
        if isinstance(dtype, str) and _TYPE_RE.match(dtype):
            if dtype.startswith("Binary"):
                out[name] = (dtype, v if isinstance(v, bytes) else str(v).encode())
            else:
                out[name] = (dtype, v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v))
        elif isinstance(v, bool):
            out[name] = ("String", "true" if v else "false")
        elif isinstance(v, str):
            if v:
                out[name] = ("Binary", v.encode()) if _BAD_CHARS.search(v) else ("String", v)
        elif isinstance(v, bytes | bytearray | memoryview):
            if v:
                out[name] = ("Binary", bytes(v))
        elif isinstance(v, int | float | decimal.Decimal):
            out[name] = ("Number", str(v))
    return out


def select(attrs: dict[str, Attribute], names: list[str]) -> dict[str, Attribute]:
    """The attributes a ReceiveMessage asked for: names, ``All``, ``.*`` or ``prefix.*``."""
    if not names or not attrs:
        return {}
    if "All" in names or ".*" in names:
        return attrs
    prefixes = tuple(n[:-1] for n in names if n.endswith(".*"))
    exact = set(names)
    return {k: v for k, v in attrs.items() if k in exact or (prefixes and k.startswith(prefixes))}


def body_text(body: bytes) -> tuple[str, bool]:
    """(SQS body, base64-encoded?) for a stored body: UTF-8 text as is, anything else base64."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return base64.b64encode(body).decode("ascii"), True
    if _BAD_CHARS.search(text):
        return base64.b64encode(body).decode("ascii"), True
    return text, False


def attributes_json(attrs: dict[str, Attribute]) -> dict[str, dict[str, str]]:
    out = {}
    for name, (dtype, value) in attrs.items():
        if isinstance(value, bytes):
            out[name] = {"DataType": dtype, "BinaryValue": base64.b64encode(value).decode("ascii")}
        else:
            out[name] = {"DataType": dtype, "StringValue": value}
    return out
