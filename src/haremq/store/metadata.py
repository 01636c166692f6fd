"""``SqliteMetadataStore``: durable definitions (vhosts, users, permissions, SQS access keys,
exchanges, queues, bindings, policies) in ``DATA_DIR/metadata.sqlite3``.

SQLite in WAL mode with ``synchronous=FULL``: each commit is one transaction, on disk when its
future completes. Commits run on one dedicated writer thread, in submission order, so the event
loop never waits for SQLite; servers hold their answer (declare-ok, HTTP 2xx) until the future of
what the request caused is done. Every commit stores the new ``revision`` in the same
transaction. Argument tables are stored in the store's lossless tagged encoding
(records.encode_table), so AMQP types such as bytes, Decimal and datetime round-trip.

``load()`` returns the same dict shapes as ``MemoryMetadataStore.load()``; the shared suite in
tests/unit/store checks both. A failed write (disk full, I/O error) breaks the store: every later
commit fails too, so a held answer never reports a change that followed a lost one.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from haremq.errors import InternalError
from haremq.store.api import Change, OneChangeCommits, Watcher
from haremq.store.records import decode_table, encode_table

SCHEMA_VERSION = 2
log = logging.getLogger("haremq.metadata")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS vhosts (
    name TEXT PRIMARY KEY, description TEXT NOT NULL, tags TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY, password_hash TEXT NOT NULL, tags TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS permissions (
    user TEXT NOT NULL, vhost TEXT NOT NULL, configure TEXT NOT NULL, write TEXT NOT NULL, read TEXT NOT NULL,
    PRIMARY KEY (user, vhost));
CREATE TABLE IF NOT EXISTS access_keys (
    key_id TEXT PRIMARY KEY, user TEXT NOT NULL, secret TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS exchanges (
    vhost TEXT NOT NULL, name TEXT NOT NULL, type TEXT NOT NULL, durable INTEGER NOT NULL,
    auto_delete INTEGER NOT NULL, internal INTEGER NOT NULL, arguments BLOB NOT NULL,
    PRIMARY KEY (vhost, name));
CREATE TABLE IF NOT EXISTS queues (
    vhost TEXT NOT NULL, name TEXT NOT NULL, durable INTEGER NOT NULL, auto_delete INTEGER NOT NULL,
    arguments BLOB NOT NULL, PRIMARY KEY (vhost, name));
CREATE TABLE IF NOT EXISTS bindings (
    vhost TEXT NOT NULL, source TEXT NOT NULL, destination TEXT NOT NULL, destination_type TEXT NOT NULL,
    routing_key TEXT NOT NULL, args_key BLOB NOT NULL, arguments BLOB NOT NULL,
    PRIMARY KEY (vhost, source, destination, routing_key, args_key));
CREATE TABLE IF NOT EXISTS policies (
    vhost TEXT NOT NULL, name TEXT NOT NULL, pattern TEXT NOT NULL, apply_to TEXT NOT NULL,
    priority INTEGER NOT NULL, definition TEXT NOT NULL, PRIMARY KEY (vhost, name));
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

Statement = tuple[str, tuple[Any, ...]]


def _args_key(arguments: dict[str, Any]) -> bytes:
    return encode_table(dict(sorted(arguments.items())))


def _statements(c: Change) -> list[Statement]:
    """The SQL of one change."""
    k, v = c.key, c.value
    if c.op == "put":
        if c.kind == "vhost":
            return [("INSERT OR REPLACE INTO vhosts VALUES (?, ?, ?)",
                     (k[0], v.get("description", ""), json.dumps(list(v.get("tags") or []))))]
        if c.kind == "user":
            return [("INSERT OR REPLACE INTO users VALUES (?, ?, ?)",
                     (k[0], v["password_hash"], json.dumps(list(v.get("tags") or []))))]
        if c.kind == "permission":
            return [("INSERT OR REPLACE INTO permissions VALUES (?, ?, ?, ?, ?)",
                     (k[0], k[1], v["configure"], v["write"], v["read"]))]
        if c.kind == "access_key":
            return [("INSERT OR REPLACE INTO access_keys VALUES (?, ?, ?)", (k[0], v["user"], v["secret"]))]
        if c.kind == "exchange":
            return [("INSERT OR REPLACE INTO exchanges VALUES (?, ?, ?, ?, ?, ?, ?)",
                     (k[0], k[1], v["type"], int(bool(v["durable"])), int(bool(v["auto_delete"])),
                      int(bool(v["internal"])), encode_table(dict(v.get("arguments") or {}))))]
        if c.kind == "queue":
            return [("INSERT OR REPLACE INTO queues VALUES (?, ?, ?, ?, ?)",
                     (k[0], k[1], int(bool(v["durable"])), int(bool(v["auto_delete"])),
                      encode_table(dict(v.get("arguments") or {}))))]
        if c.kind == "policy":
            return [("INSERT OR REPLACE INTO policies VALUES (?, ?, ?, ?, ?, ?)",
                     (k[0], k[1], v["pattern"], v["apply-to"], int(v["priority"]), json.dumps(v["definition"])))]
        if c.kind == "binding":
            args = dict(v.get("arguments") or {})
            return [("INSERT OR REPLACE INTO bindings VALUES (?, ?, ?, ?, ?, ?, ?)",
                     (k[0], k[1], k[2], k[3], k[4], _args_key(args), encode_table(args)))]
    else:
        if c.kind == "vhost":
            return [(f"DELETE FROM {t} WHERE {col} = ?", (k[0],)) for t, col in (
                ("vhosts", "name"), ("exchanges", "vhost"), ("queues", "vhost"), ("bindings", "vhost"),
                ("permissions", "vhost"), ("policies", "vhost"))]
        if c.kind == "policy":
            return [("DELETE FROM policies WHERE vhost = ? AND name = ?", k)]
        if c.kind == "user":
            return [("DELETE FROM users WHERE name = ?", k), ("DELETE FROM permissions WHERE user = ?", k),
                    ("DELETE FROM access_keys WHERE user = ?", k)]
        if c.kind == "permission":
            return [("DELETE FROM permissions WHERE user = ? AND vhost = ?", k)]
        if c.kind == "access_key":
            return [("DELETE FROM access_keys WHERE key_id = ?", k)]
        if c.kind == "exchange":
            return [("DELETE FROM exchanges WHERE vhost = ? AND name = ?", k),
                    ("DELETE FROM bindings WHERE vhost = ? AND (source = ? OR destination = ?)", (k[0], k[1], k[1]))]
        if c.kind == "queue":
            return [("DELETE FROM queues WHERE vhost = ? AND name = ?", k),
                    ("DELETE FROM bindings WHERE vhost = ? AND destination = ?", k)]
        if c.kind == "binding":
            return [("DELETE FROM bindings WHERE vhost = ? AND source = ? AND destination = ? AND routing_key = ?"
                     " AND args_key = ?", (k[0], k[1], k[2], k[4], _args_key(dict(v.get("arguments") or {}))))]
    raise ValueError(f"unknown definitions change {c.op} {c.kind}")


class SqliteMetadataStore(OneChangeCommits):
    """The MetadataStore, AccessStore and DefinitionsSource protocols on SQLite."""

    def __init__(self, data_dir: str | os.PathLike[str], filename: str = "metadata.sqlite3") -> None:
        os.makedirs(data_dir, exist_ok=True)
        self.path = os.path.join(os.fspath(data_dir), filename)
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("PRAGMA foreign_keys=OFF")
        with self.db:
            self.db.executescript(_SCHEMA)
        self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        row = self.db.execute("SELECT value FROM meta WHERE key = 'revision'").fetchone()
        self._revision = int(row[0]) if row else 0
        self.durable_revision = self._revision
        self.broken: BaseException | None = None
        self._last: Future[int] | None = None
        self._watchers: list[Watcher] = []
        # one writer thread: commits stay in revision order and off the event loop
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="haremq-metadata")

    @property
    def revision(self) -> int:
        return self._revision

    def commit(self, changes: Sequence[Change]) -> Future[int]:
        """Submit ``changes`` as one transaction; the future completes with its revision once on disk."""
        statements = [st for c in changes for st in _statements(c)]  # bad input fails here, in the caller
        self._revision += 1
        fut = self._writer.submit(self._write, self._revision, statements, list(changes))
        fut.add_done_callback(self._log_failure)
        self._last = fut
        return fut

    def pending(self) -> Future[int] | None:
        """The newest write unless it is durable: still running, or failed (a broken store fails every
        later write too, so an answer waiting on it is refused even when the failure came first)."""
        last = self._last
        if last is None or (last.done() and last.exception() is None):
            return None
        return last

    def watch(self, watcher: Watcher) -> None:
        self._watchers.append(watcher)

    def _write(self, revision: int, statements: list[Statement], changes: list[Change]) -> int:
        if self.broken is not None:
            raise InternalError(f"metadata store failed earlier: {self.broken}")
        try:
            self._tx(*statements, ("INSERT OR REPLACE INTO meta VALUES ('revision', ?)", (revision,)))
        except BaseException as exc:
            self.broken = exc
            raise InternalError(f"metadata store write failed: {exc}") from exc
        self.durable_revision = revision
        for w in self._watchers:
            try:
                w(revision, changes)
            except Exception:  # a watcher's bug must not fail the commit
                log.exception("definitions watcher failed")
        return revision

    @staticmethod
    def _log_failure(fut: Future[int]) -> None:
        exc = fut.exception()
        if exc is not None:
            log.error("definitions not persisted: %s", exc)

    def _tx(self, *statements: Statement) -> None:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            for sql, params in statements:
                self.db.execute(sql, params)
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # ---- restart -------------------------------------------------------------------------------
    def load(self) -> dict[str, list[dict[str, Any]]]:
        """Everything committed so far (waits for the writer: reads see every earlier commit)."""
        return self._writer.submit(self._load).result()

    def _load(self) -> dict[str, list[dict[str, Any]]]:
        q = self.db.execute
        return {
            "access_keys": [{"key_id": k, "user": u, "secret": s}
                            for k, u, s in q("SELECT key_id, user, secret FROM access_keys ORDER BY key_id")],
            "vhosts": [{"name": n, "description": d, "tags": json.loads(t)}
                       for n, d, t in q("SELECT name, description, tags FROM vhosts ORDER BY name")],
            "users": [{"name": n, "password_hash": h, "tags": json.loads(t)}
                      for n, h, t in q("SELECT name, password_hash, tags FROM users ORDER BY name")],
            "permissions": [{"user": u, "vhost": v, "configure": c, "write": w, "read": r}
                            for u, v, c, w, r in q("SELECT * FROM permissions ORDER BY user, vhost")],
            "exchanges": [{"name": n, "vhost": v, "type": t, "durable": bool(d), "auto_delete": bool(a),
                           "internal": bool(i), "arguments": decode_table(args)}
                          for v, n, t, d, a, i, args in q("SELECT * FROM exchanges ORDER BY vhost, name")],
            "queues": [{"name": n, "vhost": v, "durable": bool(d), "auto_delete": bool(a),
                        "arguments": decode_table(args)}
                       for v, n, d, a, args in q("SELECT * FROM queues ORDER BY vhost, name")],
            "bindings": [{"source": s, "vhost": v, "destination": d, "destination_type": dt, "routing_key": rk,
                          "arguments": decode_table(args)}
                         for v, s, d, dt, rk, _k, args in q(
                             "SELECT * FROM bindings ORDER BY vhost, source, destination, routing_key, args_key")],
            "policies": [{"vhost": v, "name": n, "pattern": p, "apply-to": a, "priority": pr,
                          "definition": json.loads(d)}
                         for v, n, p, a, pr, d in q("SELECT * FROM policies ORDER BY vhost, name")],
        }

    def close(self) -> None:
        """Finish every submitted commit, then close."""
        self._writer.shutdown(wait=True)
        self.db.close()
