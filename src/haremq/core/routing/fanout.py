"""Fanout exchange: every bound destination, routing key ignored."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from haremq.core.routing.table import BindingKey, binding_key


class FanoutTable:
    __slots__ = ("_bindings", "_dests")

    def __init__(self) -> None:
        self._bindings: dict[BindingKey, Hashable] = {}
        self._dests: list[Hashable] | None = []

    def bind(self, dest: Hashable, routing_key: str, arguments: dict[str, Any]) -> bool:
        k = binding_key(dest, routing_key, arguments)
        if k in self._bindings:
            return False
        self._bindings[k] = dest
        self._dests = None
        return True

    def unbind(self, dest: Hashable, routing_key: str, arguments: dict[str, Any]) -> bool:
        k = binding_key(dest, routing_key, arguments)
        if self._bindings.pop(k, None) is None:
            return False
        self._dests = None
        return True

    def remove_dest(self, dest: Hashable) -> int:
        keys = [k for k, d in self._bindings.items() if d is dest]
        for k in keys:
            del self._bindings[k]
        self._dests = None
        return len(keys)

    def route(self, routing_key: str, headers: dict[str, Any] | None) -> list[Hashable]:
        if self._dests is None:
            self._dests = list(dict.fromkeys(self._bindings.values()))
        return self._dests

    def __len__(self) -> int:
        return len(self._bindings)
