"""Quorum queue rules in the core: policy precedence as RabbitMQ's quorum queues resolve it, reject-publish-dlx
as drop-head, the delivery limit against the store, and stored queues that always load."""

from __future__ import annotations

from haremq.core.arguments import QueueArgs
from haremq.core.broker import Broker
from haremq.core.policy import Policy
from haremq.core.queue import Queue
from haremq.message import Message, Properties
from haremq.testing import FakeClock, session_for

QUORUM = {"x-queue-type": "quorum"}


def declare(b: Broker, name: str, **args: object) -> Queue:
    s, _ = session_for(b)
    return b.queue_declare(s, name, durable=True, arguments=dict(args))


def test_quorum_queue_lets_the_policy_win_for_overflow_and_expires() -> None:
    b = Broker(clock=FakeClock())
    args = {"x-overflow": "drop-head", "x-expires": 1000, "x-max-length": 5}
    qq = declare(b, "qq", **QUORUM, **args)
    cq = declare(b, "cq", **args)
    b.vhosts["/"].set_policy(Policy.parse("/", "p", {"pattern": ".*", "definition": {
        "overflow": "reject-publish", "expires": 60000, "max-length": 10, "delivery-limit": 4}}))
    assert (qq.args.overflow, qq.args.expires_ms, qq.args.max_length, qq.args.delivery_limit) == (
        "reject-publish", 60000, 5, 4)
    # classic: the queue's overflow wins, the smaller expires wins, and there is no delivery limit
    assert (cq.args.overflow, cq.args.expires_ms, cq.args.max_length, cq.args.delivery_limit) == (
        "drop-head", 1000, 5, None)


def test_quorum_reject_publish_dlx_acts_as_drop_head() -> None:
    b = Broker(clock=FakeClock())
    q = declare(b, "qq", **QUORUM, **{"x-overflow": "reject-publish-dlx", "x-max-length": 1})
    assert q.args.overflow == "drop-head"
    assert q.enqueue(Message("", "qq", Properties(), b"1")) and q.enqueue(Message("", "qq", Properties(), b"2"))
    e = q.ready.peek()
    assert q.message_count == 1 and e is not None and e.msg.body == b"2"


def test_stored_quorum_queue_with_odd_arguments_still_loads() -> None:
    # validated when declared; a queue stored by an older haremq must come back whatever it holds
    args = QueueArgs.parse("q", "/", {**QUORUM, "x-delivery-limit": "3", "x-quorum-initial-group-size": -1})
    assert (args.queue_type, args.delivery_limit, args.initial_group_size) == ("quorum", None, None)
    assert QueueArgs.parse("q", "/", {**QUORUM, "x-quorum-initial-group-size": 3}).initial_group_size == 3


def test_delivery_limit_removes_the_poison_message_from_the_store() -> None:
    b = Broker(clock=FakeClock())
    q = declare(b, "qq", **QUORUM, **{"x-delivery-limit": 0})
    s, _ = session_for(b)
    b.publish(s, "", Message("", "qq", Properties(delivery_mode=1), b"x"))  # transient: stored all the same
    assert len(list(b.store.recover()[("/", "qq")])) == 1
    got = b.get(s, "qq", no_ack=False)
    assert got is not None
    s.nack(got[0], False, requeue=True)
    assert q.message_count == 0 and not list(b.store.recover().get(("/", "qq"), []))
