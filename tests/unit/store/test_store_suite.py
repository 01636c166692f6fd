"""One suite, every queue store (STYLE rule 8): memory, and file x fsync policy.

``restart(store)`` is what a node restart does to that store: the file store is closed and a new
one opened on the same directory; the memory store "restarts" in place (a really new memory
store recovers nothing, tested separately), so the same assertions hold for both.
"""

from __future__ import annotations

import datetime
import decimal
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from store_fakes import FakeEntry, FakeProps, FakeQueue, props_dict

from haremq.errors import NotFound
from haremq.store.api import RecoverableQueueStore
from haremq.store.crypto import load_key_ring, new_key_line
from haremq.store.file import FileQueueStore
from haremq.store.memory import MemoryQueueStore

Restart = Callable[[Any], Any]

KINDS = ["memory", "file-always", "file-interval", "file-off", "file-encrypted"]


def _factory(kind: str, path: str) -> tuple[Any, Restart]:
    if kind == "memory":
        return MemoryQueueStore(), lambda s: s

    policy = kind.split("-", 1)[1]
    cipher = None
    if policy == "encrypted":  # encryption at rest (store/crypto.py), interval commits
        policy, cipher = "interval", load_key_ring(key_text=f"{new_key_line(3)}, {new_key_line(7)}")

    def make() -> FileQueueStore:
        return FileQueueStore(path, fsync=policy, segment_size=16 * 1024, min_segment_size=4 * 1024,
                              compact_min_bytes=2048, cipher=cipher)

    def restart(s: Any) -> Any:
        s.close()
        fresh = make()
        fresh.recover()
        return fresh

    store = make()
    store.recover()
    return store, restart


@pytest.fixture(params=KINDS)
def kit(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[tuple[Any, Restart]]:
    store, restart = _factory(request.param, str(tmp_path))
    holder = [store]

    def _restart(s: Any) -> Any:
        holder[0] = restart(s)
        return holder[0]

    yield store, _restart
    holder[0].close()


def seqs(store: Any, q: FakeQueue) -> list[int]:
    return [m.seq for m in store.recover().get((q.vhost.name, q.name), [])]


def test_publish_recover_roundtrip(kit: tuple[Any, Restart]) -> None:
    store, restart = kit
    q = FakeQueue("orders")
    props = FakeProps(content_type="application/json", headers={
        "s": "str", "i": -5, "big": 2**70, "f": 1.5, "b": b"\x00\xff", "t": True, "n": None,
        "l": [1, "a", [b"x"]], "m": {"k": {"deep": 1}}, "d": decimal.Decimal("1.25"),
        "dt": datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)},
        priority=3, correlation_id="c", reply_to="r", expiration="60000", message_id="m1",
        timestamp=1700000000, type="t", user_id="guest", app_id="app", cluster_id="cl", content_encoding="gzip")
    entries = [q.entry(b"body-%d" % i, props=props if i == 1 else FakeProps(), routing_key=f"rk.{i}")
               for i in range(5)]
    for e in entries:
        store.publish(q, e)
    store = restart(store)
    got = store.recover()[("/", "orders")]
    assert [m.seq for m in got] == [1, 2, 3, 4, 5]
    for m, e in zip(got, entries, strict=True):
        assert (m.exchange, m.routing_key, m.body, m.redelivered) == ("ex", e.msg.routing_key, e.msg.body, False)
        assert m.props == props_dict(e.msg.props)
    assert store.last_seq("/", "orders") == 5


def test_remove_and_unknown_are_noops(kit: tuple[Any, Restart]) -> None:
    store, restart = kit
    q = FakeQueue("q")
    es = [q.entry() for _ in range(4)]
    for e in es:
        store.publish(q, e)
    store.remove(q, es[1])
    store.remove(q, es[1])  # twice
    store.remove(q, FakeEntry(99, es[0].msg))  # never stored
    store.remove(FakeQueue("other"), es[0])  # unknown queue
    store.mark_delivered(FakeQueue("other"), es[0])
    store = restart(store)
    assert seqs(store, q) == [1, 3, 4]


def test_delivered_comes_back_redelivered(kit: tuple[Any, Restart]) -> None:
    store, restart = kit
    q = FakeQueue("q")
    es = [q.entry() for _ in range(3)]
    for e in es:
        store.publish(q, e)
    store.mark_delivered(q, es[0])
    store.mark_delivered(q, es[0])
    store.mark_delivered(q, es[2])
    store.remove(q, es[2])
    store = restart(store)
    got = store.recover()[("/", "q")]
    assert [(m.seq, m.redelivered) for m in got] == [(1, True), (2, False)]


def test_delete_queue_keeps_others(kit: tuple[Any, Restart]) -> None:
    store, restart = kit
    a, b = FakeQueue("a"), FakeQueue("b", vhost="v2")
    store.publish(a, a.entry())
    store.publish(b, b.entry())
    store.delete_queue(a)
    store.delete_queue(a)
    store = restart(store)
    rec = store.recover()
    assert ("/", "a") not in rec
    assert [m.seq for m in rec[("v2", "b")]] == [1]
    # a queue of the same name declared again starts clean
    a2 = FakeQueue("a")
    store.publish(a2, a2.entry(b"new"))
    assert [m.body for m in store.recover()[("/", "a")]] == [b"new"]


def test_read_body(kit: tuple[Any, Restart]) -> None:
    store, restart = kit
    q = FakeQueue("q")
    es = [q.entry(bytes([i]) * (100 * i + 1)) for i in range(1, 6)]
    for e in es:
        store.publish(q, e)
    store = restart(store)
    assert all(m.body is None for m in store.recover(load_bodies=False)[("/", "q")])
    for e in es:
        assert store.read_body(q, e.seq) == e.msg.body
    with pytest.raises(NotFound):
        store.read_body(q, 42)


@pytest.mark.parametrize("vhost,name", [("", ""), ("/", "a/b"), ("..", "."), ("v", "ünï cødé ✓"),
                                        ("v", "x" * 255), ("%", "%2F")])
def test_odd_names(kit: tuple[Any, Restart], vhost: str, name: str) -> None:
    store, restart = kit
    q = FakeQueue(name, vhost=vhost)
    store.publish(q, q.entry(b"hi"))
    other = FakeQueue(name + "2", vhost=vhost)
    store.publish(other, other.entry(b"there"))
    store = restart(store)
    rec = store.recover()
    assert [m.body for m in rec[(vhost, name)]] == [b"hi"]
    assert [m.body for m in rec[(vhost, name + "2")]] == [b"there"]


def test_publish_of_recovered_seq_is_idempotent(kit: tuple[Any, Restart]) -> None:
    store, restart = kit
    q = FakeQueue("q")
    e = q.entry()
    store.publish(q, e)
    store = restart(store)
    store.publish(q, e)  # the node puts a recovered message back through the normal path
    store = restart(store)
    assert seqs(store, q) == [1]


# ---- a random walk against a model, with restarts ----------------------------------------------
OPS = st.lists(st.one_of(
    st.tuples(st.just("publish"), st.integers(0, 3000)),
    st.tuples(st.just("remove"), st.integers(0, 10_000)),
    st.tuples(st.just("deliver"), st.integers(0, 10_000)),
    st.tuples(st.just("restart"), st.just(0)),
    st.tuples(st.just("maintain"), st.just(0)),
), min_size=10, max_size=150)


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=100, deadline=None)
@given(ops=OPS)
def test_random_walk_matches_model(kind: str, ops: list[tuple[str, int]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store, restart = _factory(kind, tmp)
        try:
            _walk(store, restart, ops)
        finally:
            store.close()


def _walk(store: Any, restart: Restart, ops: list[tuple[str, int]]) -> None:
    q = FakeQueue("walk")
    model: dict[int, tuple[bytes, bool]] = {}
    entries: dict[int, FakeEntry] = {}
    for op, n in ops:
        if op == "publish":
            e = q.entry(bytes([n % 251]) * n)
            store.publish(q, e)
            model[e.seq] = (e.msg.body, False)
            entries[e.seq] = e
        elif op in ("remove", "deliver") and model:
            seq = sorted(model)[n % len(model)]
            if op == "remove":
                store.remove(q, entries[seq])
                del model[seq]
            else:
                store.mark_delivered(q, entries[seq])
                model[seq] = (model[seq][0], True)
        elif op == "restart":
            store = restart(store)
        elif op == "maintain" and hasattr(store, "maintain"):
            store.maintain()
    store = restart(store)
    got = store.recover().get((q.vhost.name, q.name), [])
    try:
        assert [(m.seq, m.body, m.redelivered) for m in got] == [(s, b, d) for s, (b, d) in sorted(model.items())]
        assert store.last_seq(q.vhost.name, q.name) == q.next_seq - 1
    finally:
        store.close()


def test_new_memory_store_recovers_nothing() -> None:
    s = MemoryQueueStore()
    q = FakeQueue("q")
    s.publish(q, q.entry())
    assert MemoryQueueStore().recover() == {}


def _protocols_hold(f: FileQueueStore, m: MemoryQueueStore) -> list[RecoverableQueueStore]:
    """Checked by mypy: both stores implement the protocol the node integrates against."""
    return [f, m]
