"""SQS semantics on a haremq queue: visibility timeouts, delays, FIFO groups, dedup, redrive.

An SQS queue IS a haremq queue in vhost "/"; ``SqsQueue`` is extra state hung on it
(``Queue.sqs``), created the first time the SQS API touches the queue:

- **Receive** pops ready entries from the core queue (``take_head``, which also applies
  retention as the queue's message TTL) and holds each in a ``TimedLease`` until it is deleted
  (``Queue.settle``) or its visibility timeout passes (``Queue.requeue``: back to its place,
  receive count = the entry's delivery count). AMQP consumers on the same queue are served from
  the same ready list by ``Queue.dispatch``.
- **Delay** (queue ``DelaySeconds`` or per message) keeps the message out of the queue until due.
- **FIFO**: entries whose message group has a message in flight wait in a per-group backlog, so
  a group is served in order and only by one receiver at a time. Backlogged entries are counted
  as visible; they are only reachable through SQS (AMQP consumers see the plain ready list).
- **Dedup**: a 5-minute window per queue, keyed by (group if scope is messageGroup, id), where
  the id is ``MessageDeduplicationId`` or the SHA-256 of the body (content-based dedup).
- **Redrive**: a receive that would make an entry's receive count exceed ``maxReceiveCount``
  moves it to the dead-letter queue instead (header ``x-sqs-dead-letter-source`` remembers the
  source, for message move tasks).
- **Long polling**: waiters registered by the server are called when the queue may have
  something to receive: from ``Broker.flush`` after an enqueue/requeue, and when a FIFO group
  unlocks. They are plain callbacks; the core does no I/O.

Timers (visibility deadlines, delays, move tasks) go through ``Broker.schedule``: this object is
a ``TimerTarget``. Everything takes ``now`` from the broker clock, so tests move a FakeClock.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import os
import re
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from haremq.core.dedup import DedupWindow
from haremq.core.delay import DELAY_HEADER, DelayedEntries
from haremq.core.lease import TimedLease, TimedLeases
from haremq.core.message import Message
from haremq.core.queue import PAGED
from haremq.errors import (
    InvalidAttributeName,
    InvalidAttributeValue,
    InvalidParameterValue,
    MissingParameter,
    OverLimit,
    PurgeQueueInProgress,
    ReceiptHandleIsInvalid,
    ResourceError,
)

if TYPE_CHECKING:
    from haremq.core.queue import Entry, Queue

GROUP_HEADER = "x-sqs-message-group-id"
DEDUP_HEADER = "x-deduplication-id"
SOURCE_HEADER = "x-sqs-dead-letter-source"
SQS_ARGUMENT = "sqs"  # key in Queue.arguments holding {"attributes": {...}, "tags": {...}} (not x-: no equivalence)
ACCOUNT = "000000000000"
DEDUP_WINDOW = 300.0
PURGE_INTERVAL = 60.0
NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
FIFO_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,75}\.fifo$")
MAX_MESSAGE_SIZE = 1048576  # AWS raised MaximumMessageSize (default and limit) from 256 KiB to 1 MiB in 2025

# attribute -> (min, max) for integer attributes
_INT_ATTRS = {
    "VisibilityTimeout": (0, 43200), "MessageRetentionPeriod": (60, 1209600), "DelaySeconds": (0, 900),
    "ReceiveMessageWaitTimeSeconds": (0, 20), "MaximumMessageSize": (1024, MAX_MESSAGE_SIZE),
    "KmsDataKeyReusePeriodSeconds": (60, 86400),
}
_DEFAULTS = {"VisibilityTimeout": "30", "MessageRetentionPeriod": "345600", "DelaySeconds": "0",
             "ReceiveMessageWaitTimeSeconds": "0", "MaximumMessageSize": str(MAX_MESSAGE_SIZE),
             "SqsManagedSseEnabled": "false"}
_FIFO_DEFAULTS = {"FifoQueue": "true", "ContentBasedDeduplication": "false", "DeduplicationScope": "queue",
                  "FifoThroughputLimit": "perQueue"}
_ENUM_ATTRS = {"DeduplicationScope": ("messageGroup", "queue"),
               "FifoThroughputLimit": ("perQueue", "perMessageGroupId")}
_FIFO_ONLY = ("FifoQueue", "ContentBasedDeduplication", "DeduplicationScope", "FifoThroughputLimit")
_FREE_ATTRS = ("Policy", "KmsMasterKeyId", "SqsManagedSseEnabled")
SETTABLE = frozenset(_INT_ATTRS) | {"RedrivePolicy", "RedriveAllowPolicy", *_FIFO_ONLY, *_FREE_ATTRS}
COMPUTED = frozenset({"ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
                      "ApproximateNumberOfMessagesDelayed", "CreatedTimestamp", "LastModifiedTimestamp",
                      "QueueArn"})


def arn(name: str, region: str = "us-east-1") -> str:
    return f"arn:aws:sqs:{region}:{ACCOUNT}:{name}"


def name_from_arn(value: str) -> str | None:
    parts = value.split(":")
    if len(parts) != 6 or parts[0] != "arn" or parts[2] != "sqs" or not parts[5]:
        return None
    return parts[5]


def validate_name(name: str, fifo: bool) -> None:
    if fifo:
        if not FIFO_NAME_RE.match(name):
            raise InvalidParameterValue("The name of a FIFO queue can only include alphanumeric characters, "
                                        "hyphens, or underscores, must end with .fifo suffix and be 1 to 80 in "
                                        "length.")
    elif not NAME_RE.match(name):
        raise InvalidParameterValue("Can only include alphanumeric characters, hyphens, or underscores. 1 to 80 "
                                    "in length")


def _bool_attr(name: str, value: str) -> bool:
    if value.lower() not in ("true", "false"):
        raise InvalidAttributeValue(f"Invalid value for the parameter {name}.")
    return value.lower() == "true"


@dataclasses.dataclass(frozen=True, slots=True)
class RedrivePolicy:
    dead_letter_queue: str
    max_receive_count: int


def parse_redrive_policy(value: str) -> RedrivePolicy | None:
    if value == "":
        return None
    try:
        doc = json.loads(value)
    except ValueError:
        raise InvalidAttributeValue("Invalid value for the parameter RedrivePolicy. Reason: Redrive policy is "
                                    "not a valid JSON map.") from None
    if not isinstance(doc, dict) or "deadLetterTargetArn" not in doc or "maxReceiveCount" not in doc:
        raise InvalidAttributeValue("Value for parameter RedrivePolicy is invalid. Reason: Redrive policy does "
                                    "not contain mandatory attribute: deadLetterTargetArn, maxReceiveCount.")
    target = name_from_arn(str(doc["deadLetterTargetArn"]))
    if target is None:
        raise InvalidAttributeValue("Value for parameter RedrivePolicy is invalid. Reason: Invalid value for "
                                    "deadLetterTargetArn.")
    try:
        count = int(doc["maxReceiveCount"])
    except (TypeError, ValueError):
        count = 0
    if not 1 <= count <= 1000:
        raise InvalidAttributeValue("Value for parameter RedrivePolicy is invalid. Reason: Invalid value for "
                                    "maxReceiveCount: must be an integer from 1 to 1000.")
    return RedrivePolicy(target, count)


def _check_allow_policy(value: str) -> None:
    try:
        doc = json.loads(value)
    except ValueError:
        doc = None
    if not isinstance(doc, dict) or doc.get("redrivePermission") not in ("allowAll", "denyAll", "byQueue"):
        raise InvalidAttributeValue("Value for parameter RedriveAllowPolicy is invalid. Reason: Invalid value for "
                                    "redrivePermission.")
    srcs = doc.get("sourceQueueArns")
    if doc["redrivePermission"] == "byQueue" and (not isinstance(srcs, list) or not 1 <= len(srcs) <= 10):
        raise InvalidAttributeValue("Value for parameter RedriveAllowPolicy is invalid. Reason: byQueue requires "
                                    "1 to 10 sourceQueueArns.")


def validate_attributes(attrs: dict[str, str], fifo: bool) -> dict[str, str]:
    """Check settable attributes (names, ranges, JSON policies); returns them normalized."""
    out: dict[str, str] = {}
    for k, v in attrs.items():
        if k not in SETTABLE:
            raise InvalidAttributeName(f"Unknown Attribute {k}.")
        if not isinstance(v, str):
            raise InvalidAttributeValue(f"Invalid value for the parameter {k}.")
        if k in _INT_ATTRS:
            lo, hi = _INT_ATTRS[k]
            if not (v.strip().lstrip("-").isdigit() and lo <= int(v) <= hi):
                raise InvalidAttributeValue(f"Invalid value for the parameter {k}. Reason: must be between {lo} "
                                            f"and {hi}.")
            v = str(int(v))
        elif k == "RedrivePolicy":
            p = parse_redrive_policy(v)
            if p is not None and p.dead_letter_queue.endswith(".fifo") != fifo:
                raise InvalidParameterValue(f"Value {v} for parameter RedrivePolicy is invalid. Reason: Dead-letter "
                                            "queue must be same type of queue as the source..")
            v = "" if p is None else json.dumps({"deadLetterTargetArn": arn(p.dead_letter_queue),
                                                 "maxReceiveCount": p.max_receive_count}, separators=(",", ":"))
        elif k == "RedriveAllowPolicy":
            _check_allow_policy(v)
        elif k in _FIFO_ONLY:
            if k == "FifoQueue":
                if _bool_attr(k, v) != fifo:
                    raise InvalidAttributeValue(f"Invalid value for the parameter {k}. Reason: Modifying queue "
                                                "type is not supported.")
            elif not fifo:
                raise InvalidAttributeName(f"Unknown Attribute {k}.")
            elif k == "ContentBasedDeduplication":
                v = "true" if _bool_attr(k, v) else "false"
            elif v not in _ENUM_ATTRS.get(k, (v,)):
                raise InvalidAttributeValue(f"Invalid value for the parameter {k}.")
        out[k] = v
    return out


class SqsConfig:
    """The effective attributes of one SQS queue (explicit ones plus defaults)."""

    __slots__ = ("attributes", "content_dedup", "delay", "fifo", "group_scope", "max_size", "redrive", "retention",
                 "visibility", "wait_time")

    def __init__(self, attributes: dict[str, str], fifo: bool) -> None:
        merged = {**_DEFAULTS, **(_FIFO_DEFAULTS if fifo else {}), **attributes}
        if merged.get("FifoThroughputLimit") == "perMessageGroupId" and merged.get("DeduplicationScope") != \
                "messageGroup":
            raise InvalidAttributeValue("Invalid value for the parameter FifoThroughputLimit. Reason: "
                                        "perMessageGroupId requires DeduplicationScope messageGroup.")
        self.attributes = {k: v for k, v in merged.items() if v != ""}
        self.fifo = fifo
        self.visibility = int(merged["VisibilityTimeout"])
        self.retention = int(merged["MessageRetentionPeriod"])
        self.delay = int(merged["DelaySeconds"])
        self.wait_time = int(merged["ReceiveMessageWaitTimeSeconds"])
        self.max_size = int(merged["MaximumMessageSize"])
        self.redrive = parse_redrive_policy(merged.get("RedrivePolicy", ""))
        self.content_dedup = merged.get("ContentBasedDeduplication") == "true"
        self.group_scope = merged.get("DeduplicationScope") == "messageGroup"


class SqsQueue:
    """SQS state of one core queue. Implements ``TimerTarget``."""

    def __init__(self, queue: Queue, config: SqsConfig, tags: dict[str, str], created: float) -> None:
        self.queue = queue
        self.config = config
        self.tags = tags
        self.created = created
        self.modified = created
        self.token = os.urandom(6).hex()  # receipt handles of another queue (or incarnation) are invalid
        self._secret = os.urandom(16)  # signs receipt handles: one never issued is told from a stale one
        self.leases = TimedLeases()
        # every handle ever issued for an entry names it (AWS: older handles stay valid): the entry's
        # current lease, or the entry itself while it waits visible again after its lease expired
        self.by_seq: dict[int, TimedLease] = {}
        self.returned: dict[int, Entry] = {}
        self.dedup: DedupWindow[tuple[str, int | None]] = DedupWindow(DEDUP_WINDOW)
        self.attempts: DedupWindow[list[int]] = DedupWindow(DEDUP_WINDOW)
        self.first_received: dict[int, int] = {}  # entry seq -> wall ms of its first receive
        # FIFO: group -> backlog (entries waiting while the group is locked), group -> in-flight count,
        # groups that have a backlog and no message in flight, in the order they became available
        self.backlog: dict[str, deque[Entry]] = {}
        self.backlog_count = 0
        self.inflight: dict[str, int] = {}
        self.available: dict[str, None] = {}
        self.waiters: list[Callable[[], None]] = []
        self.last_purge: float | None = None
        self._armed: float | None = None
        self.apply_retention()
        if config.fifo:
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
            key = f"{group if self.config.group_scope else ''}\x00{dedup_id}"
            self.dedup.remember(key, (props.message_id or "", e.seq), now - age)

    @property
    def delayed(self) -> DelayedEntries:
        """Delayed messages live in the queue itself (stored at once, ready when due)."""
        return self.queue.delayed

    @property
    def name(self) -> str:
        return self.queue.name

    def now(self) -> float:
        return self.queue.vhost.broker.clock.monotonic()

    def wall_ms(self) -> int:
        return int(self.queue.vhost.broker.clock.time() * 1000)

    # ---- configuration ---------------------------------------------------------------------------
    def apply_retention(self) -> None:
        q = self.queue
        q.args = dataclasses.replace(q.args, message_ttl_ms=self.config.retention * 1000)

    def set_attributes(self, attrs: dict[str, str]) -> None:
        merged = {**self.config.attributes, **validate_attributes(attrs, self.config.fifo)}
        self.config = SqsConfig(merged, self.config.fifo)
        self.modified = self.queue.vhost.broker.clock.time()
        self.apply_retention()
        self.persist()

    def persist(self) -> None:
        """Keep attributes and tags in the queue's arguments, so they live as long as its definition."""
        q = self.queue
        q.arguments[SQS_ARGUMENT] = {"attributes": dict(self.config.attributes), "tags": dict(self.tags),
                                     "created": int(self.created)}
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
        return self.queue.ready.count + self.backlog_count

    # ---- sending ---------------------------------------------------------------------------------
    def send(self, msg: Message, delay: int | None) -> tuple[str, int | None]:
        """Enqueue (or hold) a message; returns (message id, sequence number). Dedup returns the first."""
        cfg = self.config
        now = self.now()
        headers = msg.props.headers or {}
        dedup_key = None
        if cfg.fifo:
            if delay:  # an explicit 0 is fine (SDKs and frameworks send it)
                raise InvalidParameterValue(f"Value {delay} for parameter DelaySeconds is invalid. Reason: The "
                                            "request include parameter that is not valid for this queue type.")
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
                headers = {**headers, DEDUP_HEADER: dedup_id}
                msg = msg.with_props(msg.props.replace(headers=headers))
            dedup_key = f"{group if cfg.group_scope else ''}\x00{dedup_id}"
            seen = self.dedup.get(dedup_key, now)
            if seen is not None:
                return seen
        message_id = msg.props.message_id or ""
        seconds = cfg.delay if delay is None else delay
        seq: int | None = self.queue.next_seq
        if seconds > 0:
            # stored now (the sender's 200 means it survives a crash), ready when due; the due
            # time travels in the message so a restart keeps it delayed
            headers = {**headers, DELAY_HEADER: self.wall_ms() + seconds * 1000}
            msg = msg.with_props(msg.props.replace(headers=headers))
        if not self.queue.enqueue(msg, delay=seconds if seconds > 0 else None):
            broker = self.queue.vhost.broker
            if broker.store_broken or broker.store_failed:
                # our fault, not the sender's: a 5xx, so SDKs retry (and nothing claims it was kept)
                raise ResourceError("The request has failed due to a temporary failure of the server (the message "
                                    "could not be stored).")
            raise OverLimit(f"The queue {self.name} is full (x-max-length with x-overflow reject-publish).")
        if dedup_key is not None:
            self.dedup.remember(dedup_key, (message_id, seq), now)
        return message_id, seq

    # ---- receiving -------------------------------------------------------------------------------
    def receive(self, max_messages: int, visibility: int | None, attempt_id: str | None = None) -> list[TimedLease]:
        """Take up to ``max_messages`` visible messages and lease them for the visibility timeout."""
        q = self.queue
        if q.deleted:
            return []
        now = self.now()
        if attempt_id is not None and self.config.fifo:
            ids = self.attempts.get(attempt_id, now)
            if ids is not None:
                again = [self.leases.get(i) for i in ids]
                if all(x is not None for x in again):
                    return [x for x in again if x is not None]
        vis = self.config.visibility if visibility is None else visibility
        out: list[TimedLease] = []
        if self.config.fifo:
            self._receive_fifo(max_messages, now, now + vis, out)
        else:
            while len(out) < max_messages:
                e = q.take_head(now)
                if e is None:
                    break
                if not self._redrive(e):
                    out.append(self._lease(e, now + vis, None, now))
        if out:
            self._arm(now + vis)
            if attempt_id is not None and self.config.fifo:
                self.attempts.remember(attempt_id, [x.id for x in out], now)
        q._schedule_head_expiry()
        return out

    def _receive_fifo(self, n: int, now: float, deadline: float, out: list[TimedLease]) -> None:
        q = self.queue
        mine: set[str] = set()  # groups locked by this very call: may give more of their messages
        while len(out) < n:
            if self.available:
                g = next(iter(self.available))
                del self.available[g]
                backlog = self.backlog[g]
                mine.add(g)
                while backlog and len(out) < n:
                    e = backlog.popleft()
                    self.backlog_count -= 1
                    if not self._redrive(e):
                        out.append(self._lease(e, deadline, g, now))
                if not backlog:
                    del self.backlog[g]
                continue
            head = q.take_head(now)
            if head is None:
                return
            e = head
            g = str((e.msg.props.headers or {}).get(GROUP_HEADER) or "")
            if (g in self.inflight and g not in mine) or g in self.backlog:
                self.backlog.setdefault(g, deque()).append(e)
                self.backlog_count += 1
                continue
            if not self._redrive(e):
                mine.add(g)
                out.append(self._lease(e, deadline, g, now))

    def _lease(self, e: Entry, deadline: float, group: str | None, now: float) -> TimedLease:
        q = self.queue
        q.delivered += 1
        if e.delivery_count:
            q.redelivered += 1
        else:
            self.first_received[e.seq] = self.wall_ms()
        e.delivery_count += 1
        q.unacked += 1
        if group is not None:
            self.inflight[group] = self.inflight.get(group, 0) + 1
        self.returned.pop(e.seq, None)
        lease = self.by_seq[e.seq] = self.leases.add(e, deadline, group, now)
        return lease

    def _redrive(self, e: Entry) -> bool:
        """Move an entry that was received maxReceiveCount times to the DLQ; True when moved."""
        policy = self.config.redrive
        if policy is None or e.delivery_count < policy.max_receive_count:
            return False
        q = self.queue
        dlq = q.vhost.queues.get(policy.dead_letter_queue)
        if dlq is None or dlq is q:
            return False  # SQS keeps the message when the DLQ is gone
        headers = dict(e.msg.props.headers or {})
        headers[SOURCE_HEADER] = q.name
        moved = e.msg.with_props(e.msg.props.replace(headers=headers))
        # into the DLQ first, then out of here: a DLQ that refuses it (x-max-length with
        # reject-publish, a full disk) leaves the message where it was instead of losing it
        if not dlq.enqueue(moved):
            return False
        self.first_received.pop(e.seq, None)
        self.returned.pop(e.seq, None)
        q._forget(e)
        return True

    # ---- receipt handles ---------------------------------------------------------------------------
    def _mac(self, lease_id: int, seq: int) -> str:
        return hashlib.blake2b(f"{lease_id}.{seq}".encode(), key=self._secret, digest_size=8).hexdigest()

    def receipt(self, lease: TimedLease) -> str:
        return f"{self.token}.{lease.id}.{lease.entry.seq}.{self._mac(lease.id, lease.entry.seq)}"

    def seq_of(self, handle: str) -> int:
        """The entry a receipt handle was issued for. A handle this queue never issued (malformed,
        forged, of another queue or of an earlier life of this one) is ``ReceiptHandleIsInvalid``."""
        parts = handle.split(".")
        if (len(parts) != 4 or parts[0] != self.token or not parts[1].isdigit() or not parts[2].isdigit()
                or len(parts[1]) > 18 or len(parts[2]) > 18
                or not hmac.compare_digest(parts[3], self._mac(int(parts[1]), int(parts[2])))):
            raise ReceiptHandleIsInvalid(f'The input receipt handle "{handle[:1024]}" is not a valid receipt '
                                         "handle.")
        return int(parts[2])

    def lease_of(self, handle: str) -> TimedLease | None:
        """The entry's current lease, whichever of its handles names it; None when it is not in flight."""
        return self.by_seq.get(self.seq_of(handle))

    # ---- settling ------------------------------------------------------------------------------------
    def delete(self, handle: str) -> None:
        """DeleteMessage with any handle ever issued for the message (AWS: older handles stay valid):
        in flight -> settled; visible again after its visibility expired -> taken out and settled;
        already gone -> nothing to do, success, as in SQS."""
        seq = self.seq_of(handle)
        q = self.queue
        lease = self.by_seq.pop(seq, None)
        if lease is None:
            e = self.returned.pop(seq, None)
            if e is not None and not q.deleted and self._take_waiting(e):
                self.first_received.pop(seq, None)
                q.settle(e)
            return
        self.leases.remove(lease.id)
        q.unacked -= 1
        self.first_received.pop(seq, None)
        if not q.deleted:
            q.settle(lease.entry)
        self._release_group(lease.group)

    def _take_waiting(self, e: Entry) -> bool:
        """Take a visible entry out of the ready list or its FIFO group's backlog; False if it is in
        neither (an AMQP consumer took it, it expired). Linear, but expired leases requeue near the head."""
        for level in self.queue.ready.levels:
            try:
                level.d.remove(e)
            except ValueError:
                continue
            self.queue.ready.count -= 1
            self.queue.ready.bytes -= e.size
            return True
        g = str((e.msg.props.headers or {}).get(GROUP_HEADER) or "")
        backlog = self.backlog.get(g)
        if backlog is None:
            return False
        try:
            backlog.remove(e)
        except ValueError:
            return False
        self.backlog_count -= 1
        if not backlog:
            del self.backlog[g]
            self.available.pop(g, None)
        return True

    def change_visibility(self, handle: str, timeout: int) -> None:
        lease = self.lease_of(handle)
        if lease is None:
            raise InvalidParameterValue(f"Value {handle[:1024]} for parameter ReceiptHandle is invalid. Reason: "
                                        "Message does not exist or is not available for visibility timeout change.")
        now = self.now()
        self.leases.extend(lease, now + timeout)
        if timeout == 0:
            self.on_timer(now)
        else:
            self._arm(now + timeout)

    def _release_group(self, group: str | None) -> None:
        if group is None:
            return
        left = self.inflight.get(group, 0) - 1
        if left > 0:
            self.inflight[group] = left
            return
        self.inflight.pop(group, None)
        if group in self.backlog:
            self.available[group] = None
            self.wake()

    def _expire(self, leases: list[TimedLease]) -> None:
        q = self.queue
        q.unacked -= len(leases)
        for lease in leases:
            self.by_seq.pop(lease.entry.seq, None)
        if q.deleted:
            return
        self._remember_returned([lease.entry for lease in leases])
        plain = [lease.entry for lease in leases if lease.group is None]
        if plain:
            q.requeue(plain)
        by_group: dict[str, list[Entry]] = {}
        for lease in leases:
            if lease.group is not None:
                by_group.setdefault(lease.group, []).append(lease.entry)
        for g, entries in by_group.items():
            # back to the front of the group's backlog, in sequence order
            entries.sort()
            old = self.backlog.get(g, deque())
            self.backlog[g] = deque([*entries, *old])
            self.backlog_count += len(entries)
            for _ in entries:
                self._release_group(g)
            if g not in self.inflight:
                self.available[g] = None
        if by_group:
            self.wake()

    def _remember_returned(self, entries: list[Entry]) -> None:
        returned = self.returned
        for e in entries:
            returned[e.seq] = e
        if len(returned) > 4096 and len(returned) > 2 * (self.visible_count + 1):
            # entries an AMQP consumer took or that expired are not waiting any more: forget them
            waiting = {e.seq for e in self.queue.ready} | {e.seq for b in self.backlog.values() for e in b}
            self.returned = {k: v for k, v in returned.items() if k in waiting}

    # ---- timers ----------------------------------------------------------------------------------------
    def _arm(self, deadline: float) -> None:
        if self._armed is None or deadline < self._armed:
            self._armed = deadline
            self.queue.vhost.broker.schedule(deadline, self)

    def on_timer(self, now: float) -> None:
        self._armed = None
        if self.queue.deleted:
            return
        expired = self.leases.expired(now)
        if expired:
            self._expire(expired)
        nxt = self.leases.next_deadline()
        if nxt is not None:
            self._arm(nxt)

    # ---- long polling --------------------------------------------------------------------------------
    def has_visible(self) -> bool:
        return bool(self.queue.ready.count or self.available)

    def wake(self) -> None:
        """Something may be receivable: call every waiting long poll once (they re-register if needed)."""
        if self.waiters and (self.has_visible() or self.queue.deleted):
            waiters, self.waiters = self.waiters, []
            for w in waiters:
                w()

    # ---- whole queue ---------------------------------------------------------------------------------
    def purge(self) -> int:
        now = self.now()
        if self.last_purge is not None and now - self.last_purge < PURGE_INTERVAL:
            raise PurgeQueueInProgress(f"Only one PurgeQueue operation on {self.name} is allowed every 60 "
                                       "seconds.")
        self.last_purge = now
        q = self.queue
        n = q.purge()  # ready and delayed
        leases = self.leases.clear()
        self.by_seq.clear()
        self.returned.clear()
        for lease in leases:
            q._forget(lease.entry)
        n += len(leases)
        q.unacked -= len(leases)  # AMQP/STOMP leases (basic.get ones too) stay out and stay counted
        for backlog in self.backlog.values():
            for e in backlog:
                q._forget(e)
            n += len(backlog)
        self.backlog.clear()
        self.backlog_count = 0
        self.inflight.clear()
        self.available.clear()
        self.first_received.clear()
        return n

    def take_for_move(self, now: float) -> Entry | None:
        """One visible entry for a message move task (DLQ redrive back to a source)."""
        if self.available:
            g = next(iter(self.available))
            backlog = self.backlog[g]
            e = backlog.popleft()
            self.backlog_count -= 1
            if not backlog:
                del self.backlog[g]
                del self.available[g]
        else:
            head = self.queue.take_head(now)
            if head is None:
                return None
            e = head
        self.returned.pop(e.seq, None)
        return e


def config_from_arguments(arguments: dict[str, Any], fifo: bool) -> tuple[SqsConfig, dict[str, str], float | None]:
    """Rebuild SQS attributes/tags kept in a queue's arguments (after a restart or for AMQP-made queues)."""
    stored = arguments.get(SQS_ARGUMENT)
    if not isinstance(stored, dict):
        return SqsConfig({}, fifo), {}, None
    attrs = {str(k): str(v) for k, v in (stored.get("attributes") or {}).items()}
    tags = {str(k): str(v) for k, v in (stored.get("tags") or {}).items()}
    created = stored.get("created")
    return SqsConfig(attrs, fifo), tags, float(created) if isinstance(created, int | float) else None
