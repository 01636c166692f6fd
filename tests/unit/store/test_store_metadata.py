"""One suite for the metadata stores: memory and SQLite (restart = reopen the database)."""

from __future__ import annotations

import datetime
import decimal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from store_fakes import FakeQueue

from haremq.store.api import AccessStore, Change, DefinitionsSource, MetadataStore
from haremq.store.memory import MemoryMetadataStore
from haremq.store.metadata import SqliteMetadataStore


class FakeExchange:
    kind = "exchange"

    def __init__(self, name: str, type_: str = "direct", arguments: dict[str, Any] | None = None) -> None:
        self.name, self.type, self.arguments = name, type_, arguments or {}
        self.durable, self.auto_delete, self.internal = True, False, False


Kit = tuple[Any, Callable[[Any], Any]]


@pytest.fixture(params=["memory", "sqlite"])
def kit(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Kit]:
    if request.param == "memory":
        yield MemoryMetadataStore(), lambda s: s
        return
    opened: list[SqliteMetadataStore] = [SqliteMetadataStore(tmp_path)]

    def restart(s: Any) -> Any:
        s.close()
        opened.append(SqliteMetadataStore(tmp_path))
        return opened[-1]

    yield opened[0], restart
    opened[-1].close()


def test_definitions_roundtrip(kit: Kit) -> None:
    store, restart = kit
    args = {"x-match": "all", "n": 5, "b": b"\x01", "d": decimal.Decimal("2.5"),
            "t": datetime.datetime(2024, 5, 6, tzinfo=datetime.UTC), "l": [1, {"k": None}]}
    store.save_vhost("/", "default", ["prod"])
    store.save_user("guest", "hash$1", ["administrator"])
    store.save_permission("guest", "/", ".*", ".*", ".*")
    store.save_exchange("/", FakeExchange("logs", "headers", args))
    q = FakeQueue("work")
    q.arguments = {"x-max-priority": 10}
    store.save_queue("/", q)
    store.save_binding("/", "logs", q, "rk", args)
    store.save_binding("/", "logs", q, "rk", {})
    store.save_binding("/", "logs", FakeExchange("other"), "", {})
    store.save_exchange("/", FakeExchange("logs", "headers", args))  # saving twice replaces
    store = restart(store)
    d = store.load()
    assert d["vhosts"] == [{"name": "/", "description": "default", "tags": ["prod"]}]
    assert d["users"] == [{"name": "guest", "password_hash": "hash$1", "tags": ["administrator"]}]
    assert d["permissions"] == [{"user": "guest", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}]
    assert d["exchanges"] == [{"name": "logs", "vhost": "/", "type": "headers", "durable": True,
                               "auto_delete": False, "internal": False, "arguments": args}]
    assert d["queues"] == [{"name": "work", "vhost": "/", "durable": True, "auto_delete": False,
                            "arguments": {"x-max-priority": 10}}]
    key = sorted((b["destination"], b["destination_type"], repr(b["arguments"])) for b in d["bindings"])
    assert key == sorted([("work", "queue", repr(args)), ("work", "queue", "{}"), ("other", "exchange", "{}")])


def test_deletes_cascade_to_bindings(kit: Kit) -> None:
    store, restart = kit
    q, q2 = FakeQueue("a"), FakeQueue("b")
    for x in (q, q2):
        store.save_queue("/", x)
    store.save_exchange("/", FakeExchange("e"))
    store.save_binding("/", "e", q, "k1", {})
    store.save_binding("/", "e", q2, "k2", {})
    store.save_binding("/", "e", q2, "k3", {"a": 1})
    store.delete_binding("/", "e", q2, "k3", {"a": 1})
    store.delete_queue("/", "a")
    store = restart(store)
    d = store.load()
    assert [b["routing_key"] for b in d["bindings"]] == ["k2"]
    assert [x["name"] for x in d["queues"]] == ["b"]
    store.delete_exchange("/", "e")
    store.save_user("u", "h")
    store.save_permission("u", "/", "", "", "")
    store.save_permission("u", "v", "", "", "")
    store.delete_permission("u", "v")
    store.delete_user("u")
    store.save_vhost("v2")
    store.save_queue("v2", FakeQueue("x"))
    store.delete_vhost("v2")
    store = restart(store)
    d = store.load()
    assert d["bindings"] == [] and d["exchanges"] == [] and d["users"] == [] and d["permissions"] == []
    assert [x["name"] for x in d["queues"]] == ["b"] and d["vhosts"] == []


def test_access_keys_persist_and_go_with_their_user(kit: Kit) -> None:
    store, restart = kit
    store.save_user("u", "h")
    store.save_user("w", "h")
    store.commit([Change("put", "access_key", ("AK1",), {"user": "u", "secret": "s1"}),
                  Change("put", "access_key", ("AK2",), {"user": "w", "secret": "s2"})])
    store.commit([Change("put", "access_key", ("AK1",), {"user": "w", "secret": "s3"})])  # moves the key
    store = restart(store)
    assert store.load()["access_keys"] == [{"key_id": "AK1", "user": "w", "secret": "s3"},
                                           {"key_id": "AK2", "user": "w", "secret": "s2"}]
    store.delete_user("w")
    store = restart(store)
    assert store.load()["access_keys"] == []


def test_every_commit_gets_the_next_revision_and_it_survives_a_restart(kit: Kit) -> None:
    store, restart = kit
    start = store.revision
    revs = [store.commit([Change("put", "vhost", (f"v{i}",), {})]).result(10) for i in range(3)]
    store.save_user("u", "h")
    assert revs == [start + 1, start + 2, start + 3] and store.revision == start + 4
    store = restart(store)
    assert store.revision == start + 4
    assert store.commit([Change("delete", "vhost", ("v0",))]).result(10) == start + 5


def test_sqlite_commits_run_on_the_writer_thread_and_never_block_the_caller(tmp_path: Path) -> None:
    """The event loop calls save_* on a declare: SQLite (synchronous=FULL) must not run on it."""
    store = SqliteMetadataStore(tmp_path)
    real, gate, threads = store.db, threading.Event(), set()

    class SlowDisk:
        def execute(self, *args: Any) -> Any:
            threads.add(threading.get_ident())
            gate.wait(5)  # a slow fsync: the caller must not wait for it
            return real.execute(*args)

    store.db = SlowDisk()  # type: ignore[assignment]
    started = time.monotonic()
    store.save_queue("/", FakeQueue("q"))
    store.save_exchange("/", FakeExchange("x"))
    pending = store.pending()
    assert time.monotonic() - started < 1 and pending is not None and not pending.done()
    gate.set()
    assert pending.result(10) == store.revision
    assert threads and threading.get_ident() not in threads
    store.db = real
    assert [q["name"] for q in store.load()["queues"]] == ["q"]
    store.close()


def test_sqlite_uses_wal(tmp_path: Path) -> None:
    s = SqliteMetadataStore(tmp_path)
    assert s.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    s.close()


def _protocols_hold(s: SqliteMetadataStore, m: MemoryMetadataStore) -> list[Any]:
    """Checked by mypy: both metadata stores implement every metadata protocol."""
    a: list[MetadataStore] = [s, m]
    b: list[AccessStore] = [s, m]
    c: list[DefinitionsSource] = [s, m]
    return [a, b, c]


def test_policies_persist_are_replaced_deleted_and_go_with_their_vhost(kit: Kit) -> None:
    store, restart = kit
    defn = {"pattern": "^q", "apply-to": "queues", "priority": 2,
            "definition": {"max-length": 5, "overflow": "drop-head"}}
    store.commit([Change("put", "vhost", ("pv",), {}), Change("put", "policy", ("pv", "p1"), defn),
                  Change("put", "policy", ("/", "p2"), {**defn, "priority": 0})])
    store.commit([Change("put", "policy", ("pv", "p1"), {**defn, "pattern": "^r"})])  # replaces
    store = restart(store)
    assert store.load()["policies"] == [
        {"vhost": "/", "name": "p2", "pattern": "^q", "apply-to": "queues", "priority": 0,
         "definition": {"max-length": 5, "overflow": "drop-head"}},
        {"vhost": "pv", "name": "p1", "pattern": "^r", "apply-to": "queues", "priority": 2,
         "definition": {"max-length": 5, "overflow": "drop-head"}}]
    store.commit([Change("delete", "vhost", ("pv",)), Change("delete", "policy", ("/", "p2"))])
    store = restart(store)
    assert store.load()["policies"] == []
