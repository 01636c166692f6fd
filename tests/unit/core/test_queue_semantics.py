"""Queue semantics under a fake clock: TTL, expiry, dead-lettering, overflow, priority, consumers."""

from __future__ import annotations

import pytest

from haremq.core.broker import REJECTED, ROUTED, UNROUTABLE, Broker
from haremq.core.consumer import Session
from haremq.errors import AccessRefused, NotAllowed, NotFound, PreconditionFailed, ResourceLocked
from haremq.message import Message, Properties
from haremq.testing import FakeClock, RecordingSink, session_for


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def broker(clock: FakeClock) -> Broker:
    return Broker(clock=clock)


def pub(b: Broker, s: Session, rk: str, body: bytes = b"x", exchange: str = "", **props: object) -> int:
    r = b.publish(s, exchange, Message(exchange, rk, Properties(**props), body))  # type: ignore[arg-type]
    b.flush()
    return r


def bodies(b: Broker, s: Session, queue: str) -> list[bytes]:
    out = []
    while (got := b.get(s, queue, no_ack=True)) is not None:
        out.append(got[1].msg.body)
    return out


def test_round_robin_and_prefetch(broker: Broker) -> None:
    s1, k1 = session_for(broker)
    s2, k2 = session_for(broker)
    broker.queue_declare(s1, "q")
    s1.prefetch = 2
    broker.consume(s1, "q", "c1")
    broker.consume(s2, "q", "c2")
    for i in range(6):
        pub(broker, s1, "q", str(i).encode())
    assert k1.bodies() == [b"0", b"2"]  # capped at prefetch 2
    assert k2.bodies() == [b"1", b"3", b"4", b"5"]  # unlimited
    s1.ack(k1.deliveries[-1][1], multiple=True)
    pub(broker, s1, "q", b"6")
    assert k1.bodies()[-1] == b"6"


def test_global_prefetch_caps_whole_session(broker: Broker) -> None:
    s, k = session_for(broker)
    broker.queue_declare(s, "a")
    broker.queue_declare(s, "b")
    s.global_prefetch = 3
    broker.consume(s, "a", "ca")
    broker.consume(s, "b", "cb")
    for _i in range(4):
        pub(broker, s, "a")
        pub(broker, s, "b")
    assert len(k.deliveries) == 3


def test_requeue_keeps_original_order_and_flags_redelivered(broker: Broker) -> None:
    s, _k = session_for(broker)
    broker.queue_declare(s, "q")
    for i in range(5):
        pub(broker, s, "q", str(i).encode())
    tags = [broker.get(s, "q", no_ack=False) for _ in range(3)]
    assert all(t is not None for t in tags)
    s.nack(tags[1][0], multiple=False, requeue=True)  # type: ignore[index]
    s.nack(tags[0][0], multiple=False, requeue=True)  # type: ignore[index]
    s2, _ = session_for(broker)
    got = []
    while (g := broker.get(s2, "q", no_ack=True)) is not None:
        got.append((g[1].msg.body, g[1].delivery_count > 1))
    assert got == [(b"0", True), (b"1", True), (b"3", False), (b"4", False)]


def test_session_close_requeues_unacked(broker: Broker) -> None:
    s, k = session_for(broker)
    broker.queue_declare(s, "q")
    broker.consume(s, "q", "c")
    pub(broker, s, "q", b"m")
    assert len(k.deliveries) == 1
    q = s.vhost.queues["q"]
    assert q.unacked == 1
    s.close()
    assert q.unacked == 0 and q.message_count == 1
    s2, k2 = session_for(broker)
    broker.consume(s2, "q", "c")
    broker.flush()
    assert k2.deliveries[0][2] is True  # redelivered


def test_unknown_delivery_tag(broker: Broker) -> None:
    s, _ = session_for(broker)
    with pytest.raises(PreconditionFailed, match="unknown delivery tag 7"):
        s.ack(7, multiple=False)


def test_message_ttl_dead_letters_with_x_death(broker: Broker, clock: FakeClock) -> None:
    s, _ = session_for(broker)
    broker.exchange_declare(s, "dlx", "fanout")
    broker.queue_declare(s, "dead")
    broker.queue_bind(s, "dead", "dlx", "")
    broker.queue_declare(s, "q", arguments={"x-message-ttl": 1000, "x-dead-letter-exchange": "dlx"})
    pub(broker, s, "q", b"old")
    clock.advance(0.5)
    pub(broker, s, "q", b"young")
    clock.advance(0.6)
    broker.run_timers()
    assert bodies(broker, s, "q") == [b"young"]
    got = broker.get(s, "dead", no_ack=True)
    assert got is not None
    msg = got[1].msg
    assert msg.body == b"old"
    assert msg.props.headers is not None
    death = msg.props.headers["x-death"][0]
    assert (death["count"], death["reason"], death["queue"], death["exchange"], death["routing-keys"]) == (
        1, "expired", "q", "", ["q"])
    assert msg.props.headers["x-first-death-reason"] == "expired"


def test_per_message_expiration_and_zero_ttl(broker: Broker, clock: FakeClock) -> None:
    s, k = session_for(broker)
    broker.queue_declare(s, "q")
    pub(broker, s, "q", b"a", expiration="100")
    pub(broker, s, "q", b"b")
    clock.advance(0.2)
    assert bodies(broker, s, "q") == [b"b"]
    broker.queue_declare(s, "z", arguments={"x-message-ttl": 0})
    pub(broker, s, "z", b"gone")  # no consumer: expires at once
    assert bodies(broker, s, "z") == []
    broker.consume(s, "z", "c")
    pub(broker, s, "z", b"kept")
    assert k.bodies() == [b"kept"]


def test_x_expires_deletes_unused_queue(broker: Broker, clock: FakeClock) -> None:
    s, _ = session_for(broker)
    broker.queue_declare(s, "tmp", arguments={"x-expires": 1000})
    clock.advance(0.9)
    broker.run_timers()
    assert "tmp" in s.vhost.queues
    clock.advance(0.2)
    broker.run_timers()
    assert "tmp" not in s.vhost.queues


@pytest.mark.parametrize("overflow", ["drop-head", "reject-publish", "reject-publish-dlx"])
def test_max_length_overflow_modes(broker: Broker, overflow: str) -> None:
    s, _ = session_for(broker)
    broker.queue_declare(s, "dead")
    broker.queue_declare(s, "q", arguments={"x-max-length": 2, "x-overflow": overflow,
                                            "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dead"})
    results = [pub(broker, s, "q", str(i).encode()) for i in range(3)]
    if overflow == "drop-head":
        assert results == [ROUTED] * 3
        assert bodies(broker, s, "q") == [b"1", b"2"]
        assert bodies(broker, s, "dead") == [b"0"]
    else:
        assert results == [ROUTED, ROUTED, REJECTED]
        assert bodies(broker, s, "q") == [b"0", b"1"]
        assert bodies(broker, s, "dead") == ([b"2"] if overflow == "reject-publish-dlx" else [])


def test_max_length_bytes(broker: Broker) -> None:
    s, _ = session_for(broker)
    broker.queue_declare(s, "q", arguments={"x-max-length-bytes": 10})
    for body in (b"12345", b"67890", b"abc"):
        pub(broker, s, "q", body)
    assert bodies(broker, s, "q") == [b"67890", b"abc"]


def test_reject_without_requeue_dead_letters(broker: Broker) -> None:
    s, _ = session_for(broker)
    broker.queue_declare(s, "dead")
    broker.queue_declare(s, "q", arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dead"})
    pub(broker, s, "q", b"bad")
    got = broker.get(s, "q", no_ack=False)
    assert got is not None
    s.nack(got[0], multiple=False, requeue=False)
    dead = broker.get(s, "dead", no_ack=True)
    assert dead is not None and dead[1].msg.props.headers is not None
    assert dead[1].msg.props.headers["x-death"][0]["reason"] == "rejected"


def test_priority_queue_orders_by_priority_then_fifo(broker: Broker) -> None:
    s, _ = session_for(broker)
    broker.queue_declare(s, "p", arguments={"x-max-priority": 5})
    for body, prio in ((b"low", 1), (b"high", 5), (b"mid", 3), (b"high2", 9), (b"none", None)):
        pub(broker, s, "p", body, priority=prio)
    assert bodies(broker, s, "p") == [b"high", b"high2", b"mid", b"low", b"none"]


def test_single_active_consumer(broker: Broker) -> None:
    s1, k1 = session_for(broker)
    s2, k2 = session_for(broker)
    broker.queue_declare(s1, "sac", arguments={"x-single-active-consumer": True})
    broker.consume(s1, "sac", "a")
    broker.consume(s2, "sac", "b")
    for i in range(3):
        pub(broker, s1, "sac", str(i).encode())
    assert k1.bodies() == [b"0", b"1", b"2"] and k2.bodies() == []
    broker.cancel(s1, "a")
    s1.recover()  # unacked go back; the next consumer is now active
    broker.flush()
    assert k2.bodies() == [b"0", b"1", b"2"]


def test_consumer_priorities(broker: Broker) -> None:
    s1, k1 = session_for(broker)
    s2, k2 = session_for(broker)
    broker.queue_declare(s1, "q")
    s1.prefetch = 1
    broker.consume(s1, "q", "hi", arguments={"x-priority": 10})
    broker.consume(s2, "q", "lo")
    for i in range(3):
        pub(broker, s1, "q", str(i).encode())
    assert k1.bodies() == [b"0"]  # high priority first, until its prefetch is full
    assert k2.bodies() == [b"1", b"2"]


def test_exclusive_queue_is_locked_and_dies_with_connection(broker: Broker) -> None:
    owner = object()
    s1, _ = session_for(broker, connection=owner)
    s2, _ = session_for(broker)
    broker.queue_declare(s1, "ex", exclusive=True)
    with pytest.raises(ResourceLocked):
        broker.queue_declare(s2, "ex", passive=True)
    with pytest.raises(ResourceLocked):
        broker.consume(s2, "ex", "c")
    broker.connection_closed(owner)
    assert "ex" not in s1.vhost.queues


def test_auto_delete_queue_goes_with_last_consumer(broker: Broker) -> None:
    s, _ = session_for(broker)
    broker.queue_declare(s, "ad", auto_delete=True)
    broker.consume(s, "ad", "c1")
    broker.consume(s, "ad", "c2")
    broker.cancel(s, "c1")
    assert "ad" in s.vhost.queues
    broker.cancel(s, "c2")
    assert "ad" not in s.vhost.queues


def test_queue_delete_cancels_consumers(broker: Broker) -> None:
    s, k = session_for(broker)
    broker.queue_declare(s, "q")
    broker.consume(s, "q", "c")
    with pytest.raises(PreconditionFailed):
        broker.queue_delete(s, "q", if_unused=True)
    pub(broker, s, "q", b"1")
    broker.queue_declare(s, "q2")
    pub(broker, s, "q2", b"1")
    with pytest.raises(PreconditionFailed):
        broker.queue_delete(s, "q2", if_empty=True)
    assert broker.queue_delete(s, "q") == 0
    assert k.cancelled == ["c"]


def test_declare_errors(broker: Broker) -> None:
    s, _ = session_for(broker)
    with pytest.raises(NotFound, match="no queue 'nope' in vhost '/'"):
        broker.queue_declare(s, "nope", passive=True)
    broker.queue_declare(s, "q", arguments={"x-max-length": 5})
    with pytest.raises(PreconditionFailed, match="inequivalent arg 'x-max-length'"):
        broker.queue_declare(s, "q", arguments={"x-max-length": 6})
    with pytest.raises(PreconditionFailed, match="inequivalent arg 'durable'"):
        broker.queue_declare(s, "q", durable=True)
    with pytest.raises(AccessRefused):
        broker.queue_declare(s, "amq.mine")
    with pytest.raises(PreconditionFailed, match="invalid arg 'x-max-length'"):
        broker.queue_declare(s, "neg", arguments={"x-max-length": -1})
    with pytest.raises(PreconditionFailed, match="x-overflow"):
        broker.queue_declare(s, "ov", arguments={"x-overflow": "explode"})
    broker.exchange_declare(s, "e", "direct")
    with pytest.raises(PreconditionFailed, match="inequivalent arg 'type'"):
        broker.exchange_declare(s, "e", "topic")
    with pytest.raises(NotFound):
        broker.exchange_declare(s, "missing", "direct", passive=True)
    with pytest.raises(AccessRefused):
        broker.queue_bind(s, "q", "", "x")


def test_server_named_queue(broker: Broker) -> None:
    s, _ = session_for(broker)
    q = broker.queue_declare(s, "", exclusive=True)
    assert q.name.startswith("amq.gen-") and len(q.name) > 12


def test_mandatory_unroutable_and_alternate_exchange(broker: Broker) -> None:
    s, _ = session_for(broker)
    broker.exchange_declare(s, "ae", "fanout")
    broker.queue_declare(s, "unrouted")
    broker.queue_bind(s, "unrouted", "ae", "")
    broker.exchange_declare(s, "main", "direct", arguments={"alternate-exchange": "ae"})
    broker.exchange_declare(s, "plain", "direct")
    assert pub(broker, s, "zzz", exchange="plain") == UNROUTABLE
    assert pub(broker, s, "zzz", b"via-ae", exchange="main") == ROUTED
    assert bodies(broker, s, "unrouted") == [b"via-ae"]


def test_exchange_to_exchange_binding_and_auto_delete(broker: Broker) -> None:
    s, _ = session_for(broker)
    broker.exchange_declare(s, "src", "topic")
    broker.exchange_declare(s, "dst", "fanout", auto_delete=True)
    broker.queue_declare(s, "q")
    broker.queue_bind(s, "q", "dst", "")
    broker.exchange_bind(s, "dst", "src", "a.*")
    assert pub(broker, s, "a.b", b"e2e", exchange="src") == ROUTED
    assert pub(broker, s, "b.b", exchange="src") == UNROUTABLE
    assert bodies(broker, s, "q") == [b"e2e"]
    broker.queue_bind(s, "q", "dst", "", unbind=True)
    assert "dst" not in s.vhost.exchanges  # auto-delete: last binding from it went


def test_direct_reply_to(broker: Broker) -> None:
    client, ck = session_for(broker)
    server, _ = session_for(broker)
    broker.queue_declare(server, "rpc")
    broker.consume(client, "amq.rabbitmq.reply-to", "rc", no_ack=True)
    pub(broker, client, "rpc", b"req", reply_to="amq.rabbitmq.reply-to")
    req = broker.get(server, "rpc", no_ack=True)
    assert req is not None
    reply_to = req[1].msg.props.reply_to
    assert reply_to is not None and reply_to.startswith("amq.rabbitmq.reply-to.")
    assert pub(broker, server, reply_to, b"resp") == ROUTED
    assert ck.bodies() == [b"resp"]
    with pytest.raises(PreconditionFailed):
        pub(broker, server, "rpc", b"x", reply_to="amq.rabbitmq.reply-to")


def test_permissions_and_vhosts(broker: Broker) -> None:
    user = broker.users.add("limited", "pw")
    user.permissions["/"].configure = "^own-"
    s, _ = session_for(broker, user=user)
    broker.queue_declare(s, "own-q")
    with pytest.raises(AccessRefused, match="access to queue 'other' in vhost '/' refused for user 'limited'"):
        broker.queue_declare(s, "other")
    with pytest.raises(NotAllowed):
        broker.open_vhost(user, "/nope")


def test_sink_is_recording() -> None:
    sink = RecordingSink()
    assert sink.take() == []


def test_a_declare_whose_save_fails_leaves_nothing_behind(broker: Broker) -> None:
    """Atomic declare: a durable queue/exchange that could not be persisted does not exist either."""
    s, _ = session_for(broker)

    def disk_full(*_a: object) -> None:
        raise OSError("disk full")

    broker.metadata.save_queue = disk_full  # type: ignore[method-assign]
    broker.metadata.save_exchange = disk_full  # type: ignore[method-assign]
    with pytest.raises(OSError):
        broker.queue_declare(s, "dq", durable=True, arguments={"x-expires": 1000})
    with pytest.raises(OSError):
        broker.exchange_declare(s, "dx", "direct", durable=True)
    assert "dq" not in s.vhost.queues and "dx" not in s.vhost.exchanges
    assert pub(broker, s, "dq") == UNROUTABLE
    broker.queue_declare(s, "dq")  # the name is free for a transient queue
