"""Validation of queue arguments (``x-*``) with RabbitMQ's rules and error texts.

Quorum queues (``x-queue-type: quorum``) follow RabbitMQ 3.10's declaration rules (``check_declare``):
always durable, never exclusive or auto-delete, and no classic- or stream-only arguments. haremq does not
replicate queues yet, so a quorum queue here has one replica: it keeps every message on disk (whatever
its ``delivery_mode``), honours ``x-delivery-limit`` and stamps ``x-delivery-count``, as RabbitMQ's do.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from haremq.errors import PreconditionFailed

OVERFLOW_MODES = ("drop-head", "reject-publish", "reject-publish-dlx")
QUEUE_TYPES = ("classic", "quorum")
log = logging.getLogger("haremq.queue")
# dead-lettering is one in-process step here: both strategies behave as at-most-once (README)
DLX_STRATEGIES = ("at-most-once", "at-least-once")
# RabbitMQ 3.10: arguments of the classic and stream queue types that a quorum queue refuses
# (rabbit_amqqueue:check_declare_arguments against each type's ``queue_arguments`` capability)
NOT_FOR_QUORUM = frozenset({"x-max-priority", "x-queue-mode", "x-queue-version", "x-queue-master-locator",
                            "x-max-age", "x-stream-max-segment-size-bytes", "x-initial-cluster-size"})


def _type_name(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "long"
    if isinstance(v, str | bytes):
        return "longstr"
    return type(v).__name__


def _str(v: Any) -> str | None:
    if isinstance(v, bytes):
        try:
            return v.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return v if isinstance(v, str) else None


@dataclasses.dataclass(frozen=True, slots=True)
class QueueArgs:
    message_ttl_ms: int | None = None
    expires_ms: int | None = None
    max_length: int | None = None
    max_length_bytes: int | None = None
    overflow: str = "drop-head"
    dlx: str | None = None
    dlrk: str | None = None
    max_priority: int | None = None
    single_active_consumer: bool = False
    queue_type: str = "classic"
    delivery_limit: int | None = None  # quorum only: returns after which a message is dead-lettered
    initial_group_size: int | None = None  # quorum only: recorded (one node: the group is this node)

    @classmethod
    def parse(cls, queue: str, vhost: str, args: dict[str, Any]) -> QueueArgs:
        def bad(name: str, why: str) -> PreconditionFailed:
            return PreconditionFailed(f"invalid arg '{name}' for queue '{queue}' in vhost '{vhost}': {why}")

        def non_neg_int(name: str, positive: bool = False) -> int | None:
            if name not in args:
                return None
            v = args[name]
            if isinstance(v, bool) or not isinstance(v, int):
                raise bad(name, f"{{unacceptable_type,{_type_name(v)}}}")
            if v < 0 or (positive and v == 0):
                raise bad(name, f"{{value_{'zero' if v == 0 else 'negative'},{v}}}")
            return v

        def string(name: str) -> str | None:
            if name not in args:
                return None
            s = _str(args[name])
            if s is None:
                raise bad(name, f"{{unacceptable_type,{_type_name(args[name])}}}")
            return s

        overflow = string("x-overflow") or "drop-head"
        if overflow not in OVERFLOW_MODES:
            raise bad("x-overflow", f"{{unknown_overflow_type,<<\"{overflow}\">>}}")
        max_priority = non_neg_int("x-max-priority")
        if max_priority is not None and max_priority > 255:
            raise bad("x-max-priority", f"{{max_value_exceeded,{max_priority}}}")
        sac = args.get("x-single-active-consumer", False)
        if not isinstance(sac, bool):
            raise bad("x-single-active-consumer", f"{{unacceptable_type,{_type_name(sac)}}}")
        qtype = string("x-queue-type") or "classic"
        if qtype not in QUEUE_TYPES:
            raise bad("x-queue-type", f"queue type '{qtype}' is not supported by this broker")
        delivery_limit = group_size = None
        if qtype == "quorum":
            # RabbitMQ 3.10 logs and applies drop-head for reject-publish-dlx on a quorum queue
            if overflow == "reject-publish-dlx":
                overflow = "drop-head"
            # validated when declared (``check_declare``); lenient here so a stored queue always loads
            delivery_limit = _int_or_none(args.get("x-delivery-limit"))
            group_size = _int_or_none(args.get("x-quorum-initial-group-size"))
        return cls(
            message_ttl_ms=non_neg_int("x-message-ttl"),
            expires_ms=non_neg_int("x-expires", positive=True),
            max_length=non_neg_int("x-max-length"),
            max_length_bytes=non_neg_int("x-max-length-bytes"),
            overflow=overflow,
            dlx=string("x-dead-letter-exchange"),
            dlrk=string("x-dead-letter-routing-key"),
            max_priority=max_priority or None,
            single_active_consumer=sac,
            queue_type=qtype,
            delivery_limit=delivery_limit,
            initial_group_size=group_size,
        )


def _int_or_none(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None


def check_declare(queue: str, vhost: str, *, durable: bool, exclusive: bool, auto_delete: bool,
                  args: dict[str, Any]) -> None:
    """Refuse a new quorum queue RabbitMQ 3.10 would refuse, with its texts and in its order: a server
    name, argument values, arguments of other queue types, then auto-delete, exclusive, non-durable. A declare that
    passes is logged as a warning: the queue will have one replica, whatever a client may assume.
    A no-op for classic queues (their arguments are checked by ``QueueArgs.parse``)."""
    if _str(args.get("x-queue-type")) != "quorum":
        return
    if queue.startswith("amq.gen-"):  # a new queue may only have this name if the server chose it
        raise PreconditionFailed("Cannot declare a server-named queue for type rabbit_quorum_queue")
    rs = f"queue '{queue}' in vhost '{vhost}'"
    for name, minimum in (("x-quorum-initial-group-size", 1), ("x-delivery-limit", 0)):
        if name in args:
            v = args[name]
            if isinstance(v, bool) or not isinstance(v, int):
                raise PreconditionFailed(f"invalid arg '{name}' for {rs}: {{unacceptable_type,{_type_name(v)}}}")
            if v < minimum:
                raise PreconditionFailed(f"invalid arg '{name}' for {rs}: "
                                         f"{{value_{'zero' if v == 0 else 'negative'},{v}}}")
    for name in ("x-max-in-memory-length", "x-max-in-memory-bytes"):  # accepted; haremq pages by its own budget
        v = args.get(name, 0)
        if isinstance(v, bool) or not isinstance(v, int):
            raise PreconditionFailed(f"invalid arg '{name}' for {rs}: {{unacceptable_type,{_type_name(v)}}}")
        if v < 0:
            raise PreconditionFailed(f"invalid arg '{name}' for {rs}: {{value_negative,{v}}}")
    if "x-dead-letter-strategy" in args:
        v = args["x-dead-letter-strategy"]
        if not isinstance(v, str | bytes):
            raise PreconditionFailed(f"invalid arg 'x-dead-letter-strategy' for {rs}: "
                                     f"{{unacceptable_type,{_type_name(v)}}}")
        if _str(v) not in DLX_STRATEGIES:
            raise PreconditionFailed(f"invalid arg 'x-dead-letter-strategy' for {rs}: invalid_dlx_strategy")
    for name in args:
        if name in NOT_FOR_QUORUM:
            raise PreconditionFailed(f"invalid arg '{name}' for {rs} of queue type rabbit_quorum_queue")
    for refused, prop in ((auto_delete, "auto-delete"), (exclusive, "exclusive-owner"), (not durable, "non-durable")):
        if refused:
            raise PreconditionFailed(f"invalid property '{prop}' for {rs}")
    log.warning("quorum %s has a single replica: haremq runs without a cluster, so it survives a process "
                "crash like any durable queue, not the loss of this machine", rs)
