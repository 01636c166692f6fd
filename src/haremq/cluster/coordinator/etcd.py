"""The etcd v3 coordinator (etcd 3.4+), over the gRPC stubs the ``aetcd`` package ships.

aetcd's ``Client`` talks to one endpoint and its watcher hands events over one by one (a
transaction's events cannot be told apart from the next one's), so this module drives the
generated stubs itself: several endpoints with failover (the next one on a connection failure),
one watch stream per ``watch_prefix`` delivering whole revisions, the ``hasleader`` watch guard
(an etcd member cut off from its quorum cancels the stream instead of going silent), and the lease
keep-alive task of ``BaseCoordinator``.

A write is retried on another endpoint only when the failure says it was not applied (connection
refused, no leader); when the outcome is unknown (timeout, leader changed mid-request) it raises
``Unavailable``: read before retrying. Reads are retried freely.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

from aetcd import rpc

from haremq.cluster.coordinator.api import (
    Compacted,
    CoordinatorError,
    Event,
    KeyValue,
    Listing,
    Unavailable,
    WatchBatch,
)
from haremq.cluster.coordinator.base import (
    DEFAULT_LEASE_MARGIN,
    DEFAULT_LEASE_TTL,
    BaseCoordinator,
    Cmp,
    LeasedPut,
    StreamBroken,
    TxnOp,
)

T = TypeVar("T")

# Refusals that prove a request never reached a member that could apply it: safe to send again.
_NOT_APPLIED = ("failed to connect", "connection refused", "no leader", "not capable", "backends failing",
                "dns resolution failed", "failed to pick subchannel")

# gRPC keep-alive pings find a silently dead connection; etcd refuses pings closer than 5 s apart.
_CHANNEL_OPTIONS = (("grpc.keepalive_time_ms", 10_000), ("grpc.keepalive_timeout_ms", 5_000),
                    ("grpc.keepalive_permit_without_calls", 1), ("grpc.initial_reconnect_backoff_ms", 100),
                    ("grpc.max_reconnect_backoff_ms", 1000))


def prefix_end(prefix: bytes) -> bytes:
    """The first key past every key starting with ``prefix`` (etcd's range_end for a prefix)."""
    b = bytearray(prefix)
    while b:
        if b[-1] < 0xFF:
            b[-1] += 1
            return bytes(b)
        b.pop()
    return b"\0"


class _Endpoint:
    def __init__(self, address: str) -> None:
        self.address = address
        self.channel: Any = None

    def open(self) -> _Endpoint:
        if self.channel is None:
            self.channel = rpc.insecure_channel(self.address, options=_CHANNEL_OPTIONS)
            self.kv = rpc.KVStub(self.channel)
            self.lease = rpc.LeaseStub(self.channel)
            self.watch = rpc.WatchStub(self.channel)
            self.maintenance = rpc.MaintenanceStub(self.channel)
        return self

    async def close(self) -> None:
        channel, self.channel = self.channel, None
        if channel is not None:
            await channel.close()


class EtcdCoordinator(BaseCoordinator):
    """``endpoints``: ``host:port`` (or ``http://host:port``) of the etcd members' client URLs;
    ``namespace`` prefixes every key, so clusters (and tests) can share one etcd."""

    def __init__(self, endpoints: Sequence[str], *, namespace: str = "haremq/",
                 lease_ttl: float = DEFAULT_LEASE_TTL, lease_margin: float = DEFAULT_LEASE_MARGIN,
                 request_timeout: float = 2.0) -> None:
        super().__init__(lease_ttl=lease_ttl, lease_margin=lease_margin)
        if not endpoints:
            raise ValueError("at least one etcd endpoint is needed")
        self.endpoints = [_Endpoint(e.split("://", 1)[-1].rstrip("/")) for e in endpoints]
        self.namespace = namespace
        self.request_timeout = request_timeout
        self._current = 0
        self._calls: set[Any] = set()
        self._interrupted: set[Any] = set()

    # ---- endpoints -------------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        """The endpoint requests go to now."""
        return self.endpoints[self._current].address

    def _ep(self) -> _Endpoint:
        return self.endpoints[self._current].open()

    def _failed(self, ep: _Endpoint) -> None:
        """Move on from ``ep`` (unless someone already did)."""
        if self.endpoints[self._current] is ep:
            self._current = (self._current + 1) % len(self.endpoints)

    async def _call(self, fn: Callable[[_Endpoint], Awaitable[T]], *, write: bool) -> T:
        """``fn`` on the current endpoint, failing over to the others; ``Unavailable`` when none
        answers (or, for a write, when it may have been applied)."""
        last = "no endpoint tried"
        for attempt in range(2 * len(self.endpoints)):
            ep = self._ep()
            try:
                return await asyncio.wait_for(fn(ep), self.request_timeout)
            except TimeoutError:
                self._failed(ep)
                if write:
                    raise Unavailable(f"etcd {ep.address}: no answer in {self.request_timeout}s") from None
                last = f"{ep.address}: timeout"
            except rpc.AioRpcError as e:
                code, details = e.code(), (e.details() or "").lower()
                if code in (rpc.StatusCode.NOT_FOUND, rpc.StatusCode.INVALID_ARGUMENT,
                            rpc.StatusCode.FAILED_PRECONDITION, rpc.StatusCode.PERMISSION_DENIED,
                            rpc.StatusCode.UNAUTHENTICATED, rpc.StatusCode.RESOURCE_EXHAUSTED):
                    raise CoordinatorError(f"etcd {ep.address}: {e.details()}") from None
                if code == rpc.StatusCode.OUT_OF_RANGE and "compacted" in details:
                    raise Compacted(0) from None
                self._failed(ep)
                if write and not (code == rpc.StatusCode.UNAVAILABLE and any(p in details for p in _NOT_APPLIED)):
                    raise Unavailable(f"etcd {ep.address}: {e.details()} (outcome unknown)") from None
                last = f"{ep.address}: {e.details()}"
            if attempt + 1 >= len(self.endpoints):
                await asyncio.sleep(0.1 * (attempt + 2 - len(self.endpoints)))
        raise Unavailable(f"no etcd endpoint answered ({last})")

    async def close(self) -> None:
        await super().close()
        self.interrupt_watches()  # open watch iterators end (they see the coordinator closed)
        for ep in self.endpoints:
            with contextlib.suppress(Exception):
                await ep.close()

    # ---- keys ------------------------------------------------------------------------------------
    def _k(self, key: str) -> bytes:
        return (self.namespace + key).encode()

    def _kv(self, kv: Any) -> KeyValue:
        return KeyValue(kv.key.decode()[len(self.namespace):], bytes(kv.value), kv.mod_revision,
                        kv.create_revision, kv.lease)

    # ---- primitives ------------------------------------------------------------------------------
    async def _range(self, key: str, prefix: bool) -> Listing:
        k = self._k(key)
        req = rpc.RangeRequest(key=k, range_end=prefix_end(k) if prefix else b"")

        async def go(ep: _Endpoint) -> Listing:
            resp = await ep.kv.Range(req)
            return Listing(tuple(self._kv(kv) for kv in resp.kvs), resp.header.revision)

        return await self._call(go, write=False)

    async def _txn(self, compares: Sequence[Cmp], ops: Sequence[TxnOp]) -> tuple[bool, int]:
        cmps = []
        for c in compares:
            if c.mod_revision is not None:
                cmps.append(rpc.Compare(key=self._k(c.key), target=rpc.Compare.MOD, result=rpc.Compare.EQUAL,
                                        mod_revision=c.mod_revision))
            if c.value is not None:
                cmps.append(rpc.Compare(key=self._k(c.key), target=rpc.Compare.VALUE, result=rpc.Compare.EQUAL,
                                        value=c.value))
        reqs = []
        for op in ops:
            k = self._k(op.key)
            if isinstance(op, LeasedPut):
                reqs.append(rpc.RequestOp(request_put=rpc.PutRequest(key=k, value=op.value, lease=op.lease)))
            else:
                reqs.append(rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(
                    key=k, range_end=prefix_end(k) if op.prefix else b"")))
        req = rpc.TxnRequest(compare=cmps, success=reqs, failure=[])

        async def go(ep: _Endpoint) -> tuple[bool, int]:
            resp = await ep.kv.Txn(req)
            return bool(resp.succeeded), int(resp.header.revision)

        return await self._call(go, write=True)

    async def _watch_stream(self, prefix: str, from_revision: int) -> AsyncIterator[WatchBatch]:
        k = self._k(prefix)
        create = rpc.WatchRequest(create_request=rpc.WatchCreateRequest(
            key=k, range_end=prefix_end(k), start_revision=from_revision))

        async def requests() -> AsyncIterator[Any]:
            yield create
            await asyncio.Event().wait()  # keep our half open: closing it ends the stream

        ep = self._ep()
        call = ep.watch.Watch(requests(), metadata=(("hasleader", "true"),))
        self._calls.add(call)
        try:
            async for resp in call:
                if resp.compact_revision:
                    raise Compacted(resp.compact_revision)
                if resp.canceled:  # e.g. the member lost its leader (hasleader): try another one
                    self._failed(ep)
                    raise StreamBroken(f"canceled by {ep.address}: {resp.cancel_reason}")
                batch: list[Event] = []
                for ev in resp.events:
                    e = Event("delete" if ev.type == rpc.Event.DELETE else "put",
                              ev.kv.key.decode()[len(self.namespace):], bytes(ev.kv.value), ev.kv.mod_revision,
                              ev.kv.lease)
                    if batch and batch[-1].mod_revision != e.mod_revision:
                        yield WatchBatch(batch[-1].mod_revision, tuple(batch))
                        batch = []
                    batch.append(e)
                if batch:
                    yield WatchBatch(batch[-1].mod_revision, tuple(batch))
            raise StreamBroken(f"{ep.address} ended the stream")
        except rpc.AioRpcError as e:
            self._failed(ep)
            raise StreamBroken(f"{ep.address}: {e.details()}") from None
        except asyncio.CancelledError:
            if call in self._interrupted:
                raise StreamBroken("interrupted") from None
            raise
        finally:
            call.cancel()
            self._calls.discard(call)
            self._interrupted.discard(call)

    async def _grant(self, ttl: float) -> tuple[int, float]:
        async def go(ep: _Endpoint) -> tuple[int, float]:
            resp = await ep.lease.LeaseGrant(rpc.LeaseGrantRequest(TTL=math.ceil(ttl)))
            if resp.error:
                raise CoordinatorError(f"etcd lease grant: {resp.error}")
            return int(resp.ID), float(resp.TTL)

        return await self._call(go, write=False)  # an unanswered grant only leaves a lease to expire

    async def _keepalive(self, lease: int) -> float:
        async def go(ep: _Endpoint) -> float:
            call = ep.lease.LeaseKeepAlive(iter([rpc.LeaseKeepAliveRequest(ID=lease)]))
            try:
                async for resp in call:
                    return float(resp.TTL)
                return 0.0
            finally:
                call.cancel()

        return await self._call(go, write=False)

    async def _revoke(self, lease: int) -> None:
        async def go(ep: _Endpoint) -> None:
            try:
                await ep.lease.LeaseRevoke(rpc.LeaseRevokeRequest(ID=lease))
            except rpc.AioRpcError as e:
                if e.code() != rpc.StatusCode.NOT_FOUND:
                    raise

        await self._call(go, write=False)  # revoking twice is harmless

    async def compact(self, revision: int) -> None:
        async def go(ep: _Endpoint) -> None:
            try:
                await ep.kv.Compact(rpc.CompactionRequest(revision=revision, physical=True))
            except rpc.AioRpcError as e:
                if "compacted" not in (e.details() or ""):
                    raise

        await self._call(go, write=False)

    def interrupt_watches(self) -> None:
        for call in list(self._calls):
            self._interrupted.add(call)
            call.cancel()

    async def status(self, endpoint: str) -> tuple[int, int]:
        """(this member's id, the leader's member id) as ``endpoint`` sees them (tests, tooling)."""
        ep = next(e for e in self.endpoints if e.address == endpoint.split("://", 1)[-1]).open()
        resp = await asyncio.wait_for(ep.maintenance.Status(rpc.StatusRequest()), self.request_timeout)
        return int(resp.header.member_id), int(resp.leader)
