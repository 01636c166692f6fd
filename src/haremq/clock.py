"""Time as an injected dependency, so TTLs and timeouts are tested by moving a fake clock."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (timeouts, TTLs)."""
        ...

    def time(self) -> float:
        """Wall-clock seconds since the epoch (timestamps shown to users)."""
        ...


class SystemClock:
    """The real clock."""

    __slots__ = ()

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()
