"""What both coordinators share, written once over a few etcd-shaped primitives (range, txn,
watch stream, lease grant/keep-alive/revoke): membership, the keep-alive task, the lease-loss
timer, watch resumption, election and fencing. An implementation supplies the primitives."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from haremq.clock import Clock, SystemClock
from haremq.cluster.coordinator.api import (
    NODES,
    Conflict,
    CoordinatorError,
    Delete,
    Fenced,
    InSyncSet,
    KeyValue,
    LeaderInfo,
    Leadership,
    LeaseLostCallback,
    Listing,
    Membership,
    NodeInfo,
    NoSession,
    NotEligible,
    Op,
    Put,
    Session,
    Unavailable,
    WatchBatch,
    decode_info,
    decode_isr,
    encode_info,
    encode_isr,
    epoch_key,
    isr_key,
    leader_from,
    leader_key,
    membership_from,
    node_key,
)

log = logging.getLogger("haremq.cluster.coordinator")

DEFAULT_LEASE_TTL = 3.0
DEFAULT_LEASE_MARGIN = 0.5


@dataclasses.dataclass(frozen=True, slots=True)
class Cmp:
    """Txn guard: the key's mod_revision equals ``mod_revision`` (0: absent) and/or its value is
    ``value``."""

    key: str
    mod_revision: int | None = None
    value: bytes | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class LeasedPut:
    key: str
    value: bytes
    lease: int = 0


TxnOp = LeasedPut | Delete


class StreamBroken(Exception):
    """A watch stream ended without the caller asking: resume from the last delivered revision."""


class BaseCoordinator:
    lease_ttl: float
    lease_margin: float

    def __init__(self, *, lease_ttl: float = DEFAULT_LEASE_TTL, lease_margin: float = DEFAULT_LEASE_MARGIN,
                 clock: Clock | None = None) -> None:
        if lease_margin >= lease_ttl:
            raise ValueError("lease_margin must be below lease_ttl")
        self.lease_ttl = lease_ttl
        self.lease_margin = lease_margin
        self.clock: Clock = clock or SystemClock()
        self._session: Session | None = None
        self._node: tuple[str, bytes] | None = None
        self._deadline = 0.0  # clock.monotonic() past which the lease may be gone
        self._lost_callbacks: list[LeaseLostCallback] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._keepalive_suspended = False
        self._closed = False

    # ---- primitives (per implementation) ---------------------------------------------------------
    async def _range(self, key: str, prefix: bool) -> Listing:
        raise NotImplementedError

    async def _txn(self, compares: Sequence[Cmp], ops: Sequence[TxnOp]) -> tuple[bool, int]:
        """(succeeded, revision of the store after the txn)."""
        raise NotImplementedError

    def _watch_stream(self, prefix: str, from_revision: int) -> AsyncIterator[WatchBatch]:
        """Batches from ``from_revision``; raises ``StreamBroken`` when the stream drops,
        ``Compacted`` when the start is gone."""
        raise NotImplementedError

    async def _grant(self, ttl: float) -> tuple[int, float]:
        raise NotImplementedError

    async def _keepalive(self, lease: int) -> float:
        """Refresh; the TTL granted from now (0: the lease is gone)."""
        raise NotImplementedError

    async def _revoke(self, lease: int) -> None:
        raise NotImplementedError

    async def compact(self, revision: int) -> None:
        raise NotImplementedError

    def interrupt_watches(self) -> None:
        """Fault injection: drop every open watch stream (the iterators must resume unharmed)."""
        raise NotImplementedError

    # ---- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        self._closed = False

    async def close(self) -> None:
        self._closed = True
        tasks, self._tasks = self._tasks, []
        for t in tasks:
            t.cancel()
        if tasks:
            # Python 3.11's wait_for can swallow a cancel that races its inner call: the loops also
            # stop on ``_closed``, and close never waits for them forever.
            await asyncio.wait(tasks, timeout=2.0)
        session, self._session = self._session, None
        if session is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._revoke(session.lease), 1.0)

    def _spawn(self, coro: Any) -> None:
        self._tasks.append(asyncio.get_running_loop().create_task(coro))

    # ---- membership and lease --------------------------------------------------------------------
    @property
    def session(self) -> Session | None:
        return self._session

    @property
    def lease_deadline(self) -> float:
        """``clock.monotonic()`` after which this node must assume its lease is gone."""
        return self._deadline

    def on_lease_lost(self, callback: LeaseLostCallback) -> None:
        self._lost_callbacks.append(callback)

    def suspend_keepalive(self) -> None:
        """Fault injection: act as a node cut off from the coordinator's store: no keep-alive, no
        revoke, no new session; the local lease timer still runs. Everything else works."""
        self._keepalive_suspended = True

    async def register_node(self, node_id: str, info: Mapping[str, Any]) -> Session:
        if self._session is not None:
            raise ValueError("this coordinator already registered a node")
        self._node = (node_id, encode_info(info))
        session = await self._new_session()
        self._spawn(self._keepalive_loop())
        self._spawn(self._lease_timer())
        return session

    async def _new_session(self) -> Session:
        assert self._node is not None
        node_id, raw = self._node
        sent = self.clock.monotonic()
        lease, ttl = await self._grant(self.lease_ttl)
        await self._txn([], [LeasedPut(node_key(node_id), raw, lease)])
        self._deadline = sent + ttl - self.lease_margin
        self._session = Session(node_id, lease, ttl)
        return self._session

    async def _keepalive_loop(self) -> None:
        """Refresh every TTL/4; give up on an attempt after half that (a request to a member that
        lost its leader hangs) and retry at once (another endpoint, a new etcd leader): the local
        deadline only moves when an answer comes back."""
        interval = self.lease_ttl / 4
        wait = interval
        while not self._closed:
            await asyncio.sleep(wait)
            wait = interval
            session = self._session
            if session is None or self._keepalive_suspended:
                continue
            sent = self.clock.monotonic()
            try:
                ttl = await asyncio.wait_for(self._keepalive(session.lease), interval / 2)
            except (CoordinatorError, TimeoutError) as e:
                log.warning("lease keep-alive failed: %s", e or "no answer in time")
                wait = 0.1
                continue
            if session is not self._session:
                continue
            if ttl <= 0:
                self._lose(session)
            else:
                self._deadline = max(self._deadline, sent + ttl - self.lease_margin)

    async def _lease_timer(self) -> None:
        """The local lease-loss signal: fires from the clock alone, whatever etcd says or not."""
        tick = min(0.05, self.lease_margin / 4)
        while not self._closed:
            session = self._session
            if session is not None and self.clock.monotonic() >= self._deadline:
                self._lose(session)
            await asyncio.sleep(tick)

    def _lose(self, session: Session) -> None:
        if session is not self._session:
            return
        self._session = None
        log.warning("lease %x of node %s may have expired: leaderships dropped", session.lease, session.node_id)
        for cb in list(self._lost_callbacks):
            try:
                cb(session)
            except Exception:
                log.exception("lease-lost callback failed")
        if not self._closed:
            self._spawn(self._reregister(session))

    async def _reregister(self, old: Session) -> None:
        """Make the loss definitive (revoke the old lease, so no key of ours outlives our belief),
        then start a new session."""
        delay = 0.1
        while not self._closed and not self._keepalive_suspended:
            try:
                with contextlib.suppress(Unavailable):
                    await asyncio.wait_for(self._revoke(old.lease), self.lease_ttl / 3)
                await asyncio.wait_for(self._new_session(), self.lease_ttl)
                return
            except (CoordinatorError, TimeoutError) as e:
                log.warning("node %s: registering again failed: %s", old.node_id, e or "no answer in time")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def nodes(self) -> Membership:
        return membership_from(await self._range(NODES, True))

    async def watch_nodes(self) -> AsyncIterator[Membership]:
        current = await self._range(NODES, True)
        nodes = dict(membership_from(current).nodes)
        yield Membership(dict(nodes), current.revision)
        async for batch in self.watch_prefix(NODES, current.revision + 1):
            for ev in batch.events:
                node_id = ev.key[len(NODES):]
                if ev.kind == "delete":
                    nodes.pop(node_id, None)
                else:
                    nodes[node_id] = NodeInfo(node_id, decode_info(ev.value), ev.lease)
            yield Membership(dict(nodes), batch.revision)

    # ---- KV --------------------------------------------------------------------------------------
    async def get(self, key: str) -> KeyValue | None:
        listing = await self._range(key, False)
        return listing.items[0] if listing.items else None

    async def list_prefix(self, prefix: str) -> Listing:
        return await self._range(prefix, True)

    async def watch_prefix(self, prefix: str, from_revision: int) -> AsyncIterator[WatchBatch]:
        """Every transaction touching ``prefix`` from ``from_revision`` on, in order, once each,
        across broken streams and endpoint changes."""
        next_rev = max(1, from_revision)
        delay = 0.05
        while not self._closed:
            try:
                async for batch in self._watch_stream(prefix, next_rev):
                    if batch.revision < next_rev:
                        continue  # a resumed stream never repeats what was delivered
                    next_rev = batch.revision + 1
                    delay = 0.05
                    yield batch
                raise StreamBroken("stream ended")
            except (StreamBroken, Unavailable) as e:
                if self._closed:
                    return
                log.info("watch on %r broken (%s): resuming from revision %d", prefix, e, next_rev)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def put_if(self, key: str, value: bytes, expected_mod_revision: int) -> int:
        return await self.commit([Put(key, value)], {key: expected_mod_revision})

    async def delete_if(self, key: str, expected_mod_revision: int) -> int:
        return await self.commit([Delete(key)], {key: expected_mod_revision})

    async def commit(self, ops: Sequence[Op], expect: Mapping[str, int]) -> int:
        txn_ops: list[TxnOp] = [LeasedPut(op.key, op.value) if isinstance(op, Put) else op for op in ops]
        ok, revision = await self._txn([Cmp(k, mod_revision=r) for k, r in expect.items()], txn_ops)
        if not ok:
            raise Conflict(f"compare failed on {sorted(expect)}")
        return revision

    # ---- election --------------------------------------------------------------------------------
    async def campaign(self, qkey: str, candidate_id: str, eligible: bool) -> Leadership | None:
        if not eligible:
            raise NotEligible(f"{candidate_id} is not in sync for {qkey}")
        session = self._session
        if session is None:
            raise NoSession("register_node first")
        isr = await self.in_sync(qkey)
        if isr.mod_revision and candidate_id not in isr.members:
            raise NotEligible(f"{candidate_id} is not in the in-sync set of {qkey}")
        # Leader absent, in-sync set unchanged since read: leader key on our lease + epoch bump.
        try:
            ok, revision = await self._txn(
                [Cmp(leader_key(qkey), mod_revision=0), Cmp(isr_key(qkey), mod_revision=isr.mod_revision)],
                [LeasedPut(leader_key(qkey), candidate_id.encode(), session.lease),
                 LeasedPut(epoch_key(qkey), candidate_id.encode())])
        except Unavailable:
            # Outcome unknown: the leader key on our lease says we won (its mod_revision is the epoch).
            kv = await self.get(leader_key(qkey))
            if kv is not None and kv.lease == session.lease and kv.value == candidate_id.encode():
                return Leadership(qkey, candidate_id, kv.mod_revision, session.lease)
            raise
        if not ok:
            return None
        return Leadership(qkey, candidate_id, revision, session.lease)

    async def leader(self, qkey: str) -> LeaderInfo | None:
        listing = await self._range(f"{qkey}/", True)
        kvs = listing.as_dict()
        return leader_from(kvs.get(leader_key(qkey)), kvs.get(epoch_key(qkey)))

    async def resign(self, leadership: Leadership) -> None:
        await self._txn([Cmp(epoch_key(leadership.queue_key), mod_revision=leadership.epoch),
                         Cmp(leader_key(leadership.queue_key), value=leadership.holder.encode())],
                        [Delete(leader_key(leadership.queue_key))])

    async def watch_leader(self, qkey: str) -> AsyncIterator[LeaderInfo | None]:
        listing = await self._range(f"{qkey}/", True)
        kvs = listing.as_dict()
        current = leader_from(kvs.get(leader_key(qkey)), kvs.get(epoch_key(qkey)))
        yield current
        async for batch in self.watch_prefix(leader_key(qkey), listing.revision + 1):
            for ev in batch.events:
                if ev.key != leader_key(qkey):
                    continue
                new = None if ev.kind == "delete" else LeaderInfo(ev.value.decode(), ev.mod_revision)
                if new != current:
                    current = new
                    yield current

    async def in_sync(self, qkey: str) -> InSyncSet:
        kv = await self.get(isr_key(qkey))
        return InSyncSet(decode_isr(kv.value), kv.mod_revision) if kv else InSyncSet((), 0)

    async def set_in_sync(self, leadership: Leadership, members: Sequence[str]) -> int:
        session = self._session
        if session is None or session.lease != leadership.lease:
            # Our own clock says the lease (and with it this leadership) may be gone: refuse even if
            # etcd has not expired it yet.
            raise Fenced(f"{leadership.holder} lost the lease its leadership of {leadership.queue_key} hung on")
        ok, revision = await self._txn(
            [Cmp(epoch_key(leadership.queue_key), mod_revision=leadership.epoch),
             Cmp(leader_key(leadership.queue_key), value=leadership.holder.encode())],
            [LeasedPut(isr_key(leadership.queue_key), encode_isr(members))])
        if not ok:
            raise Fenced(f"{leadership.holder} (epoch {leadership.epoch}) no longer leads {leadership.queue_key}")
        return revision
