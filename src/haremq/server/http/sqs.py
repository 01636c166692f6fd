"""The SQS listener: the sans-IO ``SqsApi`` behind the lean HTTP server, plus long-poll parking."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from haremq.protocol.http import HttpRequest, HttpResponse
from haremq.protocol.sqs.api import LongPoll, SqsApi

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from haremq.server.node import Node


class SqsEndpoint:
    def __init__(self, node: Node) -> None:
        s = node.settings
        self.node = node
        self.api = SqsApi(node.broker, any_credentials=s.sqs_any_credentials, default_user=s.default_user)
        self.waiting = 0
        users = node.broker.users
        user = users.users.get(s.default_user)
        if user is not None and not user.access_keys and users.by_access_key(s.default_user) is None:
            # the default user's access key: id = user name, secret = its password (loopback only for guest)
            users.add_access_key(s.default_user, s.default_user, s.default_pass)

    def __call__(self, req: HttpRequest) -> HttpResponse | Awaitable[HttpResponse]:
        store = self.node.broker.store
        before = store.ticket
        metadata = self.node.broker.metadata
        revision = metadata.revision
        out = self.api.handle(req)
        if isinstance(out, LongPoll):
            return self._wait(out)
        if metadata.revision != revision and metadata.pending() is not None:
            # CreateQueue, SetQueueAttributes, DeleteQueue: answer once the definition is on disk
            return self._settled(out, store.ticket if store.ticket != before else 0)
        after = store.ticket
        if after != before and store.durable_ticket < after:
            # the request wrote to the log (a send, a delete): answer once it is on disk, as a
            # publisher confirm would be, so a 200 means the message survives a crash
            return self._durable(out, after)
        return out

    async def _settled(self, out: HttpResponse, ticket: int) -> HttpResponse:
        await self.node.definitions.settle()
        if ticket:
            await self.node.wait_durable(ticket)
        return out

    async def _durable(self, out: HttpResponse, ticket: int) -> HttpResponse:
        await self.node.wait_durable(ticket)
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
