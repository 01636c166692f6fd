"""STOMP <-> broker model: destinations and headers, as RabbitMQ's STOMP plugin maps them.

Destinations (``parse_destination``):

=====================  ==========================================  ==========================================
destination            SEND                                        SUBSCRIBE
=====================  ==========================================  ==========================================
/queue/<name>          declare durable queue, publish via ""       declare durable queue, consume it
/topic/<key>           publish to amq.topic with routing key       private queue bound to amq.topic (durable
                                                                   with ``durable:true`` + ``id``)
/exchange/<x>/<key>    publish to exchange x with routing key      private queue bound to x with pattern
/amq/queue/<name>      publish via "" to an existing queue         consume an existing queue
/temp-queue/<name>     publish to this connection's temp queue     (not allowed; use it in ``reply-to``)
/reply-queue/<name>    publish via "" to queue <name>              (not allowed)
=====================  ==========================================  ==========================================

Names are percent-decoded (``%2F`` for a slash inside a name), as RabbitMQ does.

Headers (``properties_from_headers`` / ``headers_for_message``): the AMQP basic properties have
named STOMP headers; every other header travels in the AMQP ``headers`` table and back. The table
is ``PROPERTY_HEADERS``; docs/stomp.md shows it to users.
"""

from __future__ import annotations

import dataclasses
from typing import Any
from urllib.parse import unquote

from haremq.errors import SyntaxError_
from haremq.message import Message, Properties

QUEUE, TOPIC, EXCHANGE, AMQ_QUEUE, TEMP_QUEUE, REPLY_QUEUE = (
    "queue", "topic", "exchange", "amq/queue", "temp-queue", "reply-queue")
_PREFIXES = (("/queue/", QUEUE), ("/topic/", TOPIC), ("/exchange/", EXCHANGE), ("/amq/queue/", AMQ_QUEUE),
             ("/temp-queue/", TEMP_QUEUE), ("/reply-queue/", REPLY_QUEUE))
TOPIC_EXCHANGE = "amq.topic"


@dataclasses.dataclass(frozen=True, slots=True)
class Destination:
    kind: str
    name: str  # queue name, exchange name, or temp-queue name
    key: str = ""  # routing key (topic, exchange)


def parse_destination(dest: str) -> Destination:
    for prefix, k in _PREFIXES:
        if dest.startswith(prefix):
            kind, rest = k, dest[len(prefix):]
            break
    else:
        raise SyntaxError_(f"'{dest[:200]}' is not a valid destination; use /queue/, /topic/, /exchange/, "
                           "/amq/queue/, /temp-queue/ or /reply-queue/")
    if kind == TOPIC:
        if not rest:
            raise SyntaxError_(f"'{dest}' has no routing key")
        return Destination(TOPIC, TOPIC_EXCHANGE, unquote(rest))
    if kind == EXCHANGE:
        name, _, key = rest.partition("/")
        if not name:
            raise SyntaxError_(f"'{dest}' has no exchange name")
        return Destination(EXCHANGE, unquote(name), unquote(key))
    if not rest or "/" in rest:
        raise SyntaxError_(f"'{dest[:200]}' is not a valid destination: expected {prefix}<name> "
                           "(escape '/' in names as %2F)")
    return Destination(kind, unquote(rest))


def destination_of(msg: Message) -> str:
    """The ``destination`` header of a MESSAGE: where it was published."""
    ex, rk = msg.exchange, msg.routing_key
    if ex == "":
        return "/queue/" + rk
    if ex == TOPIC_EXCHANGE:
        return "/topic/" + rk
    return f"/exchange/{ex}/{rk}"


# STOMP header <-> AMQP property. ``persistent`` is special (true <-> delivery_mode 2), and on a
# MESSAGE ``message-id`` is the broker's ack id, so the AMQP message_id travels as
# ``amqp-message-id`` (a SEND may set it with either name; ``amqp-message-id`` wins).
PROPERTY_HEADERS: tuple[tuple[str, str], ...] = (
    ("content-type", "content_type"),
    ("content-encoding", "content_encoding"),
    ("correlation-id", "correlation_id"),
    ("reply-to", "reply_to"),
    ("expiration", "expiration"),
    ("priority", "priority"),
    ("amqp-message-id", "message_id"),
    ("timestamp", "timestamp"),
    ("type", "type"),
    ("user-id", "user_id"),
    ("app-id", "app_id"),
)
_INT_PROPS = frozenset({"priority", "timestamp"})
# frame-level STOMP headers that never become message headers
_FRAME_HEADERS = frozenset({"destination", "receipt", "transaction", "content-length", "persistent", "message-id",
                            *(h for h, _ in PROPERTY_HEADERS)})


def properties_from_headers(h: dict[str, str]) -> Properties:
    """The AMQP properties of a SEND frame."""
    props: dict[str, Any] = {}
    for header, prop in PROPERTY_HEADERS:
        v = h.get(header)
        if v is None:
            continue
        if prop in _INT_PROPS:
            s = v.strip()
            if not (s.isdigit() and s.isascii()):
                raise SyntaxError_(f"header '{header}' must be a non-negative integer, got '{v[:40]}'")
            props[prop] = int(s)
        else:
            props[prop] = v
    if "message_id" not in props and "message-id" in h:
        props["message_id"] = h["message-id"]
    if h.get("persistent", "").lower() == "true":
        props["delivery_mode"] = 2
    if "priority" in props and props["priority"] > 255:
        raise SyntaxError_("header 'priority' must be between 0 and 255")
    extra = {k: v for k, v in h.items() if k not in _FRAME_HEADERS}
    if extra:
        props["headers"] = extra
    return Properties(**props) if props else Properties()


def _header_value(v: Any) -> str | None:
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return str(v)
    if isinstance(v, bytes | bytearray):
        return bytes(v).decode("utf-8", "replace")
    return None  # arrays, tables, timestamps, decimals: no STOMP form (RabbitMQ drops them too)


def property_headers(props: Properties) -> list[tuple[str, str]]:
    """STOMP headers for a message's properties and its AMQP headers table."""
    out: list[tuple[str, str]] = []
    for header, prop in PROPERTY_HEADERS:
        v = getattr(props, prop)
        if v is not None:
            out.append((header, str(v)))
    if props.delivery_mode == 2:
        out.append(("persistent", "true"))
    if props.headers:
        for k, v in props.headers.items():
            s = _header_value(v)
            if s is not None:
                out.append((k, s))
    return out
