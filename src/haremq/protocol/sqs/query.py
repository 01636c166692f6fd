"""The SQS Query protocol (form parameters in, XML out): parsing and rendering only.

What older SDKs and tools speak (botocore before it switched SQS to JSON, the Java SDK v1, the
AWS CLI v1, ...): ``POST /`` (or ``/<account>/<queue>``) with a form-encoded body
``Action=SendMessage&Version=2012-11-05&QueueUrl=...&MessageBody=...``, or the same parameters
in a GET query string. Answers are XML::

    <SendMessageResponse xmlns="https://sqs.amazonaws.com/doc/2012-11-05/">
      <SendMessageResult><MessageId>..</MessageId>...</SendMessageResult>
      <ResponseMetadata><RequestId>..</RequestId></ResponseMetadata>
    </SendMessageResponse>

and errors ``<ErrorResponse><Error><Type>Sender</Type><Code>..</Code><Message>..</Message>
</Error><RequestId>..</RequestId></ErrorResponse>`` with the AWS HTTP status.

The API layer (``api.SqsApi``) runs the very same actions for both protocols: this module turns
the flattened parameters into the JSON-shaped document the actions read
(``Attribute.1.Name/Value`` -> ``{"Attributes": {..}}``, ``MessageAttribute.1.Value.StringValue``
-> ``{"MessageAttributes": {name: {"StringValue": ..}}}``, ``SendMessageBatchRequestEntry.N.*``
-> ``{"Entries": [..]}``, ...) and renders an action's JSON-shaped result as XML, following the
member names of the SQS 2012-11-05 query model.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, ClassVar
from urllib.parse import parse_qsl

from haremq.errors import MissingParameter, SqsError
from haremq.protocol.http import HttpRequest, HttpResponse

XMLNS = "https://sqs.amazonaws.com/doc/2012-11-05/"
XML = "text/xml"
VERSION = "2012-11-05"
MAX_FIELDS = 2000
_INT_RE = re.compile(r"^[+-]?[0-9]{1,18}$")


class MalformedQueryString(SqsError):
    """SQS ``MalformedQueryString``: a form body / query string that does not parse."""

    sqs_code: ClassVar[str] = "MalformedQueryString"
    sqs_shape: ClassVar[str] = "MalformedQueryString"
    http_status: ClassVar[int] = 400


# ---- input specs (the query model's member names) ----------------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class Scalar:
    integer: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class FlatList:
    """A flattened list: ``<Wire>.1``, ``<Wire>.2``, ... (each a scalar or a structure)."""

    item: Spec


@dataclasses.dataclass(frozen=True, slots=True)
class FlatMap:
    """A flattened map: ``<Wire>.N.<key>`` and ``<Wire>.N.<value>`` (a scalar or a structure)."""

    key: str
    value: str
    item: Spec


@dataclasses.dataclass(frozen=True, slots=True)
class Struct:
    members: dict[str, tuple[str, Spec]]  # JSON name -> (query name, spec)


Spec = Scalar | FlatList | FlatMap | Struct
S = Scalar()
INT = Scalar(integer=True)


def _struct(*members: str | tuple[str, str, Spec] | tuple[str, Spec]) -> Struct:
    """Members by name (a string), (name, spec) or (JSON name, query name, spec)."""
    out: dict[str, tuple[str, Spec]] = {}
    for m in members:
        if isinstance(m, str):
            out[m] = (m, S)
        elif len(m) == 2:
            out[m[0]] = (m[0], m[1])
        else:
            out[m[0]] = (m[1], m[2])
    return Struct(out)


_QUEUE_ATTRS = FlatMap("Name", "Value", S)
_TAGS = FlatMap("Key", "Value", S)
_ATTR_VALUE = _struct("StringValue", "BinaryValue", "DataType", ("StringListValues", "StringListValue", FlatList(S)),
                      ("BinaryListValues", "BinaryListValue", FlatList(S)))
_MSG_ATTRS = FlatMap("Name", "Value", _ATTR_VALUE)
_SEND = (("MessageBody", S), ("DelaySeconds", INT), ("MessageAttributes", "MessageAttribute", _MSG_ATTRS),
         ("MessageSystemAttributes", "MessageSystemAttribute", _MSG_ATTRS), ("MessageDeduplicationId", S),
         ("MessageGroupId", S))
_ENTRY_ID = ("Id", S)

INPUTS: dict[str, Struct] = {
    "CreateQueue": _struct("QueueName", ("Attributes", "Attribute", _QUEUE_ATTRS), ("tags", "Tag", _TAGS)),
    "GetQueueUrl": _struct("QueueName", "QueueOwnerAWSAccountId"),
    "ListQueues": _struct("QueueNamePrefix", "NextToken", ("MaxResults", INT)),
    "DeleteQueue": _struct("QueueUrl"),
    "PurgeQueue": _struct("QueueUrl"),
    "GetQueueAttributes": _struct("QueueUrl", ("AttributeNames", "AttributeName", FlatList(S))),
    "SetQueueAttributes": _struct("QueueUrl", ("Attributes", "Attribute", _QUEUE_ATTRS)),
    "TagQueue": _struct("QueueUrl", ("Tags", "Tag", _TAGS)),
    "UntagQueue": _struct("QueueUrl", ("TagKeys", "TagKey", FlatList(S))),
    "ListQueueTags": _struct("QueueUrl"),
    "ListDeadLetterSourceQueues": _struct("QueueUrl", "NextToken", ("MaxResults", INT)),
    "StartMessageMoveTask": _struct("SourceArn", "DestinationArn", ("MaxNumberOfMessagesPerSecond", INT)),
    "ListMessageMoveTasks": _struct("SourceArn", ("MaxResults", INT)),
    "CancelMessageMoveTask": _struct("TaskHandle"),
    "SendMessage": _struct("QueueUrl", *_SEND),
    "SendMessageBatch": _struct("QueueUrl", ("Entries", "SendMessageBatchRequestEntry",
                                             FlatList(_struct(_ENTRY_ID, *_SEND)))),
    "ReceiveMessage": _struct("QueueUrl", ("AttributeNames", "AttributeName", FlatList(S)),
                              ("MessageSystemAttributeNames", "MessageSystemAttributeName", FlatList(S)),
                              ("MessageAttributeNames", "MessageAttributeName", FlatList(S)),
                              ("MaxNumberOfMessages", INT), ("VisibilityTimeout", INT), ("WaitTimeSeconds", INT),
                              "ReceiveRequestAttemptId"),
    "DeleteMessage": _struct("QueueUrl", "ReceiptHandle"),
    "AddPermission": _struct("QueueUrl", "Label", ("AWSAccountIds", "AWSAccountId", FlatList(S)),
                             ("Actions", "ActionName", FlatList(S))),
    "RemovePermission": _struct("QueueUrl", "Label"),
    "DeleteMessageBatch": _struct("QueueUrl", ("Entries", "DeleteMessageBatchRequestEntry",
                                               FlatList(_struct(_ENTRY_ID, "ReceiptHandle")))),
    "ChangeMessageVisibility": _struct("QueueUrl", "ReceiptHandle", ("VisibilityTimeout", INT)),
    "ChangeMessageVisibilityBatch": _struct("QueueUrl", (
        "Entries", "ChangeMessageVisibilityBatchRequestEntry",
        FlatList(_struct(_ENTRY_ID, "ReceiptHandle", ("VisibilityTimeout", INT))))),
}
# parameters that are not the action's own
_ENVELOPE = frozenset({"Action", "Version", "X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
                       "X-Amz-SignedHeaders", "X-Amz-Signature", "X-Amz-Security-Token", "AWSAccessKeyId",
                       "SignatureVersion", "SignatureMethod", "Signature", "Timestamp", "Expires"})


def is_query(req: HttpRequest) -> bool:
    """A Query-protocol request: no ``X-Amz-Target`` and not a JSON body (form-encoded POST or a GET)."""
    if "x-amz-target" in req.headers:
        return False
    ctype = req.headers.get("content-type", "").lower()
    return not ctype.startswith("application/x-amz-json") and not ctype.startswith("application/json")


def parse_params(req: HttpRequest) -> dict[str, str]:
    """The request's parameters: the query string plus, for a POST, the form body. Raises MalformedQueryString."""
    out: dict[str, str] = {}
    sources = [req.query]
    if req.body:
        ctype = req.headers.get("content-type", "application/x-www-form-urlencoded").lower()
        if not ctype.startswith("application/x-www-form-urlencoded"):
            raise MalformedQueryString(f"Unsupported content type {ctype.split(';')[0][:60]} for a query request; "
                                       "expected application/x-www-form-urlencoded.")
        if "charset=" in ctype and ctype.split("charset=", 1)[1].split(";")[0].strip() not in ("utf-8", "utf8"):
            raise MalformedQueryString("Only the UTF-8 charset is supported.")
        try:
            sources.append(req.body.decode("ascii"))
        except UnicodeDecodeError:
            raise MalformedQueryString("The form body must be percent-encoded ASCII.") from None
    for src in sources:
        if not src:
            continue
        try:
            pairs = parse_qsl(src, keep_blank_values=True, strict_parsing=True, encoding="utf-8", errors="strict",
                              max_num_fields=MAX_FIELDS)
        except (ValueError, UnicodeDecodeError) as e:
            raise MalformedQueryString(f"The request's parameters could not be parsed: {str(e)[:80]}") from None
        for k, v in pairs:
            if k in out and out[k] != v:
                raise MalformedQueryString(f"Parameter {k[:80]} given more than once.")
            out[k] = v
    return out


def action_of(params: dict[str, str]) -> str:
    action = params.get("Action")
    if not action:
        raise MissingParameter("The request must contain the parameter Action.")
    return action


def to_doc(action: str, params: dict[str, str], path_queue_url: str | None = None) -> dict[str, Any]:
    """The JSON-shaped request document of ``action`` from its flattened query parameters.

    ``path_queue_url`` is the queue URL the request was posted to (``/<account>/<name>``); SDKs that
    post to the queue URL may leave out the ``QueueUrl`` parameter.
    """
    tree = _tree({k: v for k, v in params.items() if k not in _ENVELOPE})
    spec = INPUTS.get(action)
    if spec is None:  # an action without a spec: its scalar parameters as they are
        return {k: v for k, v in tree.items() if isinstance(v, str)}
    doc = _convert(tree, spec, "")
    assert isinstance(doc, dict)
    if "QueueUrl" in spec.members and "QueueUrl" not in doc and path_queue_url is not None:
        doc["QueueUrl"] = path_queue_url
    return doc


Tree = dict[str, "str | Tree"]


def _tree(params: dict[str, str]) -> Tree:
    """``{"A.1.B": v}`` -> ``{"A": {"1": {"B": v}}}``; a name both a value and a prefix is malformed."""
    root: Tree = {}
    for key, value in params.items():
        parts = key.split(".")
        node = root
        for i, part in enumerate(parts):
            if not part:
                raise MalformedQueryString(f"Malformed parameter name {key[:80]}.")
            last = i == len(parts) - 1
            cur = node.get(part)
            if last:
                if cur is not None:
                    raise MalformedQueryString(f"Parameter {key[:80]} conflicts with another parameter.")
                node[part] = value
            else:
                if cur is None:
                    cur = node[part] = {}
                elif isinstance(cur, str):
                    raise MalformedQueryString(f"Parameter {key[:80]} conflicts with another parameter.")
                node = cur
    return root


def _convert(node: str | Tree, spec: Spec, where: str) -> Any:
    if isinstance(spec, Scalar):
        if not isinstance(node, str):
            raise MalformedQueryString(f"Parameter {where[:80]} must be a single value.")
        if spec.integer and _INT_RE.match(node):
            return int(node)
        return node  # a bad integer stays a string: the action reports InvalidParameterValue
    if isinstance(node, str):
        raise MalformedQueryString(f"Parameter {where[:80]} must have members ({where[:80]}.<name>).")
    if isinstance(spec, Struct):
        out: dict[str, Any] = {}
        for json_name, (wire, member) in spec.members.items():
            sub = node.get(wire)
            if sub is not None:
                out[json_name] = _convert(sub, member, f"{where}.{wire}" if where else wire)
        return out
    items = _numbered(node, where)
    if isinstance(spec, FlatList):
        return [_convert(sub, spec.item, f"{where}.{n}") for n, sub in items]
    m: dict[str, Any] = {}
    for n, sub in items:
        entry = f"{where}.{n}"
        if isinstance(sub, str):
            raise MalformedQueryString(f"Parameter {entry[:80]} must have members {spec.key} and {spec.value}.")
        k, v = sub.get(spec.key), sub.get(spec.value)
        if not isinstance(k, str):
            raise MissingParameter(f"The request must contain the parameter {entry[:80]}.{spec.key}.")
        if v is None:
            raise MissingParameter(f"The request must contain the parameter {entry[:80]}.{spec.value}.")
        if k in m:
            raise MalformedQueryString(f"{where[:80]} {k[:80]} given more than once.")
        m[k] = _convert(v, spec.item, f"{entry}.{spec.value}")
    return m


def _numbered(node: Tree, where: str) -> list[tuple[int, str | Tree]]:
    items = []
    for k, sub in node.items():
        if not k.isdigit() or k.startswith("0") or len(k) > 4:
            raise MalformedQueryString(f"Parameter {where[:80]}.{k[:20]}: list members are numbered from 1.")
        items.append((int(k), sub))
    items.sort(key=lambda t: t[0])
    return items


# ---- output (XML) ------------------------------------------------------------------------------------
_LIST_ITEMS = {"QueueUrls": "QueueUrl", "queueUrls": "QueueUrl", "Messages": "Message",
               "Failed": "BatchResultErrorEntry", "Results": "ListMessageMoveTasksResultEntry"}
_SUCCESS_ITEMS = {"SendMessageBatch": "SendMessageBatchResultEntry",
                  "DeleteMessageBatch": "DeleteMessageBatchResultEntry",
                  "ChangeMessageVisibilityBatch": "ChangeMessageVisibilityBatchResultEntry"}
_MAPS = {"Attributes": ("Attribute", "Name", "Value"), "Tags": ("Tag", "Key", "Value"),
         "MessageAttributes": ("MessageAttribute", "Name", "Value")}
# characters that must not reach the client raw: XML markup, and CR (XML parsers turn it into LF)
_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#xD;"})
# characters XML 1.0 cannot carry at all (not even as references), lone surrogates included
_NOT_XML = re.compile("[^\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    t = str(v)
    if _NOT_XML.search(t):
        t = _NOT_XML.sub("\ufffd", t)
    return t.translate(_ESCAPES)


def _render(out: list[str], name: str, value: Any, action: str) -> None:
    if isinstance(value, list):
        item = _SUCCESS_ITEMS.get(action, name) if name == "Successful" else _LIST_ITEMS.get(name, name)
        for v in value:
            _render(out, item, v, action)
    elif isinstance(value, dict):
        if name in _MAPS:
            entry, key, val = _MAPS[name]
            for k, v in value.items():
                out.append(f"<{entry}><{key}>{_text(k)}</{key}>")
                _render(out, val, v, action)
                out.append(f"</{entry}>")
        else:
            out.append(f"<{name}>")
            for k, v in value.items():
                _render(out, k, v, action)
            out.append(f"</{name}>")
    elif value is not None:
        out.append(f"<{name}>{_text(value)}</{name}>")


def render(action: str, doc: dict[str, Any], request_id: str) -> HttpResponse:
    """An action's JSON-shaped result as the Query protocol's XML response."""
    out = [f'<?xml version="1.0" encoding="UTF-8"?>\n<{action}Response xmlns="{XMLNS}">']
    if doc or action in _HAS_RESULT:
        out.append(f"<{action}Result>")
        for k, v in doc.items():
            _render(out, k, v, action)
        out.append(f"</{action}Result>")
    out.append(f"<ResponseMetadata><RequestId>{_text(request_id)}</RequestId></ResponseMetadata>"
               f"</{action}Response>")
    return HttpResponse(200, "".join(out).encode(), XML, [("x-amzn-RequestId", request_id)])


# actions whose response has a (possibly empty) <ActionResult> element
_HAS_RESULT = frozenset({"CreateQueue", "GetQueueUrl", "ListQueues", "GetQueueAttributes", "ListQueueTags",
                         "ListDeadLetterSourceQueues", "StartMessageMoveTask", "ListMessageMoveTasks",
                         "CancelMessageMoveTask", "SendMessage", "SendMessageBatch", "ReceiveMessage",
                         "DeleteMessageBatch", "ChangeMessageVisibilityBatch"})


def error(status: int, code: str, fault: str, message: str, request_id: str) -> HttpResponse:
    body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<ErrorResponse xmlns="{XMLNS}"><Error><Type>{fault}</Type>'
            f"<Code>{_text(code)}</Code><Message>{_text(message)}</Message><Detail/></Error>"
            f"<RequestId>{_text(request_id)}</RequestId></ErrorResponse>")
    return HttpResponse(status, body.encode(), XML, [("x-amzn-RequestId", request_id)])
