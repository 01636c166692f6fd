"""A ReceiveMessage that redrives a message to the DLQ hands it to the DLQ's consumers at once (sans-IO,
through ``SqsApi`` with a FakeClock)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from haremq.core.broker import Broker
from haremq.protocol.http import HttpRequest, HttpResponse
from haremq.security.users import UserStore
from haremq.server.sqs_api import LongPoll, SqsApi
from haremq.testing.fakes import FakeClock, session_for


@pytest.fixture
def env() -> tuple[Broker, FakeClock, SqsApi]:
    users = UserStore()
    users.add("guest", "guest")
    clock = FakeClock()
    b = Broker(clock=clock, users=users)
    return b, clock, SqsApi(b, any_credentials=True)


def call(api: SqsApi, action: str, **doc: Any) -> tuple[int, dict[str, Any]]:
    headers = {"x-amz-target": "AmazonSQS." + action, "content-type": "application/x-amz-json-1.0", "host": "h"}
    out = api.handle(HttpRequest("POST", "/", "", headers, json.dumps(doc).encode(), "127.0.0.1", True))
    assert not isinstance(out, LongPoll)
    assert isinstance(out, HttpResponse)
    return out.status, json.loads(out.body)


def test_redrive_during_receive_reaches_dlq_consumers(env: tuple[Broker, FakeClock, SqsApi]) -> None:
    """A ReceiveMessage that moved a message to the DLQ did not flush: an AMQP consumer (or a parked
    long poll) on the DLQ saw it only when some later, unrelated request flushed the broker."""
    b, clock, api = env
    call(api, "CreateQueue", QueueName="dlq")
    call(api, "CreateQueue", QueueName="src", Attributes={"RedrivePolicy": json.dumps(
        {"deadLetterTargetArn": "arn:aws:sqs:us-east-1:000000000000:dlq", "maxReceiveCount": 1})})
    call(api, "SendMessage", QueueUrl="src", MessageBody="poison")
    _, doc = call(api, "ReceiveMessage", QueueUrl="src", VisibilityTimeout=1)
    assert len(doc["Messages"]) == 1
    clock.advance(2)
    b.run_timers()
    s, sink = session_for(b)
    b.consume(s, "dlq", "c1", no_ack=True)
    b.flush()
    assert sink.bodies() == []
    _, doc = call(api, "ReceiveMessage", QueueUrl="src")
    assert doc == {}  # moved to the DLQ instead of being received a second time
    assert sink.bodies() == [b"poison"]
