"""The SQS wire protocol, sans-IO: requests into typed parameters, results and errors into responses.

Wire format (AWS JSON 1.0, what boto3 speaks by default): ``POST /`` with
``X-Amz-Target: AmazonSQS.<Action>`` and a JSON body; answers are JSON. Errors are
``{"__type": "com.amazonaws.sqs#<Shape>", "message": ...}`` plus the header
``x-amzn-query-error: <query code>;Sender``, from which botocore picks the error code and its
modeled exception class. The Query protocol (form parameters in, XML out; no ``X-Amz-Target``)
carries the same actions: ``query`` turns its flattened parameters into the JSON-shaped document
read here, and renders results as XML.

This module knows no broker: ``Params`` reads a request document with SQS's validation errors,
``parse_*`` build typed operations, ``error_response``/``ok`` encode answers. The server's SQS
driver (``haremq.server.sqs_api``) authenticates, runs the actions against the core and answers.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any
from urllib.parse import unquote, urlsplit

from haremq.errors import (
    AccessRefused,
    BatchEntryIdsNotDistinct,
    BatchRequestTooLong,
    EmptyBatchRequest,
    HareError,
    InvalidAction,
    InvalidAttributeName,
    InvalidBatchEntryId,
    InvalidParameterValue,
    MalformedRequest,
    MessageTooLong,
    MissingParameter,
    NotFound,
    PeerError,
    QueueDoesNotExist,
    TooManyEntriesInBatchRequest,
)
from haremq.protocol.http import HttpRequest as Request
from haremq.protocol.http import HttpResponse
from haremq.protocol.sqs import mapping as M
from haremq.protocol.sqs import query
from haremq.protocol.sqs.attributes import (
    ACCOUNT,
    DEDUP_HEADER,
    GROUP_HEADER,
    MAX_MESSAGE_SIZE,
    SOURCE_HEADER,
    arn,
    name_from_arn,
)
from haremq.security import sigv4

JSON = "application/x-amz-json-1.0"
TARGET_PREFIX = "AmazonSQS."
MAX_BATCH = 10
MAX_BATCH_BYTES = MAX_MESSAGE_SIZE  # AWS: the bodies and attributes of a batch, together, at most 1 MiB
_BATCH_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")
SYSTEM_ATTRIBUTES = ("SenderId", "SentTimestamp", "ApproximateReceiveCount", "ApproximateFirstReceiveTimestamp",
                     "SequenceNumber", "MessageDeduplicationId", "MessageGroupId", "AWSTraceHeader",
                     "DeadLetterQueueSourceArn")


# ---- typed operations ----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class SendMessage:
    body: str
    attributes: dict[str, M.Attribute]
    delay: int | None
    group: str | None
    dedup: str | None
    trace_header: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class ReceiveMessage:
    max_messages: int
    visibility: int | None
    wait: int | None
    attribute_names: list[str]
    message_attribute_names: list[str]
    attempt_id: str | None


# AWS's wording for out-of-range integers, where it differs from the generic one
_RANGE_REASONS = {
    "DelaySeconds": "DelaySeconds must be >= {lo} and <= {hi}.",
    "WaitTimeSeconds": "Must be >= {lo} and <= {hi}, if provided.",
    "MaxNumberOfMessages": "Must be between {lo} and {hi}, if provided.",
}
MAX_TAGS = 50


def check_tags(tags: dict[str, str], existing: int = 0) -> None:
    """AWS's tag limits: keys 1-128 characters, values at most 256, at most 50 tags per queue."""
    for k, v in tags.items():
        if not 1 <= len(k) <= 128:
            raise InvalidParameterValue("Tag keys must be between 1 and 128 characters in length.")
        if len(v) > 256:
            raise InvalidParameterValue("Tag values may only be up to 256 characters in length.")
    if existing + len(tags) > MAX_TAGS:
        raise InvalidParameterValue(f"Too many tags added for queue (limit {MAX_TAGS}).")


class Params:
    """Typed access to a JSON request body, raising SQS's validation errors."""

    __slots__ = ("d",)

    def __init__(self, d: dict[str, Any]) -> None:
        self.d = d

    def text(self, name: str, *, required: bool = False, max_len: int | None = None) -> str | None:
        v = self.d.get(name)
        if v is None:
            if required:
                raise MissingParameter(f"The request must contain the parameter {name}.")
            return None
        if not isinstance(v, str):
            raise InvalidParameterValue(f"Value for parameter {name} must be a string.")
        if max_len is not None and len(v) > max_len:
            raise InvalidParameterValue(f"Value for parameter {name} is invalid. Reason: must be at most {max_len} "
                                        "characters long.")
        return v

    def req(self, name: str, max_len: int | None = None) -> str:
        v = self.text(name, required=True, max_len=max_len)
        assert v is not None
        return v

    def integer(self, name: str, lo: int, hi: int) -> int | None:
        v = self.d.get(name)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            reason = _RANGE_REASONS.get(name, "must be between {lo} and {hi}.").format(name=name, lo=lo, hi=hi)
            raise InvalidParameterValue(f"Value {str(v)[:40]} for parameter {name} is invalid. Reason: {reason}")
        return v

    def str_map(self, name: str) -> dict[str, str]:
        v = self.d.get(name)
        if v is None:
            return {}
        if not isinstance(v, dict) or not all(isinstance(k, str) and isinstance(x, str) for k, x in v.items()):
            raise InvalidParameterValue(f"Value for parameter {name} must be a map of strings.")
        return v

    def str_list(self, name: str) -> list[str]:
        v = self.d.get(name)
        if v is None:
            return []
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise InvalidParameterValue(f"Value for parameter {name} must be a list of strings.")
        return v

    def entries(self, name: str) -> list[Params]:
        v = self.d.get(name)
        if v is None:
            raise MissingParameter(f"The request must contain the parameter {name}.")
        if not isinstance(v, list) or not all(isinstance(x, dict) for x in v):
            raise InvalidParameterValue(f"Value for parameter {name} must be a list of structures.")
        if not v:
            raise EmptyBatchRequest("There should be at least one SendMessageBatchRequestEntry in the request.")
        if len(v) > MAX_BATCH:
            raise TooManyEntriesInBatchRequest(f"Maximum number of entries per request are {MAX_BATCH}. You have "
                                               f"sent {len(v)}.")
        seen: set[str] = set()
        out = []
        for e in v:
            p = Params(e)
            eid = p.req("Id")
            if not eid or len(eid) > 80 or not set(eid) <= _BATCH_ID_CHARS:
                raise InvalidBatchEntryId("A batch entry id can only contain alphanumeric characters, hyphens and "
                                          "underscores. It can be at most 80 letters long.")
            if eid in seen:
                raise BatchEntryIdsNotDistinct(f"Id {eid} repeated.")
            seen.add(eid)
            out.append(p)
        return out


def parse_send(p: Params) -> SendMessage:
    body = p.req("MessageBody")
    M.check_body(body)
    attrs = M.parse_attributes(p.d.get("MessageAttributes"))
    trace = None
    sys_attrs = p.d.get("MessageSystemAttributes")
    if isinstance(sys_attrs, dict) and isinstance(sys_attrs.get("AWSTraceHeader"), dict):
        sv = sys_attrs["AWSTraceHeader"].get("StringValue")
        trace = sv if isinstance(sv, str) else None
    return SendMessage(body, attrs, p.integer("DelaySeconds", 0, 900), p.text("MessageGroupId", max_len=128),
                       p.text("MessageDeduplicationId", max_len=128), trace)


def parse_receive(p: Params) -> ReceiveMessage:
    names = p.str_list("MessageSystemAttributeNames") + p.str_list("AttributeNames")
    for n in names:
        if n != "All" and n not in SYSTEM_ATTRIBUTES:
            raise InvalidAttributeName(f"Unknown Attribute {n}.")
    return ReceiveMessage(p.integer("MaxNumberOfMessages", 1, 10) or 1, p.integer("VisibilityTimeout", 0, 43200),
                          p.integer("WaitTimeSeconds", 0, 20), names, p.str_list("MessageAttributeNames"),
                          p.text("ReceiveRequestAttemptId", max_len=128))


@dataclasses.dataclass(frozen=True, slots=True)
class CreateQueue:
    name: str
    attributes: dict[str, str]
    tags: dict[str, str]


@dataclasses.dataclass(frozen=True, slots=True)
class ChangeVisibility:
    receipt_handle: str
    timeout: int


@dataclasses.dataclass(frozen=True, slots=True)
class StartMove:
    source: str
    destination: str | None
    rate: int | None


def parse_create_queue(p: Params) -> CreateQueue:
    name = p.req("QueueName")
    tags = p.str_map("tags")
    check_tags(tags)
    return CreateQueue(name, p.str_map("Attributes"), tags)


def parse_tags(p: Params) -> dict[str, str]:
    """TagQueue's tags (their count against the queue's is checked with ``check_tags``)."""
    tags = p.str_map("Tags")
    if not tags:
        raise MissingParameter("The request must contain the parameter Tags.")
    return tags


def parse_tag_keys(p: Params) -> list[str]:
    keys = p.str_list("TagKeys")
    if not keys:
        raise MissingParameter("The request must contain the parameter TagKeys.")
    return keys


def parse_change_visibility(p: Params) -> ChangeVisibility:
    """ChangeMessageVisibility, or one entry of its batch."""
    timeout = p.integer("VisibilityTimeout", 0, 43200)
    if timeout is None:
        raise MissingParameter("The request must contain the parameter VisibilityTimeout.")
    return ChangeVisibility(p.req("ReceiptHandle"), timeout)


def parse_start_move(p: Params) -> StartMove:
    src = name_from_arn(p.req("SourceArn"))
    dest_arn = p.text("DestinationArn")
    dest = name_from_arn(dest_arn) if dest_arn else None
    if src is None or (dest_arn and dest is None):
        raise InvalidParameterValue("Value for parameter SourceArn or DestinationArn is not a valid ARN.")
    return StartMove(src, dest, p.integer("MaxNumberOfMessagesPerSecond", 1, 500))


def parse_list_moves(p: Params) -> tuple[str, int]:
    """ListMessageMoveTasks: (source queue name, how many tasks at most)."""
    src = name_from_arn(p.req("SourceArn"))
    if src is None:
        raise InvalidParameterValue("Value for parameter SourceArn is not a valid ARN.")
    return src, p.integer("MaxResults", 1, 10) or 1


def parse_send_batch(p: Params, fifo: bool, content_dedup: bool) -> list[tuple[str, Params]]:
    """SendMessageBatch's entries as (Id, entry) after the checks AWS applies to the whole request (total
    size; on a FIFO queue, group and deduplication ids); each entry is parsed by ``parse_send``."""
    entries = p.entries("Entries")
    total = sum(len(str(e.d.get("MessageBody", "")).encode()) + attributes_size(e.d.get("MessageAttributes"))
                for e in entries)
    if total > MAX_BATCH_BYTES:
        raise BatchRequestTooLong(f"Batch requests cannot be longer than {MAX_BATCH_BYTES} bytes. You have "
                                  f"sent {total} bytes.")
    if fifo:
        # AWS fails the whole request here, not entry by entry
        if any(not e.d.get("MessageGroupId") for e in entries):
            raise MissingParameter("The request must contain the parameter MessageGroupId.")
        if not content_dedup and any(not e.d.get("MessageDeduplicationId") for e in entries):
            raise InvalidParameterValue("The queue should either have ContentBasedDeduplication enabled or "
                                        "MessageDeduplicationId provided explicitly")
    return [(e.req("Id"), e) for e in entries]


def send_headers(op: SendMessage, fifo: bool, max_size: int) -> tuple[bytes, dict[str, Any]]:
    """A send's body and the headers that carry its attributes, group, deduplication id and trace header,
    checked against the queue's type and MaximumMessageSize."""
    body = op.body.encode()
    if len(body) + M.attributes_size(op.attributes) > max_size:
        raise MessageTooLong(f"One or more parameters are invalid. Reason: Message must be shorter than "
                             f"{max_size} bytes.")
    headers = M.to_headers(op.attributes)
    if op.group is not None:
        headers[GROUP_HEADER] = op.group
    if op.dedup is not None:
        if not fifo:
            raise InvalidParameterValue("The request include parameter MessageDeduplicationId that is not valid "
                                        "for this queue type")
        headers[DEDUP_HEADER] = op.dedup
    if op.trace_header is not None:
        headers[M.TRACE_HEADER] = op.trace_header
    return body, headers


def send_result(op: SendMessage, body: bytes, message_id: str, sequence: int | None) -> dict[str, Any]:
    out: dict[str, Any] = {"MessageId": message_id, "MD5OfMessageBody": M.md5_hex(body)}
    if op.attributes:
        out["MD5OfMessageAttributes"] = M.md5_of_attributes(op.attributes)
    if sequence is not None:
        out["SequenceNumber"] = f"{sequence:020d}"
    return out


def queue_name(url: str) -> str:
    """The queue name in a QueueUrl (``http://host/<account>/<name>``), or a bare name."""
    path = urlsplit(url).path if "://" in url else url
    name = unquote(path.rstrip("/").rsplit("/", 1)[-1])
    if not name:
        raise QueueDoesNotExist("The specified queue does not exist.")
    return name


def error_fields(err: HareError) -> tuple[str, str, str]:
    """(JSON shape, query error code, fault) of an error."""
    shape = getattr(err, "sqs_shape", None)
    code = err.sqs_code
    if shape is None:
        if isinstance(err, NotFound):
            shape, code = "QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue"
        elif isinstance(err, AccessRefused):
            shape, code = "AccessDenied", "AccessDenied"
        else:
            shape = code
    fault = "Sender" if isinstance(err, PeerError) else "Receiver"
    return shape, code, fault


def query_error_response(err: HareError, request_id: str) -> HttpResponse:
    _, code, fault = error_fields(err)
    return query.error(err.http_status, code, fault, err.text, request_id)


def error_response(err: HareError, request_id: str) -> HttpResponse:
    shape, code, fault = error_fields(err)
    body = json.dumps({"__type": f"com.amazonaws.sqs#{shape}", "message": err.text}).encode()
    return HttpResponse(err.http_status, body, JSON,
                        [("x-amzn-RequestId", request_id), ("x-amzn-query-error", f"{code};{fault}")])


def ok(doc: dict[str, Any], rid: str) -> HttpResponse:
    return HttpResponse(200, json.dumps(doc, separators=(",", ":")).encode(), JSON, [("x-amzn-RequestId", rid)])


def queue_url(req: Request, name: str) -> str:
    host = req.headers.get("host", "localhost")
    return f"http://{host}/{ACCOUNT}/{name}"


def too_large_error(req: Request) -> HareError:
    """The error SQS gives an oversize message or batch (never a bare HTTP 413), for a request whose
    body was dropped for being over the listener's limit."""
    if query.is_query(req):
        # the query string, or the head of the dropped form body (SDKs put Action first)
        text = req.query + "&" + req.body.decode("latin-1")
        action = next((unquote(v) for k, _, v in (p.partition("=") for p in text.split("&"))
                       if k == "Action"), "")
    else:
        action = req.headers.get("x-amz-target", "")[len(TARGET_PREFIX):]
    if action.endswith("Batch"):
        return BatchRequestTooLong(f"Batch requests cannot be longer than {MAX_BATCH_BYTES} bytes.")
    return MessageTooLong(f"One or more parameters are invalid. Reason: Message must be shorter than "
                          f"{MAX_MESSAGE_SIZE} bytes.")


def page(names: list[str], p: Params) -> tuple[list[str], dict[str, Any]]:
    """ListQueues-style pagination over sorted names: (this page, {"NextToken": ...} if more)."""
    limit = p.integer("MaxResults", 1, 1000)
    token = p.text("NextToken")
    if token:
        after = page_untoken(token)
        names = [n for n in names if n > after]
    out: dict[str, Any] = {}
    if limit is not None and len(names) > limit:
        names = names[:limit]
        out["NextToken"] = page_token(names[-1])
    return names, out


def attributes_size(raw: Any) -> int:
    """Size of a batch entry's message attributes as sent (names, types, values), for the batch limit."""
    if not isinstance(raw, dict):
        return 0
    n = 0
    for name, spec in raw.items():
        n += len(str(name).encode())
        if isinstance(spec, dict):
            n += sum(len(str(spec.get(k, "")).encode()) for k in ("DataType", "StringValue"))
            n += len(str(spec.get("BinaryValue", ""))) * 3 // 4
    return n


def batch_failure(eid: str, err: HareError) -> dict[str, Any]:
    return {"Id": eid, "SenderFault": isinstance(err, PeerError), "Code": err.sqs_code, "Message": err.text}


def page_token(name: str) -> str:
    return name.encode().hex()


def page_untoken(token: str) -> str:
    try:
        return bytes.fromhex(token).decode()
    except ValueError:
        raise InvalidParameterValue("Invalid NextToken.") from None


def access_key_of(req: Request) -> str | None:
    """The access key id a request claims (Authorization header or presigned query), for the audit log."""
    auth = req.headers.get("authorization")
    if auth is not None:
        cred = auth.partition("Credential=")[2]
        return cred.split("/", 1)[0][:128] or None
    for part in req.query.split("&"):
        if part.startswith("X-Amz-Credential="):
            return unquote(part[len("X-Amz-Credential="):]).split("/", 1)[0][:128] or None
    return None


def region_of(req: Request) -> str:
    auth = req.headers.get("authorization")
    if auth is None:
        cred = next((unquote(p[len("X-Amz-Credential="):]) for p in req.query.split("&")
                     if p.startswith("X-Amz-Credential=")), "")
        parts = cred.split("/")
        return parts[2] if len(parts) == 5 and parts[2] else "us-east-1"
    try:
        return sigv4.parse_authorization(auth)[2]
    except HareError:
        return "us-east-1"


# ---- request decoding ------------------------------------------------------------------------------------
def json_action(req: Request) -> str:
    """The action of an AWS JSON 1.0 request (``X-Amz-Target: AmazonSQS.<Action>``)."""
    if req.method != "POST":
        raise InvalidAction("Only POST requests with the AWS JSON 1.0 protocol (X-Amz-Target) are supported.")
    target = req.headers.get("x-amz-target", "")
    if not target.startswith(TARGET_PREFIX):
        raise InvalidAction("Missing or unsupported X-Amz-Target; expected AmazonSQS.<Action>.")
    return target[len(TARGET_PREFIX):]


def json_params(req: Request) -> Params:
    """The parameters of an AWS JSON 1.0 request: its body, a JSON object."""
    try:
        doc = json.loads(req.body) if req.body else {}
    except (ValueError, UnicodeDecodeError):
        raise MalformedRequest("Start of structure or map found where not expected.") from None
    if not isinstance(doc, dict):
        raise MalformedRequest("The request body must be a JSON object.")
    return Params(doc)


def query_action(req: Request) -> tuple[str, dict[str, str]]:
    """The action and flat parameters of a Query request (form body or query string)."""
    if req.method not in ("GET", "POST"):
        raise InvalidAction("Only GET and POST requests are supported.")
    params = query.parse_params(req)
    return query.action_of(params), params


def query_params(req: Request, action: str, params: dict[str, str]) -> Params:
    """A Query request's parameters as the JSON-shaped document the actions read (a queue URL in the
    path, ``/<account>/<queue>``, stands for ``QueueUrl``)."""
    path = req.path.strip("/").split("/")
    path_url = queue_url(req, unquote(path[1])) if len(path) == 2 and path[1] else None
    return Params(query.to_doc(action, params, path_url))


# ---- response encoding ----------------------------------------------------------------------------------
def system_attributes(headers: dict[str, Any] | None, *, sender: str, sent_s: int, receive_count: int,
                      first_receive_ms: int, sequence: int | None, region: str) -> dict[str, str]:
    """A received message's system attributes; ``sequence`` is given for FIFO queues (and messages
    received in a group)."""
    headers = headers or {}
    sa = {"SenderId": sender, "ApproximateReceiveCount": str(receive_count), "SentTimestamp": str(sent_s * 1000),
          "ApproximateFirstReceiveTimestamp": str(first_receive_ms)}
    if sequence is not None:
        sa["MessageGroupId"] = str(headers.get(GROUP_HEADER, ""))
        sa["SequenceNumber"] = f"{sequence:020d}"
        dedup = headers.get(DEDUP_HEADER)
        if dedup is not None:
            sa["MessageDeduplicationId"] = str(dedup)
    trace = headers.get(M.TRACE_HEADER)
    if isinstance(trace, str):
        sa["AWSTraceHeader"] = trace
    src = headers.get(SOURCE_HEADER)
    if isinstance(src, str):
        sa["DeadLetterQueueSourceArn"] = arn(src, region)
    return sa


def message_json(message_id: str, receipt: str, body: bytes, headers: dict[str, Any] | None,
                 system: dict[str, str] | None, op: ReceiveMessage) -> dict[str, Any]:
    """One message of a ReceiveMessage answer: body (base64 if not text), the attributes asked for, MD5s."""
    text, b64 = M.body_text(body)
    attrs = M.from_headers(headers)
    if b64:
        attrs[M.BODY_ENCODING] = ("String", "base64")
    m: dict[str, Any] = {"MessageId": message_id, "ReceiptHandle": receipt, "MD5OfBody": M.md5_hex(text.encode()),
                         "Body": text}
    if system:
        if "All" not in op.attribute_names:
            system = {k: v for k, v in system.items() if k in op.attribute_names}
        if system:
            m["Attributes"] = system
    chosen = M.select(attrs, op.message_attribute_names)
    if chosen:
        m["MessageAttributes"] = M.attributes_json(chosen)
        m["MD5OfMessageAttributes"] = M.md5_of_attributes(chosen)
    return m
