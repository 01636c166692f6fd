"""One durability tracker: answers wait here until the log positions they depend on are committed.

A command that wrote to durable queues leaves, in ``Broker.written``, the highest lsn it appended
per ``CommitLog`` (store/api.py). The protocol adapter files its answer with those positions:

* AMQP channel: publisher confirms (coalesced into ``ack multiple``) and a deferred tx.commit-ok;
* STOMP connection: RECEIPTs, in frame order (and a held ERROR after them);
* HTTP (SQS): a future the request awaits (``wait``).

Answers of one waiter are released strictly in the order they were filed (``Answers``): an answer
whose positions are committed still waits behind an earlier one that is not, on any log. When a
commit lands (the node's group commit, then ``committed``) every holding waiter releases what is
ready; when the logs can no longer commit (an fsync failed: ``fail``), everything waiting is
refused (nack, ERROR, 5xx) and so is every later wait.

One node commits by fsync; a cluster wraps the same ``CommitLog`` port so ``committed_lsn`` means
"a majority fsynced" and calls ``committed`` when it moves: nothing here changes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Protocol

from haremq.errors import HareError
from haremq.store.answers import WAIT, Answers
from haremq.store.api import CommitLog, Positions

__all__ = ["WAIT", "Answers", "Durability", "Gate", "Waiter", "Writer"]


class Writer(Protocol):
    """A connection with buffered output (the node writes it once per pass)."""

    def write_pending(self) -> None: ...


class Waiter(Protocol):
    """What holds answers (an AMQP channel, a STOMP connection) until their positions commit."""

    @property
    def conn(self) -> Writer:
        """The connection whose output to flush after a release."""
        ...

    def flush_confirms(self) -> bool:
        """Send every answer now releasable, in order; True when some still wait."""
        ...

    def fail_confirms(self, err: HareError) -> None:
        """The logs can no longer commit: refuse what waits (nack, ERROR)."""
        ...


class Gate:
    """A one-shot ``CommitLog`` for something that is not a queue log (a definitions write): lsn 1
    commits when ``open`` is called; ``close`` marks it failed."""

    __slots__ = ("committed_lsn", "failed")

    epoch = 0
    appended_lsn = 1

    def __init__(self) -> None:
        self.committed_lsn = 0
        self.failed: BaseException | None = None

    def open(self) -> None:
        self.committed_lsn = 1

    def close(self, err: BaseException) -> None:
        self.failed = err


class Durability:
    """The node's one tracker of answers waiting for commits (see the module docstring)."""

    def __init__(self, on_released: Callable[[Waiter], None] | None = None) -> None:
        self.waiting: dict[Waiter, None] = {}
        self.failed: HareError | None = None
        self._futures: list[tuple[Positions, asyncio.Future[None]]] = []
        # called for each waiter that released or refused something (the node marks its output)
        self.on_released = on_released

    # ---- filing ------------------------------------------------------------------------------
    @staticmethod
    def is_committed(positions: Positions) -> bool:
        for log, lsn in positions.items():  # noqa: SIM110  (a hot path: no generator)
            if log.committed_lsn < lsn:
                return False
        return True

    def hold(self, waiter: Waiter) -> None:
        """``waiter`` has answers that wait: flush it on every commit until it has none."""
        if self.failed is not None:
            waiter.fail_confirms(self.failed)
            self._released(waiter)
            return
        self.waiting[waiter] = None

    def forget(self, waiter: Waiter) -> None:
        """The waiter is gone (channel or connection closed): nothing to release to it."""
        self.waiting.pop(waiter, None)

    async def wait(self, positions: Positions) -> None:
        """Until every position is committed; raises the failure when the logs cannot commit."""
        if self.failed is not None:
            raise self.failed
        if self.is_committed(positions):
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._futures.append((dict(positions), fut))
        await fut

    # ---- commits -----------------------------------------------------------------------------
    def committed(self, logs: Iterable[CommitLog] = ()) -> None:
        """Some logs' ``committed_lsn`` moved: release every answer that is now ready, in order
        per waiter. (``logs`` is informative; every holding waiter is looked at.)"""
        if self._futures:
            still = []
            for positions, fut in self._futures:
                if fut.done():
                    continue
                if self.is_committed(positions):
                    fut.set_result(None)
                else:
                    still.append((positions, fut))
            self._futures = still
        waiting = self.waiting
        self.waiting = {}
        for w in waiting:
            if w.flush_confirms():
                self.waiting[w] = None
            self._released(w)

    def fail(self, err: HareError) -> None:
        """The logs can no longer commit: refuse everything waiting, and every later hold/wait."""
        self.failed = err
        waiting, self.waiting = self.waiting, {}
        for w in waiting:
            w.fail_confirms(err)
            self._released(w)
        futures, self._futures = self._futures, []
        for _, fut in futures:
            if not fut.done():
                fut.set_exception(err)

    def _released(self, w: Waiter) -> None:
        if self.on_released is not None:
            self.on_released(w)

    @property
    def pending(self) -> int:
        """Waiters and requests still holding answers (for tests and metrics)."""
        return len(self.waiting) + len(self._futures)
