"""In-memory stores: what a broker without a data directory uses, and the reference for the suite."""

from __future__ import annotations

from typing import Any


class MemoryQueueStore:
    """Keeps the persistent entries of each durable queue by sequence number."""

    def __init__(self) -> None:
        self.queues: dict[tuple[str, str], dict[int, Any]] = {}

    def publish(self, queue: Any, entry: Any) -> None:
        self.queues.setdefault((queue.vhost.name, queue.name), {})[entry.seq] = entry

    def remove(self, queue: Any, entry: Any) -> None:
        q = self.queues.get((queue.vhost.name, queue.name))
        if q is not None:
            q.pop(entry.seq, None)

    def delete_queue(self, queue: Any) -> None:
        self.queues.pop((queue.vhost.name, queue.name), None)

    def close(self) -> None:
        self.queues.clear()


class MemoryMetadataStore:
    """Keeps durable definitions as plain dicts (the shape of a definitions export)."""

    def __init__(self) -> None:
        self.exchanges: dict[tuple[str, str], dict[str, Any]] = {}
        self.queues: dict[tuple[str, str], dict[str, Any]] = {}
        self.bindings: dict[tuple[str, str, str, str, str], dict[str, Any]] = {}

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

    def close(self) -> None:
        pass
