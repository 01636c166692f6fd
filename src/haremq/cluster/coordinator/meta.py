"""Definitions (``store.api.Change``) as coordinator keys under ``meta/``, and back.

One key per object, value = the change's fields as JSON. Layout (each part percent-encoded):
``meta/vhost/<v>``, ``meta/user/<u>``, ``meta/permission/<v>/<u>``, ``meta/access_key/<id>``,
``meta/exchange/<v>/<name>``, ``meta/queue/<v>/<name>``,
``meta/binding/<v>/<source>/<destination>/<dest type>/<routing key>/<arguments digest>`` (the
arguments are part of a binding's identity), any other kind ``meta/<kind>/<parts...>``.
Everything that lives in a vhost has the vhost first, so deleting a vhost is a few prefix deletes
in the same transaction; a user's permissions and access keys are found in the caller's cache.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote, unquote

from haremq.cluster.coordinator.api import META, Delete, Event, KeyValue, Op, Put
from haremq.store.api import Change

VHOST_SCOPED = ("exchange", "queue", "binding", "policy", "permission")


def _q(part: str) -> str:
    return quote(part, safe="")


def _digest(arguments: Mapping[str, Any]) -> str:
    raw = json.dumps(arguments, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(raw).hexdigest()[:16]


def meta_key(kind: str, key: Sequence[str], value: Mapping[str, Any] | None = None) -> str:
    if kind == "permission":
        user, vhost = key
        parts: list[str] = [vhost, user]
    elif kind == "binding":
        parts = [*key, _digest((value or {}).get("arguments") or {})]
    else:
        parts = list(key)
    return f"{META}{kind}/" + "/".join(_q(p) for p in parts)


def change_ops(change: Change, current: Mapping[str, KeyValue] | None = None) -> list[Op]:
    """The coordinator ops for one change; deletes of a vhost or user cascade (a user's
    permissions and access keys are looked up in ``current``, the cached ``meta/`` items)."""
    key = meta_key(change.kind, change.key, change.value)
    if change.op == "put":
        return [Put(key, json.dumps(change.value, sort_keys=True, default=str).encode())]
    ops: list[Op] = [Delete(key)]
    if change.kind == "vhost":
        ops += [Delete(f"{META}{kind}/{_q(change.key[0])}/", prefix=True) for kind in VHOST_SCOPED]
    elif change.kind == "user":
        user = change.key[0]
        for k, kv in (current or {}).items():
            kind, parts = _split(k)
            if (kind == "permission" and parts[1] == user) or (
                    kind == "access_key" and _value(kv.value).get("user") == user):
                ops.append(Delete(k))
    return ops


def event_change(event: Event) -> Change:
    """A watched (or cached) event as a ``Change``; a delete's ``value`` is the deleted object's
    fields when the event carries them (``PrefixCache`` hands deletes on with the old value)."""
    kind, parts = _split(event.key)
    value = _value(event.value)
    if kind == "permission":
        key: tuple[str, ...] = (parts[1], parts[0])
    elif kind == "binding":
        key = tuple(parts[:5])
    else:
        key = tuple(parts)
    return Change("put" if event.kind == "put" else "delete", kind, key, value)


def _split(key: str) -> tuple[str, list[str]]:
    kind, _, rest = key[len(META):].partition("/")
    return kind, [unquote(p) for p in rest.split("/")]


def _value(raw: bytes) -> dict[str, Any]:
    try:
        out = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return out if isinstance(out, dict) else {}
