"""Fakes for the store tests: the attributes the store reads from core objects, nothing more."""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class FakeProps:
    content_type: str | None = None
    content_encoding: str | None = None
    headers: dict[str, Any] | None = None
    delivery_mode: int | None = 2
    priority: int | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    expiration: str | None = None
    message_id: str | None = None
    timestamp: int | None = None
    type: str | None = None
    user_id: str | None = None
    app_id: str | None = None
    cluster_id: str | None = None


class FakeMsg:
    def __init__(self, exchange: str, routing_key: str, props: FakeProps, body: bytes) -> None:
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
              props: FakeProps | None = None) -> FakeEntry:
        e = FakeEntry(self.next_seq, FakeMsg(exchange, routing_key, props or FakeProps(), body))
        self.next_seq += 1
        return e


def props_dict(p: FakeProps) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(p).items() if v is not None}
