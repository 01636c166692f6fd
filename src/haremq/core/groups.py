"""Message groups: one receiver at a time per group, each group served in order.

An entry carries its group in a header (the name is the caller's). While a group has an entry in
flight, the group's other entries wait in a per-group backlog instead of being handed out; when
the last in-flight entry of a group settles or comes back, the group becomes available again and
its backlog is served first, in sequence order. Backlogged entries still count as waiting
(visible). No clock and no I/O here: the queue feature that leases entries drives it.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from haremq.core.queue import Entry


class MessageGroups:
    """Per-group backlogs and in-flight counts of one queue."""

    __slots__ = ("available", "backlog", "count", "header", "inflight")

    def __init__(self, header: str) -> None:
        self.header = header
        self.backlog: dict[str, deque[Entry]] = {}
        self.count = 0  # entries in all backlogs
        self.inflight: dict[str, int] = {}
        # groups with a backlog and nothing in flight, in the order they became available
        self.available: dict[str, None] = {}

    def group_of(self, e: Entry) -> str:
        return str((e.msg.props.headers or {}).get(self.header) or "")

    def must_wait(self, group: str, mine: set[str]) -> bool:
        """Does an entry of ``group`` have to wait (group locked by someone else, or a backlog ahead)?"""
        return (group in self.inflight and group not in mine) or group in self.backlog

    def hold(self, group: str, e: Entry) -> None:
        self.backlog.setdefault(group, deque()).append(e)
        self.count += 1

    def next_available(self) -> str | None:
        """Claim the oldest available group (its backlog is served next), or None."""
        if not self.available:
            return None
        g = next(iter(self.available))
        del self.available[g]
        return g

    def pop(self, group: str) -> Entry | None:
        """The next backlogged entry of ``group``, or None (the empty backlog is dropped)."""
        backlog = self.backlog.get(group)
        if not backlog:
            self.backlog.pop(group, None)
            return None
        e = backlog.popleft()
        self.count -= 1
        if not backlog:
            del self.backlog[group]
        return e

    def lock(self, group: str) -> None:
        """One more entry of ``group`` is in flight."""
        self.inflight[group] = self.inflight.get(group, 0) + 1

    def unlock(self, group: str) -> bool:
        """One in-flight entry of ``group`` is done; True when the group just became available."""
        left = self.inflight.get(group, 0) - 1
        if left > 0:
            self.inflight[group] = left
            return False
        self.inflight.pop(group, None)
        if group in self.backlog:
            self.available[group] = None
            return True
        return False

    def put_back(self, group: str, entries: list[Entry]) -> None:
        """Entries whose lease ended go back to the front of their group's backlog, in order."""
        entries.sort()
        old = self.backlog.get(group, deque())
        self.backlog[group] = deque([*entries, *old])
        self.count += len(entries)
        for _ in entries:
            self.unlock(group)
        if group not in self.inflight:
            self.available[group] = None

    def remove(self, e: Entry) -> bool:
        """Take a backlogged entry out (deleted while waiting); False if it is not backlogged."""
        g = self.group_of(e)
        backlog = self.backlog.get(g)
        if backlog is None:
            return False
        try:
            backlog.remove(e)
        except ValueError:
            return False
        self.count -= 1
        if not backlog:
            del self.backlog[g]
            self.available.pop(g, None)
        return True

    def take_any(self) -> Entry | None:
        """One entry of the oldest available group (message moves), or None."""
        if not self.available:
            return None
        g = next(iter(self.available))
        backlog = self.backlog[g]
        e = backlog.popleft()
        self.count -= 1
        if not backlog:
            del self.backlog[g]
            del self.available[g]
        return e

    def waiting_seqs(self) -> set[int]:
        return {e.seq for b in self.backlog.values() for e in b}

    def clear(self) -> list[Entry]:
        out = [e for b in self.backlog.values() for e in b]
        self.backlog.clear()
        self.count = 0
        self.inflight.clear()
        self.available.clear()
        return out
