"""Pull receives with visibility deadlines: the queue feature behind polling front ends.

A ``Receiver`` hangs on a queue (``Queue.receiver``) once something receives from it by polling:

- **receive** takes ready entries (``Queue.take_head``, which also applies the queue's message
  TTL) and holds each in a ``Lease`` with a deadline until it is deleted (``Queue.settle``) or its deadline
  passes (``Queue.requeue``: back to its place, its delivery count kept). Consumers of the same
  queue are served from the same ready list by ``Queue.dispatch``.
- **groups** (``core/groups.py``), when enabled, serve each message group in order and to one
  receiver at a time; **redrive** (``core/redrive.py``) moves an entry received too often to a
  dead-letter queue; **dedup** (``core/dedup.py``) drops a send whose key was seen within the window;
  **delays** (``core/delay.py``) keep a sent entry stored but not ready until due.
- Every lease an entry ever had names it (``by_seq``): a stale handle of an entry still in flight
  settles its current lease, and one of an entry visible again after its deadline takes it out.
- **waiters**: long polls parked by the server, called when the queue may have something to
  receive (``Broker.flush`` after an enqueue or requeue, a group unlocking, the queue deleted).

Timers go through ``Broker.schedule`` (this object is a ``TimerTarget``); time comes from the broker
clock. No I/O, no wire format, no protocol errors: refusals are return values.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from haremq.core.dedup import DedupWindow
from haremq.core.delay import DELAY_HEADER
from haremq.core.groups import MessageGroups
from haremq.core.lease import Lease, TimedLeases
from haremq.core.redrive import Redrive, redrive

if TYPE_CHECKING:
    from haremq.core.queue import Entry, Queue
    from haremq.message import Message


class Receiver:
    """Timed leases, groups, redrive and dedup of one queue. Implements ``TimerTarget``."""

    def __init__(self, queue: Queue, *, group_header: str | None = None, dedup_window: float = 300.0) -> None:
        self.queue = queue
        self.leases = TimedLeases()
        self.by_seq: dict[int, Lease] = {}  # entry seq -> its current lease
        self.returned: dict[int, Entry] = {}  # entry seq -> entry visible again after its lease expired
        self.first_received: dict[int, int] = {}  # entry seq -> wall ms of its first receive
        self.groups = MessageGroups(group_header) if group_header is not None else None
        self.redrive: Redrive | None = None
        self.dedup: DedupWindow[tuple[str, int | None]] = DedupWindow(dedup_window)
        self.attempts: DedupWindow[list[int]] = DedupWindow(dedup_window)
        self.waiters: list[Callable[[], None]] = []
        self._armed: float | None = None
        self.front: object | None = None  # the front end's view of this queue (lives as long as it)

    def now(self) -> float:
        return self.queue.vhost.broker.clock.monotonic()

    def wall_ms(self) -> int:
        return int(self.queue.vhost.broker.clock.time() * 1000)

    @property
    def backlog_count(self) -> int:
        return self.groups.count if self.groups is not None else 0

    @property
    def visible_count(self) -> int:
        return self.queue.message_count + self.backlog_count

    # ---- sending ---------------------------------------------------------------------------------
    def send(self, msg: Message, delay: float, dedup_key: str | None) -> tuple[str, int | None] | None:
        """Enqueue (or hold for ``delay`` seconds); (message id, seq), the first one's for a duplicate
        ``dedup_key`` within the window, or None when the queue refused the message."""
        now = self.now()
        if dedup_key is not None:
            seen = self.dedup.get(dedup_key, now)
            if seen is not None:
                return seen
        q = self.queue
        seq: int | None = q.next_seq
        if delay > 0:
            # stored now (the sender's success means it survives a crash), ready when due; the due
            # time travels in the message so a restart keeps it delayed
            headers = {**(msg.props.headers or {}), DELAY_HEADER: self.wall_ms() + int(delay * 1000)}
            msg = msg.with_props(msg.props.replace(headers=headers))
        if not q.enqueue(msg, delay=delay if delay > 0 else None):
            return None
        message_id = msg.props.message_id or ""
        if dedup_key is not None:
            self.dedup.remember(dedup_key, (message_id, seq), now)
        return message_id, seq

    def remember_sent(self, dedup_key: str, message_id: str, seq: int, at: float) -> None:
        """A message sent at ``at`` (monotonic) keeps deduplicating ``dedup_key`` for the rest of its window
        (the window is rebuilt from the queued messages after a restart)."""
        self.dedup.remember(dedup_key, (message_id, seq), at)

    # ---- receiving -------------------------------------------------------------------------------
    def receive(self, max_messages: int, visibility: float, attempt_id: str | None = None) -> list[Lease]:
        """Take up to ``max_messages`` visible entries and lease them for ``visibility`` seconds. The
        same ``attempt_id`` within the dedup window gets the same leases back while they last."""
        q = self.queue
        if q.deleted:
            return []
        now = self.now()
        if attempt_id is not None:
            ids = self.attempts.get(attempt_id, now)
            if ids is not None:
                again = [self.leases.get(i) for i in ids]
                if all(x is not None for x in again):
                    return [x for x in again if x is not None]
        out: list[Lease] = []
        deadline = now + visibility
        if self.groups is not None:
            self._receive_grouped(self.groups, max_messages, now, deadline, out)
        else:
            while len(out) < max_messages:
                e = q.take_head(now)
                if e is None:
                    break
                if not self._redrive(e):
                    out.append(self._lease(e, deadline, None))
        if out:
            self._arm(deadline)
            if attempt_id is not None:
                self.attempts.remember(attempt_id, [x.id for x in out], now)
        q.schedule_head_expiry()
        return out

    def _receive_grouped(self, groups: MessageGroups, n: int, now: float, deadline: float,
                         out: list[Lease]) -> None:
        q = self.queue
        mine: set[str] = set()  # groups locked by this very call: may give more of their messages
        while len(out) < n:
            g = groups.next_available()
            if g is not None:
                mine.add(g)
                while len(out) < n:
                    e = groups.pop(g)
                    if e is None:
                        break
                    if not self._redrive(e):
                        out.append(self._lease(e, deadline, g))
                continue
            e = q.take_head(now)
            if e is None:
                return
            g = groups.group_of(e)
            if groups.must_wait(g, mine):
                groups.hold(g, e)
                continue
            if not self._redrive(e):
                mine.add(g)
                out.append(self._lease(e, deadline, g))

    def _lease(self, e: Entry, deadline: float, group: str | None) -> Lease:
        if not e.delivery_count:
            self.first_received[e.seq] = self.wall_ms()
        q = self.queue
        q.count_delivery(e)
        if group is not None and self.groups is not None:
            self.groups.lock(group)
        self.returned.pop(e.seq, None)
        lease = self.by_seq[e.seq] = self.leases.add(q.lease(e, None, deadline, group))
        return lease

    def _redrive(self, e: Entry) -> bool:
        policy = self.redrive
        if policy is None or not redrive(self.queue, e, policy):
            return False
        self.first_received.pop(e.seq, None)
        self.returned.pop(e.seq, None)
        return True

    def lease_of(self, seq: int) -> Lease | None:
        """The current lease of entry ``seq``; None when it is not in flight."""
        return self.by_seq.get(seq)

    # ---- settling ------------------------------------------------------------------------------------
    def delete(self, seq: int) -> None:
        """Settle the entry ``seq`` by any lease it ever had: in flight -> settled; visible again after
        its lease expired -> taken out and settled; already gone -> nothing to do."""
        q = self.queue
        lease = self.by_seq.pop(seq, None)
        if lease is None:
            e = self.returned.pop(seq, None)
            if e is not None and not q.deleted and self._take_waiting(e):
                self.first_received.pop(seq, None)
                q.settle(e)
            return
        self.leases.remove(lease.id)
        q.release(lease)
        self.first_received.pop(seq, None)
        if not q.deleted:
            q.settle(lease.entry)
        self._unlock(lease.group)

    def _take_waiting(self, e: Entry) -> bool:
        """Take a visible entry out of the ready list or its group's backlog; False if it is in neither
        (a consumer took it, it expired)."""
        if self.queue.take_ready(e):
            return True
        return self.groups is not None and self.groups.remove(e)

    def change_visibility(self, seq: int, timeout: float) -> bool:
        """Move the deadline of entry ``seq``'s lease to ``timeout`` seconds from now; False when the
        entry is not in flight."""
        lease = self.by_seq.get(seq)
        if lease is None:
            return False
        now = self.now()
        self.leases.extend(lease, now + timeout)
        if timeout == 0:
            self.on_timer(now)
        else:
            self._arm(now + timeout)
        return True

    def _unlock(self, group: str | None) -> None:
        if group is not None and self.groups is not None and self.groups.unlock(group):
            self.wake()

    def _expire(self, leases: list[Lease]) -> None:
        q = self.queue
        for lease in leases:
            q.release(lease)
            self.by_seq.pop(lease.entry.seq, None)
        if q.deleted:
            return
        self._remember_returned([lease.entry for lease in leases])
        plain = [lease.entry for lease in leases if lease.group is None]
        if plain:
            q.requeue(plain)
        by_group: dict[str, list[Entry]] = {}
        for lease in leases:
            if lease.group is not None:
                by_group.setdefault(lease.group, []).append(lease.entry)
        if by_group and self.groups is not None:
            for g, entries in by_group.items():
                self.groups.put_back(g, entries)
            self.wake()

    def _remember_returned(self, entries: list[Entry]) -> None:
        returned = self.returned
        for e in entries:
            returned[e.seq] = e
        if len(returned) > 4096 and len(returned) > 2 * (self.visible_count + 1):
            # entries a consumer took or that expired are not waiting any more: forget them
            waiting = {e.seq for e in self.queue.entries()}
            if self.groups is not None:
                waiting |= self.groups.waiting_seqs()
            self.returned = {k: v for k, v in returned.items() if k in waiting}

    # ---- timers ----------------------------------------------------------------------------------------
    def _arm(self, deadline: float) -> None:
        if self._armed is None or deadline < self._armed:
            self._armed = deadline
            self.queue.vhost.broker.schedule(deadline, self)

    def on_timer(self, now: float) -> None:
        self._armed = None
        if self.queue.deleted:
            return
        expired = self.leases.expired(now)
        if expired:
            self._expire(expired)
        nxt = self.leases.next_deadline()
        if nxt is not None:
            self._arm(nxt)

    # ---- long polling --------------------------------------------------------------------------------
    def has_visible(self) -> bool:
        return bool(self.queue.message_count or (self.groups is not None and self.groups.available))

    def wake(self) -> None:
        """Something may be receivable: call every waiting long poll once (they re-register if needed)."""
        if self.waiters and (self.has_visible() or self.queue.deleted):
            waiters, self.waiters = self.waiters, []
            for w in waiters:
                w()

    # ---- whole queue ---------------------------------------------------------------------------------
    def purge(self) -> int:
        """Drop every waiting, delayed and received entry; returns how many. Consumers' leases stay."""
        q = self.queue
        n = q.purge()  # ready and delayed
        leases = self.leases.clear()
        self.by_seq.clear()
        self.returned.clear()
        for lease in leases:
            q.release(lease)  # consumers' leases (basic.get ones too) stay out and stay counted
            q.drop(lease.entry)
        n += len(leases)
        if self.groups is not None:
            for e in self.groups.clear():
                q.drop(e)
                n += 1
        self.first_received.clear()
        return n

    def take_for_move(self, now: float) -> Entry | None:
        """One visible entry for a message move (dead-letter queue back to a source), or None."""
        e = self.groups.take_any() if self.groups is not None else None
        if e is None:
            e = self.queue.take_head(now)
            if e is None:
                return None
        self.returned.pop(e.seq, None)
        return e
