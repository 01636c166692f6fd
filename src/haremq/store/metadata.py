"""``SqliteMetadataStore``: durable definitions (vhosts, users, permissions, exchanges, queues,
bindings) in ``DATA_DIR/metadata.sqlite3``.

SQLite in WAL mode with ``synchronous=FULL``: each save is one transaction and is on disk when the
call returns (declarations are rare; a declare-ok must not be forgotten while the queue's
messages survive). Argument tables are stored in the store's lossless tagged encoding
(records.encode_table), so AMQP types such as bytes, Decimal and datetime round-trip.

``load()`` returns the same dict shapes as ``MemoryMetadataStore.load()``; the shared suite in
tests/unit/store checks both. Single-threaded: use it from the event-loop thread.
"""

from __future__ import annotations

import json
import os
import sqlite3
from typing import Any

from haremq.store.records import decode_table, encode_table

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS vhosts (
    name TEXT PRIMARY KEY, description TEXT NOT NULL, tags TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY, password_hash TEXT NOT NULL, tags TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS permissions (
    user TEXT NOT NULL, vhost TEXT NOT NULL, configure TEXT NOT NULL, write TEXT NOT NULL, read TEXT NOT NULL,
    PRIMARY KEY (user, vhost));
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
"""


def _args_key(arguments: dict[str, Any]) -> bytes:
    return encode_table(dict(sorted(arguments.items())))


class SqliteMetadataStore:
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
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _tx(self, *statements: tuple[str, tuple[Any, ...]]) -> None:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            for sql, params in statements:
                self.db.execute(sql, params)
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # ---- exchanges, queues, bindings -----------------------------------------------------------
    def save_exchange(self, vhost: str, exchange: Any) -> None:
        self._tx(("INSERT OR REPLACE INTO exchanges VALUES (?, ?, ?, ?, ?, ?, ?)",
                  (vhost, exchange.name, exchange.type, int(bool(exchange.durable)),
                   int(bool(exchange.auto_delete)), int(bool(exchange.internal)),
                   encode_table(dict(exchange.arguments or {})))))

    def delete_exchange(self, vhost: str, name: str) -> None:
        self._tx(("DELETE FROM exchanges WHERE vhost = ? AND name = ?", (vhost, name)),
                 ("DELETE FROM bindings WHERE vhost = ? AND (source = ? OR destination = ?)", (vhost, name, name)))

    def save_queue(self, vhost: str, queue: Any) -> None:
        self._tx(("INSERT OR REPLACE INTO queues VALUES (?, ?, ?, ?, ?)",
                  (vhost, queue.name, int(bool(queue.durable)), int(bool(queue.auto_delete)),
                   encode_table(dict(queue.arguments or {})))))

    def delete_queue(self, vhost: str, name: str) -> None:
        self._tx(("DELETE FROM queues WHERE vhost = ? AND name = ?", (vhost, name)),
                 ("DELETE FROM bindings WHERE vhost = ? AND destination = ?", (vhost, name)))

    def save_binding(self, vhost: str, source: str, dest: Any, routing_key: str,
                     arguments: dict[str, Any]) -> None:
        dtype = "queue" if hasattr(dest, "consumers") else "exchange"
        self._tx(("INSERT OR REPLACE INTO bindings VALUES (?, ?, ?, ?, ?, ?, ?)",
                  (vhost, source, dest.name, dtype, routing_key, _args_key(arguments), encode_table(arguments))))

    def delete_binding(self, vhost: str, source: str, dest: Any, routing_key: str,
                       arguments: dict[str, Any]) -> None:
        self._tx(("DELETE FROM bindings WHERE vhost = ? AND source = ? AND destination = ? AND routing_key = ?"
                  " AND args_key = ?", (vhost, source, dest.name, routing_key, _args_key(arguments))))

    # ---- vhosts, users, permissions ------------------------------------------------------------
    def save_vhost(self, name: str, description: str = "", tags: list[str] | None = None) -> None:
        self._tx(("INSERT OR REPLACE INTO vhosts VALUES (?, ?, ?)", (name, description, json.dumps(tags or []))))

    def delete_vhost(self, name: str) -> None:
        self._tx(*[(f"DELETE FROM {t} WHERE {c} = ?", (name,)) for t, c in (
            ("vhosts", "name"), ("exchanges", "vhost"), ("queues", "vhost"), ("bindings", "vhost"),
            ("permissions", "vhost"))])

    def save_user(self, name: str, password_hash: str, tags: list[str] | None = None) -> None:
        self._tx(("INSERT OR REPLACE INTO users VALUES (?, ?, ?)", (name, password_hash, json.dumps(tags or []))))

    def delete_user(self, name: str) -> None:
        self._tx(("DELETE FROM users WHERE name = ?", (name,)), ("DELETE FROM permissions WHERE user = ?", (name,)))

    def save_permission(self, user: str, vhost: str, configure: str, write: str, read: str) -> None:
        self._tx(("INSERT OR REPLACE INTO permissions VALUES (?, ?, ?, ?, ?)", (user, vhost, configure, write, read)))

    def delete_permission(self, user: str, vhost: str) -> None:
        self._tx(("DELETE FROM permissions WHERE user = ? AND vhost = ?", (user, vhost)))

    # ---- restart -------------------------------------------------------------------------------
    def load(self) -> dict[str, list[dict[str, Any]]]:
        q = self.db.execute
        return {
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
        }

    def close(self) -> None:
        self.db.close()
