"""Messages: immutable properties + headers + body, routed to many queues by reference.

The neutral message model: every protocol (``haremq.protocol``), the broker core (``haremq.core``)
and the store (``haremq.store``) speak in these types, so no protocol needs the core to build a
message and the store needs neither. It imports nothing from haremq.

A message is never copied when it fans out; each queue holds a small ``Entry`` that points at
the shared ``Message``. ``encoded_props`` caches the AMQP content-header property bytes the
message arrived with, so an AMQP-to-AMQP delivery re-sends them without a decode/encode round.
Whoever changes properties (dead-lettering, direct reply-to) makes a new message without it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

Headers = dict[str, Any]

# The AMQP 0-9-1 basic properties (spec class ``basic``): name, content-header flag bit (most
# significant first) and the spec's field type tag (s short string, o octet, F table,
# T timestamp). The one list: ``Properties`` has these fields in this order (a unit test holds
# them together), the AMQP codec encodes by it, and the store's record format is a presence mask
# in this order (so only append: a reordering would misread every data directory).
BASIC_PROPERTIES: tuple[tuple[str, int, str], ...] = (
    ("content_type", 0x8000, "s"), ("content_encoding", 0x4000, "s"), ("headers", 0x2000, "F"),
    ("delivery_mode", 0x1000, "o"), ("priority", 0x0800, "o"), ("correlation_id", 0x0400, "s"),
    ("reply_to", 0x0200, "s"), ("expiration", 0x0100, "s"), ("message_id", 0x0080, "s"),
    ("timestamp", 0x0040, "T"), ("type", 0x0020, "s"), ("user_id", 0x0010, "s"),
    ("app_id", 0x0008, "s"), ("cluster_id", 0x0004, "s"),
)
PROPERTY_NAMES: tuple[str, ...] = tuple(name for name, _, _ in BASIC_PROPERTIES)


@dataclasses.dataclass(slots=True, frozen=True)
class Properties:
    """The AMQP basic properties (``BASIC_PROPERTIES``), the common denominator of every protocol we speak."""

    content_type: str | None = None
    content_encoding: str | None = None
    headers: Headers | None = None
    delivery_mode: int | None = None
    priority: int | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    expiration: str | None = None
    message_id: str | None = None
    timestamp: int | None = None
    type: str | None = None
    user_id: str | None = None
    app_id: str | None = None
    cluster_id: str | None = None

    def replace(self, **changes: Any) -> Properties:
        return dataclasses.replace(self, **changes)


EMPTY_PROPERTIES = Properties()


class Message:
    """One published message. Treat as immutable once routed."""

    __slots__ = ("body", "encoded_props", "exchange", "props", "routing_key")

    def __init__(
        self,
        exchange: str,
        routing_key: str,
        props: Properties,
        body: bytes,
        encoded_props: bytes | None = None,
    ) -> None:
        self.exchange = exchange
        self.routing_key = routing_key
        self.props = props
        self.body = body
        self.encoded_props = encoded_props

    @property
    def persistent(self) -> bool:
        return self.props.delivery_mode == 2

    @property
    def size(self) -> int:
        return len(self.body)

    def ttl_ms(self) -> int | None:
        """The per-message TTL from ``expiration`` (milliseconds), or None when absent/invalid."""
        exp = self.props.expiration
        if exp is None:
            return None
        try:
            value = int(exp)
        except ValueError:
            return None
        return value if value >= 0 else None

    def with_props(self, props: Properties, *, exchange: str | None = None,
                   routing_key: str | None = None) -> Message:
        return Message(
            self.exchange if exchange is None else exchange,
            self.routing_key if routing_key is None else routing_key,
            props,
            self.body,
        )

    def __repr__(self) -> str:
        return f"Message({self.exchange!r}, {self.routing_key!r}, {len(self.body)} bytes)"
