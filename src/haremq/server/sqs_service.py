"""The SQS service: SQS queues, actions and message move tasks on top of the core's queue features.

Every SQS action resolves its queue here. Any queue of the vhost is an SQS queue (one declared
over AMQP gets default SQS attributes the first time the SQS API touches it); queues made by
``CreateQueue`` are durable haremq queues whose SQS attributes and tags live in their arguments.
An ``SqsQueue`` is the SQS view of one core queue: it applies the queue's configuration
(``protocol.sqs.attributes.SqsConfig``) to the queue's protocol-neutral features (receiver with
visibility deadlines, message groups, redrive, dedup, retention as message TTL, delays), signs and
checks receipt handles, and turns the core's refusals into AWS errors.

Permissions are the user's RabbitMQ-style regexes: configure to create/delete/set attributes,
write to send, read to receive/delete/purge. A queue the user has no permission of any kind on
(or every queue, without access to the vhost) is invisible: not listed, and every action on it
answers ``QueueDoesNotExist`` as for a queue that does not exist, so its existence is not
disclosed; with some permission but not the one the action needs, the answer is ``AccessDenied``.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from haremq.core.consumer import NoDeliveries, Session
from haremq.core.queue import PAGED, Queue
from haremq.core.receiver import Receiver
from haremq.core.redrive import Redrive
from haremq.errors import (
    InvalidAttributeName,
    InvalidParameterValue,
    MissingParameter,
    OverLimit,
    PurgeQueueInProgress,
    QueueDoesNotExist,
    QueueNameExists,
    ResourceError,
    ResourceNotFound,
    UnsupportedOperation,
)
from haremq.protocol.sqs.attributes import (
    COMPUTED,
    DEDUP_HEADER,
    DEDUP_WINDOW,
    GROUP_HEADER,
    PURGE_INTERVAL,
    SETTABLE,
    SOURCE_HEADER,
    SQS_ARGUMENT,
    SqsConfig,
    arn,
    config_from_arguments,
    receipt_handle,
    seq_of_handle,
    validate_attributes,
    validate_name,
)
from haremq.store.api import queue_change

if TYPE_CHECKING:
    from haremq.core.broker import Broker
    from haremq.core.delay import DelayedEntries
    from haremq.core.lease import Lease
    from haremq.core.queue import Entry
    from haremq.core.vhost import VHost
    from haremq.message import Message
    from haremq.security.users import Access, User


class SqsQueue:
    """The SQS view of one core queue (kept as its receiver's ``front``)."""

    def __init__(self, queue: Queue, config: SqsConfig, tags: dict[str, str], created: float) -> None:
        self.queue = queue
        self.config = config
        self.tags = tags
        self.created = created
        self.modified = created
        self.token = os.urandom(6).hex()  # receipt handles of another queue (or incarnation) are invalid
        self._secret = os.urandom(16)  # signs receipt handles: one never issued is told from a stale one
        self.last_purge: float | None = None
        self._next_config: SqsConfig | None = None  # set, its definition not durable yet
        fresh = queue.receiver is None
        if queue.receiver is None:
            queue.receiver = Receiver(queue, group_header=GROUP_HEADER if config.fifo else None,
                                      dedup_window=DEDUP_WINDOW)
        self.receiver: Receiver = queue.receiver
        self.receiver.front = self
        self._apply()
        if config.fifo and fresh:
            self._rebuild_dedup()

    def _rebuild_dedup(self) -> None:
        """After a restart the window is rebuilt from the messages still queued: each keeps
        deduplicating for the rest of its 5 minutes. (Messages already deleted are not in the log.)"""
        now = self.now()
        wall = self.queue.vhost.broker.clock.time()
        for e in self.queue.entries():
            props = e.msg.props
            headers = props.headers or {}
            dedup_id = headers.get(DEDUP_HEADER)
            if not dedup_id or e.msg is PAGED:
                continue  # no id, or a paged-out entry (its headers are in the store only)
            age = max(0.0, wall - props.timestamp) if props.timestamp else 0.0
            if age >= DEDUP_WINDOW:
                continue
            group = headers.get(GROUP_HEADER) or ""
            self.receiver.remember_sent(self._dedup_key(str(group), str(dedup_id)), props.message_id or "", e.seq,
                                        now - age)

    def _dedup_key(self, group: str, dedup_id: str) -> str:
        return f"{group if self.config.group_scope else ''}\x00{dedup_id}"

    @property
    def delayed(self) -> DelayedEntries:
        """Delayed messages live in the queue itself (stored at once, ready when due)."""
        return self.queue.delayed

    @property
    def waiters(self) -> list[Callable[[], None]]:
        return self.receiver.waiters

    @property
    def first_received(self) -> dict[int, int]:
        return self.receiver.first_received

    @property
    def name(self) -> str:
        return self.queue.name

    def now(self) -> float:
        return self.queue.vhost.broker.clock.monotonic()

    def wall_ms(self) -> int:
        return self.receiver.wall_ms()

    # ---- configuration ---------------------------------------------------------------------------
    def _apply(self) -> None:
        """Put the configuration into the queue's features: retention as message TTL, the redrive."""
        cfg = self.config
        self.queue.set_message_ttl(cfg.retention * 1000)
        rp = cfg.redrive
        self.receiver.redrive = (None if rp is None else
                                 Redrive(rp.dead_letter_queue, rp.max_receive_count, SOURCE_HEADER))

    def set_attributes(self, attrs: dict[str, str]) -> None:
        """A durable queue's new attributes apply once their definition is durable (the answer waits
        for that: the store's revision changed); merged over any set still on its way to the disk."""
        base = self._next_config or self.config
        config = SqsConfig({**base.attributes, **validate_attributes(attrs, base.fifo)}, base.fifo)
        q = self.queue
        if not q.durable:
            self._set_config(config)
            self.persist()
            return
        change = queue_change(q.vhost.name, q)
        change.value["arguments"][SQS_ARGUMENT] = self._definition(config)
        self._next_config = config

        def durable(failure: BaseException | None) -> None:
            if self._next_config is config:
                self._next_config = None
            if failure is None and not q.deleted:
                self._set_config(config)
                q.arguments[SQS_ARGUMENT] = self._definition(config)

        q.vhost.broker.commit_then([change], durable)

    def _set_config(self, config: SqsConfig) -> None:
        self.config = config
        self.modified = self.queue.vhost.broker.clock.time()
        self._apply()

    def _definition(self, config: SqsConfig) -> dict[str, object]:
        return {"attributes": dict(config.attributes), "tags": dict(self.tags), "created": int(self.created)}

    def persist(self) -> None:
        """Keep attributes and tags in the queue's arguments, so they live as long as its definition."""
        q = self.queue
        q.arguments[SQS_ARGUMENT] = self._definition(self._next_config or self.config)  # not losing a pending set
        if q.durable:
            q.vhost.broker.metadata.save_queue(q.vhost.name, q)

    def attributes(self, region: str = "us-east-1") -> dict[str, str]:
        out = dict(self.config.attributes)
        out.update({
            "ApproximateNumberOfMessages": str(self.visible_count),
            "ApproximateNumberOfMessagesNotVisible": str(self.queue.unacked),
            "ApproximateNumberOfMessagesDelayed": str(len(self.delayed)),
            "CreatedTimestamp": str(int(self.created)),
            "LastModifiedTimestamp": str(int(self.modified)),
            "QueueArn": arn(self.name, region),
        })
        return out

    @property
    def visible_count(self) -> int:
        return self.receiver.visible_count

    @property
    def backlog_count(self) -> int:
        return self.receiver.backlog_count

    # ---- sending ---------------------------------------------------------------------------------
    def send(self, msg: Message, delay: int | None) -> tuple[str, int | None]:
        """Enqueue (or hold) a message; returns (message id, sequence number). Dedup returns the first."""
        cfg = self.config
        dedup_key = None
        if cfg.fifo:
            if delay:  # an explicit 0 is fine (SDKs and frameworks send it)
                raise InvalidParameterValue(f"Value {delay} for parameter DelaySeconds is invalid. Reason: The "
                                            "request include parameter that is not valid for this queue type.")
            headers = msg.props.headers or {}
            group = headers.get(GROUP_HEADER)
            if not group:
                raise MissingParameter("The request must contain the parameter MessageGroupId.")
            dedup_id = headers.get(DEDUP_HEADER)
            if not dedup_id:
                if not cfg.content_dedup:
                    raise InvalidParameterValue("The queue should either have ContentBasedDeduplication enabled or "
                                                "MessageDeduplicationId provided explicitly")
                dedup_id = hashlib.sha256(msg.body).hexdigest()
                # kept in the message, so a restart can rebuild the window from what is still queued
                msg = msg.with_props(msg.props.replace(headers={**headers, DEDUP_HEADER: dedup_id}))
            dedup_key = self._dedup_key(str(group), str(dedup_id))
        seconds = cfg.delay if delay is None else delay
        out = self.receiver.send(msg, seconds, dedup_key)
        if out is None:
            broker = self.queue.vhost.broker
            if broker.store_broken or broker.store_failed:
                # our fault, not the sender's: a 5xx, so SDKs retry (and nothing claims it was kept)
                raise ResourceError("The request has failed due to a temporary failure of the server (the message "
                                    "could not be stored).")
            raise OverLimit(f"The queue {self.name} is full (x-max-length with x-overflow reject-publish).")
        return out

    # ---- receiving -------------------------------------------------------------------------------
    def receive(self, max_messages: int, visibility: int | None, attempt_id: str | None = None) -> list[Lease]:
        """Take up to ``max_messages`` visible messages and lease them for the visibility timeout."""
        vis = self.config.visibility if visibility is None else visibility
        return self.receiver.receive(max_messages, vis, attempt_id if self.config.fifo else None)

    # ---- receipt handles ---------------------------------------------------------------------------
    def receipt(self, lease: Lease) -> str:
        return receipt_handle(self.token, self._secret, lease.id, lease.entry.seq)

    def seq_of(self, handle: str) -> int:
        return seq_of_handle(handle, self.token, self._secret)

    def lease_of(self, handle: str) -> Lease | None:
        """The entry's current lease, whichever of its handles names it; None when it is not in flight."""
        return self.receiver.lease_of(self.seq_of(handle))

    # ---- settling ------------------------------------------------------------------------------------
    def delete(self, handle: str) -> None:
        """DeleteMessage with any handle ever issued for the message (AWS: older handles stay valid);
        already gone -> nothing to do, success, as in SQS."""
        self.receiver.delete(self.seq_of(handle))

    def change_visibility(self, handle: str, timeout: int) -> None:
        if not self.receiver.change_visibility(self.seq_of(handle), timeout):
            raise InvalidParameterValue(f"Value {handle[:1024]} for parameter ReceiptHandle is invalid. Reason: "
                                        "Message does not exist or is not available for visibility timeout change.")

    # ---- long polling --------------------------------------------------------------------------------
    def has_visible(self) -> bool:
        return self.receiver.has_visible()

    def wake(self) -> None:
        self.receiver.wake()

    # ---- whole queue ---------------------------------------------------------------------------------
    def purge(self) -> int:
        now = self.now()
        if self.last_purge is not None and now - self.last_purge < PURGE_INTERVAL:
            raise PurgeQueueInProgress(f"Only one PurgeQueue operation on {self.name} is allowed every 60 "
                                       "seconds.")
        self.last_purge = now
        return self.receiver.purge()

    def take_for_move(self, now: float) -> Entry | None:
        return self.receiver.take_for_move(now)


class MoveTask:
    """StartMessageMoveTask: moves visible messages of a DLQ back to their sources (or one destination)."""

    def __init__(self, service: SqsService, source: SqsQueue, destination: str | None, rate: int | None) -> None:
        self.service = service
        self.source = source
        self.destination = destination
        self.rate = rate
        self.handle = uuid.uuid4().hex
        self.status = "RUNNING"
        self.moved = 0
        self.to_move = source.visible_count
        self.started = source.wall_ms()
        self.failure: str | None = None

    def step(self, now: float) -> None:
        """Move up to ``rate`` messages (all when no rate); schedule the next second while some are left."""
        vh = self.source.queue.vhost
        budget = self.rate if self.rate is not None else 1 << 62
        while budget > 0:
            e = self.source.take_for_move(now)
            if e is None:
                self.status = "COMPLETED"
                return
            headers = dict(e.msg.props.headers or {})
            target_name = self.destination or headers.get(SOURCE_HEADER)
            target = vh.queues.get(str(target_name)) if target_name else None
            if target is None or target is self.source.queue:
                self.source.queue.requeue([e])
                self.status = "FAILED"
                self.failure = f"Destination queue {target_name} does not exist."
                return
            headers.pop(SOURCE_HEADER, None)
            if not target.enqueue(e.msg.with_props(e.msg.props.replace(headers=headers or None))):
                # the target refused it (x-max-length reject-publish, disk full): keep it here
                self.source.queue.requeue([e])
                self.status = "FAILED"
                self.failure = f"Destination queue {target.name} refused a message."
                return
            self.source.queue.drop(e)
            self.moved += 1
            budget -= 1
        if self.source.visible_count == 0:
            self.status = "COMPLETED"
        else:
            vh.broker.schedule(now + 1.0, self)

    def on_timer(self, now: float) -> None:
        if self.status == "RUNNING" and not self.source.queue.deleted:
            self.step(now)
            self.service.broker.flush()

    def describe(self, region: str) -> dict[str, object]:
        out: dict[str, object] = {
            "Status": self.status, "SourceArn": arn(self.source.name, region),
            "ApproximateNumberOfMessagesMoved": self.moved, "ApproximateNumberOfMessagesToMove": self.to_move,
            "StartedTimestamp": self.started,
        }
        if self.status == "RUNNING":
            out["TaskHandle"] = self.handle
        if self.destination:
            out["DestinationArn"] = arn(self.destination, region)
        if self.rate is not None:
            out["MaxNumberOfMessagesPerSecond"] = self.rate
        if self.failure:
            out["FailureReason"] = self.failure
        return out


class SqsService:
    def __init__(self, broker: Broker, vhost: str = "/") -> None:
        self.broker = broker
        self.vhost_name = vhost
        self._sessions: dict[str, Session] = {}
        self.tasks: dict[str, list[MoveTask]] = {}  # source queue name -> tasks, newest first
        self._ids = itertools.count(1)

    @property
    def vhost(self) -> VHost:
        return self.broker.add_vhost(self.vhost_name)

    def session(self, user: User) -> Session:
        s = self._sessions.get(user.name)
        if s is None or s.user is not user:
            s = self._sessions[user.name] = Session(self.vhost, user, self, NoDeliveries())
        return s

    def check(self, user: User, access: Access, name: str) -> None:
        self.broker.check(self.session(user), access, "queue", name)

    def visible(self, user: User, name: str) -> bool:
        """May the user know the queue exists: any of configure/write/read on it in the vhost."""
        return any(user.can(self.vhost_name, a, name) for a in ("configure", "write", "read"))

    # ---- lookup --------------------------------------------------------------------------------------
    @staticmethod
    def attach(q: Queue) -> SqsQueue:
        """The queue's SQS view, made (with its attributes from the queue's arguments) on first use."""
        r = q.receiver
        if r is not None and isinstance(r.front, SqsQueue):
            return r.front
        config, tags, created = config_from_arguments(q.arguments, q.name.endswith(".fifo"))
        return SqsQueue(q, config, tags, created if created is not None else q.vhost.broker.clock.time())

    def queue(self, user: User, name: str, access: Access | None = "read") -> SqsQueue:
        """The queue, if the user may see it and (unless ``access`` is None) has ``access`` on it."""
        q = self.vhost.queues.get(name)
        if q is None or q.deleted or q.exclusive_owner is not None or not self.visible(user, name):
            raise QueueDoesNotExist("The specified queue does not exist.")
        if access is not None:
            self.check(user, access, name)
        return self.attach(q)

    def all(self) -> list[SqsQueue]:
        return [self.attach(q) for q in list(self.vhost.queues.values())
                if not q.deleted and q.exclusive_owner is None]

    # ---- lifecycle -----------------------------------------------------------------------------------
    def create(self, user: User, name: str, attributes: dict[str, str], tags: dict[str, str]) -> SqsQueue:
        fifo = attributes.get("FifoQueue", "false").lower() == "true"
        validate_name(name, fifo)  # a .fifo name needs FifoQueue=true, and FifoQueue=true a .fifo name
        attrs = validate_attributes(attributes, fifo)
        self.check(user, "configure", name)  # before looking: a refusal must not tell whether it exists
        existing = self.vhost.queues.get(name)
        if existing is not None and not existing.deleted:
            sq = self.queue(user, name, "configure")
            current = sq.config.attributes
            defaults = SqsConfig({}, fifo).attributes
            for k, v in attrs.items():
                if current.get(k, defaults.get(k, "")) != v:
                    raise QueueNameExists("A queue already exists with the same name and a different value for "
                                          f"attribute {k}")
            return sq
        config = SqsConfig(attrs, fifo)
        self.check_redrive(user, config)
        created = self.broker.clock.time()
        arguments = {SQS_ARGUMENT: {"attributes": dict(config.attributes), "tags": dict(tags), "created": int(created)}}
        pending = self.vhost.pending_queues.get(name)
        if pending is not None:
            # a CreateQueue of that name is being made durable: the same attribute check, then this
            # answer waits for it too (the core commits the same put again)
            made = pending.arguments.get(SQS_ARGUMENT)
            current = made.get("attributes", {}) if isinstance(made, dict) else {}
            defaults = SqsConfig({}, fifo).attributes
            for k, v in attrs.items():
                if current.get(k, defaults.get(k, "")) != v:
                    raise QueueNameExists("A queue already exists with the same name and a different value for "
                                          f"attribute {k}")
            arguments = pending.arguments
        # a new queue is visible (sendable, listed) only once its definition is durable
        q = self.broker.queue_declare(self.session(user), name, durable=True, arguments=arguments, defer=True)
        return SqsQueue(q, config, dict(tags), created)

    def check_redrive(self, user: User, config: SqsConfig) -> None:
        """A redrive moves messages into its dead-letter queue: the user must be allowed to send there
        (as a dead-letter exchange needs write permission in AMQP)."""
        if config.redrive is not None:
            self.check(user, "write", config.redrive.dead_letter_queue)

    def set_attributes(self, user: User, sq: SqsQueue, attrs: dict[str, str]) -> None:
        fifo = sq.config.fifo
        self.check_redrive(user, SqsConfig({**sq.config.attributes, **validate_attributes(attrs, fifo)}, fifo))
        sq.set_attributes(attrs)

    def delete(self, user: User, name: str) -> None:
        sq = self.queue(user, name, "configure")
        q = sq.queue

        def gone() -> None:
            self.tasks.pop(name, None)
            sq.wake()

        # a durable queue stays (for everyone) until its delete is durable; the answer waits for that
        q.vhost.delete_queue(q, defer=True, then=gone)
        self.broker.flush()

    def names(self, user: User, prefix: str | None) -> list[str]:
        """ListQueues: the queues the user may see (``visible``), by name."""
        return sorted(q.name for q in self.vhost.queues.values()
                      if not q.deleted and q.exclusive_owner is None and (not prefix or q.name.startswith(prefix))
                      and self.visible(user, q.name))

    @staticmethod
    def attribute_names(names: list[str]) -> set[str] | None:
        """Which attributes GetQueueAttributes returns; None means all. No names: none (as AWS)."""
        if not names:
            return set()
        if "All" in names:
            return None
        for n in names:
            if n not in SETTABLE and n not in COMPUTED:
                raise InvalidAttributeName(f"Unknown Attribute {n}.")
        return set(names)

    def dead_letter_sources(self, name: str) -> list[str]:
        return sorted(sq.name for sq in self.all()
                      if sq.config.redrive is not None and sq.config.redrive.dead_letter_queue == name)

    # ---- message move tasks --------------------------------------------------------------------------
    def start_move(self, user: User, source: str, destination: str | None, rate: int | None) -> MoveTask:
        src = self.queue(user, source, "read")
        if not self.dead_letter_sources(source):
            raise InvalidParameterValue("Source queue must be configured as a Dead Letter Queue.")
        if destination is not None:
            self.queue(user, destination, "write")
        if rate is not None and not 1 <= rate <= 500:
            raise InvalidParameterValue("Value for parameter MaxNumberOfMessagesPerSecond is invalid. Reason: must "
                                        "be between 1 and 500.")
        tasks = self.tasks.setdefault(source, [])
        if any(t.status == "RUNNING" for t in tasks):
            raise UnsupportedOperation("There is already a task running. Only one active task is allowed for each "
                                       "source queue arn at a given time.")
        task = MoveTask(self, src, destination, rate)
        tasks.insert(0, task)
        del tasks[10:]
        task.step(self.broker.clock.monotonic())
        return task

    def list_moves(self, user: User, source: str) -> list[MoveTask]:
        self.queue(user, source, "read")
        return list(self.tasks.get(source, []))

    def cancel_move(self, handle: str) -> MoveTask:
        for tasks in self.tasks.values():
            for t in tasks:
                if t.handle == handle:
                    if t.status != "RUNNING":
                        raise UnsupportedOperation("Only active tasks can be cancelled.")
                    t.status = "CANCELLED"
                    return t
        raise ResourceNotFound("Task does not exist.")
