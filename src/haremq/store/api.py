"""The interfaces the core persists through. ``core`` never sees a file.

Both are written against duck-typed arguments (``Any``): the store layer sits below ``core`` and
must not import it. A queue passed in has ``vhost.name``, ``name``; an entry has ``seq`` and
``msg`` (exchange, routing_key, props, body).

``QueueStore`` holds only persistent messages of durable queues. Calls are synchronous and must
not block on the disk: a file store appends to its mmap and lets the group-commit flusher fsync.
"""

from __future__ import annotations

from typing import Any, Protocol


class QueueStore(Protocol):
    def publish(self, queue: Any, entry: Any) -> None:
        """A persistent message entered a durable queue."""
        ...

    def remove(self, queue: Any, entry: Any) -> None:
        """The entry left the queue for good (acked, expired, dropped, dead-lettered)."""
        ...

    def delete_queue(self, queue: Any) -> None:
        """The queue is gone with all its messages."""
        ...

    def close(self) -> None: ...


class MetadataStore(Protocol):
    def save_exchange(self, vhost: str, exchange: Any) -> None: ...

    def delete_exchange(self, vhost: str, name: str) -> None: ...

    def save_queue(self, vhost: str, queue: Any) -> None: ...

    def delete_queue(self, vhost: str, name: str) -> None: ...

    def save_binding(self, vhost: str, source: str, dest: Any, routing_key: str,
                     arguments: dict[str, Any]) -> None: ...

    def delete_binding(self, vhost: str, source: str, dest: Any, routing_key: str,
                       arguments: dict[str, Any]) -> None: ...

    def close(self) -> None: ...
