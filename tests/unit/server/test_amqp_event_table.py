"""The AMQP listener dispatches events through one table (event type -> handler), so an event type
of the sans-IO connection without a handler would fail at run time: every one must be in it."""

from __future__ import annotations

import inspect
from unittest.mock import Mock

from haremq.config import Settings
from haremq.protocol.amqp import connection as ev
from haremq.server.amqp import AmqpServerProtocol


def test_every_amqp_connection_event_has_a_handler() -> None:
    node = Mock(settings=Settings(), cluster_name="test")
    conn = AmqpServerProtocol(node)
    kinds = {c for _, c in inspect.getmembers(ev, inspect.isclass) if issubclass(c, ev.Event) and c is not ev.Event}
    assert kinds, "no event classes found"
    assert kinds <= set(conn._events), kinds - set(conn._events)
