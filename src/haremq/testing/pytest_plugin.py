"""pytest plugin (auto-loaded when haremq is installed): the ``haremq_broker`` fixture.

    def test_publish(haremq_broker):
        conn = pika.BlockingConnection(pika.URLParameters(haremq_broker.amqp_url))

    def test_sqs(haremq_broker):
        sqs = boto3.client("sqs", endpoint_url=haremq_broker.sqs_endpoint_url, region_name="us-east-1",
                           aws_access_key_id="guest", aws_secret_access_key="guest")

Also ``stomp_port`` and ``management_url``. The temporary data directory is removed afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from haremq.testing.server import BrokerThread


@pytest.fixture
def haremq_broker() -> Iterator[BrokerThread]:
    """A fresh in-process broker (AMQP, STOMP, SQS, management on free ports) for one test."""
    with BrokerThread() as broker:
        yield broker
