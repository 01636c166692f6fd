"""The SQS service over the core queue features, with a FakeClock: leases, delays, FIFO groups, dedup, redrive."""

from __future__ import annotations

import pytest

from haremq.core.broker import Broker
from haremq.core.dedup import DedupWindow
from haremq.core.lease import Lease, TimedLeases
from haremq.core.queue import Entry
from haremq.errors import (
    InvalidAttributeName,
    InvalidAttributeValue,
    InvalidParameterValue,
    MissingParameter,
    QueueDoesNotExist,
    QueueNameExists,
    ReceiptHandleIsInvalid,
)
from haremq.message import Message, Properties
from haremq.protocol.sqs.attributes import DEDUP_HEADER, GROUP_HEADER
from haremq.security.users import UserStore
from haremq.server.sqs_service import SqsQueue, SqsService
from haremq.testing.fakes import FakeClock, session_for


@pytest.fixture
def env() -> tuple[Broker, FakeClock, SqsService]:
    clock = FakeClock()
    users = UserStore()
    users.add("u", "p")
    b = Broker(clock=clock, users=users)
    return b, clock, SqsService(b)


def msg(body: str, group: str | None = None, dedup: str | None = None) -> Message:
    headers = {}
    if group:
        headers[GROUP_HEADER] = group
    if dedup:
        headers[DEDUP_HEADER] = dedup
    return Message("", "q", Properties(headers=headers or None, message_id=body, delivery_mode=2), body.encode())


def make(env: tuple[Broker, FakeClock, SqsService], name: str = "q", **attrs: str) -> SqsQueue:
    b, _, svc = env
    return svc.create(b.users.users["u"], name, dict(attrs), {})


def bodies(leases: list) -> list[str]:  # type: ignore[type-arg]
    return [lease.entry.msg.body.decode() for lease in leases]


def test_visibility_timeout_returns_message_with_higher_count(env) -> None:  # type: ignore[no-untyped-def]
    b, clock, _ = env
    sq = make(env, VisibilityTimeout="10")
    sq.send(msg("a"), None)
    (lease,) = sq.receive(10, None)
    assert sq.receive(10, None) == [] and sq.queue.unacked == 1
    clock.advance(9.9)
    b.run_timers()
    assert sq.receive(10, None) == []
    clock.advance(0.2)
    b.run_timers()
    assert sq.queue.unacked == 0 and sq.visible_count == 1
    (again,) = sq.receive(10, None)
    assert again.entry.delivery_count == 2 and sq.receipt(again) != sq.receipt(lease)
    sq.delete(sq.receipt(lease))  # the older handle of the message in flight deletes it (AWS)
    assert sq.queue.unacked == 0 and sq.queue.acked == 1
    sq.delete(sq.receipt(again))  # already gone: a no-op success
    assert sq.queue.unacked == 0 and sq.queue.acked == 1


def test_change_visibility_and_bad_handles(env) -> None:  # type: ignore[no-untyped-def]
    b, clock, _ = env
    sq = make(env)
    sq.send(msg("a"), None)
    (lease,) = sq.receive(1, 5)
    sq.change_visibility(sq.receipt(lease), 100)
    clock.advance(50)
    b.run_timers()
    assert sq.queue.unacked == 1
    sq.change_visibility(sq.receipt(lease), 0)
    assert sq.visible_count == 1
    with pytest.raises(InvalidParameterValue):
        sq.change_visibility(sq.receipt(lease), 10)
    for bad in ("", "x", "a.b.c", f"{sq.token}.x.1", "other.1.1"):
        with pytest.raises(ReceiptHandleIsInvalid):
            sq.delete(bad)


def test_delay_queue_and_per_message_delay(env) -> None:  # type: ignore[no-untyped-def]
    b, clock, _ = env
    sq = make(env, DelaySeconds="5")
    sq.send(msg("queue-delay"), None)
    sq.send(msg("no-delay"), 0)
    sq.send(msg("long"), 20)
    assert len(sq.delayed) == 2
    assert bodies(sq.receive(10, 30)) == ["no-delay"]
    clock.advance(5)
    b.run_timers()
    assert bodies(sq.receive(10, 30)) == ["queue-delay"]
    clock.advance(15)
    b.run_timers()
    assert bodies(sq.receive(10, 30)) == ["long"]


def test_waiters_woken_on_enqueue_and_requeue(env) -> None:  # type: ignore[no-untyped-def]
    b, clock, _ = env
    sq = make(env)
    woken: list[int] = []
    sq.waiters.append(lambda: woken.append(1))
    b.flush()
    assert woken == []
    sq.send(msg("a"), None)
    b.flush()
    assert woken == [1] and sq.waiters == []
    sq.receive(1, 1)
    sq.waiters.append(lambda: woken.append(2))
    clock.advance(1)
    b.run_timers()
    assert woken == [1, 2]


def test_retention_expires_messages(env) -> None:  # type: ignore[no-untyped-def]
    _b, clock, _ = env
    sq = make(env, MessageRetentionPeriod="60")
    sq.send(msg("old"), None)
    clock.advance(61)
    assert sq.receive(10, None) == []


def test_redrive_after_max_receive_count(env) -> None:  # type: ignore[no-untyped-def]
    b, _clock, svc = env
    dlq = make(env, "dlq")
    src = make(env, "src", RedrivePolicy='{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:000000000000:dlq",'
                                         '"maxReceiveCount":2}')
    src.send(msg("p"), None)
    for _ in range(2):
        assert bodies(src.receive(1, 0)) == ["p"]
        b.run_timers()
    assert src.receive(1, 0) == []
    assert bodies(dlq.receive(1, 30)) == ["p"]
    assert svc.dead_letter_sources("dlq") == ["src"]


def test_fifo_groups_locked_while_in_flight(env) -> None:  # type: ignore[no-untyped-def]
    b, clock, _ = env
    sq = make(env, "f.fifo", FifoQueue="true")
    for body, g in (("a1", "A"), ("b1", "B"), ("a2", "A"), ("b2", "B"), ("c1", "C")):
        sq.send(msg(body, g, body), None)
    first = sq.receive(1, 10)
    assert bodies(first) == ["a1"]
    second = sq.receive(10, 10)
    assert bodies(second) == ["b1", "b2", "c1"]  # A is locked; B gives both of its messages
    assert sq.receive(10, 10) == []
    sq.delete(sq.receipt(first[0]))
    assert bodies(sq.receive(10, 10)) == ["a2"]
    # expiry puts a group's messages back at the front of its backlog, in order
    clock.advance(11)
    b.run_timers()
    assert bodies(sq.receive(10, 10)) == ["b1", "b2", "c1", "a2"] or sq.visible_count == 0


def test_fifo_dedup_window_and_scope(env) -> None:  # type: ignore[no-untyped-def]
    _b, clock, _ = env
    sq = make(env, "d.fifo", FifoQueue="true", ContentBasedDeduplication="true")
    first = sq.send(msg("x", "g"), None)
    assert sq.send(msg("x", "g"), None) == first
    assert sq.send(msg("x", "h"), None) == first  # scope queue: groups share dedup ids
    clock.advance(301)
    assert sq.send(msg("x", "g"), None) != first
    scoped = make(env, "s.fifo", FifoQueue="true", DeduplicationScope="messageGroup")
    a = scoped.send(msg("y", "g", "id"), None)
    assert scoped.send(msg("y", "h", "id"), None) != a
    with pytest.raises(MissingParameter):
        scoped.send(msg("z"), None)
    with pytest.raises(InvalidParameterValue):
        scoped.send(msg("z", "g"), None)


def test_create_validation(env) -> None:  # type: ignore[no-untyped-def]
    b, _, svc = env
    u = b.users.users["u"]
    svc.create(u, "v", {"VisibilityTimeout": "5"}, {})
    assert svc.create(u, "v", {"VisibilityTimeout": "5"}, {}).name == "v"
    with pytest.raises(QueueNameExists):
        svc.create(u, "v", {"VisibilityTimeout": "6"}, {})
    for attrs, err in (({"VisibilityTimeout": "-1"}, InvalidAttributeValue), ({"Nope": "1"}, InvalidAttributeName),
                       ({"RedrivePolicy": "{"}, InvalidAttributeValue),
                       ({"ContentBasedDeduplication": "true"}, InvalidAttributeName)):
        with pytest.raises(err):
            svc.create(u, "w", attrs, {})
    for name in ("", "a" * 81, "bad name", "x.fifo"):
        with pytest.raises(InvalidParameterValue):
            svc.create(u, name, {}, {})
    with pytest.raises(QueueDoesNotExist):
        svc.queue(u, "missing")


def test_timed_leases_heap_stays_bounded() -> None:
    leases = TimedLeases()
    e = Entry(msg("a"), 1, None, 0)
    for i in range(5000):
        lease = leases.add(Lease(None, e, deadline=100.0 + i))  # type: ignore[arg-type]
        leases.remove(lease.id)
    assert len(leases._heap) <= 1025
    keep = leases.add(Lease(None, e, deadline=10.0))  # type: ignore[arg-type]
    leases.extend(keep, 20.0)
    assert leases.expired(15.0) == [] and leases.next_deadline() == 20.0
    assert leases.expired(20.0) == [keep]


def test_dedup_window() -> None:
    w: DedupWindow[int] = DedupWindow(10)
    w.remember("a", 1, 0.0)
    assert w.get("a", 9.9) == 1 and w.get("a", 10.0) is None and len(w) == 0


def test_fifo_dedup_window_is_rebuilt_after_a_restart(env) -> None:  # type: ignore[no-untyped-def]
    _b, clock, _ = env
    sq = make(env, "restart.fifo", FifoQueue="true", ContentBasedDeduplication="true")
    wall = clock.time()
    first = Message("", "q", Properties(message_id="m1", delivery_mode=2, timestamp=int(wall),
                                        headers={GROUP_HEADER: "g"}), b"same body")
    mid, seq = sq.send(first, None)
    q = sq.queue
    # a restart: the queue's entries come back from the log, the SQS state is rebuilt from scratch
    q.receiver = None
    clock.advance(60)
    again = SqsQueue(q, sq.config, {}, sq.created)
    dup = Message("", "q", Properties(message_id="m2", delivery_mode=2, headers={GROUP_HEADER: "g"}), b"same body")
    assert again.send(dup, None) == (mid, seq)  # still inside its 5 minutes: deduplicated
    assert q.message_count == 1
    clock.advance(300)
    later = SqsQueue(q, sq.config, {}, sq.created)
    assert later.send(dup, None)[0] == "m2"  # the window has passed
    assert q.message_count == 2


def test_redrive_into_a_refusing_dlq_keeps_the_message(env) -> None:  # type: ignore[no-untyped-def]
    b, _clock, _svc = env
    s, _ = session_for(b, user=b.users.users["u"])
    b.queue_declare(s, "full-dlq", durable=True, arguments={"x-max-length": 0, "x-overflow": "reject-publish"})
    src = make(env, "src2", RedrivePolicy='{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:000000000000:full-dlq",'
                                          '"maxReceiveCount":1}')
    src.send(msg("keep-me"), None)
    assert bodies(src.receive(1, 0)) == ["keep-me"]
    b.run_timers()
    # the DLQ refuses it: it is not lost, it stays receivable here
    assert bodies(src.receive(1, 30)) == ["keep-me"]
    assert b.vhosts["/"].queues["full-dlq"].message_count == 0


def test_queue_deleted_over_amqp_wakes_parked_long_polls(env) -> None:  # type: ignore[no-untyped-def]
    b, _clock, _svc = env
    sq = make(env, "polled")
    woken: list[bool] = []
    sq.waiters.append(lambda: woken.append(True))
    s, _ = session_for(b, user=b.users.users["u"])
    b.queue_delete(s, "polled")
    assert woken == [True]


def test_expired_fifo_handle_deletes_the_message_waiting_in_its_group_backlog(env) -> None:  # type: ignore[no-untyped-def]
    """AWS: a handle stays good for its message after the visibility expired, while not received again;
    in a FIFO queue the message waits in its group's backlog, and deleting it unlocks the next one."""
    b, clock, _ = env
    sq = make(env, "h.fifo", FifoQueue="true", ContentBasedDeduplication="true")
    sq.send(msg("a1", "A"), None)
    sq.send(msg("a2", "A"), None)
    (lease,) = sq.receive(1, 5)
    clock.advance(6)
    b.run_timers()
    assert sq.visible_count == 2 and sq.queue.unacked == 0
    sq.delete(sq.receipt(lease))
    assert sq.visible_count == 1 and sq.queue.acked == 1
    assert bodies(sq.receive(10, 5)) == ["a2"]
    with pytest.raises(InvalidParameterValue):  # not in flight: no visibility to change
        sq.change_visibility(sq.receipt(lease), 10)


def test_receipt_handle_never_issued_is_invalid_but_a_settled_one_is_a_no_op(env) -> None:  # type: ignore[no-untyped-def]
    sq = make(env)
    sq.send(msg("a"), None)
    (lease,) = sq.receive(1, 30)
    handle = sq.receipt(lease)
    token, lid, seq, mac = handle.split(".")
    for forged in (f"{token}.{lid}.{int(seq) + 1}.{mac}", f"{token}.{int(lid) + 1}.{seq}.{mac}", "x", ""):
        with pytest.raises(ReceiptHandleIsInvalid):
            sq.delete(forged)
    sq.delete(handle)
    sq.delete(handle)  # already deleted: success, nothing happens
    assert sq.queue.acked == 1
