"""Every listener authenticates through the node's one service: a refused login on each protocol is
refused as that protocol says, and written to the audit log exactly once (by the service)."""

from __future__ import annotations

import base64
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pika
import pika.exceptions
import pytest
from botocore.exceptions import ClientError

from brokerproc import BrokerProcess, start_broker, stop_broker


@pytest.fixture
def b() -> Iterator[BrokerProcess]:
    proc = start_broker()
    yield proc
    stop_broker(proc)


def _refused_lines(b: BrokerProcess, user: str) -> list[str]:
    return [line for line in b.log().splitlines() if "login refused:" in line and f"user='{user}" in line]


def test_each_listener_refuses_a_bad_login_with_one_audit_line(b: BrokerProcess) -> None:
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        pika.BlockingConnection(pika.ConnectionParameters(
            "127.0.0.1", b.amqp_port, credentials=pika.PlainCredentials("amqp-bad", "x"), connection_attempts=1))

    with socket.create_connection(("127.0.0.1", b.stomp_port), timeout=5) as s:
        s.sendall(b"CONNECT\naccept-version:1.2\nhost:/\nlogin:stomp-bad\npasscode:x\n\n\x00")
        reply = s.recv(4096)
    assert reply.startswith(b"ERROR") and b"login was refused for user 'stomp-bad'" in reply

    req = urllib.request.Request(b.management_url + "/api/overview",
                                 headers={"Authorization": "Basic " + base64.b64encode(b"http-bad:x").decode()})
    with pytest.raises(urllib.error.HTTPError) as http:
        urllib.request.urlopen(req, timeout=5)
    assert http.value.code == 401

    import boto3
    from botocore.config import Config

    sqs = boto3.client("sqs", endpoint_url=b.sqs_url, region_name="us-east-1", aws_access_key_id="SQSBADKEY",
                       aws_secret_access_key="x", config=Config(retries={"max_attempts": 1}))
    with pytest.raises(ClientError) as aws:
        sqs.list_queues()
    assert aws.value.response["Error"]["Code"] == "InvalidClientTokenId"

    expected = {"amqp-bad": "protocol=amqp", "stomp-bad": "protocol=stomp", "http-bad": "protocol=http",
                "SQSBADKEY": "protocol=sqs"}
    deadline = time.monotonic() + 5
    while not all(_refused_lines(b, user) for user in expected):
        assert time.monotonic() < deadline, b.log()
        time.sleep(0.05)
    time.sleep(0.2)
    for user, protocol in expected.items():
        lines = _refused_lines(b, user)
        assert len(lines) == 1 and protocol in lines[0], (user, lines)
