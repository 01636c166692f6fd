"""The SQS view of vhost "/": queue lookup and lifecycle, permissions, message move tasks.

Every SQS action resolves its queue here. Any queue of the vhost is an SQS queue (one declared
over AMQP gets default SQS attributes the first time the SQS API touches it); queues made by
``CreateQueue`` are durable haremq queues whose SQS attributes and tags live in their arguments.
Permissions are the user's RabbitMQ-style regexes: configure to create/delete/set attributes,
write to send, read to receive/delete/purge. A queue the user has no permission of any kind on
(or every queue, without access to the vhost) is invisible: not listed, and every action on it
answers ``QueueDoesNotExist`` as for a queue that does not exist, so its existence is not
disclosed; with some permission but not the one the action needs, the answer is ``AccessDenied``.
"""

from __future__ import annotations

import itertools
import uuid
from typing import TYPE_CHECKING

from haremq.core.consumer import Session
from haremq.core.message import Message
from haremq.core.sqs import (
    COMPUTED,
    SETTABLE,
    SOURCE_HEADER,
    SQS_ARGUMENT,
    SqsConfig,
    SqsQueue,
    arn,
    config_from_arguments,
    validate_attributes,
    validate_name,
)
from haremq.errors import (
    InvalidParameterValue,
    QueueDoesNotExist,
    QueueNameExists,
    ResourceNotFound,
    UnsupportedOperation,
)
from haremq.security.users import Access, User

if TYPE_CHECKING:
    from haremq.core.broker import Broker
    from haremq.core.vhost import VHost


class _NoDeliveries:
    """Sink of SQS sessions: they receive by polling, never through consumers."""

    def deliver(self, consumer_tag: str, delivery_tag: int, redelivered: bool, queue: str, msg: Message) -> None:
        raise AssertionError("SQS sessions have no consumers")

    def consumer_cancelled(self, consumer_tag: str) -> None:
        return None


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
            self.source.queue._forget(e)
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
            s = self._sessions[user.name] = Session(self.vhost, user, self, _NoDeliveries())
        return s

    def check(self, user: User, access: Access, name: str) -> None:
        self.broker.check(self.session(user), access, "queue", name)

    def visible(self, user: User, name: str) -> bool:
        """May the user know the queue exists: any of configure/write/read on it in the vhost."""
        return any(user.can(self.vhost_name, a, name) for a in ("configure", "write", "read"))

    # ---- lookup --------------------------------------------------------------------------------------
    def attach(self, q: object) -> SqsQueue:
        from haremq.core.queue import Queue

        assert isinstance(q, Queue)
        if q.sqs is None:
            config, tags, created = config_from_arguments(q.arguments, q.name.endswith(".fifo"))
            q.sqs = SqsQueue(q, config, tags, created if created is not None else self.broker.clock.time())
        return q.sqs

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
        created = self.broker.clock.time()
        arguments = {SQS_ARGUMENT: {"attributes": dict(config.attributes), "tags": dict(tags), "created": int(created)}}
        q = self.broker.queue_declare(self.session(user), name, durable=True, arguments=arguments)
        q.sqs = SqsQueue(q, config, dict(tags), created)
        return q.sqs

    def delete(self, user: User, name: str) -> None:
        sq = self.queue(user, name, "configure")
        q = sq.queue
        q.vhost.delete_queue(q)
        self.tasks.pop(name, None)
        sq.wake()
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
        from haremq.errors import InvalidAttributeName

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
