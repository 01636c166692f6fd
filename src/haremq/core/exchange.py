"""Exchanges: a name, a type's routing table, and the flags RabbitMQ gives them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from haremq.core.routing import DirectTable, FanoutTable, HeadersTable, RoutingTable, TopicTable

EXCHANGE_TYPES: dict[str, Callable[[], RoutingTable]] = {
    "direct": DirectTable,
    "fanout": FanoutTable,
    "topic": TopicTable,
    "headers": HeadersTable,
}


class Exchange:
    kind = "exchange"  # a binding destination's type, as definitions store it
    __slots__ = ("alternate", "arguments", "auto_delete", "bindings", "durable", "internal", "name",
                 "publish_in", "publish_out", "table", "type")

    def __init__(self, name: str, type_: str, *, durable: bool, auto_delete: bool, internal: bool,
                 arguments: dict[str, Any]) -> None:
        self.name = name
        self.type = type_
        self.durable = durable
        self.auto_delete = auto_delete
        self.internal = internal
        self.arguments = arguments
        self.table = EXCHANGE_TYPES[type_]()
        ae = arguments.get("alternate-exchange")
        if isinstance(ae, bytes):
            ae = ae.decode("utf-8", "replace")
        self.alternate: str | None = ae if isinstance(ae, str) else None
        # (destination, routing key, arguments) for listing; the table is the routing truth
        self.bindings: list[tuple[object, str, dict[str, Any]]] = []
        # statistics (management API): messages published to it, and of those, routed to a queue
        self.publish_in = 0
        self.publish_out = 0

    def __repr__(self) -> str:
        return f"Exchange({self.name!r}, {self.type})"
