"""Protocol-neutral queue features (receiver, groups, redrive) and the one lease model, driven directly."""

from __future__ import annotations

from haremq.core.broker import Broker
from haremq.core.queue import Queue
from haremq.core.receiver import Receiver
from haremq.core.redrive import Redrive
from haremq.message import Message, Properties
from haremq.testing import FakeClock, session_for

GROUP = "x-group"


def setup(clock: FakeClock) -> tuple[Broker, Queue]:
    b = Broker(clock=clock)
    s, _ = session_for(b)
    b.queue_declare(s, "q")
    return b, b.vhosts["/"].queues["q"]


def msg(body: str, group: str | None = None) -> Message:
    return Message("", "q", Properties(headers={GROUP: group} if group else None, message_id=body), body.encode())


def test_consumer_get_and_receive_leases_are_counted_by_the_queue() -> None:
    clock = FakeClock()
    b, q = setup(clock)
    r = q.receiver = Receiver(q)
    s, sink = session_for(b)
    for body in ("a", "b", "c"):
        q.enqueue(msg(body))
    got = b.get(s, "q", no_ack=False)
    (polled,) = r.receive(1, 10.0)
    c = b.consume(s, "q", "c1")
    b.flush()
    assert got is not None and len(sink.deliveries) == 1
    assert q.unacked == 3 and c.unacked == 1 and q.delivered == 3
    assert polled.owner is None and polled.deadline == clock.monotonic() + 10.0 and polled.delivery_count == 1
    lease = s.leases[sink.deliveries[0][1]]
    assert lease.owner is c and lease.deadline is None
    s.nack(sink.deliveries[0][1], False, requeue=True)  # back to the queue, then to the consumer again
    b.flush()
    assert q.unacked == 3 and c.unacked == 1 and q.redelivered == 1 and sink.deliveries[-1][2] is True
    clock.advance(10)
    b.run_timers()  # the receive's deadline passed: the entry came back, and went to the consumer
    assert q.unacked == 3 and c.unacked == 2 and r.visible_count == 0 and q.redelivered == 2
    assert polled.entry.seq not in r.by_seq
    s.ack(0, multiple=True)
    assert q.unacked == 0 and c.unacked == 0 and q.acked == 3


def test_message_groups_serve_one_receiver_per_group_in_order() -> None:
    clock = FakeClock()
    _b, q = setup(clock)
    r = q.receiver = Receiver(q, group_header=GROUP)
    for body, g in (("a1", "A"), ("a2", "A"), ("b1", "B")):
        r.send(msg(body, g), 0, None)
    first = r.receive(1, 5.0)
    assert [x.entry.msg.body for x in first] == [b"a1"]
    assert [x.entry.msg.body for x in r.receive(10, 5.0)] == [b"b1"]  # A is locked: a2 waits in its backlog
    assert r.backlog_count == 1 and r.visible_count == 1
    r.delete(first[0].entry.seq)
    assert [x.entry.msg.body for x in r.receive(10, 5.0)] == [b"a2"]


def test_redrive_moves_an_entry_received_too_often_to_the_target_queue() -> None:
    clock = FakeClock()
    b, q = setup(clock)
    s, _ = session_for(b)
    b.queue_declare(s, "dead")
    r = q.receiver = Receiver(q)
    r.redrive = Redrive("dead", 1, "x-from")
    r.send(msg("p"), 0, None)
    assert len(r.receive(1, 1.0)) == 1
    clock.advance(1)
    b.run_timers()
    assert r.receive(1, 1.0) == []  # the second receive would exceed max_deliveries: moved instead
    dead = b.vhosts["/"].queues["dead"]
    head = dead.ready.peek()
    assert head is not None and head.msg.props.headers == {"x-from": "q"} and q.message_count == 0


def test_dedup_key_within_window_returns_the_first_send() -> None:
    clock = FakeClock()
    _b, q = setup(clock)
    r = q.receiver = Receiver(q, dedup_window=60.0)
    first = r.send(msg("x"), 0, "k")
    assert r.send(msg("y"), 0, "k") == first and q.message_count == 1
    clock.advance(60)
    assert r.send(msg("z"), 0, "k") != first and q.message_count == 2
