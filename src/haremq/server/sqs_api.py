"""The SQS driver: runs SQS actions, decoded by ``protocol.sqs``, against the broker.

``SqsApi.handle(HttpRequest) -> HttpResponse | LongPoll`` is synchronous: it decodes the request
(``protocol.sqs.api``: JSON 1.0 or Query), authenticates it (SigV4 against the users' access keys),
runs the action through ``SqsService`` (queues, sends, receives, leases) and encodes the answer. A
ReceiveMessage that finds nothing and may wait returns a ``LongPoll`` that the HTTP endpoint
(``server/http/sqs.py``) parks until the queue wakes it or the wait time passes.
"""

from __future__ import annotations

import dataclasses
import itertools
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from haremq.clock import SystemClock
from haremq.errors import (
    AccessDenied,
    HareError,
    IncompleteSignature,
    InvalidAction,
    InvalidClientTokenId,
    MissingAuthenticationToken,
    PeerError,
    QueueDoesNotExist,
    RequestExpired,
    SignatureDoesNotMatch,
    UnsupportedOperation,
)
from haremq.message import Message, Properties
from haremq.protocol.http import HttpRequest as Request
from haremq.protocol.http import HttpResponse
from haremq.protocol.sqs import api as P
from haremq.protocol.sqs import query
from haremq.protocol.sqs.api import (
    Params,
    ReceiveMessage,
    SendMessage,
    check_tags,
    parse_receive,
    parse_send,
    queue_name,
)
from haremq.security.auth import Authenticator
from haremq.security.refusal import LoginRefused, Peer, Reason
from haremq.server.sqs_service import SqsQueue, SqsService

if TYPE_CHECKING:
    from haremq.core.broker import Broker
    from haremq.core.lease import Lease
    from haremq.security.users import User


@dataclasses.dataclass(slots=True)
class LongPoll:
    """A receive that found nothing yet: park it on ``queue.waiters`` and call ``retry`` when woken."""

    queue: SqsQueue
    wait_seconds: float
    retry: Callable[[], HttpResponse | None]
    empty: Callable[[], HttpResponse]




class SqsApi:
    def __init__(self, broker: Broker, *, any_credentials: bool = False, default_user: str = "guest",
                 max_wait: float | None = None, auth: Authenticator | None = None) -> None:
        self.broker = broker
        # the node's authentication service: it verifies and audits, this maps refusals to AWS errors;
        # standalone (unit tests) a service of its own on the wall clock
        self.auth = auth if auth is not None else Authenticator(broker.users, SystemClock())
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
        rid = self._request_id()
        xml = query.is_query(req)
        try:
            if xml:
                name, params = P.query_action(req)
            else:
                name = P.json_action(req)
            action = self._actions.get(name)
            if action is None:
                raise InvalidAction(f"The action {name[:64]} is not valid for this endpoint.")
            user, region = self._authenticate(req)
            p = P.query_params(req, name, params) if xml else P.json_params(req)
            out = action(user, p, req, region)
        except HareError as err:
            self.errors += 1
            return P.query_error_response(err, rid) if xml else P.error_response(err, rid)
        if isinstance(out, LongPoll):
            return out
        return query.render(name, out, rid) if xml else P.ok(out, rid)

    def _request_id(self) -> str:
        return f"{self._rid_prefix}-{next(self._rid):012d}"

    def failure(self, req: Request, err: HareError) -> HttpResponse:
        """``err`` as the answer to ``req``, in its protocol (JSON or Query)."""
        self.errors += 1
        rid = self._request_id()
        return P.query_error_response(err, rid) if query.is_query(req) else P.error_response(err, rid)

    def too_large(self, req: Request) -> HttpResponse:
        """A request whose body is over the listener's limit (its body was dropped): the error SQS gives
        an oversize message or batch, never a bare HTTP 413."""
        return self.failure(req, P.too_large_error(req))

    def _authenticate(self, req: Request) -> tuple[User, str]:
        """The caller and the region it signed for; a refusal (already audited) becomes its AWS error."""
        peer = Peer("sqs", req.peer, req.loopback)
        try:
            if self.any_credentials:
                return self.auth.trusted(self.default_user, peer, "--sqs-any-credentials"), P.region_of(req)
            return self.auth.sigv4(req, peer)
        except LoginRefused as refused:
            raise _AWS_REFUSALS.get(refused.reason, AccessDenied)(refused.detail) from None

    @staticmethod
    def url(req: Request, name: str) -> str:
        return P.queue_url(req, name)

    def _queue(self, user: User, p: Params, access: str = "read") -> SqsQueue:
        return self.service.queue(user, queue_name(p.req("QueueUrl")), access)  # type: ignore[arg-type]

    # ---- queues --------------------------------------------------------------------------------------
    def do_CreateQueue(self, user: User, p: Params, req: Request, region: str) -> dict[str, Any]:
        op = P.parse_create_queue(p)
        sq = self.service.create(user, op.name, op.attributes, op.tags)
        return {"QueueUrl": self.url(req, sq.name)}

    def do_GetQueueUrl(self, user: User, p: Params, req: Request, region: str) -> dict[str, Any]:
        sq = self.service.queue(user, p.req("QueueName"), None)  # any permission: producers look up too
        return {"QueueUrl": self.url(req, sq.name)}

    def do_ListQueues(self, user: User, p: Params, req: Request, region: str) -> dict[str, Any]:
        names, out = P.page(self.service.names(user, p.text("QueueNamePrefix")), p)
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
        self.service.set_attributes(user, sq, p.str_map("Attributes"))
        return {}

    def do_TagQueue(self, user: User, p: Params, req: Request, region: str) -> dict[str, Any]:
        sq = self._queue(user, p, "configure")
        tags = P.parse_tags(p)
        check_tags(tags, len(sq.tags.keys() - tags.keys()))
        sq.tags.update(tags)
        sq.persist()
        return {}

    def do_UntagQueue(self, user: User, p: Params, req: Request, region: str) -> dict[str, Any]:
        sq = self._queue(user, p, "configure")
        for k in P.parse_tag_keys(p):
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
        names, out = P.page(visible, p)
        out["queueUrls"] = [self.url(req, n) for n in names]
        return out

    # ---- message move tasks ----------------------------------------------------------------------------
    def do_StartMessageMoveTask(self, user: User, p: Params, req: Request, region: str) -> dict[str, Any]:
        op = P.parse_start_move(p)
        task = self.service.start_move(user, op.source, op.destination, op.rate)
        self.broker.flush()
        return {"TaskHandle": task.handle}

    def do_ListMessageMoveTasks(self, user: User, p: Params, req: Request, region: str) -> dict[str, Any]:
        src, limit = P.parse_list_moves(p)
        tasks = self.service.list_moves(user, src)[:limit]
        return {"Results": [t.describe(region) for t in tasks]}

    def do_CancelMessageMoveTask(self, user: User, p: Params, req: Request, region: str) -> dict[str, Any]:
        task = self.service.cancel_move(p.req("TaskHandle"))
        return {"ApproximateNumberOfMessagesMoved": task.moved}

    # ---- sending ---------------------------------------------------------------------------------------
    def _send(self, user: User, sq: SqsQueue, op: SendMessage) -> dict[str, Any]:
        body, headers = P.send_headers(op, sq.config.fifo, sq.config.max_size)
        props = Properties(headers=headers or None, delivery_mode=2, message_id=str(uuid.uuid4()),
                           timestamp=int(self.broker.clock.time()), user_id=user.name)
        message_id, seq = sq.send(Message("", sq.name, props, body), op.delay)
        return P.send_result(op, body, message_id, seq if sq.config.fifo else None)

    def do_SendMessage(self, user: User, p: Params, req: Request, region: str) -> dict[str, Any]:
        sq = self._queue(user, p, "write")
        out = self._send(user, sq, parse_send(p))
        self.broker.flush()
        return out

    def do_SendMessageBatch(self, user: User, p: Params, req: Request, region: str) -> dict[str, Any]:
        sq = self._queue(user, p, "write")
        entries = P.parse_send_batch(p, sq.config.fifo, sq.config.content_dedup)
        ok: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        for eid, e in entries:
            try:
                res = self._send(user, sq, parse_send(e))
            except HareError as err:  # a storage fault fails its entry with SenderFault false
                failed.append(P.batch_failure(eid, err))
                continue
            res["Id"] = eid
            ok.append(res)
        self.broker.flush()
        return {"Successful": ok, "Failed": failed}

    # ---- receiving ---------------------------------------------------------------------------------------
    def do_ReceiveMessage(self, user: User, p: Params, req: Request, region: str) -> dict[str, Any] | LongPoll:
        sq = self._queue(user, p)
        op = parse_receive(p)
        rid = self._request_id()
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
            return query.render("ReceiveMessage", doc, rid) if xml else P.ok(doc, rid)

        def retry() -> HttpResponse | None:
            if sq.queue.deleted:
                err = QueueDoesNotExist("The specified queue does not exist.")
                return P.query_error_response(err, rid) if xml else P.error_response(err, rid)
            got = sq.receive(op.max_messages, op.visibility, op.attempt_id)
            self.broker.flush()
            return ok(self._messages(sq, got, op, region)) if got else None

        return LongPoll(sq, float(wait), retry, lambda: ok({}))

    @staticmethod
    def _messages(sq: SqsQueue, leases: list[Lease], op: ReceiveMessage, region: str) -> dict[str, Any]:
        out = []
        for lease in leases:
            e = lease.entry
            props = e.msg.props
            system = None
            if op.attribute_names:
                system = P.system_attributes(
                    props.headers, sender=props.user_id or "", sent_s=props.timestamp or 0,
                    receive_count=e.delivery_count, first_receive_ms=sq.first_received.get(e.seq, sq.wall_ms()),
                    sequence=e.seq if lease.group is not None or sq.config.fifo else None, region=region)
            out.append(P.message_json(props.message_id or f"{sq.token}-{e.seq}", sq.receipt(lease), e.msg.body,
                                      props.headers, system, op))
        return {"Messages": out}

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
                failed.append(P.batch_failure(eid, err))
                continue
            ok.append({"Id": eid})
        self.broker.flush()
        return {"Successful": ok, "Failed": failed}

    def do_DeleteMessageBatch(self, user: User, p: Params, req: Request, region: str) -> dict[str, Any]:
        sq = self._queue(user, p)
        return self._each_entry(p, lambda e: sq.delete(e.req("ReceiptHandle")))

    def do_ChangeMessageVisibility(self, user: User, p: Params, req: Request, region: str) -> dict[str, Any]:
        sq = self._queue(user, p)
        op = P.parse_change_visibility(p)
        sq.change_visibility(op.receipt_handle, op.timeout)
        self.broker.flush()
        return {}

    def do_ChangeMessageVisibilityBatch(self, user: User, p: Params, req: Request, region: str) -> dict[str, Any]:
        sq = self._queue(user, p)

        def change(e: Params) -> None:
            op = P.parse_change_visibility(e)
            sq.change_visibility(op.receipt_handle, op.timeout)

        return self._each_entry(p, change)


# the AWS error for each refusal reason (the message is the service's ``detail``, AWS's own text)
_AWS_REFUSALS: dict[Reason, Callable[[str], HareError]] = {
    Reason.NO_CREDENTIALS: MissingAuthenticationToken, Reason.MALFORMED: IncompleteSignature,
    Reason.EXPIRED: RequestExpired, Reason.UNKNOWN_KEY: InvalidClientTokenId,
    Reason.BAD_SIGNATURE: SignatureDoesNotMatch,
}
