"""Timers cost what the queues need, not what the traffic does: the timer heap stays small under steady
consumption, and x-expires does not poll while the queue is in use."""

from __future__ import annotations

from haremq.core.broker import Broker
from haremq.message import Message, Properties
from haremq.testing import FakeClock, session_for


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
