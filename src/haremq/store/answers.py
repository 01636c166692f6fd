"""One waiter's answers filed behind the log positions they depend on (see server/durability.py).

Kept beside the ``CommitLog`` port so that a sans-IO protocol handler (an AMQP channel's confirms
and tx.commit-ok) can file answers without importing the server layer.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from haremq.store.api import CommitLog, Positions


class Answers:
    """One waiter's answers in filing order, each as ``(token, log, lsn)``: releasable once
    ``log.committed_lsn >= lsn`` (``log`` None: at once) and every earlier one is released.

    A command that touched several logs files one ``(None, log, lsn)`` barrier per extra log
    before its answer, so the common case (one log) costs one tuple, as a ticket did.
    """

    __slots__ = ("items",)

    def __init__(self) -> None:
        self.items: deque[tuple[Any, CommitLog | None, int]] = deque()

    def __bool__(self) -> bool:
        return bool(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def add(self, token: Any, written: Positions) -> None:
        """File ``token`` (not None) behind every position in ``written``."""
        items = self.items
        n = len(written)
        if n == 0:
            items.append((token, None, 0))
        elif n == 1:
            for log in written:
                items.append((token, log, written[log]))
        else:
            last: tuple[CommitLog, int] | None = None
            for pos in written.items():
                if last is not None:
                    items.append((None, last[0], last[1]))
                last = pos
            assert last is not None
            items.append((token, last[0], last[1]))

    def add_gate(self, token: Any, gate: CommitLog) -> None:
        """File ``token`` behind a one-shot ``Gate`` (e.g. a definitions write)."""
        self.items.append((token, gate, 1))

    def pop_ready(self) -> Any:
        """The next releasable token (barriers skipped), or ``WAIT`` when the head is not committed
        (or nothing is left)."""
        items = self.items
        while items:
            token, log, lsn = items[0]
            if log is not None and log.committed_lsn < lsn:
                return WAIT
            items.popleft()
            if token is not None:
                return token
        return WAIT

    def clear(self) -> None:
        self.items.clear()

    def tokens(self) -> list[Any]:
        """Every answer still filed (barriers left out), in order."""
        return [t for t, _, _ in self.items if t is not None]


WAIT: Any = object()
"""``Answers.pop_ready``: nothing releasable now."""
