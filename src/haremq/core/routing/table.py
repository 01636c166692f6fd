"""The interface every exchange type's routing table implements."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, Protocol

# A binding is identified by (destination, routing key, arguments) as in RabbitMQ; arguments are
# tables (unhashable), so the identity uses their canonical repr.
BindingKey = tuple[Hashable, str, str]


def canonical(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ",".join(f"{k!r}:{canonical(value[k])}" for k in sorted(value)) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(canonical(v) for v in value) + "]"
    return repr(value)


def binding_key(dest: Hashable, routing_key: str, arguments: dict[str, Any] | None) -> BindingKey:
    return (dest, routing_key, canonical(arguments or {}))


class RoutingTable(Protocol):
    def bind(self, dest: Hashable, routing_key: str, arguments: dict[str, Any]) -> bool:
        """Add a binding; False when it already existed."""
        ...

    def unbind(self, dest: Hashable, routing_key: str, arguments: dict[str, Any]) -> bool:
        """Remove a binding; False when it did not exist."""
        ...

    def remove_dest(self, dest: Hashable) -> int:
        """Drop every binding to ``dest`` (queue or exchange deleted); returns how many."""
        ...

    def route(self, routing_key: str, headers: dict[str, Any] | None) -> list[Hashable]:
        """Destinations for a message, each at most once."""
        ...

    def __len__(self) -> int: ...
