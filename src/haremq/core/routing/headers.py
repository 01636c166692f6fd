"""Headers exchange: match on message headers per the binding's ``x-match`` argument.

``all`` / ``any`` ignore binding arguments that start with ``x-``; ``all-with-x`` /
``any-with-x`` include them (RabbitMQ 3.10+). A binding argument whose value is void (None)
matches on presence alone, as RabbitMQ does.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from haremq.core.routing.table import BindingKey, binding_key
from haremq.errors import PreconditionFailed

X_MATCH_MODES = ("all", "any", "all-with-x", "any-with-x")


def validate_x_match(arguments: dict[str, Any]) -> None:
    mode = arguments.get("x-match", "all")
    if isinstance(mode, bytes):
        mode = mode.decode("utf-8", "replace")
    if mode not in X_MATCH_MODES:
        raise PreconditionFailed(f"Invalid x-match field value {mode!r}; expected all, any, all-with-x, or "
                                 "any-with-x")


def headers_match(arguments: dict[str, Any], headers: dict[str, Any] | None) -> bool:
    raw = arguments.get("x-match", "all")
    mode: str = raw.decode() if isinstance(raw, bytes) else str(raw)
    with_x = mode.endswith("-with-x")
    want_all = mode.startswith("all")
    headers = headers or {}
    for name, value in arguments.items():
        if name == "x-match" or (not with_x and name.startswith("x-")):
            continue
        ok = name in headers and (value is None or bool(headers[name] == value))
        if want_all and not ok:
            return False
        if not want_all and ok:
            return True
    # all: every checked argument matched; any: none did (and 'any' with nothing to check is false)
    return want_all


class HeadersTable:
    __slots__ = ("_bindings",)

    def __init__(self) -> None:
        self._bindings: dict[BindingKey, tuple[Hashable, dict[str, Any]]] = {}

    def bind(self, dest: Hashable, routing_key: str, arguments: dict[str, Any]) -> bool:
        validate_x_match(arguments)
        k = binding_key(dest, routing_key, arguments)
        if k in self._bindings:
            return False
        self._bindings[k] = (dest, dict(arguments))
        return True

    def unbind(self, dest: Hashable, routing_key: str, arguments: dict[str, Any]) -> bool:
        return self._bindings.pop(binding_key(dest, routing_key, arguments), None) is not None

    def remove_dest(self, dest: Hashable) -> int:
        keys = [k for k, (d, _) in self._bindings.items() if d is dest]
        for k in keys:
            del self._bindings[k]
        return len(keys)

    def route(self, routing_key: str, headers: dict[str, Any] | None) -> list[Hashable]:
        found: dict[Hashable, None] = {}
        for dest, args in self._bindings.values():
            if dest not in found and headers_match(args, headers):
                found[dest] = None
        return list(found)

    def __len__(self) -> int:
        return len(self._bindings)
