"""One contract, two coordinators: the in-process ``local`` one and ``etcd`` against real etcd
members (a 1-member etcd shared by the module, a 3-member one for the member-death test).

Every test runs its own namespace (etcd) or store (local), with several coordinators standing for
several nodes."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TypeVar

import pytest
from etcdproc import EtcdCluster, start_etcd

from haremq.cluster.coordinator.api import (
    Compacted,
    Conflict,
    Delete,
    Fenced,
    KeyValue,
    NoSession,
    NotEligible,
    Put,
    Unavailable,
    WatchBatch,
    leader_key,
    node_key,
    queue_key,
)
from haremq.cluster.coordinator.base import BaseCoordinator, LeasedPut
from haremq.cluster.coordinator.cache import PrefixCache
from haremq.cluster.coordinator.etcd import EtcdCoordinator
from haremq.cluster.coordinator.local import LocalCoordinator, LocalStore
from haremq.cluster.coordinator.meta import change_ops, event_change
from haremq.store.api import Change
from haremq.testing.fakes import FakeClock

T = TypeVar("T")


@pytest.fixture(scope="module")
def etcd1() -> Iterator[EtcdCluster]:
    cluster = start_etcd(1)
    yield cluster
    cluster.stop()


class Backend:
    def __init__(self, kind: str, endpoints: list[str]) -> None:
        self.kind = kind
        self.endpoints = endpoints
        self.store = LocalStore()
        self.namespace = f"t-{uuid.uuid4().hex[:8]}/"
        self.clients: list[BaseCoordinator] = []

    async def client(self, lease_ttl: float = 3.0, lease_margin: float = 0.5) -> BaseCoordinator:
        c: BaseCoordinator
        if self.kind == "local":
            c = LocalCoordinator(self.store, lease_ttl=lease_ttl, lease_margin=lease_margin)
        else:
            c = EtcdCoordinator(self.endpoints, namespace=self.namespace, lease_ttl=lease_ttl,
                                lease_margin=lease_margin)
        await c.start()
        self.clients.append(c)
        return c

    def run(self, body: Callable[[Backend], Awaitable[None]], timeout: float = 30) -> None:
        async def main() -> None:
            try:
                await asyncio.wait_for(body(self), timeout)
            finally:
                for c in self.clients:
                    await c.close()

        asyncio.run(main())


@pytest.fixture(params=["local", "etcd"])
def backend(request: pytest.FixtureRequest) -> Backend:
    endpoints = request.getfixturevalue("etcd1").endpoints if request.param == "etcd" else []
    return Backend(request.param, endpoints)


async def take(it: AsyncIterator[T], n: int, timeout: float = 5.0) -> list[T]:
    out: list[T] = []

    async def go() -> None:
        async for item in it:
            out.append(item)
            if len(out) >= n:
                return

    await asyncio.wait_for(go(), timeout)
    return out


async def until(check: Callable[[], Awaitable[bool]], timeout: float, step: float = 0.02) -> float:
    """Poll ``check`` until true; the monotonic time it first was."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return time.monotonic()
        await asyncio.sleep(step)
    raise AssertionError("condition not met in time")


# ---- KV ---------------------------------------------------------------------------------------------
def test_cas_refuses_stale_mod_revision(backend: Backend) -> None:
    async def body(b: Backend) -> None:
        c = await b.client()
        r1 = await c.put_if("meta/vhost/a", b"1", 0)
        with pytest.raises(Conflict):
            await c.put_if("meta/vhost/a", b"x", 0)  # create over an existing key
        r2 = await c.put_if("meta/vhost/a", b"2", r1)
        with pytest.raises(Conflict):
            await c.put_if("meta/vhost/a", b"x", r1)  # a writer that read before r2
        with pytest.raises(Conflict):
            await c.delete_if("meta/vhost/a", r1)
        kv = await c.get("meta/vhost/a")
        assert kv is not None and kv.value == b"2" and kv.mod_revision == r2 and kv.create_revision == r1
        await c.delete_if("meta/vhost/a", r2)
        assert await c.get("meta/vhost/a") is None

    backend.run(body)


def test_multi_key_commit_is_all_or_nothing(backend: Backend) -> None:
    async def body(b: Backend) -> None:
        c = await b.client()
        r1 = await c.commit([Put("meta/vhost/v", b"{}"), Put("meta/queue/v/q", b"{}")], {"meta/vhost/v": 0})
        with pytest.raises(Conflict):
            await c.commit([Put("meta/queue/v/q2", b"{}")], {"meta/vhost/v": 0, "meta/queue/v/q2": 0})
        assert await c.get("meta/queue/v/q2") is None
        r2 = await c.commit([Delete("meta/queue/v/", prefix=True), Delete("meta/vhost/v")], {"meta/vhost/v": r1})
        listing = await c.list_prefix("meta/")
        assert listing.items == () and listing.revision == r2 > r1

    backend.run(body)


def test_revisions_increase_with_each_write_and_not_on_a_refused_one(backend: Backend) -> None:
    async def body(b: Backend) -> None:
        c = await b.client()
        revs = [await c.put_if(f"meta/user/u{i}", b"x", 0) for i in range(5)]
        assert revs == sorted(revs) and len(set(revs)) == 5
        before = (await c.list_prefix("meta/")).revision
        assert before == revs[-1]
        with pytest.raises(Conflict):
            await c.put_if("meta/user/u0", b"y", 0)
        assert (await c.list_prefix("meta/")).revision == before
        listing = await c.list_prefix("meta/user/")
        assert [kv.key for kv in listing.items] == [f"meta/user/u{i}" for i in range(5)]

    backend.run(body)


def test_watch_from_a_revision_sees_every_change_in_order(backend: Backend) -> None:
    async def body(b: Backend) -> None:
        c, other = await b.client(), await b.client()
        start = await c.put_if("meta/exchange/a", b"1", 0)
        r2 = await other.put_if("meta/exchange/a", b"2", start)
        await c.put_if("outside/x", b"-", 0)  # not under the watched prefix
        r3 = await other.commit([Put("meta/exchange/b", b"1"), Put("meta/exchange/c", b"1")], {})
        r4 = await c.delete_if("meta/exchange/a", r2)
        async with contextlib.aclosing(c.watch_prefix("meta/exchange/", start)) as w:
            got = await take(w, 4)
        assert [g.revision for g in got] == [start, r2, r3, r4]
        assert [[(e.kind, e.key, e.value) for e in g.events] for g in got] == [
            [("put", "meta/exchange/a", b"1")], [("put", "meta/exchange/a", b"2")],
            [("put", "meta/exchange/b", b"1"), ("put", "meta/exchange/c", b"1")],  # one transaction, one batch
            [("delete", "meta/exchange/a", b"")]]

    backend.run(body)


def test_watch_resumes_after_the_stream_breaks(backend: Backend) -> None:
    async def body(b: Backend) -> None:
        c, writer = await b.client(), await b.client()
        start = (await c.list_prefix("meta/")).revision + 1
        got: list[WatchBatch] = []

        async def follow() -> None:
            async with contextlib.aclosing(c.watch_prefix("meta/", start)) as w:
                async for batch in w:
                    got.append(batch)

        task = asyncio.create_task(follow())
        for i in range(3):
            await writer.put_if(f"meta/q/{i}", b"x", 0)
        await until(lambda: _true(len(got) == 3), 5)
        c.interrupt_watches()
        for i in range(3, 6):  # written while the stream is down or coming back
            await writer.put_if(f"meta/q/{i}", b"x", 0)
        c.interrupt_watches()
        for i in range(6, 8):
            await writer.put_if(f"meta/q/{i}", b"x", 0)
        await until(lambda: _true(len(got) >= 8), 5)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert [e.key for g in got for e in g.events] == [f"meta/q/{i}" for i in range(8)]  # no gap, no repeat

    backend.run(body)


async def _true(v: bool) -> bool:
    return v


def test_close_ends_open_watches_quietly(backend: Backend) -> None:
    async def body(b: Backend) -> None:
        c = await b.client()
        rev = await c.put_if("meta/x", b"1", 0)
        got: list[WatchBatch] = []

        async def follow() -> None:
            async for batch in c.watch_prefix("meta/", rev):
                got.append(batch)

        task = asyncio.create_task(follow())
        await until(lambda: _true(len(got) == 1), 5)
        await c.close()
        await asyncio.wait_for(task, 2)  # ended, no error, no hang
        assert task.exception() is None

    backend.run(body)


def test_watch_from_a_compacted_revision_says_compacted(backend: Backend) -> None:
    async def body(b: Backend) -> None:
        c = await b.client()
        first = await c.put_if("meta/policy/p", b"1", 0)
        second = await c.put_if("meta/policy/p", b"2", first)
        await c.compact(second)
        with pytest.raises(Compacted):
            async with contextlib.aclosing(c.watch_prefix("meta/policy/", first)) as w:
                await take(w, 1)
        listing = await c.list_prefix("meta/policy/")  # the cure: list again, watch from there
        assert [kv.value for kv in listing.items] == [b"2"]
        third = await c.put_if("meta/policy/p", b"3", second)
        async with contextlib.aclosing(c.watch_prefix("meta/policy/", listing.revision + 1)) as w:
            got = await take(w, 1)
        assert got[0].revision == third

    backend.run(body)


def test_prefix_cache_follows_writes_from_every_node(backend: Backend) -> None:
    async def body(b: Backend) -> None:
        c, other = await b.client(), await b.client()
        await c.put_if("meta/vhost/a", b"1", 0)
        seen: list[tuple[int, list[tuple[str, str]]]] = []
        cache = PrefixCache(c, "meta/", lambda rev, evs: seen.append((rev, [(e.kind, e.key) for e in evs])))
        await cache.start()
        try:
            assert set(cache.items) == {"meta/vhost/a"}
            r1 = await other.commit([Put("meta/vhost/b", b"1"), Put("meta/user/u", b"1")], {})
            r2 = await other.commit([Delete("meta/vhost/a")], {})
            await cache.wait_for(r2)
            assert set(cache.items) == {"meta/vhost/b", "meta/user/u"} and cache.revision == r2
            assert seen == [(r1, [("put", "meta/vhost/b"), ("put", "meta/user/u")]), (r2, [("delete", "meta/vhost/a")])]
        finally:
            await cache.stop()

    backend.run(body)


def test_prefix_cache_lists_again_after_falling_behind_a_compaction(backend: Backend) -> None:
    async def body(b: Backend) -> None:
        c, other = await b.client(), await b.client()
        r0 = await c.commit([Put("meta/q/keep", b"1"), Put("meta/q/gone", b"1"), Put("meta/q/changed", b"1")], {})
        seen: list[tuple[int, list[tuple[str, str]]]] = []
        cache = PrefixCache(c, "meta/", lambda rev, evs: seen.append((rev, [(e.kind, e.key) for e in evs])))
        await cache.start()
        await cache.stop()  # the node is away while history moves on and is compacted
        await other.commit([Delete("meta/q/gone"), Put("meta/q/changed", b"2"), Put("meta/q/new", b"1")], {})
        last = await other.put_if("meta/q/new", b"2", (await other.get("meta/q/new") or _missing()).mod_revision)
        await other.compact(last)
        await cache.start()
        try:
            await cache.wait_for(last)
            assert cache.relists == 1 and cache.revision >= last > r0
            assert {k: kv.value for k, kv in cache.items.items()} == {
                "meta/q/keep": b"1", "meta/q/changed": b"2", "meta/q/new": b"2"}
            assert seen == [(cache.revision, [("delete", "meta/q/gone"), ("put", "meta/q/changed"),
                                              ("put", "meta/q/new")])]
        finally:
            await cache.stop()

    backend.run(body)


def _missing() -> KeyValue:
    raise AssertionError("key missing")


def test_definitions_changes_round_trip_through_meta_keys(backend: Backend) -> None:
    async def body(b: Backend) -> None:
        c, other = await b.client(), await b.client()
        changes: list[Change] = []
        cache = PrefixCache(c, "meta/", lambda rev, evs: changes.extend(event_change(e) for e in evs))
        await cache.start()
        puts = [
            Change("put", "vhost", ("dev/1",), {"description": "", "tags": []}),
            Change("put", "user", ("ann",), {"password_hash": "h", "tags": ["admin"]}),
            Change("put", "permission", ("ann", "dev/1"), {"configure": ".*", "write": ".*", "read": ".*"}),
            Change("put", "access_key", ("AK1",), {"user": "ann", "secret": "s"}),
            Change("put", "exchange", ("dev/1", "x"), {"type": "topic", "durable": True, "auto_delete": False,
                                                         "internal": False, "arguments": {}}),
            Change("put", "queue", ("dev/1", "q"), {"durable": True, "auto_delete": False, "arguments": {}}),
            Change("put", "binding", ("dev/1", "x", "q", "queue", "a.#"), {"arguments": {"k": 1}}),
            Change("put", "binding", ("dev/1", "x", "q", "queue", "a.#"), {"arguments": {"k": 2}}),
        ]
        r = await other.commit([op for ch in puts for op in change_ops(ch)], {})
        await cache.wait_for(r)
        assert sorted(changes, key=repr) == sorted(puts, key=repr)
        assert len(cache.items) == len(puts)  # two bindings differing only in arguments are two keys

        changes.clear()
        gone = Change("delete", "binding", ("dev/1", "x", "q", "queue", "a.#"), {"arguments": {"k": 1}})
        await cache.wait_for(await other.commit(change_ops(gone), {}))
        assert changes == [gone]  # the delete carries the arguments that identify the binding

        changes.clear()
        r = await other.commit(change_ops(Change("delete", "vhost", ("dev/1",))), {})
        await cache.wait_for(r)
        assert {(ch.op, ch.kind) for ch in changes} == {("delete", k) for k in
                                                         ("vhost", "permission", "exchange", "queue", "binding")}
        r = await other.commit(change_ops(Change("delete", "user", ("ann",)), cache.items), {})
        await cache.wait_for(r)
        assert cache.items == {}
        await cache.stop()

    backend.run(body)


# ---- membership and leases ---------------------------------------------------------------------------
def test_membership_lists_and_watches_nodes(backend: Backend) -> None:
    async def body(b: Backend) -> None:
        a, n2 = await b.client(), await b.client()
        await a.register_node("a", {"amqp": 5672})
        async with contextlib.aclosing(a.watch_nodes()) as w:
            first = await take(w, 1)
            assert set(first[0].nodes) == {"a"} and first[0].nodes["a"].info == {"amqp": 5672}
            await n2.register_node("b", {})
            joined = await take(w, 1)
            assert set(joined[0].nodes) == {"a", "b"}
            await n2.close()  # a clean leave revokes the lease: the key goes at once, no TTL wait
            left = await take(w, 1, timeout=1.0)
            assert set(left[0].nodes) == {"a"}
        assert set((await a.nodes()).nodes) == {"a"}

    backend.run(body)


def test_lease_expiry_releases_node_key_and_leader_keys(backend: Backend) -> None:
    async def body(b: Backend) -> None:
        dying, watcher = await b.client(lease_ttl=2.0), await b.client(lease_ttl=2.0)
        await dying.register_node("a", {})
        await watcher.register_node("b", {})
        q1, q2 = queue_key("/", "q1"), queue_key("v", "q2")
        assert await dying.campaign(q1, "a", True) is not None
        assert await dying.campaign(q2, "a", True) is not None
        dying.suspend_keepalive()  # hung node: no keep-alive, no revoke

        async def released() -> bool:
            return (await watcher.get(node_key("a")) is None and await watcher.get(leader_key(q1)) is None
                    and await watcher.get(leader_key(q2)) is None)

        await until(released, 5)
        won = await watcher.campaign(q1, "b", True)
        assert won is not None and won.holder == "b"
        assert set((await watcher.nodes()).nodes) == {"b"}

    backend.run(body)


def test_lease_loss_timer_fires_before_the_server_expires_the_lease(backend: Backend) -> None:
    async def body(b: Backend) -> None:
        node, observer = await b.client(lease_ttl=2.0, lease_margin=0.5), await b.client()
        lost: list[float] = []
        node.on_lease_lost(lambda s: lost.append(time.monotonic()))
        session = await node.register_node("a", {})
        lead = await node.campaign(queue_key("/", "q"), "a", True)
        assert lead is not None
        node.suspend_keepalive()

        async def gone() -> bool:
            return await observer.get(node_key("a")) is None

        await until(lambda: _true(bool(lost)), 5)
        # the node stops acting as leader on its own clock, while etcd still holds its keys
        with pytest.raises(Fenced):
            await node.set_in_sync(lead, ["a"])
        assert await observer.get(node_key("a")) is not None
        gone_at = await until(gone, 5)
        assert lost[0] < gone_at
        assert node.session is None and session.lease != 0

    backend.run(body)


# ---- election ----------------------------------------------------------------------------------------
def test_election_epoch_strictly_increases(backend: Backend) -> None:
    async def body(b: Backend) -> None:
        a, bb = await b.client(), await b.client()
        await a.register_node("a", {})
        await bb.register_node("b", {})
        q = queue_key("/", "orders")
        epochs = []
        for c, name in [(a, "a"), (bb, "b"), (a, "a")]:
            won = await c.campaign(q, name, True)
            assert won is not None
            info = await c.leader(q)
            assert info is not None and (info.holder, info.epoch) == (name, won.epoch)
            epochs.append(won.epoch)
            await c.resign(won)
            assert await c.leader(q) is None
        assert epochs == sorted(epochs) and len(set(epochs)) == 3

    backend.run(body)


def test_only_one_leader_under_concurrent_campaigns(backend: Backend) -> None:
    async def body(b: Backend) -> None:
        nodes = [await b.client() for _ in range(5)]
        for i, c in enumerate(nodes):
            await c.register_node(f"n{i}", {})
        q = queue_key("/", "contended")
        results = await asyncio.gather(*(c.campaign(q, f"n{i}", True) for i, c in enumerate(nodes)))
        winners = [r for r in results if r is not None]
        assert len(winners) == 1
        info = await nodes[0].leader(q)
        assert info is not None and (info.holder, info.epoch) == (winners[0].holder, winners[0].epoch)
        # a second round while it holds: nobody else gets in
        again = await asyncio.gather(*(c.campaign(q, f"n{i}", True) for i, c in enumerate(nodes)))
        assert again == [None] * 5

    backend.run(body)


def test_ineligible_candidate_is_refused(backend: Backend) -> None:
    async def body(b: Backend) -> None:
        a, bb, unregistered = await b.client(), await b.client(), await b.client()
        await a.register_node("a", {})
        await bb.register_node("b", {})
        q = queue_key("/", "q")
        with pytest.raises(NotEligible):
            await a.campaign(q, "a", False)
        with pytest.raises(NoSession):
            await unregistered.campaign(q, "z", True)
        lead = await a.campaign(q, "a", True)
        assert lead is not None
        await a.set_in_sync(lead, ["a"])  # b is behind
        await a.resign(lead)
        with pytest.raises(NotEligible):
            await bb.campaign(q, "b", True)  # not in the in-sync set
        assert await a.leader(q) is None
        assert (await a.campaign(q, "a", True)) is not None

    backend.run(body)


def test_deposed_leader_is_fenced(backend: Backend) -> None:
    async def body(b: Backend) -> None:
        a, bb = await b.client(), await b.client()
        await a.register_node("a", {})
        await bb.register_node("b", {})
        q = queue_key("/", "q")
        old = await a.campaign(q, "a", True)
        assert old is not None
        await a.set_in_sync(old, ["a", "b"])
        await a.resign(old)
        new = await bb.campaign(q, "b", True)
        assert new is not None and new.epoch > old.epoch
        with pytest.raises(Fenced):
            await a.set_in_sync(old, ["a"])
        await a.resign(old)  # a stale resign does not remove the new leader
        assert (await a.leader(q)) is not None
        await bb.set_in_sync(new, ["b"])
        assert (await a.in_sync(q)).members == ("b",)

    backend.run(body)


def test_watch_leader_follows_changes(backend: Backend) -> None:
    async def body(b: Backend) -> None:
        a, bb = await b.client(), await b.client()
        await a.register_node("a", {})
        await bb.register_node("b", {})
        q = queue_key("/", "w")
        async with contextlib.aclosing(bb.watch_leader(q)) as w:
            assert await take(w, 1) == [None]
            lead = await a.campaign(q, "a", True)
            assert lead is not None
            got = await take(w, 1)
            assert got[0] is not None and (got[0].holder, got[0].epoch) == ("a", lead.epoch)
            await a.resign(lead)
            assert await take(w, 1) == [None]

    backend.run(body)


# ---- implementation-specific ----------------------------------------------------------------------
def test_local_lease_follows_the_injected_clock() -> None:
    async def body() -> None:
        clock = FakeClock()
        store = LocalStore(clock)
        node, observer = LocalCoordinator(store, lease_ttl=10), LocalCoordinator(store, lease_ttl=10)
        await node.start()
        await observer.start()
        lost: list[float] = []
        node.on_lease_lost(lambda s: lost.append(clock.monotonic()))
        try:
            granted_at = clock.monotonic()
            first = await node.register_node("a", {})
            clock.advance(9.0)
            await asyncio.sleep(0.15)
            assert lost == [] and await observer.get(node_key("a")) is not None
            clock.advance(0.6)  # past TTL - margin: the node knows before the store expires anything
            await until(lambda: _true(bool(lost)), 1)
            assert lost[0] < granted_at + 10  # before the store would have expired the lease
            # it made the loss definitive (old lease revoked) and registered again on a new lease
            await until(lambda: _true(node.session is not None), 1)
            kv = await observer.get(node_key("a"))
            assert node.session is not None and kv is not None and kv.lease == node.session.lease != first.lease
            # the store's own expiry runs on the same clock
            lease = store.grant(5)
            store.txn([], [LeasedPut("nodes/hung", b"{}", lease)])
            clock.advance(4.9)
            assert await observer.get("nodes/hung") is not None
            clock.advance(0.2)
            assert await observer.get("nodes/hung") is None
        finally:
            await node.close()
            await observer.close()

    asyncio.run(body())


def test_close_returns_when_a_keepalive_answer_races_the_cancel() -> None:
    """Python 3.11's wait_for returns the inner result instead of raising when the cancel lands
    after the inner call finished: the keep-alive loop must still stop."""

    class Racy(LocalCoordinator):
        in_flight: asyncio.Event

        async def _keepalive(self, lease: int) -> float:
            ttl = self.store.keepalive(lease)
            self.in_flight.set()  # wakes the test before wait_for's own waiter is released
            return ttl

    async def body() -> None:
        c = Racy(lease_ttl=0.4, lease_margin=0.1)
        c.in_flight = asyncio.Event()
        await c.start()
        await c.register_node("a", {})
        await c.in_flight.wait()
        t0 = time.monotonic()
        await asyncio.wait_for(c.close(), 5)
        assert time.monotonic() - t0 < 1.0

    asyncio.run(body())


def test_etcd_coordinator_survives_the_death_of_the_etcd_leader_member() -> None:
    cluster = start_etcd(3)
    try:
        asyncio.run(_survive_leader_death(cluster))
    finally:
        cluster.stop()


async def _survive_leader_death(cluster: EtcdCluster) -> None:
    probe = EtcdCoordinator(cluster.endpoints, namespace="probe/")
    ids = {}
    leader_id = 0
    for ep in cluster.endpoints:
        ids[ep], leader_id = await probe.status(ep)
    await probe.close()
    leader_ep = next(ep for ep, mid in ids.items() if mid == leader_id)
    ordered = [leader_ep] + [ep for ep in cluster.endpoints if ep != leader_ep]

    c = EtcdCoordinator(ordered, namespace="ha/", lease_ttl=3.0)
    other = EtcdCoordinator(list(reversed(ordered)), namespace="ha/", lease_ttl=3.0)
    await c.start()
    await other.start()
    try:
        assert c.endpoint == leader_ep
        await c.register_node("a", {})
        await other.register_node("b", {})
        q = queue_key("/", "q")
        lead = await c.campaign(q, "a", True)
        assert lead is not None
        start = await c.put_if("meta/k0", b"0", 0)
        got: list[str] = []

        async def follow() -> None:
            async with contextlib.aclosing(c.watch_prefix("meta/", start)) as w:
                async for batch in w:
                    got.extend(e.key for e in batch.events)

        task = asyncio.create_task(follow())
        await until(lambda: _true(got == ["meta/k0"]), 5)

        next(m for m in cluster.members if m.endpoint == leader_ep).kill()
        t0 = time.monotonic()
        for i in range(1, 6):
            while True:
                try:
                    await c.put_if(f"meta/k{i}", str(i).encode(), 0)
                    break
                except Unavailable:
                    if await c.get(f"meta/k{i}") is not None:
                        break  # it was applied after all
                    await asyncio.sleep(0.1)
                except Conflict:
                    break  # an earlier attempt reported unknown was applied
            assert time.monotonic() - t0 < 10
        assert c.endpoint != leader_ep
        await until(lambda: _true(len(got) >= 6), 10)
        assert got == [f"meta/k{i}" for i in range(6)]
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        # Membership lives on: etcd's new leader renews every lease, and the keep-alive fails over.
        assert set((await other.nodes()).nodes) == {"a", "b"}
        info = await other.leader(q)
        assert c.session is not None and info is not None and info.holder == "a"
    finally:
        await c.close()
        await other.close()
