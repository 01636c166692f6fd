"""The store's housekeeping thread: disk work that may block, kept off the event loop.

One thread, jobs run in submission order (FIFO). The loop thread owns every in-memory structure
of the store; a job gets what it needs handed over at submission (descriptors it owns, copies of
index arrays) and its result is applied back on the loop thread. What runs here:

* compaction passes (scan, write, fsync, rename: ``compaction.CompactJob.run``);
* preallocation of a queue log's next segment (``segment.reserve``: ``posix_fallocate``);
* removal of deleted queues' directories (``shutil.rmtree`` of ``queues/.trash/<id>``).

Invariant for queue deletes: ``FileQueueStore.delete_queue`` drops the log from the store, closes
its descriptors and renames its directory into the trash on the loop thread *before* it queues
the rmtree. Jobs that already hold the queue's files work through descriptors they own (a
directory descriptor follows the rename), so they finish harmlessly inside the trash, and a
queue re-declared under the same name gets a fresh directory they can never touch. FIFO order
then runs the rmtree after them.
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Callable
from typing import Any, TypeVar

log = logging.getLogger("haremq.store")

T = TypeVar("T")


class Housekeeper:
    """A one-thread executor owned by a ``FileQueueStore``; ``close()`` drains and joins it."""

    def __init__(self) -> None:
        self.executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="haremq-store")
        self.closed = False
        self.prealloc_used = 0  # a segment rotation found its successor ready
        self.prealloc_missed = 0  # ... or had to reserve it on the loop thread (the fallback)

    def submit(self, fn: Callable[..., T], *args: Any) -> concurrent.futures.Future[T]:
        return self.executor.submit(fn, *args)

    def background(self, fn: Callable[..., Any], *args: Any) -> None:
        """Fire and forget (errors are logged): e.g. removing a deleted queue's files."""
        if self.closed:
            fn(*args)
            return
        self.executor.submit(self._logged, fn, *args)

    @staticmethod
    def _logged(fn: Callable[..., Any], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("store housekeeping job %s failed", getattr(fn, "__name__", fn))

    def close(self) -> None:
        """Run what is queued, then stop the thread (blocks: call at shutdown)."""
        if not self.closed:
            self.closed = True
            self.executor.shutdown(wait=True)
