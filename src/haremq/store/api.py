"""The interfaces the core persists through. ``core`` never sees a file.

Both are written against duck-typed arguments (``Any``): the store layer sits below ``core`` and
must not import it. A queue passed in has ``vhost.name``, ``name``; an entry has ``seq`` and
``msg`` (exchange, routing_key, props, body).

``QueueStore`` holds only persistent messages of durable queues. Calls are synchronous and must
not block on the disk: a file store appends to its mmap and lets the group-commit flusher fsync.
"""

from __future__ import annotations

import dataclasses
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


@dataclasses.dataclass(slots=True, frozen=True)
class RecoveredMessage:
    """A live message handed back at startup (``recover()``), in original (seq) order.

    ``props`` holds the present AMQP basic properties by field name (``Properties(**props)``);
    identical property sets share one dict, so treat it as read-only. ``body`` is None when
    recovered with ``load_bodies=False``: fetch it with ``read_body(queue, seq)`` on delivery.
    ``redelivered``: it was handed to a consumer and not settled before the restart.
    """

    seq: int
    exchange: str
    routing_key: str
    props: dict[str, Any]
    body: bytes | None
    redelivered: bool
    size: int = -1  # body length in bytes (known even when the body was not loaded)


class RecoverableQueueStore(QueueStore, Protocol):
    """What the memory and the file queue store both offer beyond ``QueueStore``.

    ``ticket`` / ``durable_ticket``: every append takes a ticket; a publisher confirm for a
    persistent message may be sent once ``durable_ticket >=`` the value ``ticket`` had right after
    its ``publish`` (the memory store keeps both equal: nothing to wait for).
    """

    def mark_delivered(self, queue: Any, entry: Any) -> None:
        """The entry was handed to a consumer (a lease): after a crash it comes back redelivered."""
        ...

    def read_body(self, queue: Any, seq: int) -> bytes:
        """The body of a live persistent message (raises NotFound otherwise)."""
        ...

    def read_message(self, queue: Any, seq: int) -> RecoveredMessage:
        """A live persistent message, whole, read back from the store (paged-out entries)."""
        ...

    @property
    def can_page(self) -> bool:
        """True when bodies may be dropped from memory and read back (a file store)."""
        ...

    def recover(self, *, load_bodies: bool = True,
                body_budget: int | None = None) -> dict[tuple[str, str], list[RecoveredMessage]]:
        """Every durable queue's live messages by (vhost, queue name), in seq order; with
        ``body_budget``, bodies are loaded per queue only up to that many bytes."""
        ...

    def last_seq(self, vhost: str, name: str) -> int:
        """The highest seq the queue ever logged: restart its counter above it."""
        ...

    @property
    def ticket(self) -> int: ...

    @property
    def durable_ticket(self) -> int: ...


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


class AccessStore(Protocol):
    """Vhosts, users and permissions (part of the definitions a node restarts with)."""

    def save_vhost(self, name: str, description: str = "", tags: list[str] | None = None) -> None: ...

    def delete_vhost(self, name: str) -> None: ...

    def save_user(self, name: str, password_hash: str, tags: list[str] | None = None) -> None: ...

    def delete_user(self, name: str) -> None: ...

    def save_permission(self, user: str, vhost: str, configure: str, write: str, read: str) -> None: ...

    def delete_permission(self, user: str, vhost: str) -> None: ...


class DefinitionsSource(Protocol):
    def load(self) -> dict[str, list[dict[str, Any]]]:
        """Everything saved, shaped like a definitions export: ``vhosts``, ``users``,
        ``permissions``, ``exchanges``, ``queues``, ``bindings`` (lists of dicts)."""
        ...
