"""The SQS Query protocol, sans-IO: parameter mapping, XML rendering, signed requests through ``SqsApi``."""

from __future__ import annotations

import hashlib
import time
import xml.etree.ElementTree as ET
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from haremq.core.broker import Broker
from haremq.errors import MissingParameter, RequestExpired, SignatureDoesNotMatch
from haremq.protocol.http import HttpRequest, HttpResponse
from haremq.protocol.sqs import query
from haremq.security import sigv4
from haremq.security.users import UserStore
from haremq.server.sqs_api import LongPoll, SqsApi
from haremq.testing.fakes import FakeClock

NS = {"q": query.XMLNS}
HOST = "127.0.0.1:9324"
FORM = "application/x-www-form-urlencoded; charset=utf-8"


@pytest.fixture
def api() -> SqsApi:
    users = UserStore()
    users.add("u", "p")
    users.add_access_key("u", "AKID", "s3cret")
    return SqsApi(Broker(clock=FakeClock(), users=users))


def request(params: dict[str, str] | bytes, *, method: str = "POST", path: str = "/", sign: bool = True,
            presign: bool = False, secret: str = "s3cret") -> HttpRequest:
    body = params if isinstance(params, bytes) else urlencode(params).encode()
    url = f"http://{HOST}{path}"
    headers = {"Content-Type": FORM}
    if method == "GET":
        url, body, headers = f"{url}?{body.decode()}", b"", {}
    r = AWSRequest(method, url, data=params if presign else body, headers=headers)
    if presign:  # botocore moves the form parameters into the query string
        SigV4QueryAuth(Credentials("AKID", secret), "sqs", "eu-west-1", expires=60).add_auth(r)
    elif sign:
        SigV4Auth(Credentials("AKID", secret), "sqs", "eu-west-1").add_auth(r)
    p = r.prepare()
    parts = urlsplit(p.url)
    h = {k.lower(): v for k, v in p.headers.items()}
    h["host"] = HOST
    return HttpRequest(method, parts.path or "/", parts.query, h, p.body or b"", "127.0.0.1", True)


def call(api: SqsApi, params: dict[str, str] | bytes, **kw: Any) -> tuple[int, ET.Element]:
    out = api.handle(request(params, **kw))
    assert isinstance(out, HttpResponse)
    assert out.content_type == "text/xml"
    return out.status, ET.fromstring(out.body)


def text(root: ET.Element, path: str) -> str:
    el = root.find(path, NS)
    assert el is not None, (path, ET.tostring(root))
    return el.text or ""


def create(api: SqsApi, name: str = "q", **extra: str) -> str:
    status, root = call(api, {"Action": "CreateQueue", "Version": query.VERSION, "QueueName": name, **extra})
    assert status == 200, ET.tostring(root)
    return text(root, "q:CreateQueueResult/q:QueueUrl")


# ---- parameter mapping ---------------------------------------------------------------------------------
def test_every_action_has_a_query_spec(api: SqsApi) -> None:
    assert set(api._actions) == set(query.INPUTS)


def test_flattened_parameters_map_onto_the_json_shape() -> None:
    params = {
        "Action": "SendMessageBatch", "Version": "2012-11-05", "QueueUrl": "http://h/000000000000/q",
        "SendMessageBatchRequestEntry.2.Id": "b", "SendMessageBatchRequestEntry.2.MessageBody": "two",
        "SendMessageBatchRequestEntry.1.Id": "a", "SendMessageBatchRequestEntry.1.MessageBody": "one",
        "SendMessageBatchRequestEntry.1.DelaySeconds": "5",
        "SendMessageBatchRequestEntry.1.MessageAttribute.1.Name": "s",
        "SendMessageBatchRequestEntry.1.MessageAttribute.1.Value.DataType": "String",
        "SendMessageBatchRequestEntry.1.MessageAttribute.1.Value.StringValue": "v",
        "SendMessageBatchRequestEntry.1.MessageAttribute.2.Name": "b",
        "SendMessageBatchRequestEntry.1.MessageAttribute.2.Value.DataType": "Binary",
        "SendMessageBatchRequestEntry.1.MessageAttribute.2.Value.BinaryValue": "AAE=",
        "SendMessageBatchRequestEntry.1.MessageSystemAttribute.1.Name": "AWSTraceHeader",
        "SendMessageBatchRequestEntry.1.MessageSystemAttribute.1.Value.DataType": "String",
        "SendMessageBatchRequestEntry.1.MessageSystemAttribute.1.Value.StringValue": "Root=1",
    }
    assert query.to_doc("SendMessageBatch", params) == {"QueueUrl": "http://h/000000000000/q", "Entries": [
        {"Id": "a", "MessageBody": "one", "DelaySeconds": 5,
         "MessageAttributes": {"s": {"DataType": "String", "StringValue": "v"},
                               "b": {"DataType": "Binary", "BinaryValue": "AAE="}},
         "MessageSystemAttributes": {"AWSTraceHeader": {"DataType": "String", "StringValue": "Root=1"}}},
        {"Id": "b", "MessageBody": "two"}]}
    assert query.to_doc("ReceiveMessage", {
        "QueueUrl": "u", "AttributeName.1": "All", "MessageSystemAttributeName.1": "SentTimestamp",
        "MessageAttributeName.2": "b.*", "MessageAttributeName.1": "a", "MaxNumberOfMessages": "10",
        "WaitTimeSeconds": "x"}) == {
        "QueueUrl": "u", "AttributeNames": ["All"], "MessageSystemAttributeNames": ["SentTimestamp"],
        "MessageAttributeNames": ["a", "b.*"], "MaxNumberOfMessages": 10, "WaitTimeSeconds": "x"}
    assert query.to_doc("CreateQueue", {"QueueName": "q", "Attribute.1.Name": "DelaySeconds",
                                        "Attribute.1.Value": "3", "Tag.1.Key": "k", "Tag.1.Value": "v"}) == {
        "QueueName": "q", "Attributes": {"DelaySeconds": "3"}, "tags": {"k": "v"}}
    assert query.to_doc("TagQueue", {"QueueUrl": "u", "Tag.1.Key": "k", "Tag.1.Value": ""}) == {
        "QueueUrl": "u", "Tags": {"k": ""}}
    assert query.to_doc("UntagQueue", {"QueueUrl": "u", "TagKey.1": "a", "TagKey.2": "b"}) == {
        "QueueUrl": "u", "TagKeys": ["a", "b"]}
    assert query.to_doc("ChangeMessageVisibilityBatch", {
        "ChangeMessageVisibilityBatchRequestEntry.1.Id": "x",
        "ChangeMessageVisibilityBatchRequestEntry.1.ReceiptHandle": "r",
        "ChangeMessageVisibilityBatchRequestEntry.1.VisibilityTimeout": "7"}, "http://h/0/q") == {
        "QueueUrl": "http://h/0/q", "Entries": [{"Id": "x", "ReceiptHandle": "r", "VisibilityTimeout": 7}]}


@pytest.mark.parametrize("params", [{"Attribute.1": "x", "Attribute.1.Name": "y"},
                                    {"Attribute.x.Name": "a", "Attribute.x.Value": "b"},
                                    {"Attribute.01.Name": "a", "Attribute.01.Value": "b"},
                                    {"QueueName.x": "a"}, {"Attribute..Name": "a"}])
def test_malformed_parameter_names(params: dict[str, str]) -> None:
    with pytest.raises(query.MalformedQueryString):
        query.to_doc("CreateQueue", {"QueueName": "q", **params} if "QueueName.x" not in params else params)


def test_map_entry_without_value() -> None:
    with pytest.raises(MissingParameter):
        query.to_doc("CreateQueue", {"QueueName": "q", "Attribute.1.Name": "DelaySeconds"})


def test_selection_by_target_and_content_type() -> None:
    def req(method: str, headers: dict[str, str]) -> HttpRequest:
        return HttpRequest(method, "/", "", headers, b"")

    assert query.is_query(req("POST", {"content-type": FORM}))
    assert query.is_query(req("GET", {}))
    assert not query.is_query(req("POST", {"x-amz-target": "AmazonSQS.ListQueues", "content-type": FORM}))
    assert not query.is_query(req("POST", {"content-type": "application/x-amz-json-1.0"}))


# ---- rendering -----------------------------------------------------------------------------------------
def test_render_escapes_and_shapes() -> None:
    doc = {"Messages": [{"MessageId": "m", "Body": "a<b>&c\r\nd", "Attributes": {"SenderId": "u"},
                         "MessageAttributes": {"n": {"DataType": "Number", "StringValue": "1"}}}]}
    out = query.render("ReceiveMessage", doc, "rid-1")
    assert out.status == 200 and out.content_type == "text/xml"
    assert b"&#xD;" in out.body
    root = ET.fromstring(out.body)
    assert root.tag == f"{{{query.XMLNS}}}ReceiveMessageResponse"
    assert text(root, "q:ReceiveMessageResult/q:Message/q:Body") == "a<b>&c\r\nd"
    assert text(root, "q:ReceiveMessageResult/q:Message/q:Attribute/q:Name") == "SenderId"
    assert text(root, "q:ReceiveMessageResult/q:Message/q:MessageAttribute/q:Value/q:DataType") == "Number"
    assert text(root, "q:ResponseMetadata/q:RequestId") == "rid-1"
    batch = ET.fromstring(query.render("DeleteMessageBatch", {"Successful": [{"Id": "a"}], "Failed": [
        {"Id": "b", "SenderFault": True, "Code": "C", "Message": "M"}]}, "r").body)
    assert text(batch, "q:DeleteMessageBatchResult/q:DeleteMessageBatchResultEntry/q:Id") == "a"
    assert text(batch, "q:DeleteMessageBatchResult/q:BatchResultErrorEntry/q:SenderFault") == "true"
    empty = ET.fromstring(query.render("DeleteQueue", {}, "r").body)
    assert [child.tag.split("}")[1] for child in empty] == ["ResponseMetadata"]


# ---- through SqsApi ------------------------------------------------------------------------------------
def test_queue_and_message_lifecycle(api: SqsApi) -> None:
    url = create(api)
    assert url == f"http://{HOST}/000000000000/q"
    status, root = call(api, {"Action": "SendMessage", "QueueUrl": url, "MessageBody": "hello",
                              "MessageAttribute.1.Name": "s", "MessageAttribute.1.Value.DataType": "String",
                              "MessageAttribute.1.Value.StringValue": "v"})
    assert status == 200
    assert text(root, "q:SendMessageResult/q:MD5OfMessageBody") == hashlib.md5(b"hello").hexdigest()
    # MD5OfMessageAttributes as SQS computes it: length-prefixed name, type, transport byte 1, value
    raw = b"".join(len(x).to_bytes(4, "big") + x for x in (b"s", b"String")) + b"\x01" + (1).to_bytes(4, "big") + b"v"
    assert text(root, "q:SendMessageResult/q:MD5OfMessageAttributes") == hashlib.md5(raw).hexdigest()
    status, root = call(api, {"Action": "ReceiveMessage", "QueueUrl": url, "AttributeName.1": "All",
                              "MessageAttributeName.1": "All", "VisibilityTimeout": "30"})
    assert status == 200
    assert text(root, "q:ReceiveMessageResult/q:Message/q:Body") == "hello"
    assert text(root, "q:ReceiveMessageResult/q:Message/q:MD5OfMessageAttributes") == hashlib.md5(raw).hexdigest()
    handle = text(root, "q:ReceiveMessageResult/q:Message/q:ReceiptHandle")
    status, root = call(api, {"Action": "DeleteMessage", "QueueUrl": url, "ReceiptHandle": handle})
    assert status == 200 and root.find("q:DeleteMessageResult", NS) is None
    status, root = call(api, {"Action": "GetQueueAttributes", "QueueUrl": url, "AttributeName.1": "QueueArn"})
    assert text(root, "q:GetQueueAttributesResult/q:Attribute/q:Value") == "arn:aws:sqs:eu-west-1:000000000000:q"
    status, root = call(api, {"Action": "DeleteQueue", "QueueUrl": url})
    assert status == 200


def test_errors_are_xml_with_aws_status(api: SqsApi) -> None:
    status, root = call(api, {"Action": "GetQueueUrl", "QueueName": "nope"})
    assert status == 400
    assert root.tag == f"{{{query.XMLNS}}}ErrorResponse"
    assert text(root, "q:Error/q:Type") == "Sender"
    assert text(root, "q:Error/q:Code") == "AWS.SimpleQueueService.NonExistentQueue"
    assert text(root, "q:RequestId")
    status, root = call(api, b"Action=ListQueues&oops")
    assert status == 400 and text(root, "q:Error/q:Code") == "MalformedQueryString"
    status, root = call(api, {"Action": "ListQueues"}, secret="wrong")
    assert status == 403 and text(root, "q:Error/q:Code") == "SignatureDoesNotMatch"
    status, root = call(api, {"Action": "ListQueues"}, sign=False)
    assert status == 403 and text(root, "q:Error/q:Code") == "MissingAuthenticationToken"
    status, root = call(api, {"Action": "Nope"})
    assert status == 400 and text(root, "q:Error/q:Code") == "InvalidAction"


def test_get_and_queue_url_path(api: SqsApi) -> None:
    create(api)
    status, _ = call(api, {"Action": "SendMessage", "MessageBody": "x"}, path="/000000000000/q")
    assert status == 200
    status, root = call(api, {"Action": "ReceiveMessage", "Version": query.VERSION}, method="GET",
                        path="/000000000000/q")
    assert status == 200 and text(root, "q:ReceiveMessageResult/q:Message/q:Body") == "x"


def test_presigned_request(api: SqsApi) -> None:
    create(api)
    status, root = call(api, {"Action": "ListQueues"}, presign=True)
    assert status == 200 and text(root, "q:ListQueuesResult/q:QueueUrl").endswith("/q")
    status, root = call(api, {"Action": "ListQueues"}, presign=True, secret="wrong")
    assert status == 403 and text(root, "q:Error/q:Code") == "SignatureDoesNotMatch"


def test_presigned_expiry_and_tampering() -> None:
    req = request({"Action": "ListQueues"}, presign=True)
    secrets = {"AKID": "s3cret"}.get
    assert sigv4.verify_presigned(req.method, req.path, req.query, req.headers, req.body, secrets) == (
        "AKID", "eu-west-1")
    with pytest.raises(RequestExpired):
        sigv4.verify_presigned(req.method, req.path, req.query, req.headers, req.body, secrets,
                               now=time.time() + 120)
    with pytest.raises(SignatureDoesNotMatch):
        sigv4.verify_presigned(req.method, req.path, req.query.replace("ListQueues", "ListQueueTags"),
                               req.headers, req.body, secrets)
    with pytest.raises(SignatureDoesNotMatch):
        sigv4.verify_presigned(req.method, req.path, req.query, req.headers, b"Action=DeleteQueue", secrets)


def test_long_poll_answers_in_xml(api: SqsApi) -> None:
    url = create(api)
    out = api.handle(request({"Action": "ReceiveMessage", "QueueUrl": url, "WaitTimeSeconds": "5"}))
    assert isinstance(out, LongPoll)
    assert out.retry() is None
    empty = out.empty()
    assert empty.content_type == "text/xml"
    assert ET.fromstring(empty.body).find("q:ReceiveMessageResult", NS) is not None
    call(api, {"Action": "SendMessage", "QueueUrl": url, "MessageBody": "late"})
    got = out.retry()
    assert got is not None and text(ET.fromstring(got.body), "q:ReceiveMessageResult/q:Message/q:Body") == "late"


def test_characters_xml_cannot_carry_are_replaced() -> None:
    out = query.render("ListQueueTags", {"Tags": {"k": "a\x01b\ud800c"}}, "r")
    root = ET.fromstring(out.body)
    assert text(root, "q:ListQueueTagsResult/q:Tag/q:Value") == "a\ufffdb\ufffdc"


def test_other_methods_are_refused(api: SqsApi) -> None:
    out = api.handle(HttpRequest("PUT", "/", "Action=ListQueues", {"host": HOST}, b""))
    assert isinstance(out, HttpResponse) and out.status == 400
    assert text(ET.fromstring(out.body), "q:Error/q:Code") == "InvalidAction"
