"""The SQS listener: the sans-IO ``SqsApi`` behind the lean HTTP server, plus long-poll parking."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import TYPE_CHECKING

from haremq.errors import HareError, InternalError, ResourceError
from haremq.protocol.http import HttpRequest, HttpResponse
from haremq.protocol.sqs import query
from haremq.protocol.sqs.api import TARGET_PREFIX, error_response, query_error_response
from haremq.server.durability import Durability
from haremq.server.sqs_api import LongPoll, SqsApi
from haremq.store.api import Positions

SEND_ACTIONS = frozenset({"SendMessage", "SendMessageBatch"})

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from haremq.server.node import Node

log = logging.getLogger("haremq.sqs")

class SqsEndpoint:
    def __init__(self, node: Node) -> None:
        s = node.settings
        self.node = node
        self.api = SqsApi(node.broker, any_credentials=s.sqs_any_credentials, default_user=s.default_user,
                          auth=node.auth)
        self.waiting = 0
        users = node.broker.users
        user = users.users.get(s.default_user)
        if user is not None and not user.access_keys and users.by_access_key(s.default_user) is None:
            # the default user's access key: id = user name, secret = its password (loopback only for guest)
            users.add_access_key(s.default_user, s.default_user, s.default_pass)

    def __call__(self, req: HttpRequest) -> HttpResponse | Awaitable[HttpResponse]:
        if self.node.publishers_blocked:
            refused = self._refuse_send(req)
            if refused is not None:
                return refused
        broker = self.node.broker
        written = broker.written
        written.clear()
        metadata = broker.metadata
        revision = metadata.revision
        try:
            out = self.api.handle(req)
        except Exception:  # a bug or an unexpected I/O fault: still an SQS error (5xx: SDKs retry)
            log.exception("SQS request failed: %s %s", req.method, req.headers.get("x-amz-target", req.path))
            return self.api.failure(req, InternalError("We encountered an internal error. Please try again."))
        if isinstance(out, LongPoll):
            return self._wait(out)
        if metadata.revision != revision and broker.pending_definitions() is not None:
            # CreateQueue, SetQueueAttributes, DeleteQueue: answer once the definition is on disk
            return self._settled(req, out, dict(written))
        if written and not Durability.is_committed(written):
            # the request wrote to queue logs (a send, a delete): answer once they committed, as a
            # publisher confirm would be, so a 200 means the message survives a crash
            return self._durable(req, out, dict(written))
        return out

    def _refuse_send(self, req: HttpRequest) -> HttpResponse | None:
        """A resource alarm is on: sends get 503 ServiceUnavailable (SDKs back off and retry, as
        AWS's own throttling); receives and deletes go on, so consumers can drain the backlog."""
        is_query = query.is_query(req)
        if is_query:
            try:
                action = query.action_of(query.parse_params(req))
            except HareError:
                return None  # malformed: let the API answer with the proper error
        else:
            target = req.headers.get("x-amz-target", "")
            action = target[len(TARGET_PREFIX):] if target.startswith(TARGET_PREFIX) else ""
        if action not in SEND_ACTIONS:
            return None
        self.api.requests += 1
        self.api.errors += 1
        reason = "low on disk space" if self.node.disk_alarm else "low on memory"
        err = ResourceError(f"The broker is {reason}; sends are refused until it recovers. Retry later.")
        rid = f"alarm-{uuid.uuid4().hex[:20]}"
        return query_error_response(err, rid) if is_query else error_response(err, rid)

    def too_large(self, req: HttpRequest) -> HttpResponse:
        """A body over the listener's limit: SQS's error for it, in the request's protocol."""
        return self.api.too_large(req)

    async def _settled(self, req: HttpRequest, out: HttpResponse, written: Positions) -> HttpResponse:
        try:
            await self.node.definitions.settle()
        except Exception as exc:  # the definition did not reach the disk: a 5xx, never the 200
            log.error("SQS definition change not durable: %s", exc)
            return self.api.failure(req, ResourceError(f"definition not durable: {exc}"))
        if written:
            return await self._durable(req, out, written)
        return out

    async def _durable(self, req: HttpRequest, out: HttpResponse, written: Positions) -> HttpResponse:
        try:
            await self.node.wait_durable(written)
        except HareError as err:  # the write did not reach the disk (fsync failed): a 5xx, never the 200
            return self.api.failure(req, err)
        return out

    async def _wait(self, lp: LongPoll) -> HttpResponse:
        """Park a ReceiveMessage until the queue wakes it (enqueue, requeue, unlock) or time runs out."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + lp.wait_seconds
        self.waiting += 1
        try:
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return lp.empty()
                fut: asyncio.Future[None] = loop.create_future()

                def wake(fut: asyncio.Future[None] = fut) -> None:
                    if not fut.done():
                        fut.set_result(None)

                lp.queue.waiters.append(wake)
                try:
                    await asyncio.wait_for(fut, remaining)
                except TimeoutError:
                    return lp.empty()
                finally:
                    try:
                        lp.queue.waiters.remove(wake)
                    except ValueError:
                        pass
                res = lp.retry()
                self.node.flush_output()
                if res is not None:
                    return res
        finally:
            self.waiting -= 1
