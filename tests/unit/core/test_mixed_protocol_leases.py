"""One queue read by SQS and AMQP: an SQS purge ends only SQS leases; AMQP leases stay counted."""

from __future__ import annotations

from haremq.core.broker import Broker
from haremq.message import Message, Properties
from haremq.testing import FakeClock, session_for


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
