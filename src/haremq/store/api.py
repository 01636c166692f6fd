"""The interfaces the core persists through. ``core`` never sees a file.

The store layer sits below ``core`` and must not import it, so what it reads from core objects is
spelled as small protocols here (``QueueRef``: ``vhost.name`` and ``name``; ``StoredEntry``: ``seq``
and ``msg``), and a queue whose core object is gone is named by a ``QueueId``.

``QueueStore`` holds only persistent messages of durable queues. Calls are synchronous and must
not block on the disk: a file store appends to its mmap and lets the group-commit flusher fsync.

Durability is per queue: each durable queue owns a ``CommitLog`` (its log as a port). Every append
returns that log and moves its ``appended_lsn``; the record is kept once ``committed_lsn`` reaches
its lsn. On one node "committed" means fsynced (the file store's group commit still covers many
queues with one fsync); a replicated log wraps the same port so that it means "a majority of the
replicas fsynced". The server collects the (log, lsn) positions a command wrote and holds its
answer (confirm, commit-ok, receipt, HTTP 200) until they are committed (server/durability.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, Literal, Protocol


@dataclasses.dataclass(frozen=True, slots=True)
class QueueId:
    """Names a queue's log by (vhost, queue name), e.g. one whose queue no longer exists."""

    vhost: str
    name: str


class Named(Protocol):
    @property
    def name(self) -> str: ...


class QueueRef(Protocol):
    """What the store reads from a queue: its vhost's name and its own."""

    @property
    def name(self) -> str: ...

    @property
    def vhost(self) -> Named: ...


class StoredMessage(Protocol):
    @property
    def exchange(self) -> str: ...

    @property
    def routing_key(self) -> str: ...

    @property
    def props(self) -> Any: ...  # AMQP basic properties (attributes by field name) or a dict

    @property
    def body(self) -> bytes: ...


class StoredEntry(Protocol):
    """What the store reads from a queue entry."""

    @property
    def seq(self) -> int: ...

    @property
    def msg(self) -> StoredMessage: ...


class CommitLog(Protocol):
    """One durable queue's log as a port: positions (LSNs) go up by one per record appended.

    ``committed_lsn`` only moves forward, on the event-loop thread, after the records up to it are
    kept (one node: fsynced; replicated: a majority fsynced); the owner of the commit then tells the
    server which logs moved (``QueueStore.advance_commits``). ``failed`` is set when the log can no
    longer commit anything (an fsync failed): whatever waits on it must be refused. ``epoch`` is
    the leader epoch the records are written with (0 on a single node; a cluster bumps it).
    """

    @property
    def epoch(self) -> int: ...

    @property
    def appended_lsn(self) -> int: ...

    @property
    def committed_lsn(self) -> int: ...

    @property
    def failed(self) -> BaseException | None: ...


Positions = dict[CommitLog, int]
"""The highest lsn a command appended per log it touched: what its answer waits for."""


class QueueStore(Protocol):
    def publish(self, queue: QueueRef, entry: StoredEntry) -> CommitLog:
        """A persistent message entered a durable queue; returns the log it was appended to (its
        ``appended_lsn`` is the record's position)."""
        ...

    def remove(self, queue: QueueRef, entry: StoredEntry) -> CommitLog | None:
        """The entry left the queue for good (acked, expired, dropped, dead-lettered); returns the
        log a REMOVE record went to, or None when nothing was appended."""
        ...

    def delete_queue(self, queue: QueueRef | QueueId) -> None:
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

    The memory store commits at append (``committed_lsn == appended_lsn``: nothing to wait for).
    """

    def mark_delivered(self, queue: QueueRef, entry: StoredEntry) -> CommitLog | None:
        """The entry was handed to a consumer (a lease): after a crash it comes back redelivered.
        Returns the log a DELIVERED record went to, or None."""
        ...

    def read_body(self, queue: QueueRef, seq: int) -> bytes:
        """The body of a live persistent message (raises NotFound otherwise)."""
        ...

    def read_message(self, queue: QueueRef, seq: int) -> RecoveredMessage:
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

    def log(self, queue: QueueId) -> CommitLog | None:
        """The queue's log, if it has one."""
        ...

    def advance_commits(self) -> list[CommitLog]:
        """Event-loop thread, after a group commit (and anything its answers also wait for) is
        done: move each synced log's ``committed_lsn``; returns the logs that moved."""
        ...

    def stats(self, vhost: str, name: str) -> Any:
        """Storage statistics of a queue's log (None without one), for management."""
        ...


@dataclasses.dataclass(frozen=True, slots=True)
class Change:
    """One definitions change, as a key/value put or delete (what an etcd backend stores).

    ``kind``/``key``: ``vhost`` (name), ``user`` (name), ``permission`` (user, vhost), ``access_key``
    (key id), ``exchange`` (vhost, name), ``queue`` (vhost, name), ``binding`` (vhost, source,
    destination, destination type, routing key), ``policy`` (vhost, name). ``value`` holds the
    fields (a binding's delete carries its ``arguments``, part of its identity). Deleting a vhost or
    user cascades to what lives in it (exchanges, queues, bindings, permissions, policies; permissions
    and access keys).
    """

    op: Literal["put", "delete"]
    kind: str
    key: tuple[str, ...]
    value: dict[str, Any] = dataclasses.field(default_factory=dict)


Watcher = Callable[[int, Sequence[Change]], None]


class MetadataStore(Protocol):
    """Durable definitions with a revision: every commit is one all-or-nothing transaction.

    ``commit`` never blocks the caller: it numbers the change (``revision`` + 1, in call order) and
    returns a future that completes with that revision once it is durable (SQLite: on the store's
    writer thread). ``pending()`` is the future of the newest write not yet durable (or failed), so a server can
    hold an answer until everything it caused is kept. The ``save_*``/``delete_*`` helpers below are
    one-change commits for the core's declares. A cluster backend implements the same port with a
    compare-and-set on ``revision``.
    """

    @property
    def revision(self) -> int:
        """The revision of the newest submitted change (durable or not); survives restarts."""
        ...

    def commit(self, changes: Sequence[Change]) -> Future[int]: ...

    def pending(self) -> Future[int] | None: ...

    def watch(self, watcher: Watcher) -> None:
        """``watcher(revision, changes)`` after each commit is durable, in revision order, on the
        store's writer thread (hop to your loop); covers every change, whoever made it."""
        ...

    def save_exchange(self, vhost: str, exchange: Any) -> None: ...

    def delete_exchange(self, vhost: str, name: str) -> None: ...

    def save_queue(self, vhost: str, queue: Any) -> None: ...

    def delete_queue(self, vhost: str, name: str) -> None: ...

    def save_binding(self, vhost: str, source: str, dest: BindingDest, routing_key: str,
                     arguments: dict[str, Any]) -> None: ...

    def delete_binding(self, vhost: str, source: str, dest: BindingDest, routing_key: str,
                       arguments: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class BindingDest(Protocol):
    """A binding's destination as definitions store it: its name and ``kind`` ("queue" or
    "exchange", RabbitMQ's destination_type)."""

    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> str: ...


def dest_type(dest: BindingDest) -> str:
    return dest.kind


def exchange_change(vhost: str, exchange: Any) -> Change:
    """The put of a durable exchange (a declare's typed change)."""
    return Change("put", "exchange", (vhost, exchange.name), {
        "type": exchange.type, "durable": exchange.durable, "auto_delete": exchange.auto_delete,
        "internal": exchange.internal, "arguments": dict(exchange.arguments or {})})


def queue_change(vhost: str, queue: Any) -> Change:
    """The put of a durable queue (a declare's typed change)."""
    return Change("put", "queue", (vhost, queue.name), {
        "durable": queue.durable, "auto_delete": queue.auto_delete, "arguments": dict(queue.arguments or {})})


class OneChangeCommits:
    """The ``save_*``/``delete_*`` calls of MetadataStore and AccessStore as one-change ``commit``s
    (the core's declares; the server holds its answer on ``pending()``)."""

    def commit(self, changes: Sequence[Change]) -> Future[int]:
        raise NotImplementedError

    def save_exchange(self, vhost: str, exchange: Any) -> None:
        self.commit([exchange_change(vhost, exchange)])

    def delete_exchange(self, vhost: str, name: str) -> None:
        self.commit([Change("delete", "exchange", (vhost, name))])

    def save_queue(self, vhost: str, queue: Any) -> None:
        self.commit([queue_change(vhost, queue)])

    def delete_queue(self, vhost: str, name: str) -> None:
        self.commit([Change("delete", "queue", (vhost, name))])

    def save_binding(self, vhost: str, source: str, dest: BindingDest, routing_key: str,
                     arguments: dict[str, Any]) -> None:
        self.commit([Change("put", "binding", (vhost, source, dest.name, dest_type(dest), routing_key),
                            {"arguments": dict(arguments)})])

    def delete_binding(self, vhost: str, source: str, dest: BindingDest, routing_key: str,
                       arguments: dict[str, Any]) -> None:
        self.commit([Change("delete", "binding", (vhost, source, dest.name, dest_type(dest), routing_key),
                            {"arguments": dict(arguments)})])

    def save_vhost(self, name: str, description: str = "", tags: list[str] | None = None) -> None:
        self.commit([Change("put", "vhost", (name,), {"description": description, "tags": list(tags or [])})])

    def delete_vhost(self, name: str) -> None:
        self.commit([Change("delete", "vhost", (name,))])

    def save_user(self, name: str, password_hash: str, tags: list[str] | None = None) -> None:
        self.commit([Change("put", "user", (name,), {"password_hash": password_hash, "tags": list(tags or [])})])

    def delete_user(self, name: str) -> None:
        self.commit([Change("delete", "user", (name,))])

    def save_permission(self, user: str, vhost: str, configure: str, write: str, read: str) -> None:
        self.commit([Change("put", "permission", (user, vhost),
                            {"configure": configure, "write": write, "read": read})])

    def delete_permission(self, user: str, vhost: str) -> None:
        self.commit([Change("delete", "permission", (user, vhost))])


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
