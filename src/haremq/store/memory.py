"""In-memory stores: what a broker without a data directory uses, and the reference for the suite.

Nothing here survives the process: a *new* ``MemoryQueueStore`` recovers nothing. ``recover()``
on the same instance returns what a file store would hand back after a restart, which is what
the shared store suite (tests/unit/store) compares against.
"""

from __future__ import annotations

from typing import Any

from haremq.errors import NotFound
from haremq.store.api import RecoveredMessage

_PROPERTY_NAMES = (
    "content_type", "content_encoding", "headers", "delivery_mode", "priority", "correlation_id",
    "reply_to", "expiration", "message_id", "timestamp", "type", "user_id", "app_id", "cluster_id",
)


def _props_dict(props: Any) -> dict[str, Any]:
    if props is None:
        return {}
    if isinstance(props, dict):
        return {k: v for k, v in props.items() if v is not None}
    return {n: v for n in _PROPERTY_NAMES if (v := getattr(props, n, None)) is not None}


class MemoryQueueStore:
    """Keeps the persistent entries of each durable queue by sequence number."""

    def __init__(self) -> None:
        self.queues: dict[tuple[str, str], dict[int, Any]] = {}
        self.delivered: dict[tuple[str, str], set[int]] = {}
        self.max_seq: dict[tuple[str, str], int] = {}

    def publish(self, queue: Any, entry: Any) -> None:
        key = (queue.vhost.name, queue.name)
        self.queues.setdefault(key, {})[entry.seq] = entry
        if entry.seq > self.max_seq.get(key, 0):
            self.max_seq[key] = entry.seq

    def mark_delivered(self, queue: Any, entry: Any) -> None:
        key = (queue.vhost.name, queue.name)
        if entry.seq in self.queues.get(key, ()):
            self.delivered.setdefault(key, set()).add(entry.seq)

    def remove(self, queue: Any, entry: Any) -> None:
        key = (queue.vhost.name, queue.name)
        q = self.queues.get(key)
        if q is not None:
            q.pop(entry.seq, None)
            self.delivered.get(key, set()).discard(entry.seq)

    def delete_queue(self, queue: Any) -> None:
        key = (queue.vhost.name, queue.name)
        self.queues.pop(key, None)
        self.delivered.pop(key, None)
        self.max_seq.pop(key, None)

    @property
    def can_page(self) -> bool:
        return False  # the memory store holds entries, not copies: nothing to read back from

    def read_message(self, queue: Any, seq: int) -> RecoveredMessage:
        entry = self.queues.get((queue.vhost.name, queue.name), {}).get(seq)
        if entry is None or entry.msg is None:
            raise NotFound(f"message {seq} is not in the memory store")
        msg = entry.msg
        return RecoveredMessage(seq, msg.exchange, msg.routing_key, _props_dict(msg.props), bytes(msg.body),
                                False, len(msg.body))

    def read_body(self, queue: Any, seq: int) -> bytes:
        entry = self.queues.get((queue.vhost.name, queue.name), {}).get(seq)
        if entry is None:
            raise NotFound(f"message {seq} is not stored for queue {queue.name!r}")
        return bytes(entry.msg.body)

    def recover(self, *, load_bodies: bool = True,
                body_budget: int | None = None) -> dict[tuple[str, str], list[RecoveredMessage]]:
        """The live messages of this instance (a restarted memory store has none)."""
        out: dict[tuple[str, str], list[RecoveredMessage]] = {}
        for key, entries in self.queues.items():
            dl = self.delivered.get(key, set())
            out[key] = [
                RecoveredMessage(seq, e.msg.exchange, e.msg.routing_key, _props_dict(e.msg.props),
                                 bytes(e.msg.body) if load_bodies else None, seq in dl)
                for seq, e in sorted(entries.items())
            ]
        return out

    def last_seq(self, vhost: str, name: str) -> int:
        return self.max_seq.get((vhost, name), 0)

    @property
    def ticket(self) -> int:
        return 0

    @property
    def durable_ticket(self) -> int:
        return 0

    def close(self) -> None:
        self.queues.clear()
        self.delivered.clear()


class MemoryMetadataStore:
    """Keeps durable definitions as plain dicts (the shape of a definitions export)."""

    def __init__(self) -> None:
        self.exchanges: dict[tuple[str, str], dict[str, Any]] = {}
        self.queues: dict[tuple[str, str], dict[str, Any]] = {}
        self.bindings: dict[tuple[str, str, str, str, str], dict[str, Any]] = {}
        self.vhosts: dict[str, dict[str, Any]] = {}
        self.users: dict[str, dict[str, Any]] = {}
        self.permissions: dict[tuple[str, str], dict[str, Any]] = {}

    def save_exchange(self, vhost: str, exchange: Any) -> None:
        self.exchanges[(vhost, exchange.name)] = {
            "name": exchange.name, "vhost": vhost, "type": exchange.type, "durable": exchange.durable,
            "auto_delete": exchange.auto_delete, "internal": exchange.internal,
            "arguments": exchange.arguments,
        }

    def delete_exchange(self, vhost: str, name: str) -> None:
        self.exchanges.pop((vhost, name), None)
        for k in [k for k in self.bindings if k[0] == vhost and (k[1] == name or k[2] == name)]:
            del self.bindings[k]

    def save_queue(self, vhost: str, queue: Any) -> None:
        self.queues[(vhost, queue.name)] = {
            "name": queue.name, "vhost": vhost, "durable": queue.durable,
            "auto_delete": queue.auto_delete, "arguments": queue.arguments,
        }

    def delete_queue(self, vhost: str, name: str) -> None:
        self.queues.pop((vhost, name), None)
        for k in [k for k in self.bindings if k[0] == vhost and k[2] == name]:
            del self.bindings[k]

    @staticmethod
    def _key(vhost: str, source: str, dest: Any, routing_key: str, arguments: dict[str, Any]
             ) -> tuple[str, str, str, str, str]:
        return (vhost, source, dest.name, routing_key, repr(sorted(arguments.items())))

    def save_binding(self, vhost: str, source: str, dest: Any, routing_key: str,
                     arguments: dict[str, Any]) -> None:
        self.bindings[self._key(vhost, source, dest, routing_key, arguments)] = {
            "source": source, "vhost": vhost, "destination": dest.name,
            "destination_type": "queue" if hasattr(dest, "consumers") else "exchange",
            "routing_key": routing_key, "arguments": arguments,
        }

    def delete_binding(self, vhost: str, source: str, dest: Any, routing_key: str,
                       arguments: dict[str, Any]) -> None:
        self.bindings.pop(self._key(vhost, source, dest, routing_key, arguments), None)

    def save_vhost(self, name: str, description: str = "", tags: list[str] | None = None) -> None:
        self.vhosts[name] = {"name": name, "description": description, "tags": list(tags or [])}

    def delete_vhost(self, name: str) -> None:
        self.vhosts.pop(name, None)
        for table in (self.exchanges, self.queues):
            for k in [k for k in table if k[0] == name]:
                del table[k]
        for bk in [bk for bk in self.bindings if bk[0] == name]:
            del self.bindings[bk]
        for pk in [pk for pk in self.permissions if pk[1] == name]:
            del self.permissions[pk]

    def save_user(self, name: str, password_hash: str, tags: list[str] | None = None) -> None:
        self.users[name] = {"name": name, "password_hash": password_hash, "tags": list(tags or [])}

    def delete_user(self, name: str) -> None:
        self.users.pop(name, None)
        for pk in [pk for pk in self.permissions if pk[0] == name]:
            del self.permissions[pk]

    def save_permission(self, user: str, vhost: str, configure: str, write: str, read: str) -> None:
        self.permissions[(user, vhost)] = {"user": user, "vhost": vhost, "configure": configure,
                                           "write": write, "read": read}

    def delete_permission(self, user: str, vhost: str) -> None:
        self.permissions.pop((user, vhost), None)

    def load(self) -> dict[str, list[dict[str, Any]]]:
        """Everything saved, shaped like a definitions export (sorted for stable comparison)."""
        def rows(table: dict[Any, dict[str, Any]]) -> list[dict[str, Any]]:
            return [dict(table[k]) for k in sorted(table)]

        return {"vhosts": rows(self.vhosts), "users": rows(self.users), "permissions": rows(self.permissions),
                "exchanges": rows(self.exchanges), "queues": rows(self.queues), "bindings": rows(self.bindings)}

    def close(self) -> None:
        pass
