"""Paging: beyond ``page_out_bytes`` a durable queue keeps persistent bodies only in the store."""

from __future__ import annotations

from pathlib import Path

from haremq.core.broker import Broker
from haremq.core.queue import PAGED
from haremq.message import Message, Properties
from haremq.store.file import FileQueueStore
from haremq.store.memory import MemoryMetadataStore
from haremq.testing import FakeClock, session_for

P = Properties(delivery_mode=2)


def make(tmp: Path) -> tuple[Broker, FileQueueStore]:
    store = FileQueueStore(tmp, fsync="off", segment_size=1 << 20)
    b = Broker(clock=FakeClock(), store=store, metadata=MemoryMetadataStore())
    b.page_out_bytes = 1000
    return b, store


def test_backlog_pages_out_and_comes_back_in_order(tmp_path: Path) -> None:
    b, store = make(tmp_path)
    s, _sink = session_for(b)
    q = b.queue_declare(s, "big", durable=True)
    bodies = [f"{i:04d}".encode() * 25 for i in range(100)]  # 100 B each: 10 fit in the budget
    for body in bodies:
        b.publish(s, "", Message("", "big", P, body))
    paged = sum(1 for e in q.entries() if e.msg is PAGED)
    assert paged >= 85
    assert q.ready.bytes == 100 * 100  # accounting uses the known size, not the stub
    b.publish(s, "", Message("", "big", Properties(), b"transient"))  # transient never pages out
    assert next(reversed(list(q.entries()))).msg.body == b"transient"
    got = []
    while (g := b.get(s, "big", no_ack=True)) is not None:
        got.append(g[1].msg.body)
    assert got == [*bodies, b"transient"]
    store.close()


def test_paged_messages_dead_letter_with_their_body(tmp_path: Path) -> None:
    b, store = make(tmp_path)
    s, _ = session_for(b)
    b.queue_declare(s, "dlq", durable=True)
    q = b.queue_declare(s, "ttl", durable=True, arguments={"x-message-ttl": 1000, "x-dead-letter-exchange": "",
                                                          "x-dead-letter-routing-key": "dlq"})
    for i in range(30):
        b.publish(s, "", Message("", "ttl", P, bytes([65 + i % 26]) * 100))
    assert any(e.msg is PAGED for e in q.entries())
    b.clock.advance(2)  # type: ignore[attr-defined]
    b.run_timers()
    dead = []
    while (g := b.get(s, "dlq", no_ack=True)) is not None:
        dead.append(g[1].msg.body)
    assert dead == [bytes([65 + i % 26]) * 100 for i in range(30)]
    store.close()


def test_restart_restores_a_paged_backlog(tmp_path: Path) -> None:
    b, store = make(tmp_path)
    s, _ = session_for(b)
    b.queue_declare(s, "q", durable=True)
    bodies = [f"m{i:03d}".encode() * 20 for i in range(50)]
    for body in bodies:
        b.publish(s, "", Message("", "q", P, body))
    store.close()
    b2, store2 = make(tmp_path)
    s2, _ = session_for(b2)
    b2.restore_definitions({"queues": [{"vhost": "/", "name": "q", "durable": True, "auto_delete": False,
                                        "arguments": {}}]})
    assert b2.restore_messages(store2.recover(load_bodies=False, body_budget=1000)) == []
    q2 = b2.vhosts["/"].queues["q"]
    assert sum(1 for e in q2.entries() if e.msg is PAGED) >= 35
    got = []
    while (g := b2.get(s2, "q", no_ack=True)) is not None:
        got.append(g[1].msg.body)
    assert got == bodies
    b2.publish(s2, "", Message("", "q", P, b"new"))  # seq continues above the recovered ones
    assert b2.get(s2, "q", no_ack=True)[1].msg.body == b"new"  # type: ignore[index]
    store2.close()
