"""pytest plugin (auto-loaded when haremq is installed): the ``haremq_broker`` fixture.

    def test_publish(haremq_broker):
        conn = pika.BlockingConnection(pika.URLParameters(haremq_broker.url))
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from haremq.testing.server import BrokerThread


@pytest.fixture
def haremq_broker() -> Iterator[BrokerThread]:
    """A fresh in-process broker on a free port for one test."""
    with BrokerThread() as broker:
        yield broker
