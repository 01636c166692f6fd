"""Redrive: an entry received too many times moves to a dead-letter queue instead.

When a receive would hand out an entry for more than ``max_deliveries`` times, it goes to the
dead-letter queue ``target`` (same vhost) with the source queue's name in the header
``source_header``, so a later move can bring it back. The target takes it first and only then does
the source drop it: a target that refuses (``x-max-length`` with reject-publish, a full disk) or
that does not exist leaves the entry where it was.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from haremq.core.queue import Entry, Queue


@dataclasses.dataclass(frozen=True, slots=True)
class Redrive:
    target: str
    max_deliveries: int
    source_header: str


def redrive(queue: Queue, e: Entry, policy: Redrive) -> bool:
    """Move ``e`` (just taken from ``queue``) to the dead-letter queue if it is due; True when moved."""
    if e.delivery_count < policy.max_deliveries:
        return False
    target = queue.vhost.queues.get(policy.target)
    if target is None or target is queue:
        return False
    headers = dict(e.msg.props.headers or {})
    headers[policy.source_header] = queue.name
    if not target.enqueue(e.msg.with_props(e.msg.props.replace(headers=headers))):
        return False
    queue.drop(e)
    return True
