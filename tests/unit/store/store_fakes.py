"""Fakes for the store tests: the attributes the store reads from core objects, nothing more (messages
carry the neutral ``haremq.message.Properties``, which the store may import)."""

from __future__ import annotations

from typing import Any

from haremq.message import PROPERTY_NAMES, Properties


def FakeProps(**fields: Any) -> Properties:
    """The message model's own properties (one property list), persistent unless told otherwise."""
    return Properties(**{"delivery_mode": 2, **fields})


class FakeMsg:
    def __init__(self, exchange: str, routing_key: str, props: Properties, body: bytes) -> None:
        self.exchange, self.routing_key, self.props, self.body = exchange, routing_key, props, body


class FakeEntry:
    def __init__(self, seq: int, msg: FakeMsg) -> None:
        self.seq, self.msg = seq, msg
        self.expires_at: float | None = None
        self.priority = 0
        self.delivery_count = 0


class FakeVhost:
    def __init__(self, name: str) -> None:
        self.name = name


class FakeQueue:
    """A durable queue as the store sees it; hands out seqs like core's Queue.next_seq."""

    kind = "queue"

    def __init__(self, name: str, vhost: str = "/", next_seq: int = 1) -> None:
        self.name = name
        self.vhost = FakeVhost(vhost)
        self.next_seq = next_seq
        self.consumers: list[Any] = []
        self.durable, self.auto_delete = True, False
        self.arguments: dict[str, Any] = {}

    def entry(self, body: bytes = b"x", *, exchange: str = "ex", routing_key: str = "rk",
              props: Properties | None = None) -> FakeEntry:
        e = FakeEntry(self.next_seq, FakeMsg(exchange, routing_key, props or FakeProps(), body))
        self.next_seq += 1
        return e


def props_dict(p: Properties) -> dict[str, Any]:
    return {k: v for k in PROPERTY_NAMES if (v := getattr(p, k)) is not None}
