"""The cyclic GC is tuned where a node starts, so tests run the broker as ``haremq serve`` does."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pika
import pytest

from haremq.server import node as node_mod
from haremq.testing import BrokerThread


@pytest.fixture
def untuned_gc() -> Iterator[None]:
    """The interpreter's defaults for the test; the process's own setting again afterwards."""
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    try:
        yield
    finally:
        gc.set_threshold(*before)


def test_starting_a_node_tunes_the_gc(untuned_gc: None) -> None:
    frozen = gc.get_freeze_count()
    with BrokerThread() as b:
        assert gc.get_threshold() == node_mod.GC_THRESHOLDS
        assert gc.get_freeze_count() > frozen  # start-up survivors are frozen, never scanned again
        conn = pika.BlockingConnection(pika.URLParameters(b.url))  # and the node serves as usual
        ch = conn.channel()
        ch.queue_declare("gc-q")
        ch.basic_publish("", "gc-q", b"x")
        assert ch.basic_get("gc-q", auto_ack=True)[2] == b"x"
        conn.close()

