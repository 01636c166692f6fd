"""The sans-IO STOMP frame handler (protocol/stomp/handler.py) driven with real frames through a real
``StompConnection`` and a fake broker port: no socket, no loop, no core."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from haremq.core import broker as core_broker
from haremq.errors import HareError, PreconditionFailed, ResourceError
from haremq.message import Message, Properties
from haremq.protocol.stomp import handler as stomp_handler
from haremq.protocol.stomp import session as S
from haremq.protocol.stomp.handler import REJECTED, StompHandler, Subscription


class FakeSession:
    def __init__(self) -> None:
        self.prefetch = 0
        self.closed = False
        self.settled: list[tuple[Any, ...]] = []

    def ack(self, tag: int, multiple: bool) -> None:
        self.settled.append(("ack", tag, multiple))

    def nack(self, tag: int, multiple: bool, requeue: bool) -> None:
        self.settled.append(("nack", tag, multiple, requeue))

    def close(self) -> None:
        self.closed = True


class Named:
    def __init__(self, name: str) -> None:
        self.name = name


class FakePort:
    vhost_name = "/"
    store_broken = False
    store_failed = False

    def __init__(self) -> None:
        self.queues: set[str] = set()
        self.declared: list[str] = []
        self.consumers: list[tuple[str, str, bool]] = []
        self.published: list[tuple[str, str, bytes]] = []
        self.results: list[int] = []
        self.publish: Callable[[Any, str, Message], int] = self._publish

    def _publish(self, s: Any, exchange: str, msg: Message) -> int:
        self.published.append((exchange, msg.routing_key, msg.body))
        return self.results.pop(0) if self.results else 0

    def open_subscription(self, sub: Subscription) -> FakeSession:
        return FakeSession()

    def has_queue(self, name: str) -> bool:
        return name in self.queues

    def check_exchange(self, name: str) -> None:
        pass

    def queue_declare(self, s: Any, name: str, **kw: Any) -> Named:
        name = name or "amq.gen-1"
        self.queues.add(name)
        self.declared.append(name)
        return Named(name)

    def queue_bind(self, s: Any, queue: str, exchange: str, routing_key: str) -> None:
        pass

    def queue_delete(self, s: Any, name: str) -> int:
        return 0

    def consume(self, s: Any, queue: str, tag: str, *, no_ack: bool) -> object:
        self.consumers.append((queue, tag, no_ack))
        return tag


class Owner:
    def __init__(self) -> None:
        self.published = False
        self.failed: list[HareError] = []

    def fail(self, err: HareError) -> None:
        self.failed.append(err)

    def want_output(self) -> None:
        pass


class Harness:
    def __init__(self) -> None:
        self.proto = S.StompConnection()
        self.port = FakePort()
        self.owner = Owner()
        self.pub = FakeSession()
        (connect,) = self.proto.receive_data(b"CONNECT\naccept-version:1.2\nhost:/\n\n\0")
        assert isinstance(connect, S.Connect)
        self.proto.send_connected("s1", "test")
        self.proto.data_to_send()
        self.handler = StompHandler(self.proto, self.port, self.owner, self.pub)

    def frame(self, command: str, body: bytes = b"", **headers: str) -> None:
        head = "".join(f"{k.replace('_', '-')}:{v}\n" for k, v in headers.items())
        for e in self.proto.receive_data(f"{command}\n{head}\n".encode() + body + b"\0"):
            assert isinstance(e, S.Received), e
            self.handler.apply(e)


def test_publish_refusal_named_in_the_handler_matches_the_core() -> None:
    assert stomp_handler.REJECTED == core_broker.REJECTED


def test_send_to_a_queue_declares_it_once_and_publishes_through_the_default_exchange() -> None:
    h = Harness()
    h.frame("SEND", b"one", destination="/queue/jobs")
    h.frame("SEND", b"two", destination="/queue/jobs")
    assert h.port.declared == ["jobs"]
    assert h.port.published == [("", "jobs", b"one"), ("", "jobs", b"two")]
    assert h.owner.published


def test_send_a_queue_refuses_is_an_error_not_a_receipt() -> None:
    h = Harness()
    h.port.results = [REJECTED]
    with pytest.raises(ResourceError, match="was not stored"):
        h.frame("SEND", b"x", destination="/queue/full")


def test_client_ack_settles_cumulatively_on_its_subscription_and_late_acks_after_unsubscribe_are_ignored() -> None:
    h = Harness()
    h.frame("SUBSCRIBE", id="s1", destination="/queue/q", ack="client", prefetch_count="5")
    sub = h.handler.subs["s1"]
    assert h.port.consumers == [("q", "T_s1", False)] and sub.session.prefetch == 5
    sub.deliver("T_s1", 3, False, "q", Message("", "q", Properties(), b"m"))
    out = b"".join(h.proto.data_to_send())
    assert out.startswith(b"MESSAGE\n") and b"ack:" + sub.prefix.encode() + b"3\n" in out
    h.frame("ACK", id=sub.prefix + "3")
    session = sub.session
    assert isinstance(session, FakeSession) and session.settled == [("ack", 3, True)]
    h.frame("UNSUBSCRIBE", id="s1")
    assert session.closed
    h.frame("ACK", id=sub.prefix + "4")  # for a subscription that is gone: ignored
    with pytest.raises(PreconditionFailed):
        h.frame("ACK", id="not-ours")
