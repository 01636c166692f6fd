"""pika connection parameters and names shared by the AMQP test modules."""

from __future__ import annotations

import uuid
from typing import Any

import pika


def params(port: int, **kw: Any) -> pika.ConnectionParameters:
    """guest on loopback, short timeouts: a broken broker fails a test instead of hanging it."""
    return pika.ConnectionParameters(
        host="127.0.0.1", port=port, virtual_host="/", credentials=pika.PlainCredentials("guest", "guest"),
        connection_attempts=1, socket_timeout=5, blocked_connection_timeout=10, **kw)


def uniq(prefix: str) -> str:
    """A queue/exchange name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"
