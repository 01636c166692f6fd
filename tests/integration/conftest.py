"""Fixtures shared by the integration tests of the definitions layer."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from test_definitions_hold import SlowDisk

from haremq.testing.server import BrokerThread


@pytest.fixture
def slow() -> Iterator[tuple[BrokerThread, SlowDisk]]:
    """An in-process broker whose metadata store's disk waits for ``gate`` (a slow fsync)."""
    with BrokerThread() as bt:
        assert bt.node is not None
        metadata: Any = bt.node.broker.metadata
        disk = SlowDisk(metadata.db)
        metadata.db = disk
        try:
            yield bt, disk
        finally:
            disk.gate.set()
