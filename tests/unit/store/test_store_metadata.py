"""One suite for the metadata stores: memory and SQLite (restart = reopen the database)."""

from __future__ import annotations

import datetime
import decimal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from store_fakes import FakeQueue

from haremq.store.api import AccessStore, DefinitionsSource, MetadataStore
from haremq.store.memory import MemoryMetadataStore
from haremq.store.metadata import SqliteMetadataStore


class FakeExchange:
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
