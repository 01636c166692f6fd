"""Fakes for driving the core without sockets: a clock you move by hand, a sink that records."""

from __future__ import annotations

from typing import Any

from haremq.core.broker import Broker
from haremq.core.consumer import Session
from haremq.message import Message
from haremq.security.users import User


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, start: float = 1000.0, wall: float = 1_700_000_000.0) -> None:
        self.now = start
        self.wall_offset = wall - start

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now + self.wall_offset

    def advance(self, seconds: float) -> None:
        self.now += seconds


class RecordingSink:
    """Records what the core sends to a session: deliveries and cancellations."""

    def __init__(self) -> None:
        self.deliveries: list[tuple[str, int, bool, str, Message]] = []
        self.cancelled: list[str] = []

    def deliver(self, consumer_tag: str, delivery_tag: int, redelivered: bool, queue: str, msg: Message) -> None:
        self.deliveries.append((consumer_tag, delivery_tag, redelivered, queue, msg))

    def consumer_cancelled(self, consumer_tag: str) -> None:
        self.cancelled.append(consumer_tag)

    def bodies(self) -> list[bytes]:
        return [d[4].body for d in self.deliveries]

    def take(self) -> list[tuple[str, int, bool, str, Message]]:
        out, self.deliveries = self.deliveries, []
        return out


def session_for(broker: Broker, user: User | None = None, connection: Any = None,
                vhost: str = "/") -> tuple[Session, RecordingSink]:
    """A core session on ``vhost`` whose deliveries are recorded."""
    if user is None:
        user = broker.users.users.get("guest") or broker.users.add("guest", "guest")
    sink = RecordingSink()
    return broker.open_session(broker.vhosts[vhost], user, connection or object(), sink), sink
