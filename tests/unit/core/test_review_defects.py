"""Regression tests for defects found in review (core)."""

from __future__ import annotations

from pathlib import Path

from haremq.core.broker import Broker
from haremq.core.message import Message, Properties
from haremq.store.file import FileQueueStore
from haremq.store.memory import MemoryMetadataStore
from haremq.testing import FakeClock, session_for

P = Properties(delivery_mode=2)


def test_timer_heap_stays_bounded_under_steady_consumption() -> None:
    clock = FakeClock()
    b = Broker(clock=clock)
    s, sink = session_for(b)
    b.queue_declare(s, "q", arguments={"x-message-ttl": 3_600_000, "x-expires": 3_600_000})
    b.consume(s, "q", "c", no_ack=True)
    for i in range(5000):
        b.publish(s, "", Message("", "q", Properties(), b"x"))
        b.publish(s, "", Message("", "q", Properties(), b"y"))
        b.flush()
        if i % 100 == 0:
            clock.advance(0.01)
            b.run_timers()
    assert len(sink.deliveries) == 10000
    assert len(b._timers) < 100


def test_nack_of_lease_from_deleted_queue_keeps_the_new_queues_messages(tmp_path: Path) -> None:
    store = FileQueueStore(tmp_path, fsync="off", segment_size=1 << 20)
    b = Broker(clock=FakeClock(), store=store, metadata=MemoryMetadataStore())
    s, _ = session_for(b)
    b.queue_declare(s, "q", durable=True)
    b.publish(s, "", Message("", "q", P, b"old"))
    got = b.get(s, "q", no_ack=False)
    assert got is not None
    b.queue_delete(s, "q")
    b.queue_declare(s, "q", durable=True)
    b.publish(s, "", Message("", "q", P, b"new"))  # same seq as the old lease's entry
    s.nack(got[0], multiple=False, requeue=False)
    recovered = store.recover()
    assert [r.body for r in recovered[("/", "q")]] == [b"new"]
    store.close()


def test_sqs_purge_keeps_amqp_get_leases_counted() -> None:
    from haremq.server.sqs_service import SqsService

    b = Broker(clock=FakeClock())
    user = b.users.add("guest", "guest")
    sq = SqsService(b).create(user, "sq", {}, {})
    s, _ = session_for(b, user)
    b.publish(s, "", Message("", "sq", Properties(), b"a"))
    b.publish(s, "", Message("", "sq", Properties(), b"b"))
    got = b.get(s, "sq", no_ack=False)  # an AMQP lease, not an SQS one
    assert got is not None
    assert len(sq.receive(1, None)) == 1
    assert sq.queue.unacked == 2
    sq.purge()
    assert sq.queue.unacked == 1  # the AMQP lease is still out
    s.ack(got[0], multiple=False)
    assert sq.queue.unacked == 0


def test_x_expires_does_not_poll_every_millisecond_while_consumed() -> None:
    clock = FakeClock()
    b = Broker(clock=clock)
    s, _ = session_for(b)
    q = b.queue_declare(s, "q", arguments={"x-expires": 1000})
    b.consume(s, "q", "c")
    fired = 0
    on_timer = q.on_timer

    def counting(now: float) -> None:
        nonlocal fired
        fired += 1
        on_timer(now)

    q.on_timer = counting  # type: ignore[method-assign]
    for _ in range(3000):  # 3 s in 1 ms steps, a consumer attached all along
        clock.advance(0.001)
        b.run_timers()
    assert fired <= 5
    s.cancel("c")
    clock.advance(1.001)
    b.run_timers()
    clock.advance(0.01)
    b.run_timers()
    assert "q" not in b.vhosts["/"].queues  # still expires once unused
