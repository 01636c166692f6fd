"""The SQS Query protocol (form in, XML out) against a real broker process.

A real botocore client forced into the query protocol: the current SQS model (JSON) with its
protocol switched to ``query`` and the member names of the 2012-11-05 query model put back
(``Attribute.N.Name``, ``MessageAttribute.N.Value.StringValue``, ``SendMessageBatchRequestEntry.N``,
...), which is what botocore sent before SQS moved to JSON. Plus raw signed requests for what a
client does not do (malformed bodies, GET, presigned URLs, posting to the queue URL).
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import threading
import time
import urllib.error
import urllib.request
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from sqs_helpers import HttpBroker, query_client, sqs_client, start_http_broker, stop_http_broker

NS = {"q": "https://sqs.amazonaws.com/doc/2012-11-05/"}

@pytest.fixture(scope="module")
def hb() -> Iterator[HttpBroker]:
    b = start_http_broker()
    yield b
    assert stop_http_broker(b) == 0, b.log()


@pytest.fixture(scope="module")
def sqs(hb: HttpBroker, tmp_path_factory: pytest.TempPathFactory) -> Any:
    client = query_client(hb, str(tmp_path_factory.mktemp("botocore-data")))
    assert client.meta.service_model.protocol == "query"
    return client


def qname(prefix: str = "q") -> str:
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
            v = a["BinaryValue"]
            out += b"\x02" + struct.pack(">I", len(v)) + v
        else:
            v = a["StringValue"].encode()
            out += b"\x01" + struct.pack(">I", len(v)) + v
    return hashlib.md5(out).hexdigest()


# ---- raw signed requests -------------------------------------------------------------------------------
def raw(hb: HttpBroker, params: dict[str, str] | bytes | None = None, *, method: str = "POST", path: str = "/",
        query: str = "", sign: bool = True, headers: dict[str, str] | None = None) -> tuple[int, ET.Element, str]:
    body = params if isinstance(params, bytes) else urlencode(params or {}).encode()
    url = hb.sqs_url.rstrip("/") + path + (f"?{query}" if query else "")
    h = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8", **(headers or {})}
    if method == "GET":
        body = b""
        h.pop("Content-Type")
    r = AWSRequest(method, url, data=body, headers=h)
    if sign:
        SigV4Auth(Credentials("guest", "guest"), "sqs", "us-east-1").add_auth(r)
    prepared = r.prepare()
    req = urllib.request.Request(prepared.url, data=prepared.body or None, method=method,
                                 headers=dict(prepared.headers.items()))
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            status, text, ctype = resp.status, resp.read(), resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        status, text, ctype = e.code, e.read(), e.headers.get("Content-Type", "")
    assert ctype.startswith("text/xml"), (ctype, text)
    return status, ET.fromstring(text), text.decode()


def find(root: ET.Element, path: str) -> str:
    el = root.find(path, NS)
    assert el is not None, (path, ET.tostring(root))
    return el.text or ""


# ---- queues --------------------------------------------------------------------------------------------
def test_create_get_list_delete(sqs: Any) -> None:
    name = qname("life")
    url = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "45"}, tags={"team": "a"})["QueueUrl"]
    assert url.endswith("/000000000000/" + name)
    assert sqs.get_queue_url(QueueName=name)["QueueUrl"] == url
    assert sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "45"})["QueueUrl"] == url
    with pytest.raises(sqs.exceptions.QueueNameExists):
        sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "46"})
    assert sqs.list_queues(QueueNamePrefix="life-")["QueueUrls"].count(url) == 1
    assert "QueueUrls" not in sqs.list_queues(QueueNamePrefix="no-such-prefix-" + name)
    assert sqs.list_queue_tags(QueueUrl=url)["Tags"] == {"team": "a"}
    sqs.tag_queue(QueueUrl=url, Tags={"env": "test", "k2": "v & <2>"})
    sqs.untag_queue(QueueUrl=url, TagKeys=["team"])
    assert sqs.list_queue_tags(QueueUrl=url)["Tags"] == {"env": "test", "k2": "v & <2>"}
    sqs.delete_queue(QueueUrl=url)
    with pytest.raises(sqs.exceptions.QueueDoesNotExist) as e:
        sqs.get_queue_url(QueueName=name)
    assert e.value.response["Error"]["Code"] == "AWS.SimpleQueueService.NonExistentQueue"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
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
    only = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout", "DelaySeconds"])
    assert only["Attributes"] == {"VisibilityTimeout": "30", "DelaySeconds": "0"}
    with pytest.raises(ClientError) as e:
        sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "99999"})
    assert code(e) == "InvalidAttributeValue"
    with pytest.raises(ClientError) as e:
        sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["Bogus"])
    assert code(e) == "InvalidAttributeName"


def test_purge_and_redrive_policy_json(sqs: Any) -> None:
    dlq = sqs.create_queue(QueueName=qname("dlq"))["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    policy = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2})
    src = sqs.create_queue(QueueName=qname("src"), Attributes={"RedrivePolicy": policy})["QueueUrl"]
    got = sqs.get_queue_attributes(QueueUrl=src, AttributeNames=["RedrivePolicy"])["Attributes"]["RedrivePolicy"]
    assert json.loads(got) == json.loads(policy)
    assert sqs.list_dead_letter_source_queues(QueueUrl=dlq)["queueUrls"] == [src]
    sqs.send_message(QueueUrl=src, MessageBody="x")
    sqs.purge_queue(QueueUrl=src)
    assert "Messages" not in sqs.receive_message(QueueUrl=src)
    with pytest.raises(sqs.exceptions.PurgeQueueInProgress):
        sqs.purge_queue(QueueUrl=src)


# ---- messages ------------------------------------------------------------------------------------------
def test_send_receive_delete_md5(sqs: Any) -> None:
    url = sqs.create_queue(QueueName=qname())["QueueUrl"]
    attrs = {"s": {"DataType": "String", "StringValue": "héllo <&> \r\n"},
             "n": {"DataType": "Number", "StringValue": "1.50"},
             "b": {"DataType": "Binary", "BinaryValue": b"\x00\x01\xff"},
             "c": {"DataType": "String.custom", "StringValue": "x"}}
    body = "body ✓ <xml> & \"q\" 'a'\r\nline2\r" * 10
    r = sqs.send_message(QueueUrl=url, MessageBody=body, MessageAttributes=attrs)
    assert r["MD5OfMessageBody"] == hashlib.md5(body.encode()).hexdigest()
    assert r["MD5OfMessageAttributes"] == md5_attrs(attrs)
    got = sqs.receive_message(QueueUrl=url, MessageAttributeNames=["All"], AttributeNames=["All"],
                              VisibilityTimeout=40)
    (m,) = got["Messages"]
    assert m["Body"] == body and m["MessageId"] == r["MessageId"]
    assert m["MD5OfBody"] == r["MD5OfMessageBody"] == hashlib.md5(m["Body"].encode()).hexdigest()
    assert m["MessageAttributes"]["n"] == {"DataType": "Number", "StringValue": "1.50"}
    assert m["MessageAttributes"]["s"]["StringValue"] == "héllo <&> \r\n"
    assert m["MessageAttributes"]["b"] == {"DataType": "Binary", "BinaryValue": b"\x00\x01\xff"}
    assert m["MD5OfMessageAttributes"] == r["MD5OfMessageAttributes"]
    assert m["Attributes"]["ApproximateReceiveCount"] == "1" and m["Attributes"]["SenderId"] == "guest"
    assert int(m["Attributes"]["SentTimestamp"]) > 1_600_000_000_000
    # in flight for 40 s
    assert "Messages" not in sqs.receive_message(QueueUrl=url)
    a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"])
    assert a["Attributes"]["ApproximateNumberOfMessagesNotVisible"] == "1"
    sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert a["ApproximateNumberOfMessages"] == "0" and a["ApproximateNumberOfMessagesNotVisible"] == "0"


def test_attribute_selection_and_system_attributes(sqs: Any) -> None:
    url = sqs.create_queue(QueueName=qname())["QueueUrl"]
    attrs = {"app.a": {"DataType": "String", "StringValue": "1"}, "app.b": {"DataType": "String", "StringValue": "2"},
             "other": {"DataType": "String", "StringValue": "3"}}
    sqs.send_message(QueueUrl=url, MessageBody="x", MessageAttributes=attrs,
                     MessageSystemAttributes={"AWSTraceHeader": {"DataType": "String", "StringValue": "Root=1-a"}})
    (m,) = sqs.receive_message(QueueUrl=url, MessageAttributeNames=["app.*"],
                               MessageSystemAttributeNames=["SentTimestamp", "AWSTraceHeader"],
                               VisibilityTimeout=0)["Messages"]
    assert set(m["MessageAttributes"]) == {"app.a", "app.b"}
    assert set(m["Attributes"]) == {"SentTimestamp", "AWSTraceHeader"}
    assert m["Attributes"]["AWSTraceHeader"] == "Root=1-a"
    (m,) = sqs.receive_message(QueueUrl=url)["Messages"]
    assert "MessageAttributes" not in m and "Attributes" not in m


def test_batches_with_partial_failure(sqs: Any) -> None:
    url = sqs.create_queue(QueueName=qname())["QueueUrl"]
    good_attrs = {"k": {"DataType": "String", "StringValue": "v"}}
    r = sqs.send_message_batch(QueueUrl=url, Entries=[
        {"Id": "a", "MessageBody": "one", "MessageAttributes": good_attrs},
        {"Id": "b", "MessageBody": "two", "DelaySeconds": 0},
        {"Id": "c", "MessageBody": "bad", "MessageAttributes": {"x": {"DataType": "Number", "StringValue": "nan?"}}},
    ])
    assert [s["Id"] for s in r["Successful"]] == ["a", "b"]
    assert r["Successful"][0]["MD5OfMessageAttributes"] == md5_attrs(good_attrs)
    assert r["Successful"][1]["MD5OfMessageBody"] == hashlib.md5(b"two").hexdigest()
    (f,) = r["Failed"]
    assert f["Id"] == "c" and f["SenderFault"] is True and f["Code"] == "InvalidParameterValue" and f["Message"]
    msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"])["Messages"]
    assert sorted(m["Body"] for m in msgs) == ["one", "two"]
    entries = [{"Id": f"e{i}", "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(msgs)]
    entries.append({"Id": "bad", "ReceiptHandle": "garbage"})
    r = sqs.delete_message_batch(QueueUrl=url, Entries=entries)
    assert sorted(s["Id"] for s in r["Successful"]) == ["e0", "e1"]
    assert r["Failed"][0]["Id"] == "bad" and r["Failed"][0]["Code"] == "ReceiptHandleIsInvalid"
    with pytest.raises(ClientError) as e:
        sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": "x"} for i in range(11)])
    assert code(e) == "AWS.SimpleQueueService.TooManyEntriesInBatchRequest"
    with pytest.raises(sqs.exceptions.BatchEntryIdsNotDistinct):
        sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": "x", "MessageBody": "1"}, {"Id": "x", "MessageBody": "2"}])
    with pytest.raises(sqs.exceptions.InvalidBatchEntryId):
        sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": "bad id!", "MessageBody": "1"}])


def test_visibility_change_and_batch(sqs: Any) -> None:
    url = sqs.create_queue(QueueName=qname(), Attributes={"VisibilityTimeout": "1"})["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="v")
    (m,) = sqs.receive_message(QueueUrl=url)["Messages"]
    assert "Messages" not in sqs.receive_message(QueueUrl=url)
    time.sleep(1.2)
    (m2,) = sqs.receive_message(QueueUrl=url, AttributeNames=["ApproximateReceiveCount"])["Messages"]
    assert m2["Body"] == "v" and m2["Attributes"]["ApproximateReceiveCount"] == "2"
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=m2["ReceiptHandle"], VisibilityTimeout=0)
    (m3,) = sqs.receive_message(QueueUrl=url, VisibilityTimeout=30)["Messages"]
    forged = m["ReceiptHandle"][:-1] + ("0" if m["ReceiptHandle"][-1] != "0" else "1")
    r = sqs.change_message_visibility_batch(QueueUrl=url, Entries=[
        {"Id": "ok", "ReceiptHandle": m3["ReceiptHandle"], "VisibilityTimeout": 60},
        {"Id": "older", "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 60},
        {"Id": "forged", "ReceiptHandle": forged, "VisibilityTimeout": 60}])
    assert [s["Id"] for s in r["Successful"]] == ["ok", "older"]
    assert [(f["Id"], f["Code"]) for f in r["Failed"]] == [("forged", "ReceiptHandleIsInvalid")]
    a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"])
    assert a["Attributes"]["ApproximateNumberOfMessagesNotVisible"] == "1"
    with pytest.raises(ClientError) as e:
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=m3["ReceiptHandle"], VisibilityTimeout=50000)
    assert code(e) == "InvalidParameterValue"


def test_long_poll_wakes_on_arrival(sqs: Any, hb: HttpBroker) -> None:
    url = sqs.create_queue(QueueName=qname())["QueueUrl"]
    other = sqs_client(hb)  # a JSON client sends; the query client waits
    threading.Timer(0.5, lambda: other.send_message(QueueUrl=url, MessageBody="wake")).start()
    t0 = time.monotonic()
    got = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=10)
    assert got["Messages"][0]["Body"] == "wake" and 0.4 < time.monotonic() - t0 < 3
    t0 = time.monotonic()
    assert "Messages" not in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)
    assert time.monotonic() - t0 >= 0.9


def test_fifo(sqs: Any) -> None:
    url = sqs.create_queue(QueueName=qname("f") + ".fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    r = sqs.send_message(QueueUrl=url, MessageBody="1", MessageGroupId="g", MessageDeduplicationId="d1")
    assert len(r["SequenceNumber"]) == 20
    r2 = sqs.send_message(QueueUrl=url, MessageBody="1", MessageGroupId="g", MessageDeduplicationId="d1")
    assert r2["MessageId"] == r["MessageId"]
    (m,) = sqs.receive_message(QueueUrl=url, AttributeNames=["All"], ReceiveRequestAttemptId="att")["Messages"]
    assert m["Attributes"]["MessageGroupId"] == "g" and m["Attributes"]["MessageDeduplicationId"] == "d1"


def test_message_move_task(sqs: Any) -> None:
    dlq = sqs.create_queue(QueueName=qname("dlq"))["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    src = sqs.create_queue(QueueName=qname("src"), Attributes={
        "VisibilityTimeout": "0", "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 1})})[
        "QueueUrl"]
    sqs.send_message(QueueUrl=src, MessageBody="poison")
    assert sqs.receive_message(QueueUrl=src)["Messages"][0]["Body"] == "poison"
    assert "Messages" not in sqs.receive_message(QueueUrl=src)
    handle = sqs.start_message_move_task(SourceArn=dlq_arn)["TaskHandle"]
    assert handle
    tasks = sqs.list_message_move_tasks(SourceArn=dlq_arn)["Results"]
    assert tasks and tasks[0]["SourceArn"] == dlq_arn
    assert isinstance(tasks[0]["ApproximateNumberOfMessagesMoved"], int)


# ---- errors and raw requests ---------------------------------------------------------------------------
def test_nonexistent_queue_is_an_xml_error(hb: HttpBroker) -> None:
    status, root, _ = raw(hb, {"Action": "GetQueueUrl", "Version": "2012-11-05", "QueueName": qname("none")})
    assert status == 400
    assert root.tag == "{https://sqs.amazonaws.com/doc/2012-11-05/}ErrorResponse"
    assert find(root, "q:Error/q:Type") == "Sender"
    assert find(root, "q:Error/q:Code") == "AWS.SimpleQueueService.NonExistentQueue"
    assert find(root, "q:Error/q:Message") == "The specified queue does not exist."
    assert find(root, "q:RequestId")


@pytest.mark.parametrize("body", [b"Action=ListQueues&Version=2012-11-05&broken",
                                  b"Action=ListQueues&Version=2012-11-05&QueueNamePrefix=%ff",
                                  b"Action=ListQueues&\xff=1",
                                  b"Action=ListQueues&Attribute.1=x&Attribute.1.Name=y"])
def test_malformed_form_body(hb: HttpBroker, body: bytes) -> None:
    status, root, _ = raw(hb, body)
    assert status == 400
    assert find(root, "q:Error/q:Code") == "MalformedQueryString"


def test_bad_action_and_signature(hb: HttpBroker) -> None:
    status, root, _ = raw(hb, {"Action": "Explode", "Version": "2012-11-05"})
    assert status == 400 and find(root, "q:Error/q:Code") == "InvalidAction"
    status, root, _ = raw(hb, {"Version": "2012-11-05"})
    assert status == 400 and find(root, "q:Error/q:Code") == "MissingParameter"
    status, root, _ = raw(hb, {"Action": "ListQueues"}, sign=False)
    assert status == 403 and find(root, "q:Error/q:Code") == "MissingAuthenticationToken"
    # the signature covers the form body: change one byte after signing
    body = b"Action=CreateQueue&Version=2012-11-05&QueueName=aaa"
    r = AWSRequest("POST", hb.sqs_url, data=body,
                   headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
    SigV4Auth(Credentials("guest", "guest"), "sqs", "us-east-1").add_auth(r)
    p = r.prepare()
    req = urllib.request.Request(p.url, data=body.replace(b"aaa", b"bbb"), method="POST", headers=dict(p.headers))
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 403 and b"<Code>SignatureDoesNotMatch</Code>" in e.value.read()


def test_raw_xml_shapes_get_and_queue_url_path(hb: HttpBroker) -> None:
    name = qname("raw")
    status, root, _ = raw(hb, {"Action": "CreateQueue", "Version": "2012-11-05", "QueueName": name,
                               "Attribute.1.Name": "DelaySeconds", "Attribute.1.Value": "0",
                               "Tag.1.Key": "a", "Tag.1.Value": "b"})
    assert status == 200 and root.tag.endswith("}CreateQueueResponse")
    url = find(root, "q:CreateQueueResult/q:QueueUrl")
    assert find(root, "q:ResponseMetadata/q:RequestId")
    path = "/000000000000/" + name
    # posting to the queue URL without a QueueUrl parameter, as the Java SDK v1 does
    status, root, _ = raw(hb, {"Action": "SendMessage", "MessageBody": "hi", "MessageAttribute.1.Name": "n",
                               "MessageAttribute.1.Value.DataType": "Number",
                               "MessageAttribute.1.Value.StringValue": "7"}, path=path)
    assert status == 200
    assert find(root, "q:SendMessageResult/q:MD5OfMessageBody") == hashlib.md5(b"hi").hexdigest()
    assert find(root, "q:SendMessageResult/q:MD5OfMessageAttributes") == md5_attrs(
        {"n": {"DataType": "Number", "StringValue": "7"}})
    # GET with everything in the (signed) query string
    qs = urlencode({"Action": "ReceiveMessage", "Version": "2012-11-05", "QueueUrl": url,
                    "AttributeName.1": "All", "MessageAttributeName.1": "All"})
    status, root, text = raw(hb, method="GET", query=qs)
    assert status == 200, text
    msg = root.find("q:ReceiveMessageResult/q:Message", NS)
    assert msg is not None and find(msg, "q:Body") == "hi"
    attrs = {find(a, "q:Name"): find(a, "q:Value") for a in msg.findall("q:Attribute", NS)}
    assert attrs["ApproximateReceiveCount"] == "1"
    (ma,) = msg.findall("q:MessageAttribute", NS)
    assert find(ma, "q:Name") == "n" and find(ma, "q:Value/q:DataType") == "Number"
    assert find(ma, "q:Value/q:StringValue") == "7"
    # actions without a result: just the metadata
    status, root, _ = raw(hb, {"Action": "DeleteMessage", "QueueUrl": url,
                               "ReceiptHandle": find(msg, "q:ReceiptHandle")})
    assert status == 200 and root.find("q:DeleteMessageResult", NS) is None
    assert find(root, "q:ResponseMetadata/q:RequestId")
    status, root, _ = raw(hb, {"Action": "ListQueueTags", "QueueUrl": url})
    assert [(find(t, "q:Key"), find(t, "q:Value")) for t in root.findall("q:ListQueueTagsResult/q:Tag", NS)] == [
        ("a", "b")]
    status, root, _ = raw(hb, {"Action": "ReceiveMessage", "QueueUrl": url, "MaxNumberOfMessages": "eleven"})
    assert status == 400 and find(root, "q:Error/q:Code") == "InvalidParameterValue"


def test_presigned_url(hb: HttpBroker, sqs: Any) -> None:
    name = qname("pre")
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    signed = sqs.generate_presigned_url("send_message", Params={"QueueUrl": url, "MessageBody": "presigned"},
                                        ExpiresIn=60)
    assert "X-Amz-Signature=" in signed
    # botocore signs the operation's method (POST); the parameters are all in the URL, the body is empty
    with urllib.request.urlopen(urllib.request.Request(signed, data=b"", method="POST"), timeout=10) as resp:
        root = ET.fromstring(resp.read())
    assert find(root, "q:SendMessageResult/q:MD5OfMessageBody") == hashlib.md5(b"presigned").hexdigest()
    assert sqs.receive_message(QueueUrl=url)["Messages"][0]["Body"] == "presigned"
    tampered = signed.replace("presigned", "tampered")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(urllib.request.Request(tampered, data=b"", method="POST"), timeout=10)
    assert e.value.code == 403 and b"SignatureDoesNotMatch" in e.value.read()


def test_json_and_query_share_queues(hb: HttpBroker, sqs: Any) -> None:
    js = sqs_client(hb)
    url = js.create_queue(QueueName=qname("both"))["QueueUrl"]
    b = base64.b64encode(b"\x00bin").decode()
    js.send_message(QueueUrl=url, MessageBody="from json",
                    MessageAttributes={"b": {"DataType": "Binary", "BinaryValue": base64.b64decode(b)}})
    (m,) = sqs.receive_message(QueueUrl=url, MessageAttributeNames=["All"])["Messages"]
    assert m["Body"] == "from json" and m["MessageAttributes"]["b"]["BinaryValue"] == b"\x00bin"
    sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    assert "Messages" not in js.receive_message(QueueUrl=url)

