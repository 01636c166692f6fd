"""Messages that expire together are dead-lettered in queue order, whatever their own expirations."""

from __future__ import annotations

from haremq.core.broker import Broker
from haremq.message import Message, Properties
from haremq.testing import FakeClock, session_for


def test_expired_messages_reach_the_dead_letter_queue_in_queue_order() -> None:
    clock = FakeClock()
    b = Broker(clock=clock)
    s, _ = session_for(b)
    b.queue_declare(s, "dead")
    b.queue_declare(s, "q", arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dead"})
    for body, exp in ((b"a", "100"), (b"b", "150"), (b"c", "100"), (b"d", None)):
        b.publish(s, "", Message("", "q", Properties(expiration=exp), body))
    b.flush()
    clock.advance(0.2)
    b.run_timers()
    got = []
    while (e := b.get(s, "dead", no_ack=True)) is not None:
        got.append(e[1].msg.body)
        headers = e[1].msg.props.headers or {}
        assert headers["x-death"][0]["original-expiration"] in ("100", "150")
    assert got == [b"a", b"b", b"c"]
    rest = b.get(s, "q", no_ack=True)
    assert rest is not None and rest[1].msg.body == b"d"  # no expiration: still queued
