"""SQS queue attributes, names, ARNs, receipt handles: validation and encoding, no state, no I/O.

What AWS accepts and how it says no: queue names, the settable attributes with their ranges and
JSON policies (``RedrivePolicy``, ``RedriveAllowPolicy``), the effective configuration of a queue
(``SqsConfig``: explicit attributes plus defaults), ARNs (``arn:aws:sqs:<region>:<account>:<name>``)
and the signed receipt-handle format. The server's SQS service applies a configuration to a queue's
protocol-neutral features (receiver, groups, redrive, dedup, retention, delays).

The headers below are where SQS fields live inside a stored message; their values are part of the
durable format (logs written by earlier versions use them), so they never change.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import re
from typing import Any

from haremq.errors import InvalidAttributeName, InvalidAttributeValue, InvalidParameterValue, ReceiptHandleIsInvalid

GROUP_HEADER = "x-sqs-message-group-id"
DEDUP_HEADER = "x-deduplication-id"
SOURCE_HEADER = "x-sqs-dead-letter-source"
DELAY_HEADER = "x-delay-until"  # the due time of a delayed message (the core's delay feature writes it)
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


def config_from_arguments(arguments: dict[str, Any], fifo: bool) -> tuple[SqsConfig, dict[str, str], float | None]:
    """Rebuild SQS attributes/tags kept in a queue's arguments (after a restart or for AMQP-made queues)."""
    stored = arguments.get(SQS_ARGUMENT)
    if not isinstance(stored, dict):
        return SqsConfig({}, fifo), {}, None
    attrs = {str(k): str(v) for k, v in (stored.get("attributes") or {}).items()}
    tags = {str(k): str(v) for k, v in (stored.get("tags") or {}).items()}
    created = stored.get("created")
    return SqsConfig(attrs, fifo), tags, float(created) if isinstance(created, int | float) else None


# ---- receipt handles ---------------------------------------------------------------------------------
def _mac(secret: bytes, lease_id: int, seq: int) -> str:
    return hashlib.blake2b(f"{lease_id}.{seq}".encode(), key=secret, digest_size=8).hexdigest()


def receipt_handle(token: str, secret: bytes, lease_id: int, seq: int) -> str:
    """``<queue token>.<lease id>.<entry seq>.<mac>``: names one lease of one entry of one queue life."""
    return f"{token}.{lease_id}.{seq}.{_mac(secret, lease_id, seq)}"


def seq_of_handle(handle: str, token: str, secret: bytes) -> int:
    """The entry a receipt handle was issued for. A handle never issued (malformed, forged, of another
    queue or of an earlier life of this one) is ``ReceiptHandleIsInvalid``."""
    parts = handle.split(".")
    if (len(parts) != 4 or parts[0] != token or not parts[1].isdigit() or not parts[2].isdigit()
            or len(parts[1]) > 18 or len(parts[2]) > 18
            or not hmac.compare_digest(parts[3], _mac(secret, int(parts[1]), int(parts[2])))):
        raise ReceiptHandleIsInvalid(f'The input receipt handle "{handle[:1024]}" is not a valid receipt handle.')
    return int(parts[2])
