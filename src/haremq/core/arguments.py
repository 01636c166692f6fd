"""Validation of queue arguments (``x-*``) with RabbitMQ's rules and error texts."""

from __future__ import annotations

import dataclasses
from typing import Any

from haremq.errors import PreconditionFailed

OVERFLOW_MODES = ("drop-head", "reject-publish", "reject-publish-dlx")
QUEUE_TYPES = ("classic", "quorum")


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
        )
