"""A node's cached copy of a key prefix (the definitions under ``meta/``): list at revision R, watch
from R + 1, and when the watch cannot resume (R was compacted away) list again and hand the
difference on as if it had been watched, so a listener sees one ordered stream of changes."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Sequence

from haremq.cluster.coordinator.api import Compacted, Coordinator, Event, KeyValue, Listing, Unavailable

log = logging.getLogger("haremq.cluster.coordinator")

ChangeListener = Callable[[int, Sequence[Event]], None]


class PrefixCache:
    """``items`` mirrors the keys under ``prefix`` as of ``revision``; ``listener(revision,
    events)`` runs on the loop after each applied transaction (or re-list difference). A delete
    event carries the deleted value (a binding's arguments are part of what identifies it)."""

    def __init__(self, coordinator: Coordinator, prefix: str, listener: ChangeListener | None = None) -> None:
        self.coordinator = coordinator
        self.prefix = prefix
        self.listener = listener
        self.items: dict[str, KeyValue] = {}
        self.revision = 0
        self.relists = 0
        self._task: asyncio.Task[None] | None = None
        self._advanced = asyncio.Condition()

    async def start(self) -> None:
        """Load (first start) and follow. A restarted cache resumes from its revision."""
        if self.revision == 0:
            self._load(await self.coordinator.list_prefix(self.prefix), notify=False)
        self._task = asyncio.get_running_loop().create_task(self._follow())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            # bounded: Python 3.11's wait_for can swallow a cancel (the loop also checks _task)
            await asyncio.wait([task], timeout=2.0)

    async def wait_for(self, revision: int, timeout: float = 5.0) -> None:
        """Until the cache has applied ``revision``, the revision of a write under the prefix (read
        your own writes before answering)."""
        async with self._advanced:
            await asyncio.wait_for(self._advanced.wait_for(lambda: self.revision >= revision), timeout)

    async def _follow(self) -> None:
        me = asyncio.current_task()
        while self._task is me:
            try:
                async for batch in self.coordinator.watch_prefix(self.prefix, self.revision + 1):
                    events = []
                    for ev in batch.events:
                        old = self.items.get(ev.key)
                        if ev.kind == "put":
                            self.items[ev.key] = KeyValue(ev.key, ev.value, ev.mod_revision,
                                                          old.create_revision if old else ev.mod_revision, ev.lease)
                            events.append(ev)
                        elif old is not None:
                            del self.items[ev.key]
                            events.append(dataclasses.replace(ev, value=old.value))
                    await self._advance(batch.revision, events)
            except Compacted:
                self.relists += 1
                log.info("cache of %r fell behind a compaction: listing again", self.prefix)
                listing = None
                while listing is None and self._task is me:
                    try:
                        listing = await self.coordinator.list_prefix(self.prefix)
                    except Unavailable:
                        await asyncio.sleep(0.5)
                if listing is not None:
                    await self._advance(*self._load(listing, notify=True))

    def _load(self, listing: Listing, notify: bool) -> tuple[int, list[Event]]:
        """Replace the items; the difference as events (puts for new or changed, deletes for gone)."""
        new = listing.as_dict()
        diff = [Event("delete", k, kv.value, listing.revision) for k, kv in sorted(self.items.items()) if k not in new]
        diff += [Event("put", k, kv.value, kv.mod_revision) for k, kv in sorted(new.items())
                 if k not in self.items or self.items[k].mod_revision != kv.mod_revision]
        self.items = new
        if not notify:
            self.revision = listing.revision
        return listing.revision, diff

    async def _advance(self, revision: int, events: Sequence[Event]) -> None:
        self.revision = max(self.revision, revision)
        if events and self.listener is not None:
            try:
                self.listener(revision, events)
            except Exception:
                log.exception("cache listener failed")
        async with self._advanced:
            self._advanced.notify_all()
