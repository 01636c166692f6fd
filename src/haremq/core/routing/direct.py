"""Direct exchange: exact routing-key match, one dict lookup per publish."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from haremq.core.routing.table import BindingKey, binding_key

_NONE: list[Hashable] = []


class DirectTable:
    __slots__ = ("_by_key", "_count", "_routes")

    def __init__(self) -> None:
        # routing key -> {binding identity: destination}; insertion-ordered for stable delivery order
        self._by_key: dict[str, dict[BindingKey, Hashable]] = {}
        # routing key -> destinations, rebuilt on change: a publish allocates nothing here
        self._routes: dict[str, list[Hashable]] = {}
        self._count = 0

    def _refresh(self, routing_key: str) -> None:
        bucket = self._by_key.get(routing_key)
        if bucket:
            self._routes[routing_key] = list(dict.fromkeys(bucket.values()))
        else:
            self._routes.pop(routing_key, None)

    def bind(self, dest: Hashable, routing_key: str, arguments: dict[str, Any]) -> bool:
        bucket = self._by_key.setdefault(routing_key, {})
        k = binding_key(dest, routing_key, arguments)
        if k in bucket:
            return False
        bucket[k] = dest
        self._count += 1
        self._refresh(routing_key)
        return True

    def unbind(self, dest: Hashable, routing_key: str, arguments: dict[str, Any]) -> bool:
        bucket = self._by_key.get(routing_key)
        k = binding_key(dest, routing_key, arguments)
        if not bucket or k not in bucket:
            return False
        del bucket[k]
        if not bucket:
            del self._by_key[routing_key]
        self._count -= 1
        self._refresh(routing_key)
        return True

    def remove_dest(self, dest: Hashable) -> int:
        removed = 0
        for rk in list(self._by_key):
            bucket = self._by_key[rk]
            for k in [k for k, d in bucket.items() if d is dest]:
                del bucket[k]
                removed += 1
            if not bucket:
                del self._by_key[rk]
            self._refresh(rk)
        self._count -= removed
        return removed

    def route(self, routing_key: str, headers: dict[str, Any] | None) -> list[Hashable]:
        """The shared destination list for ``routing_key``: callers must not mutate it."""
        return self._routes.get(routing_key, _NONE)

    def __len__(self) -> int:
        return self._count
