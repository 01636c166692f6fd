"""A deduplication window: keys remembered for a fixed time (for example 5 minutes).

Insertion order is expiry order (the window is constant), so pruning pops from the front of a
deque: O(1) amortized per key, no timer needed; ``prune`` runs on every lookup.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

V = TypeVar("V")


class DedupWindow(Generic[V]):
    __slots__ = ("_order", "_seen", "window")

    def __init__(self, window: float = 300.0) -> None:
        self.window = window
        self._seen: dict[str, tuple[float, V]] = {}
        self._order: deque[tuple[float, str]] = deque()

    def __len__(self) -> int:
        return len(self._seen)

    def prune(self, now: float) -> None:
        order, seen = self._order, self._seen
        while order and order[0][0] <= now:
            expiry, key = order.popleft()
            cur = seen.get(key)
            if cur is not None and cur[0] == expiry:
                del seen[key]

    def get(self, key: str, now: float) -> V | None:
        """The value remembered for ``key`` within the window, or None."""
        self.prune(now)
        hit = self._seen.get(key)
        return hit[1] if hit is not None else None

    def remember(self, key: str, value: V, now: float) -> None:
        expiry = now + self.window
        self._seen[key] = (expiry, value)
        self._order.append((expiry, key))

    def clear(self) -> None:
        self._seen.clear()
        self._order.clear()
