"""The SQS API as a sans-IO function: ``SqsApi.handle(HttpRequest) -> HttpResponse | LongPoll``.

Wire format (AWS JSON 1.0, what boto3 speaks by default): ``POST /`` with
``X-Amz-Target: AmazonSQS.<Action>`` and a JSON body; answers are JSON. Errors are
``{"__type": "com.amazonaws.sqs#<Shape>", "message": ...}`` plus the header
``x-amzn-query-error: <query code>;Sender``, from which botocore picks the error code and its
modeled exception class. Everything else (auth, parsing, validation, the action) happens here,
synchronously, against the core; a ReceiveMessage that finds nothing and may wait returns a
``LongPoll`` that the server parks until the queue wakes it or the wait time passes.

The Query protocol (form parameters in, XML out; no ``X-Amz-Target``) runs the same actions:
``query`` turns its flattened parameters into the JSON-shaped document the actions read and
renders their results as XML.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from haremq.clock import SystemClock
from haremq.core.broker import Broker
from haremq.core.lease import TimedLease
from haremq.core.message import Message, Properties
from haremq.core.sqs import (
    ACCOUNT,
    DEDUP_HEADER,
    GROUP_HEADER,
    MAX_MESSAGE_SIZE,
    SOURCE_HEADER,
    SqsQueue,
    arn,
    name_from_arn,
)
from haremq.core.sqs_service import SqsService
from haremq.errors import (
    AccessDenied,
    AccessRefused,
    BatchEntryIdsNotDistinct,
    BatchRequestTooLong,
    EmptyBatchRequest,
    HareError,
    IncompleteSignature,
    InvalidAction,
    InvalidBatchEntryId,
    InvalidClientTokenId,
    InvalidParameterValue,
    MalformedRequest,
    MessageTooLong,
    MissingAuthenticationToken,
    MissingParameter,
    NotFound,
    PeerError,
    QueueDoesNotExist,
    RequestExpired,
    SignatureDoesNotMatch,
    TooManyEntriesInBatchRequest,
    UnsupportedOperation,
)
from haremq.protocol.http import HttpRequest as Request
from haremq.protocol.http import HttpResponse
from haremq.protocol.sqs import mapping as M
from haremq.protocol.sqs import query
from haremq.security import sigv4
from haremq.security.refusal import LoginRefused, Peer, Reason
from haremq.security.users import User

if TYPE_CHECKING:
    from haremq.security.auth import Authenticator

JSON = "application/x-amz-json-1.0"
TARGET_PREFIX = "AmazonSQS."
MAX_BATCH = 10
MAX_BATCH_BYTES = MAX_MESSAGE_SIZE  # AWS: the bodies and attributes of a batch, together, at most 1 MiB
_BATCH_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")
SYSTEM_ATTRIBUTES = ("SenderId", "SentTimestamp", "ApproximateReceiveCount", "ApproximateFirstReceiveTimestamp",
                     "SequenceNumber", "MessageDeduplicationId", "MessageGroupId", "AWSTraceHeader",
                     "DeadLetterQueueSourceArn")


@dataclasses.dataclass(slots=True)
class LongPoll:
    """A receive that found nothing yet: park it on ``queue.waiters`` and call ``retry`` when woken."""

    queue: SqsQueue
    wait_seconds: float
    retry: Callable[[], HttpResponse | None]
    empty: Callable[[], HttpResponse]


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
            from haremq.errors import InvalidAttributeName

            raise InvalidAttributeName(f"Unknown Attribute {n}.")
    return ReceiveMessage(p.integer("MaxNumberOfMessages", 1, 10) or 1, p.integer("VisibilityTimeout", 0, 43200),
                          p.integer("WaitTimeSeconds", 0, 20), names, p.str_list("MessageAttributeNames"),
                          p.text("ReceiveRequestAttemptId", max_len=128))


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


class SqsApi:
    def __init__(self, broker: Broker, *, any_credentials: bool = False, default_user: str = "guest",
                 max_wait: float | None = None, auth: Authenticator | None = None) -> None:
        self.broker = broker
        if auth is None:  # standalone (unit tests): a service of its own on the wall clock
            from haremq.security.auth import Authenticator

            auth = Authenticator(broker.users, SystemClock())
        self.auth = auth  # the node's authentication service: it verifies and audits, this maps refusals
        self.service = SqsService(broker)
        self.any_credentials = any_credentials
        self.default_user = default_user
        self.max_wait = max_wait  # tests may cap long polls
        self._rid = itertools.count(1)
        self._rid_prefix = uuid.uuid4().hex[:20]
        self.requests = 0
        self.errors = 0
        self._actions: dict[str, Callable[[User, Params, Request, str], Any]] = {
            name[3:]: getattr(self, name) for name in dir(self) if name.startswith("do_")
        }

    # ---- entry point -------------------------------------------------------------------------------
    def handle(self, req: Request) -> HttpResponse | LongPoll:
        self.requests += 1
        rid = f"{self._rid_prefix}-{next(self._rid):012d}"
        if query.is_query(req):
            return self._handle_query(req, rid)
        try:
            if req.method != "POST":
                raise InvalidAction("Only POST requests with the AWS JSON 1.0 protocol (X-Amz-Target) are "
                                    "supported.")
            target = req.headers.get("x-amz-target", "")
            if not target.startswith(TARGET_PREFIX):
                raise InvalidAction("Missing or unsupported X-Amz-Target; expected AmazonSQS.<Action>.")
            action = self._actions.get(target[len(TARGET_PREFIX):])
            if action is None:
                raise InvalidAction(f"The action {target[len(TARGET_PREFIX):][:64]} is not valid for this "
                                    "endpoint.")
            user, region = self._authenticate(req)
            try:
                doc = json.loads(req.body) if req.body else {}
            except (ValueError, UnicodeDecodeError):
                raise MalformedRequest("Start of structure or map found where not expected.") from None
            if not isinstance(doc, dict):
                raise MalformedRequest("The request body must be a JSON object.")
            out = action(user, Params(doc), req, region)
        except HareError as err:
            self.errors += 1
            return error_response(err, rid)
        if isinstance(out, LongPoll):
            return out
        return self.ok(out, rid)

    def _handle_query(self, req: Request, rid: str) -> HttpResponse | LongPoll:
        try:
            if req.method not in ("GET", "POST"):
                raise InvalidAction("Only GET and POST requests are supported.")
            params = query.parse_params(req)
            name = query.action_of(params)
            action = self._actions.get(name)
            if action is None:
                raise InvalidAction(f"The action {name[:64]} is not valid for this endpoint.")
            user, region = self._authenticate(req)
            path = req.path.strip("/").split("/")
            path_url = self.url(req, unquote(path[1])) if len(path) == 2 and path[1] else None
            out = action(user, Params(query.to_doc(name, params, path_url)), req, region)
        except HareError as err:
            self.errors += 1
            return query_error_response(err, rid)
        if isinstance(out, LongPoll):
            return out
        return query.render(name, out, rid)

    def failure(self, req: Request, err: HareError) -> HttpResponse:
        """``err`` as the answer to ``req``, in its protocol (JSON or Query)."""
        self.errors += 1
        rid = f"{self._rid_prefix}-{next(self._rid):012d}"
        return query_error_response(err, rid) if query.is_query(req) else error_response(err, rid)

    def too_large(self, req: Request) -> HttpResponse:
        """A request whose body is over the listener's limit (its body was dropped): the error SQS gives
        an oversize message or batch, never a bare HTTP 413."""
        if query.is_query(req):
            # the query string, or the head of the dropped form body (SDKs put Action first)
            text = req.query + "&" + req.body.decode("latin-1")
            action = next((unquote(v) for k, _, v in (p.partition("=") for p in text.split("&"))
                           if k == "Action"), "")
        else:
            action = req.headers.get("x-amz-target", "")[len(TARGET_PREFIX):]
        err: HareError
        if action.endswith("Batch"):
            err = BatchRequestTooLong(f"Batch requests cannot be longer than {MAX_BATCH_BYTES} bytes.")
        else:
            err = MessageTooLong(f"One or more parameters are invalid. Reason: Message must be shorter than "
                                 f"{MAX_MESSAGE_SIZE} bytes.")
        return self.failure(req, err)

    @staticmethod
    def ok(doc: dict[str, Any], rid: str) -> HttpResponse:
        return HttpResponse(200, json.dumps(doc, separators=(",", ":")).encode(), JSON,
                            [("x-amzn-RequestId", rid)])

    def _authenticate(self, req: Request) -> tuple[User, str]:
        """The caller and the region it signed for; a refusal (already audited) becomes its AWS error."""
        peer = Peer("sqs", req.peer, req.loopback)
        try:
            if self.any_credentials:
                return self.auth.trusted(self.default_user, peer, "--sqs-any-credentials"), _region_of(req)
            return self.auth.sigv4(req, peer)
        except LoginRefused as refused:
            raise _AWS_REFUSALS.get(refused.reason, AccessDenied)(refused.detail) from None

    def url(self, req: Request, name: str) -> str:
        host = req.headers.get("host", "localhost")
        return f"http://{host}/{ACCOUNT}/{name}"

    def _queue(self, user: User, p: Params, access: str = "read") -> SqsQueue:
        return self.service.queue(user, queue_name(p.req("QueueUrl")), access)  # type: ignore[arg-type]

    # ---- queues --------------------------------------------------------------------------------------
    def do_CreateQueue(self, user: User, p: Params, req: Request, region: str) -> dict[str, Any]:
        name = p.req("QueueName")
        tags = p.str_map("tags")
        check_tags(tags)
        sq = self.service.create(user, name, p.str_map("Attributes"), tags)
        return {"QueueUrl": self.url(req, sq.name)}

    def do_GetQueueUrl(self, user: User, p: Params, req: Request, region: str) -> dict[str, Any]:
        sq = self.service.queue(user, p.req("QueueName"), None)  # any permission: producers look up too
        return {"QueueUrl": self.url(req, sq.name)}

    def do_ListQueues(self, user: User, p: Params, req: Request, region: str) -> dict[str, Any]:
        names, out = _page(self.service.names(user, p.text("QueueNamePrefix")), p)
        if p.integer("MaxResults", 1, 1000) is None:
            names = names[:1000]
        if names:
            out["QueueUrls"] = [self.url(req, n) for n in names]
        return out

    def do_DeleteQueue(self, user: User, p: Params, req: Request, region: str) -> dict[str, Any]:
        self.service.delete(user, queue_name(p.req("QueueUrl")))
        return {}

    def do_PurgeQueue(self, user: User, p: Params, req: Request, region: str) -> dict[str, Any]:
        self._queue(user, p).purge()
        return {}

    def do_GetQueueAttributes(self, user: User, p: Params, req: Request, region: str) -> dict[str, Any]:
        sq = self._queue(user, p)
        wanted = self.service.attribute_names(p.str_list("AttributeNames"))
        if wanted is not None and not wanted:
            return {}
        attrs = sq.attributes(region)
        if wanted is not None:
            attrs = {k: v for k, v in attrs.items() if k in wanted}
        return {"Attributes": attrs} if attrs else {}

    def do_SetQueueAttributes(self, user: User, p: Params, req: Request, region: str) -> dict[str, Any]:
        sq = self._queue(user, p, "configure")
        sq.set_attributes(p.str_map("Attributes"))
        return {}

    def do_TagQueue(self, user: User, p: Params, req: Request, region: str) -> dict[str, Any]:
        sq = self._queue(user, p, "configure")
        tags = p.str_map("Tags")
        if not tags:
            raise MissingParameter("The request must contain the parameter Tags.")
        check_tags(tags, len(sq.tags.keys() - tags.keys()))
        sq.tags.update(tags)
        sq.persist()
        return {}

    def do_UntagQueue(self, user: User, p: Params, req: Request, region: str) -> dict[str, Any]:
        sq = self._queue(user, p, "configure")
        keys = p.str_list("TagKeys")
        if not keys:
            raise MissingParameter("The request must contain the parameter TagKeys.")
        for k in keys:
            sq.tags.pop(k, None)
        sq.persist()
        return {}

    def do_ListQueueTags(self, user: User, p: Params, req: Request, region: str) -> dict[str, Any]:
        sq = self._queue(user, p)
        return {"Tags": dict(sq.tags)} if sq.tags else {}

    def _no_policies(self, user: User, p: Params, action: str) -> dict[str, Any]:
        self._queue(user, p, "configure")  # a missing or invisible queue answers as usual first
        raise UnsupportedOperation(f"{action} is not supported: access is governed by haremq users' "
                                   "configure/write/read permissions (management API), not queue policies.")

    def do_AddPermission(self, user: User, p: Params, req: Request, region: str) -> dict[str, Any]:
        return self._no_policies(user, p, "AddPermission")

    def do_RemovePermission(self, user: User, p: Params, req: Request, region: str) -> dict[str, Any]:
        return self._no_policies(user, p, "RemovePermission")

    def do_ListDeadLetterSourceQueues(self, user: User, p: Params, req: Request, region: str) -> dict[str, Any]:
        sq = self._queue(user, p)
        visible = [n for n in self.service.dead_letter_sources(sq.name) if self.service.visible(user, n)]
        names, out = _page(visible, p)
        out["queueUrls"] = [self.url(req, n) for n in names]
        return out

    # ---- message move tasks ----------------------------------------------------------------------------
    def do_StartMessageMoveTask(self, user: User, p: Params, req: Request, region: str) -> dict[str, Any]:
        src = name_from_arn(p.req("SourceArn"))
        dest_arn = p.text("DestinationArn")
        dest = name_from_arn(dest_arn) if dest_arn else None
        if src is None or (dest_arn and dest is None):
            raise InvalidParameterValue("Value for parameter SourceArn or DestinationArn is not a valid ARN.")
        rate = p.integer("MaxNumberOfMessagesPerSecond", 1, 500)
        task = self.service.start_move(user, src, dest, rate)
        self.broker.flush()
        return {"TaskHandle": task.handle}

    def do_ListMessageMoveTasks(self, user: User, p: Params, req: Request, region: str) -> dict[str, Any]:
        src = name_from_arn(p.req("SourceArn"))
        if src is None:
            raise InvalidParameterValue("Value for parameter SourceArn is not a valid ARN.")
        limit = p.integer("MaxResults", 1, 10) or 1
        tasks = self.service.list_moves(user, src)[:limit]
        return {"Results": [t.describe(region) for t in tasks]}

    def do_CancelMessageMoveTask(self, user: User, p: Params, req: Request, region: str) -> dict[str, Any]:
        task = self.service.cancel_move(p.req("TaskHandle"))
        return {"ApproximateNumberOfMessagesMoved": task.moved}

    # ---- sending ---------------------------------------------------------------------------------------
    def _send(self, user: User, sq: SqsQueue, op: SendMessage) -> dict[str, Any]:
        body = op.body.encode()
        if len(body) + M.attributes_size(op.attributes) > sq.config.max_size:
            raise MessageTooLong(f"One or more parameters are invalid. Reason: Message must be shorter than "
                                 f"{sq.config.max_size} bytes.")
        headers = M.to_headers(op.attributes)
        if op.group is not None:
            headers[GROUP_HEADER] = op.group
        if op.dedup is not None:
            if not sq.config.fifo:
                raise InvalidParameterValue("The request include parameter MessageDeduplicationId that is not valid "
                                            "for this queue type")
            headers[DEDUP_HEADER] = op.dedup
        if op.trace_header is not None:
            headers["x-amzn-trace-id"] = op.trace_header
        props = Properties(headers=headers or None, delivery_mode=2, message_id=str(uuid.uuid4()),
                           timestamp=int(self.broker.clock.time()), user_id=user.name)
        message_id, seq = sq.send(Message("", sq.name, props, body), op.delay)
        out: dict[str, Any] = {"MessageId": message_id, "MD5OfMessageBody": M.md5_hex(body)}
        if op.attributes:
            out["MD5OfMessageAttributes"] = M.md5_of_attributes(op.attributes)
        if sq.config.fifo and seq is not None:
            out["SequenceNumber"] = f"{seq:020d}"
        return out

    def do_SendMessage(self, user: User, p: Params, req: Request, region: str) -> dict[str, Any]:
        sq = self._queue(user, p, "write")
        out = self._send(user, sq, parse_send(p))
        self.broker.flush()
        return out

    def do_SendMessageBatch(self, user: User, p: Params, req: Request, region: str) -> dict[str, Any]:
        sq = self._queue(user, p, "write")
        entries = p.entries("Entries")
        total = sum(len(str(e.d.get("MessageBody", "")).encode()) + _attributes_size(e.d.get("MessageAttributes"))
                    for e in entries)
        if total > MAX_BATCH_BYTES:
            raise BatchRequestTooLong(f"Batch requests cannot be longer than {MAX_BATCH_BYTES} bytes. You have "
                                      f"sent {total} bytes.")
        if sq.config.fifo:
            # AWS fails the whole request here, not entry by entry
            if any(not e.d.get("MessageGroupId") for e in entries):
                raise MissingParameter("The request must contain the parameter MessageGroupId.")
            if not sq.config.content_dedup and any(not e.d.get("MessageDeduplicationId") for e in entries):
                raise InvalidParameterValue("The queue should either have ContentBasedDeduplication enabled or "
                                            "MessageDeduplicationId provided explicitly")
        ok: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        for e in entries:
            eid = e.req("Id")
            try:
                res = self._send(user, sq, parse_send(e))
            except HareError as err:  # a storage fault fails its entry with SenderFault false
                failed.append(_failure(eid, err))
                continue
            res["Id"] = eid
            ok.append(res)
        self.broker.flush()
        return {"Successful": ok, "Failed": failed}

    # ---- receiving ---------------------------------------------------------------------------------------
    def do_ReceiveMessage(self, user: User, p: Params, req: Request, region: str) -> dict[str, Any] | LongPoll:
        sq = self._queue(user, p)
        op = parse_receive(p)
        rid = f"{self._rid_prefix}-{next(self._rid):012d}"
        leases = sq.receive(op.max_messages, op.visibility, op.attempt_id)
        self.broker.flush()  # a receive may have redriven messages: the DLQ's consumers and long polls
        if leases:
            return self._messages(sq, leases, op, region)
        wait = op.wait if op.wait is not None else sq.config.wait_time
        if self.max_wait is not None:
            wait = min(wait, self.max_wait)  # type: ignore[assignment]
        if wait <= 0:
            return {}
        xml = query.is_query(req)

        def ok(doc: dict[str, Any]) -> HttpResponse:
            return query.render("ReceiveMessage", doc, rid) if xml else self.ok(doc, rid)

        def retry() -> HttpResponse | None:
            if sq.queue.deleted:
                err = QueueDoesNotExist("The specified queue does not exist.")
                return query_error_response(err, rid) if xml else error_response(err, rid)
            got = sq.receive(op.max_messages, op.visibility, op.attempt_id)
            self.broker.flush()
            return ok(self._messages(sq, got, op, region)) if got else None

        return LongPoll(sq, float(wait), retry, lambda: ok({}))

    def _messages(self, sq: SqsQueue, leases: list[TimedLease], op: ReceiveMessage, region: str) -> dict[str, Any]:
        sys_names = op.attribute_names
        all_sys = "All" in sys_names
        out = []
        for lease in leases:
            e = lease.entry
            msg = e.msg
            props = msg.props
            text, b64 = M.body_text(msg.body)
            attrs = M.from_headers(props.headers)
            if b64:
                attrs[M.BODY_ENCODING] = ("String", "base64")
            m: dict[str, Any] = {"MessageId": props.message_id or f"{sq.token}-{e.seq}",
                                 "ReceiptHandle": sq.receipt(lease), "MD5OfBody": M.md5_hex(text.encode()),
                                 "Body": text}
            if sys_names:
                sa = self._system_attributes(sq, lease, region)
                if not all_sys:
                    sa = {k: v for k, v in sa.items() if k in sys_names}
                if sa:
                    m["Attributes"] = sa
            chosen = M.select(attrs, op.message_attribute_names)
            if chosen:
                m["MessageAttributes"] = M.attributes_json(chosen)
                m["MD5OfMessageAttributes"] = M.md5_of_attributes(chosen)
            out.append(m)
        return {"Messages": out}

    @staticmethod
    def _system_attributes(sq: SqsQueue, lease: TimedLease, region: str) -> dict[str, str]:
        e = lease.entry
        props = e.msg.props
        headers = props.headers or {}
        sa = {"SenderId": props.user_id or "", "ApproximateReceiveCount": str(e.delivery_count),
              "SentTimestamp": str((props.timestamp or 0) * 1000),
              "ApproximateFirstReceiveTimestamp": str(sq.first_received.get(e.seq, sq.wall_ms()))}
        if lease.group is not None or sq.config.fifo:
            sa["MessageGroupId"] = str(headers.get(GROUP_HEADER, ""))
            sa["SequenceNumber"] = f"{e.seq:020d}"
            dedup = headers.get(DEDUP_HEADER)
            if dedup is not None:
                sa["MessageDeduplicationId"] = str(dedup)
        trace = headers.get("x-amzn-trace-id")
        if isinstance(trace, str):
            sa["AWSTraceHeader"] = trace
        src = headers.get(SOURCE_HEADER)
        if isinstance(src, str):
            sa["DeadLetterQueueSourceArn"] = arn(src, region)
        return sa

    # ---- settling ------------------------------------------------------------------------------------------
    def do_DeleteMessage(self, user: User, p: Params, req: Request, region: str) -> dict[str, Any]:
        sq = self._queue(user, p)
        sq.delete(p.req("ReceiptHandle"))
        self.broker.flush()
        return {}

    def _each_entry(self, p: Params, apply: Callable[[Params], None]) -> dict[str, Any]:
        """A batch action: apply to every entry; an entry's peer error fails that entry only."""
        ok, failed = [], []
        for e in p.entries("Entries"):
            eid = e.req("Id")
            try:
                apply(e)
            except PeerError as err:
                failed.append(_failure(eid, err))
                continue
            ok.append({"Id": eid})
        self.broker.flush()
        return {"Successful": ok, "Failed": failed}

    def do_DeleteMessageBatch(self, user: User, p: Params, req: Request, region: str) -> dict[str, Any]:
        sq = self._queue(user, p)
        return self._each_entry(p, lambda e: sq.delete(e.req("ReceiptHandle")))

    def do_ChangeMessageVisibility(self, user: User, p: Params, req: Request, region: str) -> dict[str, Any]:
        sq = self._queue(user, p)
        timeout = p.integer("VisibilityTimeout", 0, 43200)
        if timeout is None:
            raise MissingParameter("The request must contain the parameter VisibilityTimeout.")
        sq.change_visibility(p.req("ReceiptHandle"), timeout)
        self.broker.flush()
        return {}

    def do_ChangeMessageVisibilityBatch(self, user: User, p: Params, req: Request, region: str) -> dict[str, Any]:
        sq = self._queue(user, p)

        def change(e: Params) -> None:
            timeout = e.integer("VisibilityTimeout", 0, 43200)
            if timeout is None:
                raise MissingParameter("The request must contain the parameter VisibilityTimeout.")
            sq.change_visibility(e.req("ReceiptHandle"), timeout)

        return self._each_entry(p, change)


def _page(names: list[str], p: Params) -> tuple[list[str], dict[str, Any]]:
    """ListQueues-style pagination over sorted names: (this page, {"NextToken": ...} if more)."""
    limit = p.integer("MaxResults", 1, 1000)
    token = p.text("NextToken")
    if token:
        after = _untoken(token)
        names = [n for n in names if n > after]
    out: dict[str, Any] = {}
    if limit is not None and len(names) > limit:
        names = names[:limit]
        out["NextToken"] = _token(names[-1])
    return names, out


def _attributes_size(raw: Any) -> int:
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


def _failure(eid: str, err: HareError) -> dict[str, Any]:
    return {"Id": eid, "SenderFault": isinstance(err, PeerError), "Code": err.sqs_code, "Message": err.text}


def _token(name: str) -> str:
    return name.encode().hex()


def _untoken(token: str) -> str:
    try:
        return bytes.fromhex(token).decode()
    except ValueError:
        raise InvalidParameterValue("Invalid NextToken.") from None


# the AWS error for each refusal reason (the message is the service's ``detail``, AWS's own text)
_AWS_REFUSALS: dict[Reason, Callable[[str], HareError]] = {
    Reason.NO_CREDENTIALS: MissingAuthenticationToken, Reason.MALFORMED: IncompleteSignature,
    Reason.EXPIRED: RequestExpired, Reason.UNKNOWN_KEY: InvalidClientTokenId,
    Reason.BAD_SIGNATURE: SignatureDoesNotMatch,
}


def _region_of(req: Request) -> str:
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



