"""SQS behaviour as AWS documents it and the SDKs expect, through boto3 in both protocols (JSON and Query)
against a real broker process: server faults are 5xx, 1 MiB messages, FIFO/DLQ rules, receipt handles,
whole-request batch errors, tag limits, attribute wildcards, permission-filtered listing, auth auditing."""

from __future__ import annotations

import json
import os
import time
import urllib.request
import uuid
from base64 import b64encode
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError
from sqs_helpers import HttpBroker, query_client, sqs_client, start_http_broker, stop_http_broker

from brokerproc import start_broker, stop_broker

MiB = 1024 * 1024
Client = Callable[..., Any]  # (key=, secret=) -> a boto3/botocore SQS client


@pytest.fixture(scope="module")
def hb() -> Iterator[HttpBroker]:
    b = start_http_broker()
    yield b
    assert stop_http_broker(b) == 0, b.log()


@pytest.fixture(scope="module", params=["json", "query"])
def make_client(request: pytest.FixtureRequest, hb: HttpBroker,
                tmp_path_factory: pytest.TempPathFactory) -> Client:
    """A client factory for one protocol; every test using it runs once per protocol."""
    if request.param == "json":
        return lambda key="guest", secret="guest": sqs_client(hb, key, secret)
    data = str(tmp_path_factory.mktemp("botocore-data"))
    return lambda key="guest", secret="guest": query_client(hb, data, key, secret)


@pytest.fixture(scope="module")
def sqs(make_client: Client) -> Any:
    return make_client()


def qname(prefix: str = "p") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def err(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, str, int]:
    e = exc.value.response
    return str(e["Error"]["Code"]), str(e["Error"].get("Message", "")), int(e["ResponseMetadata"]["HTTPStatusCode"])


def attrs(sqs: Any, url: str, *names: str) -> dict[str, str]:
    return dict(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=list(names)).get("Attributes", {}))


# ---- item 6: a storage fault is the server's, and retryable ----------------------------------------------

def test_send_on_a_full_disk_is_a_retryable_server_error(small_fs: str, tmp_path: Any) -> None:
    # free-space limit 1 byte: no disk alarm first, the write itself fails
    b = start_broker(data_dir=os.path.join(small_fs, "data"), env={"HAREMQ_DISK_FREE_LIMIT": "1"})
    try:
        for client in (sqs_client(b), query_client(b, str(tmp_path))):
            url = client.create_queue(QueueName=qname("full"))["QueueUrl"]
            with pytest.raises(ClientError) as e:
                for _ in range(100):  # 25 MiB: far more than fits
                    client.send_message(QueueUrl=url, MessageBody="x" * 256 * 1024)
            code, _, status = err(e)
            assert (code, status) == ("ServiceUnavailable", 503), e.value.response
            assert b.alive()
    finally:
        stop_broker(b)


# ---- item 20: 1 MiB messages ----------------------------------------------------------------------------------
def test_maximum_message_size_is_one_mib(sqs: Any) -> None:
    url = sqs.create_queue(QueueName=qname())["QueueUrl"]
    assert attrs(sqs, url, "MaximumMessageSize") == {"MaximumMessageSize": "1048576"}
    body = "b" * (MiB - 10)
    sqs.send_message(QueueUrl=url, MessageBody=body, MessageAttributes={"k": {"DataType": "String",
                                                                               "StringValue": "v"}})
    (m,) = sqs.receive_message(QueueUrl=url)["Messages"]
    assert m["Body"] == body
    wide = "\u00e9" * (MiB // 2 - 8)  # ~1 MiB of UTF-8, ~3 MiB on the wire (JSON \u escapes, %-encoding)
    sqs.send_message(QueueUrl=url, MessageBody=wide)
    (m,) = sqs.receive_message(QueueUrl=url)["Messages"]
    assert m["Body"] == wide
    with pytest.raises(ClientError) as e:
        sqs.send_message(QueueUrl=url, MessageBody="b" * (MiB + 1))
    code, text, status = err(e)
    assert (code, status) == ("InvalidParameterValue", 400) and "shorter than 1048576 bytes" in text
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"MaximumMessageSize": "1048576"})
    with pytest.raises(ClientError) as e:
        sqs.set_queue_attributes(QueueUrl=url, Attributes={"MaximumMessageSize": "1048577"})
    assert err(e)[0] == "InvalidAttributeValue"


def test_batch_over_one_mib_is_batch_request_too_long(sqs: Any) -> None:
    url = sqs.create_queue(QueueName=qname())["QueueUrl"]
    sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": f"e{i}", "MessageBody": "x" * (MiB // 4 - 16)}
                                                  for i in range(4)])
    with pytest.raises(ClientError) as e:
        sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": f"e{i}", "MessageBody": "x" * (MiB // 4)}
                                                      for i in range(5)])
    assert err(e)[0] in ("BatchRequestTooLong", "AWS.SimpleQueueService.BatchRequestTooLong")


def test_request_over_the_http_limit_gets_the_sqs_error_shape(sqs: Any) -> None:
    url = sqs.create_queue(QueueName=qname())["QueueUrl"]
    with pytest.raises(ClientError) as e:  # ~8 MiB on the wire: dropped unread, answered as SQS does
        sqs.send_message(QueueUrl=url, MessageBody="\u00e9" * (4 * MiB))
    code, _, status = err(e)
    assert (code, status) == ("InvalidParameterValue", 400)
    with pytest.raises(ClientError) as e:
        sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": f"e{i}", "MessageBody": "\u00e9" * MiB}
                                                      for i in range(4)])
    assert err(e)[0] in ("BatchRequestTooLong", "AWS.SimpleQueueService.BatchRequestTooLong")
    assert sqs.send_message(QueueUrl=url, MessageBody="still served")["MessageId"]


# ---- item 21: FIFO rules ------------------------------------------------------------------------------------
def test_fifo_accepts_explicit_zero_delay(sqs: Any) -> None:
    url = sqs.create_queue(QueueName=qname() + ".fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="a", MessageGroupId="g", MessageDeduplicationId="d1", DelaySeconds=0)
    sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": "e", "MessageBody": "b", "MessageGroupId": "g",
                                                   "MessageDeduplicationId": "d2", "DelaySeconds": 0}])
    with pytest.raises(ClientError) as e:
        sqs.send_message(QueueUrl=url, MessageBody="c", MessageGroupId="g", MessageDeduplicationId="d3",
                         DelaySeconds=5)
    assert err(e)[0] == "InvalidParameterValue"
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert [m["Body"] for m in got] == ["a", "b"]


def test_dead_letter_queue_must_be_of_the_same_type(sqs: Any) -> None:
    std = sqs.create_queue(QueueName=qname("dlq"))["QueueUrl"]
    fifo = sqs.create_queue(QueueName=qname("dlq") + ".fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]

    def policy(url: str) -> str:
        arn = attrs(sqs, url, "QueueArn")["QueueArn"]
        return json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": "3"})

    for attributes in ({"RedrivePolicy": policy(fifo)}, {"FifoQueue": "true", "RedrivePolicy": policy(std)}):
        name = qname("src") + (".fifo" if "FifoQueue" in attributes else "")
        with pytest.raises(ClientError) as e:
            sqs.create_queue(QueueName=name, Attributes=attributes)
        code, text, status = err(e)
        assert (code, status) == ("InvalidParameterValue", 400)
        assert "Dead-letter queue must be same type of queue as the source" in text
    src = sqs.create_queue(QueueName=qname("src"))["QueueUrl"]
    with pytest.raises(ClientError) as e:
        sqs.set_queue_attributes(QueueUrl=src, Attributes={"RedrivePolicy": policy(fifo)})
    assert err(e)[0] == "InvalidParameterValue"
    sqs.set_queue_attributes(QueueUrl=src, Attributes={"RedrivePolicy": policy(std)})


# ---- item 22: receipt handles ----------------------------------------------------------------------------------
def test_older_receipt_handle_deletes_the_message_in_flight(sqs: Any) -> None:
    url = sqs.create_queue(QueueName=qname())["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="m")
    (first,) = sqs.receive_message(QueueUrl=url, VisibilityTimeout=1)["Messages"]
    time.sleep(1.3)
    (second,) = sqs.receive_message(QueueUrl=url, VisibilityTimeout=30)["Messages"]
    assert second["ReceiptHandle"] != first["ReceiptHandle"]
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=first["ReceiptHandle"], VisibilityTimeout=40)
    sqs.delete_message(QueueUrl=url, ReceiptHandle=first["ReceiptHandle"])
    a = attrs(sqs, url, "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible")
    assert a == {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "0"}
    sqs.delete_message(QueueUrl=url, ReceiptHandle=second["ReceiptHandle"])  # gone already: still a success


def test_handle_of_an_expired_message_not_received_again_deletes_it(sqs: Any) -> None:
    url = sqs.create_queue(QueueName=qname())["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="m1")
    (m,) = sqs.receive_message(QueueUrl=url, VisibilityTimeout=1)["Messages"]
    sqs.send_message(QueueUrl=url, MessageBody="m2")
    time.sleep(1.3)
    assert attrs(sqs, url, "ApproximateNumberOfMessages") == {"ApproximateNumberOfMessages": "2"}
    sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    assert attrs(sqs, url, "ApproximateNumberOfMessages") == {"ApproximateNumberOfMessages": "1"}
    assert [x["Body"] for x in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]] == ["m2"]


def test_never_issued_receipt_handle_is_invalid(sqs: Any) -> None:
    url = sqs.create_queue(QueueName=qname())["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="m")
    (m,) = sqs.receive_message(QueueUrl=url)["Messages"]
    h = m["ReceiptHandle"]
    forged = h[:-1] + ("0" if h[-1] != "0" else "1")  # well-formed, never issued
    for bad in ("garbage", forged):
        with pytest.raises(ClientError) as e:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=bad)
        assert err(e) == ("ReceiptHandleIsInvalid", f'The input receipt handle "{bad}" is not a valid receipt '
                                                    "handle.", 400)
        with pytest.raises(ClientError) as e:
            sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=bad, VisibilityTimeout=5)
        assert err(e)[0] == "ReceiptHandleIsInvalid"
    other = sqs.create_queue(QueueName=qname())["QueueUrl"]
    with pytest.raises(ClientError) as e:  # a handle of another queue
        sqs.delete_message(QueueUrl=other, ReceiptHandle=h)
    assert err(e)[0] == "ReceiptHandleIsInvalid"


# ---- item 23: attributes, tags, whole-request errors, texts ---------------------------------------------
def test_get_queue_attributes_without_names_returns_none(sqs: Any) -> None:
    url = sqs.create_queue(QueueName=qname())["QueueUrl"]
    assert "Attributes" not in sqs.get_queue_attributes(QueueUrl=url)
    assert "VisibilityTimeout" in attrs(sqs, url, "All")


def test_tag_limits(sqs: Any) -> None:
    url = sqs.create_queue(QueueName=qname(), tags={f"k{i}": "v" for i in range(50)})["QueueUrl"]
    with pytest.raises(ClientError) as e:
        sqs.tag_queue(QueueUrl=url, Tags={"one-more": "v"})
    assert err(e)[0] == "InvalidParameterValue"
    sqs.tag_queue(QueueUrl=url, Tags={"k1": "replaced"})  # replacing is not adding
    with pytest.raises(ClientError) as e:
        sqs.create_queue(QueueName=qname(), tags={f"k{i}": "v" for i in range(51)})
    assert err(e)[0] == "InvalidParameterValue"
    with pytest.raises(ClientError) as e:
        sqs.tag_queue(QueueUrl=url, Tags={"": "v"})
    assert err(e)[0] == "InvalidParameterValue"
    with pytest.raises(ClientError) as e:
        sqs.tag_queue(QueueUrl=url, Tags={})
    assert err(e)[0] == "MissingParameter"


def test_fifo_batch_without_group_or_dedup_ids_fails_the_whole_request(sqs: Any) -> None:
    url = sqs.create_queue(QueueName=qname() + ".fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    good = {"Id": "ok", "MessageBody": "a", "MessageGroupId": "g", "MessageDeduplicationId": "d"}
    with pytest.raises(ClientError) as e:
        sqs.send_message_batch(QueueUrl=url, Entries=[good, {"Id": "nogroup", "MessageBody": "b",
                                                             "MessageDeduplicationId": "d2"}])
    assert err(e)[:2] == ("MissingParameter", "The request must contain the parameter MessageGroupId.")
    with pytest.raises(ClientError) as e:
        sqs.send_message_batch(QueueUrl=url, Entries=[good, {"Id": "nodedup", "MessageBody": "b",
                                                             "MessageGroupId": "g"}])
    assert err(e)[0] == "InvalidParameterValue"
    assert "Messages" not in sqs.receive_message(QueueUrl=url)  # nothing of either request was sent


def test_out_of_range_delay_uses_aws_text(sqs: Any) -> None:
    url = sqs.create_queue(QueueName=qname())["QueueUrl"]
    with pytest.raises(ClientError) as e:
        sqs.send_message(QueueUrl=url, MessageBody="m", DelaySeconds=901)
    assert err(e) == ("InvalidParameterValue", "Value 901 for parameter DelaySeconds is invalid. Reason: "
                                               "DelaySeconds must be >= 0 and <= 900.", 400)


# ---- item 24: prefix.* ----------------------------------------------------------------------------------------
def test_message_attribute_names_prefix_wildcard(sqs: Any) -> None:
    url = sqs.create_queue(QueueName=qname())["QueueUrl"]
    s = {"DataType": "String", "StringValue": "v"}
    sqs.send_message(QueueUrl=url, MessageBody="m", MessageAttributes={
        "order.id": s, "order.kind": s, "orders": s, "other.id": s,
        "bin.x": {"DataType": "Binary", "BinaryValue": b"\x00\x01"}})
    (m,) = sqs.receive_message(QueueUrl=url, MessageAttributeNames=["order.*", "bin.*"],
                               VisibilityTimeout=0)["Messages"]
    assert sorted(m["MessageAttributes"]) == ["bin.x", "order.id", "order.kind"]
    (m,) = sqs.receive_message(QueueUrl=url, MessageAttributeNames=[".*"], VisibilityTimeout=0)["Messages"]
    assert len(m["MessageAttributes"]) == 5
    (m,) = sqs.receive_message(QueueUrl=url, MessageAttributeNames=["orders"])["Messages"]
    assert sorted(m["MessageAttributes"]) == ["orders"]


# ---- item 10: what a user may see ---------------------------------------------------------------------------
def management(hb: HttpBroker, method: str, path: str, body: dict[str, Any]) -> None:
    req = urllib.request.Request(hb.management_url + path, data=json.dumps(body).encode(), method=method,
                                 headers={"Content-Type": "application/json",
                                          "Authorization": "Basic " + b64encode(b"guest:guest").decode()})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status in (201, 204)


def test_list_queues_and_lookups_follow_permissions(hb: HttpBroker, sqs: Any, make_client: Client) -> None:
    user = qname("user")
    mine, theirs, shared = qname(f"{user}-own"), qname("theirs"), qname(f"ro{user}")
    management(hb, "PUT", f"/api/users/{user}", {"password": "pw", "access_keys": {f"AK{user}": "s3cret"}})
    management(hb, "PUT", f"/api/permissions/%2F/{user}", {"configure": f"^{user}-", "write": f"^{user}-",
                                                            "read": f"^({user}-|ro{user})"})
    for name in (mine, theirs, shared):
        sqs.create_queue(QueueName=name)
    c = make_client(f"AK{user}", "s3cret")
    listed = [u.rsplit("/", 1)[1] for u in c.list_queues().get("QueueUrls", [])]
    assert sorted(listed) == sorted([mine, shared])
    # no permission at all: exactly as if the queue did not exist
    with pytest.raises(ClientError) as e:
        c.get_queue_url(QueueName=theirs)
    hidden = err(e)
    with pytest.raises(ClientError) as e:
        c.get_queue_url(QueueName=qname("nonexistent"))
    assert hidden == err(e) and hidden[0] in ("QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue")
    with pytest.raises(ClientError) as e:
        c.send_message(QueueUrl=sqs.get_queue_url(QueueName=theirs)["QueueUrl"], MessageBody="x")
    assert err(e) == hidden
    # some permission (read), not the one needed (write): AccessDenied
    shared_url = c.get_queue_url(QueueName=shared)["QueueUrl"]
    with pytest.raises(ClientError) as e:
        c.send_message(QueueUrl=shared_url, MessageBody="x")
    assert err(e)[0] == "AccessDenied"
    # dead-letter sources it may not see are left out too
    dlq_arn = attrs(sqs, sqs.get_queue_url(QueueName=mine)["QueueUrl"], "QueueArn")["QueueArn"]
    policy = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "3"})
    sqs.set_queue_attributes(QueueUrl=sqs.get_queue_url(QueueName=theirs)["QueueUrl"],
                             Attributes={"RedrivePolicy": policy})
    assert sqs.list_dead_letter_source_queues(QueueUrl=c.get_queue_url(QueueName=mine)["QueueUrl"])["queueUrls"]
    assert not c.list_dead_letter_source_queues(
        QueueUrl=c.get_queue_url(QueueName=mine)["QueueUrl"]).get("queueUrls")
    # write only: GetQueueUrl and SendMessage work (a producer)
    writer = qname(f"{user}-w")
    sqs.create_queue(QueueName=writer)
    management(hb, "PUT", f"/api/permissions/%2F/{user}", {"configure": "", "write": f"^{user}-", "read": ""})
    c.send_message(QueueUrl=c.get_queue_url(QueueName=writer)["QueueUrl"], MessageBody="x")
    # no vhost access: nothing listed
    management(hb, "DELETE", f"/api/permissions/%2F/{user}", {})
    assert "QueueUrls" not in c.list_queues()


# ---- item 25: queue policies ------------------------------------------------------------------------------------
def test_add_and_remove_permission_are_refused_as_unsupported(sqs: Any) -> None:
    url = sqs.create_queue(QueueName=qname())["QueueUrl"]
    with pytest.raises(ClientError) as e:
        sqs.add_permission(QueueUrl=url, Label="l", AWSAccountIds=["111122223333"], Actions=["SendMessage"])
    code, text, status = err(e)
    assert code in ("UnsupportedOperation", "AWS.SimpleQueueService.UnsupportedOperation") and status == 400
    assert "permissions" in text
    with pytest.raises(ClientError) as e:
        sqs.remove_permission(QueueUrl=url, Label="l")
    assert err(e)[0] == code


# ---- items 11, 28: refused authentication is audited ---------------------------------------------------------
def test_refused_authentication_is_audited_with_a_hint(hb: HttpBroker, make_client: Client) -> None:
    key = qname("AKUNKNOWN")
    with pytest.raises(ClientError) as e:
        make_client(key, "whatever").list_queues()
    assert err(e)[0] == "InvalidClientTokenId"
    with pytest.raises(ClientError) as e:
        make_client("guest", "wrong").list_queues()
    assert err(e)[0] == "SignatureDoesNotMatch"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [line for line in hb.log().splitlines() if "login refused: protocol=sqs" in line]
        unknown = [line for line in lines if key in line]
        wrong = [line for line in lines if "guest" in line and "SignatureDoesNotMatch" in line]
        if unknown and wrong:
            break
        time.sleep(0.1)
    assert unknown and "--sqs-any-credentials" in unknown[0] and "peer=127.0.0.1" in unknown[0]
    assert wrong


def test_send_after_a_failed_fsync_is_a_server_error_in_both_protocols(monkeypatch: pytest.MonkeyPatch,
                                                                        tmp_path: Any) -> None:
    """Once an fsync failed nothing can be made durable: sends are refused with a retryable 5xx."""
    import asyncio

    from haremq.testing import running_broker

    async def main() -> None:
        async with running_broker() as node:
            assert node.http is not None and node.http.sqs_port is not None
            b = HttpBroker(None, 0, "", {"sqs": node.http.sqs_port})  # type: ignore[arg-type]  # no process
            clients = [sqs_client(b), query_client(b, str(tmp_path))]
            url = await asyncio.to_thread(clients[0].create_queue, QueueName=qname("fsync"))
            await asyncio.to_thread(clients[0].send_message, QueueUrl=url["QueueUrl"], MessageBody="ok")

            def broken_fsync(fd: int) -> None:
                raise OSError(5, "Input/output error")

            monkeypatch.setattr(os, "fsync", broken_fsync)
            for c in clients:
                with pytest.raises(ClientError) as e:
                    await asyncio.to_thread(c.send_message, QueueUrl=url["QueueUrl"], MessageBody="lost?")
                code, _, status = err(e)
                assert status in (500, 503) and code in ("ServiceUnavailable", "InternalFailure"), code

    asyncio.run(asyncio.wait_for(main(), 60))


def test_failed_durability_wait_answers_a_server_error_not_the_200(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Any) -> None:
    """The 200 of a send waits for the disk; if the node then fails the write (a failed group commit),
    the answer is a 503 in the request's protocol, not a plain-text 500 nor the 200."""
    import asyncio

    from haremq.errors import ResourceError
    from haremq.testing import running_broker

    async def main() -> None:
        async with running_broker() as node:
            assert node.http is not None and node.http.sqs_port is not None
            b = HttpBroker(None, 0, "", {"sqs": node.http.sqs_port})  # type: ignore[arg-type]  # no process
            clients = [sqs_client(b), query_client(b, str(tmp_path))]
            url = (await asyncio.to_thread(clients[0].create_queue, QueueName=qname("dur")))["QueueUrl"]

            async def failing(ticket: int) -> None:
                raise ResourceError("fsync failed, durability lost")

            monkeypatch.setattr(node, "wait_durable", failing)
            monkeypatch.setattr(type(node.broker.store), "durable_ticket", property(lambda _s: -1))  # writes wait
            for c in clients:
                with pytest.raises(ClientError) as e:
                    await asyncio.to_thread(c.send_message, QueueUrl=url, MessageBody="lost?")
                assert err(e)[0::2] == ("ServiceUnavailable", 503)

    asyncio.run(asyncio.wait_for(main(), 60))


def test_unexpected_server_fault_is_an_sqs_internal_failure(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """An I/O fault the actions do not expect (here: listing fails with ENOSPC) is a 500 in SQS's error
    shape for both protocols, which SDKs parse and retry, not a plain-text 500."""
    import asyncio

    from haremq.testing import running_broker

    async def main() -> None:
        async with running_broker() as node:
            assert node.http is not None and node.http.sqs is not None and node.http.sqs_port is not None
            b = HttpBroker(None, 0, "", {"sqs": node.http.sqs_port})  # type: ignore[arg-type]  # no process

            def broken(*_: Any) -> list[str]:
                raise OSError(28, "No space left on device")

            monkeypatch.setattr(node.http.sqs.api.service, "names", broken)
            for c in (sqs_client(b), query_client(b, str(tmp_path))):
                with pytest.raises(ClientError) as e:
                    await asyncio.to_thread(c.list_queues)
                assert err(e)[0::2] == ("InternalFailure", 500), e.value.response
                assert e.value.response["Error"]["Message"] == "We encountered an internal error. Please try again."
            monkeypatch.undo()  # the listener still serves
            assert (await asyncio.to_thread(sqs_client(b).list_queues)) is not None

    asyncio.run(asyncio.wait_for(main(), 60))


def test_send_to_a_full_queue_is_over_limit_not_a_parameter_error(hb: HttpBroker, sqs: Any) -> None:
    """A queue declared over AMQP with x-max-length and reject-publish refuses the send: the caller's
    parameters are fine, so not InvalidParameterValue; AWS's word for a limit reached is OverLimit."""
    import pika

    name = qname("maxlen")
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", hb.amqp_port))
    try:
        conn.channel().queue_declare(name, durable=True, arguments={"x-max-length": 1,
                                                                     "x-overflow": "reject-publish"})
    finally:
        conn.close()
    url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="fits")
    with pytest.raises(ClientError) as e:
        sqs.send_message(QueueUrl=url, MessageBody="does not")
    assert err(e)[0::2] == ("OverLimit", 403)


def test_a_redrive_policy_needs_send_permission_on_its_dead_letter_queue(hb: HttpBroker, sqs: Any,
                                                                         make_client: Client) -> None:
    """A redrive moves received messages into the dead-letter queue: pointing one at a queue the user may
    not send to is AccessDenied (as an AMQP dead-letter exchange needs write), on create and on set."""
    user = qname("rdu")
    mine, guarded = qname(f"{user}-src"), qname("guarded")
    management(hb, "PUT", f"/api/users/{user}", {"password": "pw", "access_keys": {f"AK{user}": "s3cret"}})
    management(hb, "PUT", f"/api/permissions/%2F/{user}", {"configure": f"^{user}-", "write": f"^{user}-",
                                                            "read": f"^({user}-|{guarded})"})
    sqs.create_queue(QueueName=guarded)
    arn = attrs(sqs, sqs.get_queue_url(QueueName=guarded)["QueueUrl"], "QueueArn")["QueueArn"]
    policy = json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": "1"})
    c = make_client(f"AK{user}", "s3cret")
    with pytest.raises(ClientError) as e:
        c.create_queue(QueueName=mine, Attributes={"RedrivePolicy": policy})
    assert err(e)[0] == "AccessDenied"
    url = c.create_queue(QueueName=mine)["QueueUrl"]
    with pytest.raises(ClientError) as e:
        c.set_queue_attributes(QueueUrl=url, Attributes={"RedrivePolicy": policy})
    assert err(e)[0] == "AccessDenied"
    assert "RedrivePolicy" not in attrs(c, url, "All")
    own_dlq = c.create_queue(QueueName=qname(f"{user}-dlq"))["QueueUrl"]
    own = json.dumps({"deadLetterTargetArn": attrs(c, own_dlq, "QueueArn")["QueueArn"], "maxReceiveCount": "1"})
    c.set_queue_attributes(QueueUrl=url, Attributes={"RedrivePolicy": own})
