"""haremq's own message headers (delay, trace, group, source) are neither shown as SQS message attributes
nor settable through them (sans-IO, through ``SqsApi`` with a FakeClock)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from haremq.core.broker import Broker
from haremq.protocol.http import HttpRequest, HttpResponse
from haremq.security.users import UserStore
from haremq.server.sqs_api import LongPoll, SqsApi
from haremq.testing.fakes import FakeClock


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


def test_internal_headers_are_not_message_attributes(env: tuple[Broker, FakeClock, SqsApi]) -> None:
    """A delayed or traced message came back with attributes the sender never set (x-delay-until,
    x-amzn-trace-id), and MD5OfMessageAttributes covered them."""
    b, clock, api = env
    call(api, "CreateQueue", QueueName="q", Attributes={"DelaySeconds": "1"})
    status, _ = call(api, "SendMessage", QueueUrl="q", MessageBody="x", MessageSystemAttributes={
        "AWSTraceHeader": {"DataType": "String", "StringValue": "Root=1-5759e988-bd862e3fe1be46a994272793"}})
    assert status == 200
    clock.advance(2)
    b.run_timers()
    _, doc = call(api, "ReceiveMessage", QueueUrl="q", MessageAttributeNames=["All"], AttributeNames=["All"])
    (m,) = doc["Messages"]
    assert "MessageAttributes" not in m and "MD5OfMessageAttributes" not in m
    assert m["Attributes"]["AWSTraceHeader"].startswith("Root=1-")
    # nor can a sender set haremq's own headers through message attributes (a fake delay, group, source)
    status, err = call(api, "SendMessage", QueueUrl="q", MessageBody="y",
                       MessageAttributes={"x-delay-until": {"DataType": "Number", "StringValue": "1"}})
    assert status == 400 and "x-delay-until" in err["message"]
