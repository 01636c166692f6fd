"""In-memory stores: what a broker without a data directory uses, and the reference for the suite.

Nothing here survives the process: a *new* ``MemoryQueueStore`` recovers nothing. ``recover()``
on the same instance returns what a file store would hand back after a restart, which is what
the shared store suite (tests/unit/store) compares against.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

from haremq.errors import NotFound
from haremq.message import PROPERTY_NAMES
from haremq.store.api import (
    Change,
    CommitLog,
    OneChangeCommits,
    QueueId,
    QueueRef,
    RecoveredMessage,
    StoredEntry,
    Watcher,
)


def _props_dict(props: Any) -> dict[str, Any]:
    if props is None:
        return {}
    if isinstance(props, dict):
        return {k: v for k, v in props.items() if v is not None}
    return {n: v for n in PROPERTY_NAMES if (v := getattr(props, n, None)) is not None}


class MemoryLog:
    """A memory queue's ``CommitLog``: every append is committed at once (nothing to wait for)."""

    __slots__ = ("appended_lsn", "epoch")

    def __init__(self, epoch: int = 0) -> None:
        self.appended_lsn = 0
        self.epoch = epoch

    @property
    def committed_lsn(self) -> int:
        return self.appended_lsn

    @property
    def failed(self) -> BaseException | None:
        return None

    def append(self) -> MemoryLog:
        self.appended_lsn += 1
        return self


class MemoryQueueStore:
    """Keeps the persistent entries of each durable queue by sequence number."""

    def __init__(self) -> None:
        self.queues: dict[tuple[str, str], dict[int, Any]] = {}
        self.delivered: dict[tuple[str, str], set[int]] = {}
        self.max_seq: dict[tuple[str, str], int] = {}
        self.logs: dict[tuple[str, str], MemoryLog] = {}

    def _log(self, key: tuple[str, str]) -> MemoryLog:
        qlog = self.logs.get(key)
        if qlog is None:
            qlog = self.logs[key] = MemoryLog()
        return qlog

    def log(self, queue: QueueId) -> MemoryLog | None:
        return self.logs.get((queue.vhost, queue.name))

    def advance_commits(self) -> list[CommitLog]:
        return []  # committed at append

    def publish(self, queue: QueueRef, entry: StoredEntry) -> MemoryLog:
        key = (queue.vhost.name, queue.name)
        self.queues.setdefault(key, {})[entry.seq] = entry
        if entry.seq > self.max_seq.get(key, 0):
            self.max_seq[key] = entry.seq
        return self._log(key).append()

    def mark_delivered(self, queue: QueueRef, entry: StoredEntry) -> MemoryLog | None:
        key = (queue.vhost.name, queue.name)
        if entry.seq in self.queues.get(key, ()):
            self.delivered.setdefault(key, set()).add(entry.seq)
            return self._log(key).append()
        return None

    def remove(self, queue: QueueRef, entry: StoredEntry) -> MemoryLog | None:
        key = (queue.vhost.name, queue.name)
        q = self.queues.get(key)
        if q is not None and q.pop(entry.seq, None) is not None:
            self.delivered.get(key, set()).discard(entry.seq)
            return self._log(key).append()
        return None

    def delete_queue(self, queue: QueueRef | QueueId) -> None:
        key = (queue.vhost, queue.name) if isinstance(queue, QueueId) else (queue.vhost.name, queue.name)
        self.queues.pop(key, None)
        self.delivered.pop(key, None)
        self.max_seq.pop(key, None)
        self.logs.pop(key, None)

    @property
    def can_page(self) -> bool:
        return False  # the memory store holds entries, not copies: nothing to read back from

    def read_message(self, queue: QueueRef, seq: int) -> RecoveredMessage:
        entry = self.queues.get((queue.vhost.name, queue.name), {}).get(seq)
        if entry is None or entry.msg is None:
            raise NotFound(f"message {seq} is not in the memory store")
        msg = entry.msg
        return RecoveredMessage(seq, msg.exchange, msg.routing_key, _props_dict(msg.props), bytes(msg.body),
                                False, len(msg.body))

    def read_body(self, queue: QueueRef, seq: int) -> bytes:
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

    def stats(self, vhost: str, name: str) -> None:
        return None  # nothing on disk

    def close(self) -> None:
        self.queues.clear()
        self.delivered.clear()


class MemoryMetadataStore(OneChangeCommits):
    """Keeps durable definitions as plain dicts (the shape of a definitions export); commits are
    done when ``commit`` returns."""

    def __init__(self) -> None:
        self.exchanges: dict[tuple[str, str], dict[str, Any]] = {}
        self.queues: dict[tuple[str, str], dict[str, Any]] = {}
        self.bindings: dict[tuple[str, ...], dict[str, Any]] = {}
        self.vhosts: dict[str, dict[str, Any]] = {}
        self.users: dict[str, dict[str, Any]] = {}
        self.permissions: dict[tuple[str, str], dict[str, Any]] = {}
        self.access_keys: dict[str, dict[str, Any]] = {}
        self.policies: dict[tuple[str, str], dict[str, Any]] = {}
        self.revision = 0
        self._watchers: list[Watcher] = []

    def commit(self, changes: Sequence[Change]) -> Future[int]:
        for c in changes:
            self._apply(c)
        self.revision += 1
        for w in self._watchers:
            w(self.revision, changes)
        fut: Future[int] = Future()
        fut.set_result(self.revision)
        return fut

    def pending(self) -> Future[int] | None:
        return None

    def watch(self, watcher: Watcher) -> None:
        self._watchers.append(watcher)

    @staticmethod
    def _drop(table: dict[Any, Any], match: Callable[[Any], bool]) -> None:
        for k in [k for k in table if match(k)]:
            del table[k]

    def _apply(self, c: Change) -> None:
        k, v = c.key, c.value
        if c.op == "put":
            if c.kind == "vhost":
                self.vhosts[k[0]] = {"name": k[0], "description": v.get("description", ""),
                                     "tags": list(v.get("tags") or [])}
            elif c.kind == "user":
                self.users[k[0]] = {"name": k[0], "password_hash": v["password_hash"],
                                    "tags": list(v.get("tags") or [])}
            elif c.kind == "permission":
                self.permissions[(k[0], k[1])] = {"user": k[0], "vhost": k[1], "configure": v["configure"],
                                                  "write": v["write"], "read": v["read"]}
            elif c.kind == "access_key":
                self.access_keys[k[0]] = {"key_id": k[0], "user": v["user"], "secret": v["secret"]}
            elif c.kind == "exchange":
                self.exchanges[(k[0], k[1])] = {
                    "name": k[1], "vhost": k[0], "type": v["type"], "durable": v["durable"],
                    "auto_delete": v["auto_delete"], "internal": v["internal"], "arguments": v["arguments"]}
            elif c.kind == "queue":
                self.queues[(k[0], k[1])] = {"name": k[1], "vhost": k[0], "durable": v["durable"],
                                             "auto_delete": v["auto_delete"], "arguments": v["arguments"]}
            elif c.kind == "policy":
                self.policies[(k[0], k[1])] = {"vhost": k[0], "name": k[1], "pattern": v["pattern"],
                                               "apply-to": v["apply-to"], "priority": v["priority"],
                                               "definition": dict(v["definition"])}
            elif c.kind == "binding":
                self.bindings[self._bkey(c)] = {
                    "source": k[1], "vhost": k[0], "destination": k[2], "destination_type": k[3],
                    "routing_key": k[4], "arguments": v["arguments"]}
            else:
                raise ValueError(f"unknown definitions change {c.kind}")
            return
        if c.kind == "vhost":
            self.vhosts.pop(k[0], None)
            for table in (self.exchanges, self.queues, self.bindings, self.policies):
                self._drop(table, lambda key: key[0] == k[0])
            self._drop(self.permissions, lambda key: key[1] == k[0])
        elif c.kind == "user":
            self.users.pop(k[0], None)
            self._drop(self.permissions, lambda key: key[0] == k[0])
            self._drop(self.access_keys, lambda key: self.access_keys[key]["user"] == k[0])
        elif c.kind == "permission":
            self.permissions.pop((k[0], k[1]), None)
        elif c.kind == "access_key":
            self.access_keys.pop(k[0], None)
        elif c.kind == "exchange":
            self.exchanges.pop((k[0], k[1]), None)
            self._drop(self.bindings, lambda key: key[0] == k[0] and k[1] in (key[1], key[2]))
        elif c.kind == "queue":
            self.queues.pop((k[0], k[1]), None)
            self._drop(self.bindings, lambda key: key[0] == k[0] and key[2] == k[1])
        elif c.kind == "binding":
            self.bindings.pop(self._bkey(c), None)
        elif c.kind == "policy":
            self.policies.pop((k[0], k[1]), None)
        else:
            raise ValueError(f"unknown definitions change {c.kind}")

    @staticmethod
    def _bkey(c: Change) -> tuple[str, ...]:
        return (*c.key[:3], c.key[4], repr(sorted(dict(c.value.get("arguments") or {}).items())))

    def load(self) -> dict[str, list[dict[str, Any]]]:
        """Everything saved, shaped like a definitions export (sorted for stable comparison)."""
        def rows(table: dict[Any, dict[str, Any]]) -> list[dict[str, Any]]:
            return [dict(table[k]) for k in sorted(table)]

        return {"access_keys": rows(self.access_keys),
                "vhosts": rows(self.vhosts), "users": rows(self.users), "permissions": rows(self.permissions),
                "exchanges": rows(self.exchanges), "queues": rows(self.queues), "bindings": rows(self.bindings),
                "policies": rows(self.policies)}

    def close(self) -> None:
        pass
