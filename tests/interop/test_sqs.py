"""boto3 (unchanged) against a real broker process: every SQS action, semantics, errors, pika both ways."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import struct
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pika
import pytest
from botocore.exceptions import ClientError
from sqs_helpers import HttpBroker, sqs_client, start_http_broker, stop_http_broker


@pytest.fixture(scope="module")
def hb() -> Iterator[HttpBroker]:
    b = start_http_broker()
    yield b
    assert stop_http_broker(b) == 0, b.log()


@pytest.fixture(scope="module")
def sqs(hb: HttpBroker) -> Any:
    return sqs_client(hb)


def qname(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def md5_attrs(attrs: dict[str, dict[str, Any]]) -> str:
    out = b""
    for name in sorted(attrs):
        a = attrs[name]
        for s in (name.encode(), a["DataType"].encode()):
            out += struct.pack(">I", len(s)) + s
        if "BinaryValue" in a:
            v = a["BinaryValue"] if isinstance(a["BinaryValue"], bytes) else base64.b64decode(a["BinaryValue"])
            out += b"\x02" + struct.pack(">I", len(v)) + v
        else:
            v = a["StringValue"].encode()
            out += b"\x01" + struct.pack(">I", len(v)) + v
    return hashlib.md5(out).hexdigest()


# ---- queues ------------------------------------------------------------------------------------------
def test_create_get_list_delete(sqs: Any) -> None:
    name = qname("life")
    url = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "45"}, tags={"team": "a"})["QueueUrl"]
    assert url.endswith("/000000000000/" + name)
    assert sqs.get_queue_url(QueueName=name)["QueueUrl"] == url
    # same attributes again: same queue; different: QueueNameExists
    assert sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "45"})["QueueUrl"] == url
    with pytest.raises(sqs.exceptions.QueueNameExists):
        sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "46"})
    assert url in sqs.list_queues(QueueNamePrefix="life-")["QueueUrls"]
    assert sqs.list_queue_tags(QueueUrl=url)["Tags"] == {"team": "a"}
    sqs.tag_queue(QueueUrl=url, Tags={"env": "test"})
    sqs.untag_queue(QueueUrl=url, TagKeys=["team"])
    assert sqs.list_queue_tags(QueueUrl=url)["Tags"] == {"env": "test"}
    sqs.delete_queue(QueueUrl=url)
    with pytest.raises(sqs.exceptions.QueueDoesNotExist):
        sqs.get_queue_url(QueueName=name)
    with pytest.raises(sqs.exceptions.QueueDoesNotExist):
        sqs.send_message(QueueUrl=url, MessageBody="x")


def test_list_queues_pagination(sqs: Any) -> None:
    prefix = qname("page")
    urls = [sqs.create_queue(QueueName=f"{prefix}-{i}")["QueueUrl"] for i in range(5)]
    got: list[str] = []
    kw: dict[str, Any] = {"QueueNamePrefix": prefix, "MaxResults": 2}
    while True:
        r = sqs.list_queues(**kw)
        got += r.get("QueueUrls", [])
        if "NextToken" not in r:
            break
        kw["NextToken"] = r["NextToken"]
    assert got == urls
    pages = list(sqs.get_paginator("list_queues").paginate(QueueNamePrefix=prefix, PaginationConfig={"PageSize": 3}))
    assert sum(len(p["QueueUrls"]) for p in pages) == 5


def test_attributes_get_set(sqs: Any) -> None:
    url = sqs.create_queue(QueueName=qname())["QueueUrl"]
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"DelaySeconds": "0", "MessageRetentionPeriod": "120",
                                                       "ReceiveMessageWaitTimeSeconds": "1"})
    a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert a["MessageRetentionPeriod"] == "120" and a["ReceiveMessageWaitTimeSeconds"] == "1"
    assert a["QueueArn"].startswith("arn:aws:sqs:us-east-1:000000000000:")
    only = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout"])["Attributes"]
    assert only == {"VisibilityTimeout": "30"}
    with pytest.raises(ClientError) as e:
        sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "99999"})
    assert code(e) == "InvalidAttributeValue"
    with pytest.raises(ClientError) as e:
        sqs.set_queue_attributes(QueueUrl=url, Attributes={"Bogus": "1"})
    assert code(e) == "InvalidAttributeName"
    with pytest.raises(ClientError) as e:
        sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["Bogus"])
    assert code(e) == "InvalidAttributeName"


def test_purge(sqs: Any) -> None:
    url = sqs.create_queue(QueueName=qname())["QueueUrl"]
    for i in range(3):
        sqs.send_message(QueueUrl=url, MessageBody=f"m{i}")
    sqs.purge_queue(QueueUrl=url)
    assert sqs.receive_message(QueueUrl=url).get("Messages") is None
    with pytest.raises(sqs.exceptions.PurgeQueueInProgress):
        sqs.purge_queue(QueueUrl=url)


# ---- messages ----------------------------------------------------------------------------------------
def test_send_receive_delete_md5(sqs: Any) -> None:
    url = sqs.create_queue(QueueName=qname())["QueueUrl"]
    attrs = {"s": {"DataType": "String", "StringValue": "héllo"}, "n": {"DataType": "Number", "StringValue": "1.50"},
             "b": {"DataType": "Binary", "BinaryValue": b"\x00\x01\xff"},
             "c": {"DataType": "String.custom", "StringValue": "x"}}
    body = "body ✓ " * 10
    r = sqs.send_message(QueueUrl=url, MessageBody=body, MessageAttributes=attrs)
    assert r["MD5OfMessageBody"] == hashlib.md5(body.encode()).hexdigest()
    assert r["MD5OfMessageAttributes"] == md5_attrs(attrs)
    got = sqs.receive_message(QueueUrl=url, MessageAttributeNames=["All"], MessageSystemAttributeNames=["All"])
    (m,) = got["Messages"]
    assert m["Body"] == body and m["MessageId"] == r["MessageId"]
    assert m["MD5OfBody"] == r["MD5OfMessageBody"]
    assert m["MessageAttributes"]["n"] == {"DataType": "Number", "StringValue": "1.50"}
    assert m["MessageAttributes"]["b"]["BinaryValue"] == b"\x00\x01\xff"
    assert m["MD5OfMessageAttributes"] == r["MD5OfMessageAttributes"]
    assert m["Attributes"]["ApproximateReceiveCount"] == "1"
    assert int(m["Attributes"]["SentTimestamp"]) > 1_600_000_000_000
    sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    # deleting again with the same (stale) handle succeeds, as in SQS
    sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert a["ApproximateNumberOfMessages"] == "0" and a["ApproximateNumberOfMessagesNotVisible"] == "0"


def test_attribute_selection(sqs: Any) -> None:
    url = sqs.create_queue(QueueName=qname())["QueueUrl"]
    attrs = {"app.a": {"DataType": "String", "StringValue": "1"}, "app.b": {"DataType": "String", "StringValue": "2"},
             "other": {"DataType": "String", "StringValue": "3"}}
    sqs.send_message(QueueUrl=url, MessageBody="x", MessageAttributes=attrs)
    (m,) = sqs.receive_message(QueueUrl=url, MessageAttributeNames=["app.*"], AttributeNames=["SentTimestamp"],
                               VisibilityTimeout=0)["Messages"]
    assert set(m["MessageAttributes"]) == {"app.a", "app.b"}
    assert set(m["Attributes"]) == {"SentTimestamp"}
    (m,) = sqs.receive_message(QueueUrl=url)["Messages"]
    assert "MessageAttributes" not in m and "Attributes" not in m


def test_batches_with_partial_failure(sqs: Any) -> None:
    url = sqs.create_queue(QueueName=qname())["QueueUrl"]
    r = sqs.send_message_batch(QueueUrl=url, Entries=[
        {"Id": "a", "MessageBody": "one"}, {"Id": "b", "MessageBody": "two", "DelaySeconds": 0},
        {"Id": "c", "MessageBody": "bad", "MessageAttributes": {"x": {"DataType": "Number", "StringValue": "nan?"}}},
    ])
    assert [s["Id"] for s in r["Successful"]] == ["a", "b"]
    assert r["Failed"][0]["Id"] == "c" and r["Failed"][0]["SenderFault"] is True
    msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert sorted(m["Body"] for m in msgs) == ["one", "two"]
    entries = [{"Id": f"e{i}", "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(msgs)]
    entries.append({"Id": "bad", "ReceiptHandle": "garbage"})
    r = sqs.delete_message_batch(QueueUrl=url, Entries=entries)
    assert len(r["Successful"]) == 2 and r["Failed"][0]["Code"] == "ReceiptHandleIsInvalid"
    with pytest.raises(ClientError) as e:
        sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": "x"} for i in range(11)])
    assert code(e) == "AWS.SimpleQueueService.TooManyEntriesInBatchRequest"
    with pytest.raises(sqs.exceptions.BatchEntryIdsNotDistinct):
        sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": "x", "MessageBody": "1"}, {"Id": "x", "MessageBody": "2"}])
    with pytest.raises(sqs.exceptions.EmptyBatchRequest):
        sqs.delete_message_batch(QueueUrl=url, Entries=[])
    with pytest.raises(sqs.exceptions.InvalidBatchEntryId):
        sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": "bad id!", "MessageBody": "1"}])


def test_validation_errors(sqs: Any) -> None:
    url = sqs.create_queue(QueueName=qname(), Attributes={"MaximumMessageSize": "1024"})["QueueUrl"]
    with pytest.raises(ClientError) as e:
        sqs.send_message(QueueUrl=url, MessageBody="x" * 1025)
    assert code(e) == "InvalidParameterValue" and "shorter than" in str(e.value)
    with pytest.raises(ClientError) as e:
        sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=11)
    assert code(e) == "InvalidParameterValue"
    with pytest.raises(sqs.exceptions.ReceiptHandleIsInvalid):
        sqs.delete_message(QueueUrl=url, ReceiptHandle="nope")
    with pytest.raises(ClientError) as e:
        sqs.create_queue(QueueName="bad name!")
    assert code(e) == "InvalidParameterValue"
    with pytest.raises(ClientError) as e:
        sqs.send_message(QueueUrl=url, MessageBody="bad \x01 char")
    assert code(e) == "InvalidMessageContents"


def test_visibility_expiry_and_change(sqs: Any) -> None:
    url = sqs.create_queue(QueueName=qname(), Attributes={"VisibilityTimeout": "1"})["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="v")
    (m,) = sqs.receive_message(QueueUrl=url)["Messages"]
    assert sqs.receive_message(QueueUrl=url).get("Messages") is None
    time.sleep(1.2)
    (m2,) = sqs.receive_message(QueueUrl=url, AttributeNames=["ApproximateReceiveCount"])["Messages"]
    assert m2["Body"] == "v" and m2["Attributes"]["ApproximateReceiveCount"] == "2"
    assert m2["ReceiptHandle"] != m["ReceiptHandle"]
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=m2["ReceiptHandle"], VisibilityTimeout=0)
    (m3,) = sqs.receive_message(QueueUrl=url, VisibilityTimeout=30)["Messages"]
    # an older handle of the same message in flight stays valid (AWS); a forged one never was
    forged = m["ReceiptHandle"][:-1] + ("0" if m["ReceiptHandle"][-1] != "0" else "1")
    r = sqs.change_message_visibility_batch(QueueUrl=url, Entries=[
        {"Id": "ok", "ReceiptHandle": m3["ReceiptHandle"], "VisibilityTimeout": 60},
        {"Id": "older", "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 60},
        {"Id": "forged", "ReceiptHandle": forged, "VisibilityTimeout": 60}])
    assert [s["Id"] for s in r["Successful"]] == ["ok", "older"]
    assert [(f["Id"], f["Code"]) for f in r["Failed"]] == [("forged", "ReceiptHandleIsInvalid")]
    a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"])
    assert a["Attributes"]["ApproximateNumberOfMessagesNotVisible"] == "1"


def test_delay(sqs: Any) -> None:
    url = sqs.create_queue(QueueName=qname(), Attributes={"DelaySeconds": "1"})["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="late")
    sqs.send_message(QueueUrl=url, MessageBody="now", DelaySeconds=0)
    a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesDelayed"])
    assert a["Attributes"]["ApproximateNumberOfMessagesDelayed"] == "1"
    assert [m["Body"] for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]] == ["now"]
    t0 = time.monotonic()
    got = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=5)["Messages"]
    assert got[0]["Body"] == "late" and time.monotonic() - t0 < 2.5


def test_long_poll_wakes_on_arrival(sqs: Any, hb: HttpBroker) -> None:
    url = sqs.create_queue(QueueName=qname())["QueueUrl"]
    other = sqs_client(hb)
    threading.Timer(0.5, lambda: other.send_message(QueueUrl=url, MessageBody="wake")).start()
    t0 = time.monotonic()
    got = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=10)
    elapsed = time.monotonic() - t0
    assert got["Messages"][0]["Body"] == "wake"
    assert 0.4 < elapsed < 3
    t0 = time.monotonic()
    assert sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1).get("Messages") is None
    assert time.monotonic() - t0 >= 0.9


def test_dlq_redrive_and_move_task(sqs: Any) -> None:
    dlq = sqs.create_queue(QueueName=qname("dlq"))["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    src = sqs.create_queue(QueueName=qname("src"), Attributes={
        "VisibilityTimeout": "0", "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2})})[
        "QueueUrl"]
    sqs.send_message(QueueUrl=src, MessageBody="poison")
    for _ in range(2):
        assert sqs.receive_message(QueueUrl=src)["Messages"][0]["Body"] == "poison"
    assert sqs.receive_message(QueueUrl=src).get("Messages") is None
    (m,) = sqs.receive_message(QueueUrl=dlq, AttributeNames=["All"], VisibilityTimeout=0)["Messages"]
    assert m["Body"] == "poison" and m["Attributes"]["DeadLetterQueueSourceArn"].endswith(src.rsplit("/", 1)[1])
    assert sqs.list_dead_letter_source_queues(QueueUrl=dlq)["queueUrls"] == [src]
    # move it back to its source
    handle = sqs.start_message_move_task(SourceArn=dlq_arn)["TaskHandle"]
    assert handle
    tasks = sqs.list_message_move_tasks(SourceArn=dlq_arn)["Results"]
    assert tasks[0]["Status"] == "COMPLETED" and tasks[0]["ApproximateNumberOfMessagesMoved"] == 1
    assert sqs.receive_message(QueueUrl=src, VisibilityTimeout=30)["Messages"][0]["Body"] == "poison"
    with pytest.raises(ClientError):
        sqs.cancel_message_move_task(TaskHandle=handle)


def test_move_task_with_rate_can_be_cancelled(sqs: Any) -> None:
    dlq = sqs.create_queue(QueueName=qname("dlq"))["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    dest = sqs.create_queue(QueueName=qname("dest"))["QueueUrl"]
    dest_arn = sqs.get_queue_attributes(QueueUrl=dest, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sqs.create_queue(QueueName=qname("src"), Attributes={
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 5})})
    for i in range(5):
        sqs.send_message(QueueUrl=dlq, MessageBody=f"m{i}")
    handle = sqs.start_message_move_task(SourceArn=dlq_arn, DestinationArn=dest_arn,
                                         MaxNumberOfMessagesPerSecond=1)["TaskHandle"]
    running = sqs.list_message_move_tasks(SourceArn=dlq_arn)["Results"][0]
    assert running["Status"] == "RUNNING" and running["TaskHandle"] == handle
    moved = sqs.cancel_message_move_task(TaskHandle=handle)["ApproximateNumberOfMessagesMoved"]
    assert moved < 5
    assert sqs.list_message_move_tasks(SourceArn=dlq_arn)["Results"][0]["Status"] == "CANCELLED"


# ---- FIFO --------------------------------------------------------------------------------------------
def test_fifo_order_groups_and_dedup(sqs: Any) -> None:
    url = sqs.create_queue(QueueName=qname("f") + ".fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    seqs = []
    for i in range(4):
        r = sqs.send_message(QueueUrl=url, MessageBody=f"a{i}", MessageGroupId="A", MessageDeduplicationId=f"a{i}")
        seqs.append(int(r["SequenceNumber"]))
    assert seqs == sorted(seqs)
    dup = sqs.send_message(QueueUrl=url, MessageBody="a0 again", MessageGroupId="A", MessageDeduplicationId="a0")
    sqs.send_message(QueueUrl=url, MessageBody="b0", MessageGroupId="B", MessageDeduplicationId="b0")
    assert dup["SequenceNumber"] == str(seqs[0]).zfill(20)
    first = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=2, AttributeNames=["All"])["Messages"]
    assert [m["Body"] for m in first] == ["a0", "a1"]
    assert first[0]["Attributes"]["MessageGroupId"] == "A"
    # group A is locked while a0/a1 are in flight: only B is served
    assert [m["Body"] for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]] == ["b0"]
    assert sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages") is None
    sqs.delete_message(QueueUrl=url, ReceiptHandle=first[0]["ReceiptHandle"])
    assert sqs.receive_message(QueueUrl=url).get("Messages") is None  # a1 still in flight
    sqs.delete_message(QueueUrl=url, ReceiptHandle=first[1]["ReceiptHandle"])
    assert [m["Body"] for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]] == ["a2", "a3"]


def test_fifo_content_dedup_and_validation(sqs: Any) -> None:
    url = sqs.create_queue(QueueName=qname("f") + ".fifo",
                           Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"})["QueueUrl"]
    a = sqs.send_message(QueueUrl=url, MessageBody="same", MessageGroupId="g")
    b = sqs.send_message(QueueUrl=url, MessageBody="same", MessageGroupId="g")
    assert a["MessageId"] == b["MessageId"]
    assert len(sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]) == 1
    with pytest.raises(ClientError) as e:
        sqs.send_message(QueueUrl=url, MessageBody="x")
    assert code(e) == "MissingParameter"
    with pytest.raises(ClientError) as e:
        sqs.send_message(QueueUrl=url, MessageBody="x", MessageGroupId="g", DelaySeconds=5)
    assert code(e) == "InvalidParameterValue"
    plain = sqs.create_queue(QueueName=qname("f") + ".fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    with pytest.raises(ClientError) as e:
        sqs.send_message(QueueUrl=plain, MessageBody="x", MessageGroupId="g")
    assert code(e) == "InvalidParameterValue"
    with pytest.raises(ClientError):
        sqs.create_queue(QueueName=qname("nofifo"), Attributes={"FifoQueue": "true"})


def test_fifo_receive_attempt_id(sqs: Any) -> None:
    url = sqs.create_queue(QueueName=qname("f") + ".fifo",
                           Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"})["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="one", MessageGroupId="g")
    r1 = sqs.receive_message(QueueUrl=url, ReceiveRequestAttemptId="att-1")["Messages"]
    r2 = sqs.receive_message(QueueUrl=url, ReceiveRequestAttemptId="att-1")["Messages"]
    assert r1[0]["ReceiptHandle"] == r2[0]["ReceiptHandle"]


# ---- auth ----------------------------------------------------------------------------------------------
def test_bad_credentials(hb: HttpBroker) -> None:
    bad_secret = sqs_client(hb, secret="wrong")
    with pytest.raises(ClientError) as e:
        bad_secret.list_queues()
    assert code(e) == "SignatureDoesNotMatch"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    unknown = sqs_client(hb, key="nobody")
    with pytest.raises(ClientError) as e:
        unknown.list_queues()
    assert code(e) == "InvalidClientTokenId"


def test_unsigned_and_expired_requests(hb: HttpBroker) -> None:
    status, _, body = raw_post(hb.sqs_port, "ListQueues", b"{}")
    assert status == 403 and b"MissingAuthenticationToken" in body
    status, _headers, body = raw_post(hb.sqs_port, "ListQueues", b"{}", extra={
        "Authorization": "AWS4-HMAC-SHA256 Credential=guest/20200101/us-east-1/sqs/aws4_request, "
                         "SignedHeaders=host;x-amz-date, Signature=00", "X-Amz-Date": "20200101T000000Z"})
    assert status == 400 and b"RequestExpired" in body


# ---- bad input over raw HTTP ----------------------------------------------------------------------------
def raw(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            out += chunk
            if b"\r\n\r\n" in out:
                head, _, rest = out.partition(b"\r\n\r\n")
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:") and len(rest) >= int(line.split(b":")[1]):
                        return out
        return out


def raw_post(port: int, action: str, body: bytes, extra: dict[str, str] | None = None) -> tuple[int, str, bytes]:
    hdrs = {"Host": f"127.0.0.1:{port}", "X-Amz-Target": f"AmazonSQS.{action}",
            "Content-Type": "application/x-amz-json-1.0", "Content-Length": str(len(body)), **(extra or {})}
    req = "POST / HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
    out = raw(port, req.encode() + body)
    head, _, rest = out.partition(b"\r\n\r\n")
    return int(head.split()[1]), head.decode(), rest


def test_garbage_http_and_limits(hb: HttpBroker, sqs: Any) -> None:
    assert raw(hb.sqs_port, b"\x00\x01garbage\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert raw(hb.sqs_port, b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"a" * 70000 + b"\r\n\r\n")[:12] in (
        b"HTTP/1.1 431", b"")
    # a body too large even to drop is refused at once, still in SQS's error shape (never a bare 413)
    out = raw(hb.sqs_port, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 500000000\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400") and b"<Code>InvalidParameterValue</Code>" in out
    # the listener still serves
    assert "QueueUrls" in sqs.list_queues() or sqs.list_queues() is not None


def test_unknown_action_and_malformed_json(hb: HttpBroker) -> None:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    def signed(action: str, body: bytes) -> tuple[int, str, bytes]:
        url = f"http://127.0.0.1:{hb.sqs_port}/"
        r = AWSRequest("POST", url, data=body, headers={"X-Amz-Target": f"AmazonSQS.{action}",
                                                      "Content-Type": "application/x-amz-json-1.0"})
        SigV4Auth(Credentials("guest", "guest"), "sqs", "us-east-1").add_auth(r)
        return raw_post(hb.sqs_port, action, body, {k: v for k, v in r.headers.items() if k.lower() != "host"})

    status, _, body = signed("NoSuchAction", b"{}")
    assert status == 400 and b"InvalidAction" in body
    status, _, body = signed("ListQueues", b"{not json")
    assert status == 400 and b"SerializationException" in body
    status, _, body = signed("SendMessage", b'{"QueueUrl": 5}')
    assert status == 400 and b"InvalidParameterValue" in body
    status, _, body = signed("SendMessage", b"[]")
    assert status == 400
    status, _, body = signed("GetQueueUrl", b"{}")
    assert status == 400 and b"MissingParameter" in body


# ---- cross-protocol ------------------------------------------------------------------------------------
def test_boto3_to_pika_and_back(sqs: Any, hb: HttpBroker) -> None:
    name = qname("x")
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="from sqs",
                     MessageAttributes={"k": {"DataType": "String", "StringValue": "v"},
                                        "n": {"DataType": "Number", "StringValue": "7"}})
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", hb.amqp_port))
    try:
        ch = conn.channel()
        ch.queue_declare(name, passive=True)
        _method, props, body = ch.basic_get(name, auto_ack=True)
        assert body == b"from sqs" and props.headers["k"] == "v" and props.headers["n"] == "7"
        assert props.message_id
        ch.basic_publish("", name, b"from amqp",
                         pika.BasicProperties(headers={"h": "x", "i": 42, "raw": b"\x00\x01"}, message_id="m-1"))
        ch.basic_publish("", name, b"\xff\xfe binary", pika.BasicProperties())
    finally:
        conn.close()
    msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"])["Messages"]
    assert len(msgs) == 2
    m = msgs[0]
    assert m["Body"] == "from amqp" and m["MessageId"] == "m-1"
    assert m["MessageAttributes"]["h"] == {"DataType": "String", "StringValue": "x"}
    assert m["MessageAttributes"]["i"] == {"DataType": "Number", "StringValue": "42"}
    assert m["MessageAttributes"]["raw"]["BinaryValue"] == b"\x00\x01"
    assert m["MD5OfMessageAttributes"] == md5_attrs(m["MessageAttributes"])
    b = msgs[1]
    assert base64.b64decode(b["Body"]) == b"\xff\xfe binary"
    assert b["MessageAttributes"]["haremq.body-encoding"]["StringValue"] == "base64"


def test_pika_consumer_gets_sqs_sends(sqs: Any, hb: HttpBroker) -> None:
    name = qname("c")
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", hb.amqp_port))
    try:
        ch = conn.channel()
        got: list[bytes] = []
        ch.basic_consume(name, lambda c, m, p, b: (got.append(b), c.basic_ack(m.delivery_tag)))
        sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": f"m{i}"} for i in range(3)])
        deadline = time.monotonic() + 5
        while len(got) < 3 and time.monotonic() < deadline:
            conn.process_data_events(0.1)
        assert got == [b"m0", b"m1", b"m2"]
    finally:
        conn.close()
    a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert a["ApproximateNumberOfMessages"] == "0"


def test_any_credentials_flag() -> None:
    b = start_http_broker("--sqs-any-credentials")
    try:
        c = sqs_client(b, key="whatever", secret="whatever")
        url = c.create_queue(QueueName="anycred")["QueueUrl"]
        c.send_message(QueueUrl=url, MessageBody="x")
        status, _, body = raw_post(b.sqs_port, "ListQueues", b"{}")
        assert status == 200 and b"anycred" in body
    finally:
        assert stop_http_broker(b) == 0
