"""A virtual host: its exchanges, queues and bindings, routing, and dead-lettering.

Every operation checks the same things RabbitMQ does, in the same order, and raises the same
errors with the same texts, because client libraries and users match on them.

A deferred declare (``defer=True``) of a new durable exchange or queue is checked, then kept in
``pending_exchanges``/``pending_queues`` (invisible: not routable, not bindable, 404 to a passive
declare) while its put commits to the metadata store; it is applied (made visible) on the event loop
once durable, and dropped if the commit fails or a delete of it came first. An equivalent declare
of a pending name commits the same put again, so its answer (held until that later revision is
durable) comes after the object exists; a delete of a pending name commits the delete after it.
"""

from __future__ import annotations

import base64
import datetime
import os
from typing import TYPE_CHECKING, Any

from haremq.core.arguments import check_declare
from haremq.core.exchange import EXCHANGE_TYPES, Exchange
from haremq.core.policy import Policy, best_policy
from haremq.core.queue import Queue
from haremq.core.routing.table import canonical
from haremq.errors import AccessRefused, CommandInvalid, NotFound, PreconditionFailed, ResourceLocked
from haremq.message import Message
from haremq.store.api import Change, exchange_change, queue_change

if TYPE_CHECKING:
    from collections.abc import Callable

    from haremq.core.broker import Broker
    from haremq.core.consumer import Session

REPLY_TO = "amq.rabbitmq.reply-to"
REPLY_TO_PREFIX = REPLY_TO + "."
STANDARD_EXCHANGES = (
    ("amq.direct", "direct"), ("amq.fanout", "fanout"), ("amq.topic", "topic"),
    ("amq.headers", "headers"), ("amq.match", "headers"),
)


def server_name(prefix: str = "amq.gen-") -> str:
    return prefix + base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()


def _s(v: Any) -> str:
    if v is True:
        return "true"
    if v is False:
        return "false"
    return str(v)


class VHost:
    def __init__(self, broker: Broker, name: str) -> None:
        self.broker = broker
        self.name = name
        self.exchanges: dict[str, Exchange] = {}
        self.queues: dict[str, Queue] = {}
        self.reply_queues: dict[str, Queue] = {}
        self.policies: dict[str, Policy] = {}
        # durable declares whose put is not durable yet: checked, not visible (see the module docstring)
        self.pending_exchanges: dict[str, Exchange] = {}
        self.pending_queues: dict[str, Queue] = {}
        self.exchanges[""] = Exchange("", "direct", durable=True, auto_delete=False, internal=False,
                                      arguments={})
        for ename, etype in STANDARD_EXCHANGES:
            self.exchanges[ename] = Exchange(ename, etype, durable=True, auto_delete=False, internal=False,
                                             arguments={})

    def __repr__(self) -> str:
        return f"VHost({self.name!r})"

    # ---- lookups -------------------------------------------------------------------------------
    def exchange(self, name: str) -> Exchange:
        ex = self.exchanges.get(name)
        if ex is None:
            raise NotFound(f"no exchange '{name}' in vhost '{self.name}'")
        return ex

    def queue(self, name: str, session: Session | None = None) -> Queue:
        q = self.queues.get(name)
        if q is None:
            raise NotFound(f"no queue '{name}' in vhost '{self.name}'")
        if session is not None:
            self.check_exclusive(q, session)
        return q

    def check_exclusive(self, q: Queue, session: Session, *, declared_exclusive: bool | None = None) -> None:
        """405 unless this session may use ``q``.

        Any use: the queue is not exclusive, or exclusive to this connection. A redeclare (RabbitMQ's
        strict check, made before any equivalence): the queue's owner must be exactly what the declare
        asks for (this connection if ``exclusive``, none otherwise), so a mismatched ``exclusive`` flag
        is 405 RESOURCE_LOCKED, not 406.
        """
        owner = q.exclusive_owner
        if declared_exclusive is None:
            if owner is None or owner is session.connection:
                return
        elif owner is (session.connection if declared_exclusive else None):
            return
        raise ResourceLocked(
            f"cannot obtain exclusive access to locked queue '{q.name}' in vhost '{self.name}'. It could be "
            "originally declared on another connection or the exclusive property value does not match "
            "that of the original declaration."
        )

    # ---- exchanges -----------------------------------------------------------------------------
    def declare_exchange(self, name: str, type_: str, *, passive: bool, durable: bool, auto_delete: bool,
                         internal: bool, arguments: dict[str, Any], defer: bool = False) -> Exchange:
        # RabbitMQ's order: the type (active only), then the default exchange, passive or not
        if not passive and type_ not in EXCHANGE_TYPES:
            raise CommandInvalid(f"unknown exchange type '{type_}'")
        if name == "":
            raise AccessRefused("operation not permitted on the default exchange")
        if passive:
            return self.exchange(name)
        ex = self.exchanges.get(name)
        pending = None
        if ex is None:
            ex = pending = self.pending_exchanges.get(name)
        if ex is None:
            if name.startswith("amq."):
                raise AccessRefused(f"exchange name '{name}' contains reserved prefix 'amq.*'")
            ex = Exchange(name, type_, durable=durable, auto_delete=auto_delete, internal=internal,
                          arguments=arguments)
            if durable and defer:
                self.pending_exchanges[name] = ex
                self._commit_then_show(exchange_change(self.name, ex), ex, first=True)
                return ex
            if durable:  # persisted before it exists here: a failed save leaves nothing behind
                self.broker.metadata.save_exchange(self.name, ex)
            self.exchanges[name] = ex
            return ex
        for field, got, cur in (("type", type_, ex.type), ("durable", durable, ex.durable),
                                ("auto_delete", auto_delete, ex.auto_delete),
                                ("internal", internal, ex.internal)):
            if got != cur:
                raise PreconditionFailed(f"inequivalent arg '{field}' for exchange '{name}' in vhost "
                                         f"'{self.name}': received '{_s(got)}' but current is '{_s(cur)}'")
        self._check_args("exchange", name, ex.arguments, arguments, ("alternate-exchange",))
        if pending is not None:
            if defer:  # answered once the first declare is durable (its put, then this one)
                self._commit_then_show(exchange_change(self.name, ex), ex, first=False)
            else:
                self._show(ex)
        return ex

    # ---- deferred declares ---------------------------------------------------------------------
    def _commit_then_show(self, change: Change, obj: Exchange | Queue, *, first: bool) -> None:
        """Commit ``change`` (off the loop); ``obj`` becomes visible once it is durable."""
        try:
            self.broker.commit_then([change], lambda failure: self._durable(obj, failure))
        except BaseException:
            if first:
                self._drop_pending(obj)
            raise

    def _durable(self, obj: Exchange | Queue, failure: BaseException | None) -> None:
        """The put of a deferred declare is durable (or failed): show ``obj`` unless it is already
        shown (an equivalent declare's commit) or dropped (a delete, a failed commit)."""
        pending: dict[str, Any] = self.pending_queues if isinstance(obj, Queue) else self.pending_exchanges
        if pending.get(obj.name) is not obj:
            return
        if failure is not None:
            self._drop_pending(obj)
            return
        self._show(obj)

    def _show(self, obj: Exchange | Queue) -> None:
        if isinstance(obj, Queue):
            if self.pending_queues.get(obj.name) is obj:
                del self.pending_queues[obj.name]
            self.queues[obj.name] = obj
            # every queue is bound to the default exchange by its name
            self.exchanges[""].table.bind(obj, obj.name, {})
            if self.policies:  # (set_policy meanwhile saw only visible queues)
                obj.set_policy(best_policy(list(self.policies.values()), obj.name))
        else:
            if self.pending_exchanges.get(obj.name) is obj:
                del self.pending_exchanges[obj.name]
            self.exchanges[obj.name] = obj

    def _drop_pending(self, obj: Exchange | Queue) -> None:
        if isinstance(obj, Queue):
            if self.pending_queues.get(obj.name) is obj:
                del self.pending_queues[obj.name]
            obj.deleted = True  # its x-expires timer must not delete a later queue of that name
        elif self.pending_exchanges.get(obj.name) is obj:
            del self.pending_exchanges[obj.name]

    def _delete_pending(self, obj: Exchange | Queue) -> None:
        """Delete a declare not yet durable: it never becomes visible; its delete commits after its put."""
        self._drop_pending(obj)
        if isinstance(obj, Queue):
            self.broker.stats.queues_deleted += 1  # (it counted as created when declared)
            self.broker.metadata.delete_queue(self.name, obj.name)
        else:
            self.broker.metadata.delete_exchange(self.name, obj.name)

    def _check_args(self, kind: str, name: str, current: dict[str, Any], got: dict[str, Any],
                    keys: tuple[str, ...] | None) -> None:
        names = keys if keys is not None else tuple(sorted(set(current) | set(got)))
        for k in names:
            if keys is None and not k.startswith("x-"):
                continue
            a, b = got.get(k), current.get(k)
            if a != b:
                got_s = "none" if a is None else f"the value '{_s(a)}'"
                cur_s = "none" if b is None else f"the value '{_s(b)}'"
                raise PreconditionFailed(f"inequivalent arg '{k}' for {kind} '{name}' in vhost '{self.name}': "
                                         f"received {got_s} but current is {cur_s}")

    def delete_exchange(self, name: str, *, if_unused: bool, defer: bool = False) -> None:
        """``defer``: a durable exchange goes once its delete is durable (it routes until then)."""
        if name == "":
            raise AccessRefused("operation not permitted on the default exchange")
        if name.startswith("amq."):
            raise AccessRefused(f"deletion of system exchange '{name}' in vhost '{self.name}' not allowed")
        ex = self.exchanges.get(name)
        if ex is None:
            pending = self.pending_exchanges.get(name)
            if pending is not None:
                self._delete_pending(pending)
            return
        if if_unused and ex.bindings:
            raise PreconditionFailed(f"exchange '{name}' in vhost '{self.name}' in use")
        if defer and ex.durable:
            def durable(failure: BaseException | None) -> None:
                if failure is None and self.exchanges.get(ex.name) is ex:
                    self._remove_exchange(ex, commit=False)

            self.broker.commit_then([Change("delete", "exchange", (self.name, ex.name))], durable)
            return
        self._remove_exchange(ex)

    def _remove_exchange(self, ex: Exchange, *, commit: bool = True) -> None:
        del self.exchanges[ex.name]
        # bindings from it go with it; bindings to it are removed from their sources
        for dest, rk, args in list(ex.bindings):
            ex.table.unbind(dest, rk, args)
        ex.bindings.clear()
        for src in list(self.exchanges.values()):
            self._unbind_all(src, ex)
        if ex.durable and commit:
            self.broker.metadata.delete_exchange(self.name, ex.name)

    def _unbind_all(self, src: Exchange, dest: object) -> None:
        if not any(d is dest for d, _, _ in src.bindings):
            return
        src.table.remove_dest(dest)
        src.bindings = [b for b in src.bindings if b[0] is not dest]
        self._maybe_auto_delete(src)

    def _maybe_auto_delete(self, ex: Exchange) -> None:
        """An auto-delete exchange whose last binding went: a durable one is removed once its delete is
        durable (it exists until then, and goes then even if bound again meanwhile, as the store says)."""
        if not (ex.auto_delete and not ex.bindings and self.exchanges.get(ex.name) is ex):
            return
        if self.broker.vhosts.get(self.name) is not self:
            return  # the vhost's own delete dropped it from the store
        if ex.durable:
            def durable(failure: BaseException | None) -> None:
                if failure is None and self.exchanges.get(ex.name) is ex:
                    self._remove_exchange(ex, commit=False)

            self.broker.commit_then([Change("delete", "exchange", (self.name, ex.name))], durable)
            return
        self._remove_exchange(ex)

    # ---- queues --------------------------------------------------------------------------------
    def declare_queue(self, session: Session, name: str, *, passive: bool, durable: bool, exclusive: bool,
                      auto_delete: bool, arguments: dict[str, Any], defer: bool = False) -> Queue:
        if passive:
            q = self.queue(name, session)
            q.touch()
            return q
        durable = durable and not exclusive  # as RabbitMQ: an exclusive queue never outlives its connection
        if name == "":
            name = server_name()
        elif name.startswith("amq.") and name not in self.queues and name not in self.pending_queues:
            raise AccessRefused(f"queue name '{name}' contains reserved prefix 'amq.*'")
        existing = self.queues.get(name)
        pending = None
        if existing is None:
            existing = pending = self.pending_queues.get(name)
        if existing is not None:
            q = existing
            self.check_exclusive(q, session, declared_exclusive=exclusive)
            for field, got, cur in (("durable", durable, q.durable), ("auto_delete", auto_delete, q.auto_delete)):
                if got != cur:
                    raise PreconditionFailed(f"inequivalent arg '{field}' for queue '{name}' in vhost "
                                             f"'{self.name}': received '{_s(got)}' but current is '{_s(cur)}'")
            self._check_args("queue", name, q.arguments, arguments, None)
            if pending is not None:
                if defer:  # answered once the first declare is durable (its put, then this one)
                    self._commit_then_show(queue_change(self.name, q), q, first=False)
                else:
                    self._show(q)
            q.touch()
            return q
        check_declare(name, self.name, durable=durable, exclusive=exclusive, auto_delete=auto_delete, args=arguments)
        q = Queue(self, name, durable=durable, exclusive_owner=session.connection if exclusive else None,
                  auto_delete=auto_delete, arguments=arguments)
        if durable and not exclusive and defer:
            # every check is done: commit, and show it once durable (not before: nobody may route to,
            # bind to or see a queue that a crash now would lose)
            self.pending_queues[name] = q
            self._commit_then_show(queue_change(self.name, q), q, first=True)
            return q
        # every check is done: persist, then make it visible; a failed save leaves nothing behind
        if durable and not exclusive:
            try:
                self.broker.metadata.save_queue(self.name, q)
            except BaseException:
                q.deleted = True  # its x-expires timer must not delete a later queue of that name
                raise
        self.queues[name] = q
        # every queue is bound to the default exchange by its name
        self.exchanges[""].table.bind(q, name, {})
        if self.policies:
            q.set_policy(best_policy(list(self.policies.values()), name))
        return q

    # ---- policies ------------------------------------------------------------------------------
    def set_policy(self, policy: Policy) -> None:
        self.policies[policy.name] = policy
        self.apply_policies()

    def clear_policy(self, name: str) -> None:
        if self.policies.pop(name, None) is not None:
            self.apply_policies()

    def apply_policies(self) -> None:
        """Every queue gets the policy that now matches it (or none)."""
        policies = list(self.policies.values())
        for q in list(self.queues.values()):
            if not q.deleted:
                q.set_policy(best_policy(policies, q.name))
        self.broker.flush()

    def delete_queue(self, q: Queue, *, if_unused: bool = False, if_empty: bool = False,
                     defer: bool = False, then: Callable[[], None] | None = None) -> int:
        """``defer``: a durable queue goes once its delete is durable (until then it still exists for
        everyone; the caller's answer waits); the count is the messages it held when checked.
        ``then()`` runs once the queue is gone (not when its delete failed)."""
        if if_unused and q.consumers:
            raise PreconditionFailed(f"queue '{q.name}' in vhost '{self.name}' in use")
        if if_empty and q.message_count:
            raise PreconditionFailed(f"queue '{q.name}' in vhost '{self.name}' is not empty")
        if q.deleted:
            return 0
        if self.pending_queues.get(q.name) is q:
            self._delete_pending(q)
            if then is not None:
                then()
            return 0
        if defer and q.persist:
            def durable(failure: BaseException | None) -> None:
                if failure is None:
                    self._remove_queue(q, commit=False)
                    self.broker.flush()
                    if then is not None:
                        then()

            self.broker.commit_then([Change("delete", "queue", (self.name, q.name))], durable)
            return q.message_count
        count = self._remove_queue(q)
        if then is not None:
            then()
        return count

    def remove_all(self) -> None:
        """This vhost's delete is durable (the store dropped everything in it with the vhost): remove
        its queues from memory (consumers cancelled, message logs removed) without committing again."""
        for q in list(self.pending_queues.values()):
            self._drop_pending(q)
        self.pending_exchanges.clear()
        for q in list(self.queues.values()):
            self._remove_queue(q, commit=False)

    def _remove_queue(self, q: Queue, *, commit: bool = True) -> int:
        if q.deleted:
            return 0
        q.deleted = True
        self.broker.stats.queues_deleted += 1
        count = q.message_count
        for c in list(q.consumers):
            c.session.consumers.pop(c.tag, None)
            c.session.sink.consumer_cancelled(c.tag)
        q.consumers.clear()
        q.purge()
        if q.receiver is not None and q.receiver.waiters:
            q.receiver.wake()  # parked long polls answer now (the queue is gone), whoever deleted it
        if self.queues.get(q.name) is q:
            del self.queues[q.name]
        for ex in list(self.exchanges.values()):
            if ex.name == "":
                ex.table.remove_dest(q)
            else:
                self._unbind_all(ex, q)
        if q.persist:
            if commit:
                self.broker.metadata.delete_queue(self.name, q.name)
            self.broker.store.delete_queue(q)
        return count

    # ---- bindings ------------------------------------------------------------------------------
    def bind(self, source: str, dest: Queue | Exchange, routing_key: str, arguments: dict[str, Any], *,
             defer: bool = False) -> None:
        """``defer``: a new durable binding routes only once its definition is durable (the caller's
        answer waits for that); a binding whose source or destination is gone by then is not made."""
        if source == "":
            raise AccessRefused("operation not permitted on the default exchange")
        ex = self.exchange(source)
        if defer and ex.durable and dest.durable:
            want = canonical(arguments)
            if not any(b[0] is dest and b[1] == routing_key and canonical(b[2]) == want for b in ex.bindings):
                change = Change("put", "binding", (self.name, ex.name, dest.name, dest.kind, routing_key),
                                {"arguments": dict(arguments)})
                self.broker.commit_then([change], lambda failure: self._bound(ex, dest, routing_key, arguments,
                                                                              failure))
            return
        if ex.table.bind(dest, routing_key, arguments):
            ex.bindings.append((dest, routing_key, dict(arguments)))
            if ex.durable and dest.durable:
                self.broker.metadata.save_binding(self.name, ex.name, dest, routing_key, arguments)

    def _bound(self, ex: Exchange, dest: Queue | Exchange, routing_key: str, arguments: dict[str, Any],
               failure: BaseException | None) -> None:
        alive = (self.queues.get(dest.name) is dest and not dest.deleted if isinstance(dest, Queue)
                 else self.exchanges.get(dest.name) is dest)
        if failure is None and alive and self.exchanges.get(ex.name) is ex and ex.table.bind(dest, routing_key,
                                                                                             arguments):
            ex.bindings.append((dest, routing_key, dict(arguments)))

    def unbind(self, source: str, dest: Queue | Exchange, routing_key: str, arguments: dict[str, Any],
               session: Session | None = None, *, defer: bool = False) -> None:
        """Remove a binding; one that does not exist is not an error (RabbitMQ 3.10). With ``session``,
        an existing binding to a queue exclusive to another connection is 405. ``defer``: a durable
        binding keeps routing until its delete is durable (the caller's answer waits for that)."""
        if source == "":
            raise AccessRefused("operation not permitted on the default exchange")
        ex = self.exchange(source)
        want = canonical(arguments)
        exists = any(b[0] is dest and b[1] == routing_key and canonical(b[2]) == want for b in ex.bindings)
        if session is not None and isinstance(dest, Queue) and exists:
            self.check_exclusive(dest, session)
        if defer and exists and ex.durable and dest.durable:
            change = Change("delete", "binding", (self.name, ex.name, dest.name, dest.kind, routing_key),
                            {"arguments": dict(arguments)})
            self.broker.commit_then([change], lambda failure: self._unbound(ex, dest, routing_key, arguments,
                                                                            failure))
            return
        if ex.table.unbind(dest, routing_key, arguments):
            ex.bindings = [b for b in ex.bindings
                           if not (b[0] is dest and b[1] == routing_key and canonical(b[2]) == want)]
            self.broker.metadata.delete_binding(self.name, ex.name, dest, routing_key, arguments)
            self._maybe_auto_delete(ex)

    def _unbound(self, ex: Exchange, dest: Queue | Exchange, routing_key: str, arguments: dict[str, Any],
                 failure: BaseException | None) -> None:
        """The delete of a durable binding is durable: it stops routing now (a failed one keeps it)."""
        if failure is None and ex.table.unbind(dest, routing_key, arguments):
            want = canonical(arguments)
            ex.bindings = [b for b in ex.bindings
                           if not (b[0] is dest and b[1] == routing_key and canonical(b[2]) == want)]
            self._maybe_auto_delete(ex)

    # ---- routing -------------------------------------------------------------------------------
    def route(self, ex: Exchange, msg: Message) -> list[Queue]:
        """Queues a message goes to, through exchange-to-exchange bindings and alternate exchanges."""
        headers = msg.props.headers
        rk = msg.routing_key
        dests = ex.table.route(rk, headers)
        cc = headers.get("CC") if headers else None
        if cc is not None or (headers and "BCC" in headers):
            keys = [rk]
            for h in ("CC", "BCC"):
                vals = headers.get(h) if headers else None
                if isinstance(vals, list):
                    keys.extend(v.decode() if isinstance(v, bytes) else str(v) for v in vals)
            dests = list(dict.fromkeys(d for k in keys for d in ex.table.route(k, headers)))
        if len(dests) == 1 and type(dests[0]) is Queue and ex.alternate is None:
            return dests  # type: ignore[return-value]
        queues: dict[Queue, None] = {}
        seen = {ex}
        self._route_into(ex, dests, msg, queues, seen)
        return list(queues)

    def _route_into(self, ex: Exchange, dests: list[Any], msg: Message, out: dict[Queue, None],
                    seen: set[Exchange]) -> None:
        for d in dests:
            if isinstance(d, Queue):
                out[d] = None
            elif d not in seen:
                seen.add(d)
                self._route_into(d, d.table.route(msg.routing_key, msg.props.headers), msg, out, seen)
        if not dests and ex.alternate is not None:
            ae = self.exchanges.get(ex.alternate)
            if ae is not None and ae not in seen:
                seen.add(ae)
                self._route_into(ae, ae.table.route(msg.routing_key, msg.props.headers), msg, out, seen)

    # ---- dead-lettering ------------------------------------------------------------------------
    def dead_letter(self, q: Queue, msgs: list[Message], reason: str) -> None:
        """Republish to the queue's dead-letter exchange with ``x-death`` as RabbitMQ writes it."""
        dlx_name = q.args.dlx
        if dlx_name is None or not msgs:
            return
        dlx = self.exchanges.get(dlx_name)
        if dlx is None:
            return  # RabbitMQ drops silently when the DLX does not exist
        now = datetime.datetime.fromtimestamp(int(self.broker.clock.time()), tz=datetime.UTC)
        for msg in msgs:
            new = self._with_death(q, msg, reason, now)
            for target in self.route(dlx, new):
                if target is q and reason != "rejected":
                    continue  # a cycle with no rejection in it would loop forever: drop
                target.enqueue(new)

    def _with_death(self, q: Queue, msg: Message, reason: str, now: datetime.datetime) -> Message:
        props = msg.props
        headers = dict(props.headers or {})
        routing_keys = [msg.routing_key]
        for h in ("CC",):
            vals = headers.get(h)
            if isinstance(vals, list):
                routing_keys.extend(v.decode() if isinstance(v, bytes) else str(v) for v in vals)
        headers.pop("BCC", None)
        if q.quorum:
            headers.pop("x-delivery-count", None)  # stamped at delivery (RabbitMQ keeps it out of the stored message)
        deaths = headers.get("x-death")
        deaths = list(deaths) if isinstance(deaths, list) else []
        found = None
        for i, d in enumerate(deaths):
            if isinstance(d, dict) and d.get("queue") == q.name and d.get("reason") == reason:
                found = i
                break
        if found is not None:
            d = dict(deaths.pop(found))
            d["count"] = int(d.get("count", 0)) + 1
            d["time"] = now
        else:
            d = {"count": 1, "reason": reason, "queue": q.name, "time": now, "exchange": msg.exchange,
                 "routing-keys": routing_keys}
            if reason == "expired" and props.expiration is not None:
                d["original-expiration"] = props.expiration
        deaths.insert(0, d)
        headers["x-death"] = deaths
        if "x-first-death-reason" not in headers:
            headers["x-first-death-reason"] = reason
            headers["x-first-death-queue"] = q.name
            headers["x-first-death-exchange"] = msg.exchange
        headers["x-last-death-reason"] = reason
        headers["x-last-death-queue"] = q.name
        headers["x-last-death-exchange"] = msg.exchange
        new_props = props.replace(headers=headers, expiration=None)
        rk = q.args.dlrk if q.args.dlrk is not None else msg.routing_key
        return msg.with_props(new_props, exchange=q.args.dlx, routing_key=rk)

    # ---- direct reply-to -----------------------------------------------------------------------
    def reply_queue_for(self, session: Session) -> Queue:
        """The pseudo-queue behind ``amq.rabbitmq.reply-to`` for this session."""
        token = session.reply_to_token
        if token is None or token not in self.reply_queues:
            token = session.reply_to_token = server_name("")
            q = Queue(self, REPLY_TO, durable=False, exclusive_owner=session.connection, auto_delete=False,
                      arguments={})
            self.reply_queues[token] = q
        return self.reply_queues[token]

    def drop_reply_to(self, session: Session) -> None:
        token = session.reply_to_token
        if token is not None:
            q = self.reply_queues.pop(token, None)
            if q is not None:
                q.deleted = True
            session.reply_to_token = None
