"""Group commit: one node-wide flusher that makes appended records durable in batches.

Sync protocol
=============

* Every append (PUBLISH, REMOVE, DELIVERED) happens on the event-loop thread. Under ``_lock`` it
  marks its segment dirty and takes the next **ticket** (``GroupCommit.ticket`` increments by one
  per record). A publisher confirm for a persistent message may be released only once
  ``durable_ticket >= `` the ticket its record got.
* ``sync()`` may run on any thread (the server runs it with ``loop.run_in_executor`` so the loop
  never blocks on the disk). Under ``_lock`` it snapshots ``target = ticket``, takes the dirty set
  and clears it, and ``os.dup``s each segment's descriptor. Outside the lock it ``fsync``s each
  dup (``fsync`` releases the GIL; ``mmap.flush`` would not) and the directories that gained or
  lost files, then publishes ``durable_ticket = target``.
* Why that is correct: a record's bytes are copied into the page cache and its segment marked
  dirty *before* its ticket exists, all under the same lock the snapshot takes. So every ticket
  <= target belongs to a segment in the snapshot, or to one an earlier sync already flushed. On
  Linux ``fsync`` writes back pages dirtied through a shared mapping as well.
* Descriptors: the flusher only touches its own dups, so the loop thread may rotate, compact or
  delete a segment (closing its descriptor, under ``_lock``) while a sync is in progress; an
  fsync on the dup of a deleted file is harmless.
* ``_sync_lock`` serialises whole syncs so ``durable_ticket`` only moves forward.
* A failed fsync is fatal for durability (after an error Linux may mark the pages clean and a
  retry would "succeed"): the flusher turns ``failed``, every later ``sync()`` raises
  ``ResourceError`` and ``durable_ticket`` never moves again; the node should stop confirming.

Policies: ``always`` - the server syncs as soon as anything is dirty (records that arrive during
one fsync share the next: that is the group commit); ``interval`` - every ``interval`` seconds;
``off`` - never fsync, tickets are durable at once (the OS writes back when it likes).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Protocol

from haremq.errors import ConfigError, ResourceError

POLICIES = ("always", "interval", "off")


class Syncable(Protocol):
    fd: int


class GroupCommit:
    """The node-wide flusher shared by every file queue store of a node."""

    def __init__(self, policy: str = "interval", interval: float = 0.005) -> None:
        if policy not in POLICIES:
            raise ConfigError(f"fsync policy must be one of {', '.join(POLICIES)}, not {policy!r}")
        self.policy = policy
        self.interval = interval
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._dirty: dict[int, Syncable] = {}
        self._dirs: set[str] = set()
        self._files: set[str] = set()
        self.ticket = 0
        self.durable_ticket = 0
        self.syncs = 0  # statistics
        self.fsyncs = 0
        self.failed: BaseException | None = None
        self.on_dirty: Callable[[], None] | None = None
        """Called on the loop thread when the first record after a sync is appended (wake the flusher)."""

    # ---- loop-thread side --------------------------------------------------------------------
    @property
    def lock(self) -> threading.Lock:
        """Held around segment rotation/close so no descriptor is closed while being dup'ed."""
        return self._lock

    def appended(self, seg: Syncable) -> int:
        """A record was copied into ``seg``: mark it dirty and return the record's ticket."""
        with self._lock:
            was_clean = not self._dirty
            self._dirty[id(seg)] = seg
            self.ticket += 1
            t = self.ticket
            if self.policy == "off":
                self.durable_ticket = t
        if was_clean and self.on_dirty is not None:
            self.on_dirty()
        return t

    def dir_changed(self, path: str) -> None:
        """A file was created, renamed or deleted in ``path``: fsync the directory next time."""
        with self._lock:
            self._dirs.add(path)

    def file_changed(self, path: str) -> None:
        """A small file (e.g. a queue's ``queue.json``) was written: fsync it next time, before
        its directory and before any later ticket is declared durable."""
        with self._lock:
            self._files.add(path)

    def forget(self, seg: Syncable) -> None:
        """``seg`` is about to be closed; callers hold ``lock``."""
        self._dirty.pop(id(seg), None)

    @property
    def pending(self) -> bool:
        """Something was appended that is not durable yet."""
        return self.durable_ticket < self.ticket or bool(self._dirty)

    @property
    def delay(self) -> float | None:
        """How long the server's flusher loop waits between syncs (None: never sync)."""
        return {"always": 0.0, "interval": self.interval, "off": None}[self.policy]

    # ---- any thread --------------------------------------------------------------------------
    def sync(self) -> int:
        """Make every record appended so far durable; returns the new ``durable_ticket``.

        Thread-safe; blocks on the disk, so call it from a worker thread in the server.
        """
        with self._sync_lock:
            if self.failed is not None:
                raise ResourceError(f"an earlier fsync failed: {self.failed}")
            with self._lock:
                target = self.ticket
                segs = list(self._dirty.values())
                self._dirty.clear()
                files = list(self._files)
                self._files.clear()
                dirs = list(self._dirs)
                self._dirs.clear()
                fds = [os.dup(s.fd) for s in segs if s.fd >= 0] if self.policy != "off" else []
            if self.policy == "off":
                self.durable_ticket = max(self.durable_ticket, target)
                return self.durable_ticket
            try:
                for fd in fds:
                    os.fsync(fd)
                    self.fsyncs += 1
                for d in [*files, *dirs]:
                    try:
                        dfd = os.open(d, os.O_RDONLY)
                    except FileNotFoundError:
                        continue
                    try:
                        os.fsync(dfd)
                    finally:
                        os.close(dfd)
            except OSError as exc:
                self.failed = exc
                raise ResourceError(f"fsync failed, durability lost: {exc}") from exc
            finally:
                for fd in fds:
                    os.close(fd)
            self.syncs += 1
            if target > self.durable_ticket:
                self.durable_ticket = target
            return self.durable_ticket
