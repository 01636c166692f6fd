"""The definitions command layer: every change to vhosts, users, permissions, policies, SQS access
keys, exchanges, queues and bindings goes to the metadata store before (or, for deletes and bindings,
as) it changes memory, and is answered after it is durable.

Vhosts, users, permissions, policies, access keys (management API, ``haremq ctl``, definitions imports) go
through ``Definitions``: validate (the caller) -> commit (one transaction on the store's writer
thread, awaited: the loop never waits for SQLite) -> apply to memory -> the caller answers. Every
command returns the store revision of its change.

Durable exchange and queue declares (AMQP, SQS CreateQueue, management PUT and import, STOMP frames
that ask for a RECEIPT) go the same way through
the core: ``Broker.exchange_declare``/``queue_declare`` with ``defer=True`` check (permissions,
equivalence, arguments), submit the put, and keep the new object pending and invisible (not routable,
not bindable, 404) until ``when_durable`` below applies it on the loop; a failed commit applies
nothing. The server holds its answer until the store's ``pending()`` is durable, which is after that
apply (the apply callback is queued first), and the AMQP listener holds the rest of the connection's
input too, so a publish right after a declare sees the queue (STOMP: the frame runs again once the
queue is applied). ``Broker.pending_definitions`` is what every answer waits for: the newest commit,
or the newest declare durable but not applied yet. Transient, exclusive and other never-persisted
objects apply at once, as do STOMP frames without a receipt. SQS SetQueueAttributes on a durable
queue commits, then applies (server/sqs_service.py), and so does a new durable binding (it routes
once durable); a durable queue or exchange deleted by AMQP, SQS DeleteQueue or the management API
stays until its delete is durable, and a durable binding unbound by AMQP or the management API
routes until its delete is durable. A vhost delete is one commit (the store drops everything in
the vhost), then ``apply`` removes it from memory. A durable auto-delete queue (last consumer gone)
or exchange (last binding gone) stays until its delete is durable, too. Still memory-first (only
the answer waits): a durable queue expired by ``x-expires`` and STOMP's queue deletes.

For a cluster: the store is the port (``MetadataStore.commit`` becomes a compare-and-set on the
revision: a refused one fails the future and nothing is applied), ``apply`` is what a watch of
remote changes calls, ``subscribe`` sees every durable change (any path: commands, protocol
declares) with its revision, on the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING

from haremq.core.broker import Then, commit_failure, run_when_durable
from haremq.core.policy import Policy
from haremq.security.users import Permission, User
from haremq.store.api import Change, Watcher

if TYPE_CHECKING:
    from haremq.core.broker import Broker

class Definitions:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        broker.when_durable = self.when_durable

    @staticmethod
    def when_durable(fut: Future[int], then: Then) -> None:
        """The core's deferred declares: ``then(failure)`` on the event loop once ``fut`` (their
        commit) is durable or failed; at once when it already is (the memory store). Queued before any
        server's wait on the same commit, so an answer held on ``pending()`` comes after the apply."""
        if fut.done():
            then(commit_failure(fut))
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            run_when_durable(fut, then)
            return
        fut.add_done_callback(lambda f: loop.call_soon_threadsafe(then, commit_failure(f)))

    @property
    def revision(self) -> int:
        return self.broker.metadata.revision

    def subscribe(self, watcher: Watcher) -> None:
        """``watcher(revision, changes)`` on this event loop after each change is durable, in revision
        order. Call from the loop."""
        loop = asyncio.get_running_loop()

        def on_commit(revision: int, changes: Sequence[Change]) -> None:
            loop.call_soon_threadsafe(watcher, revision, changes)

        self.broker.metadata.watch(on_commit)

    async def commit(self, changes: Sequence[Change]) -> int:
        """Make ``changes`` durable (one transaction), then apply them; their revision."""
        revision = await asyncio.wrap_future(self.broker.metadata.commit(changes))
        self.apply(changes)
        return revision

    async def settle(self) -> int:
        """Until every change submitted so far is durable and every deferred declare applied; the revision."""
        pending = self.broker.pending_definitions()
        if pending is not None:
            await asyncio.wrap_future(pending)
        return self.revision

    # ---- memory ----------------------------------------------------------------------------------
    def apply(self, changes: Sequence[Change]) -> None:
        """Apply durable access changes to memory (exchanges, queues and bindings are applied by the
        core before their commit and are skipped here)."""
        b = self.broker
        users = b.users.users
        for c in changes:
            k, v = c.key, c.value
            if c.kind == "vhost":
                if c.op == "put":
                    b.add_vhost(k[0])
                    continue
                vh = b.vhosts.pop(k[0], None)
                if vh is not None:
                    vh.remove_all()  # consumers cancelled, message logs removed; nothing more to commit
                for u in users.values():
                    u.permissions.pop(k[0], None)
                b.flush()
            elif c.kind == "user":
                if c.op == "delete":
                    users.pop(k[0], None)
                    continue
                known = users.get(k[0])
                tags = tuple(v.get("tags") or ())
                if known is None:
                    users[k[0]] = User(k[0], v["password_hash"], tags, loopback_only=k[0] == "guest")
                else:
                    known.password_hash, known.tags = v["password_hash"], tags
            elif c.kind == "permission":
                grantee = users.get(k[0])
                if grantee is None:
                    continue
                if c.op == "put":
                    grantee.permissions[k[1]] = Permission(v["configure"], v["write"], v["read"])
                else:
                    grantee.permissions.pop(k[1], None)
            elif c.kind == "policy":
                pvh = b.vhosts.get(k[0])
                if pvh is None:
                    continue
                if c.op == "put":
                    pvh.set_policy(Policy.parse(k[0], k[1], v))  # validated before the commit
                else:
                    pvh.clear_policy(k[1])
            elif c.kind == "access_key":
                for u in users.values():
                    u.access_keys.pop(k[0], None)
                owner = users.get(v.get("user", ""))
                if c.op == "put" and owner is not None:
                    owner.access_keys[k[0]] = v["secret"]

    # ---- typed commands --------------------------------------------------------------------------
    async def put_vhost(self, name: str, creator: User | None = None) -> int:
        """Create a vhost; its creator gets full permissions on it unless it has some (RabbitMQ)."""
        changes = [Change("put", "vhost", (name,), {"description": "", "tags": []})]
        if creator is not None and name not in creator.permissions:
            changes.append(permission_change(creator.name, name, Permission()))
        return await self.commit(changes)

    async def delete_vhost(self, name: str) -> int:
        return await self.commit([Change("delete", "vhost", (name,))])

    async def put_user(self, name: str, password_hash: str, tags: Sequence[str],
                       access_keys: dict[str, str] | None = None) -> int:
        changes = [Change("put", "user", (name,), {"password_hash": password_hash, "tags": list(tags)})]
        changes += [access_key_change(name, k, s) for k, s in (access_keys or {}).items()]
        return await self.commit(changes)

    async def delete_user(self, name: str) -> int:
        return await self.commit([Change("delete", "user", (name,))])

    async def set_permission(self, user: str, vhost: str, perm: Permission) -> int:
        return await self.commit([permission_change(user, vhost, perm)])

    async def clear_permission(self, user: str, vhost: str) -> int:
        return await self.commit([Change("delete", "permission", (user, vhost))])

    async def put_policy(self, policy: Policy) -> int:
        """Store a (validated) policy, then apply it to the vhost's matching queues."""
        return await self.commit([policy_change(policy)])

    async def delete_policy(self, vhost: str, name: str) -> int:
        return await self.commit([Change("delete", "policy", (vhost, name))])


def permission_change(user: str, vhost: str, perm: Permission) -> Change:
    return Change("put", "permission", (user, vhost),
                  {"configure": perm.configure, "write": perm.write, "read": perm.read})


def policy_change(policy: Policy) -> Change:
    doc = policy.to_json()
    return Change("put", "policy", (policy.vhost, policy.name),
                  {k: doc[k] for k in ("pattern", "apply-to", "priority", "definition")})


def access_key_change(user: str, key_id: str, secret: str) -> Change:
    return Change("put", "access_key", (key_id,), {"user": user, "secret": secret})
