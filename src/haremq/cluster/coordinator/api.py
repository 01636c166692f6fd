"""The coordinator port: membership, a revisioned KV for the definitions, per-queue leader election.

Two implementations keep the same contract (``tests/cluster/test_coordinator_contract.py``):
``local`` (one process, the embedded default) and ``etcd`` (a real cluster). Every call is async
and never blocks the event loop: a stalled loop would miss its lease keep-alive and look like a
dead node (a false failover).

Semantics follow etcd v3, so the local store can stand in for it in tests:

- one global **revision**, +1 per successful write transaction; every key keeps ``mod_revision``
  (its last write) and ``create_revision``; ``expected_mod_revision=0`` means "must not exist";
- a **watch** from revision R delivers every later transaction in revision order, one
  ``WatchBatch`` per transaction, and survives broken streams (it resumes from the last revision
  it delivered); a compacted R raises ``Compacted``: list again, then watch from the listing;
- a node holds one **lease** (TTL ``lease_ttl``) kept alive by the coordinator; ``nodes/<id>`` and
  every leader key the node wins are attached to it, so its death releases them all at once;
- the node learns that its lease *may* have expired from a **local timer** (last keep-alive sent
  + granted TTL - ``lease_margin``), without waiting for etcd: a leader stops acting as one before
  any other node can win the election (``on_lease_lost``);
- **election** per queue: the leader key and an epoch bump are written in one transaction; the
  revision of that transaction is the epoch, the fencing token. A leader-only write (the in-sync
  set) compares the epoch key's ``mod_revision`` with the writer's epoch, so a deposed leader's
  writes fail with ``Fenced``.

Keys are ``str`` (UTF-8, under the coordinator's namespace), values ``bytes``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, Literal, Protocol
from urllib.parse import quote, unquote

from haremq.errors import HareError

# ---- key layout -----------------------------------------------------------------------------------
NODES = "nodes/"
META = "meta/"
QUEUES = "queues/"


def queue_key(vhost: str, name: str) -> str:
    """``queues/<vhost>/<name>``, each part percent-encoded (the default vhost is ``/``)."""
    return f"{QUEUES}{quote(vhost, safe='')}/{quote(name, safe='')}"


def parse_queue_key(key: str) -> tuple[str, str]:
    vhost, name = key[len(QUEUES):].split("/")[:2]
    return unquote(vhost), unquote(name)


def leader_key(qkey: str) -> str:
    return f"{qkey}/leader"


def epoch_key(qkey: str) -> str:
    return f"{qkey}/epoch"


def isr_key(qkey: str) -> str:
    return f"{qkey}/isr"


def node_key(node_id: str) -> str:
    return f"{NODES}{node_id}"


# ---- errors ---------------------------------------------------------------------------------------
class CoordinatorError(HareError):
    """The coordinator could not do what was asked."""


class Unavailable(CoordinatorError):
    """No endpoint answered in time (etcd down or partitioned away); the outcome of a write that
    raised this is unknown: read before retrying."""


class Conflict(CoordinatorError):
    """A compare-and-set failed: the key moved on since the caller read it."""


class Compacted(CoordinatorError):
    """The watch start revision was compacted away: list again and watch from the new listing."""

    def __init__(self, compact_revision: int) -> None:
        super().__init__(f"revision compacted up to {compact_revision}")
        self.compact_revision = compact_revision


class NotEligible(CoordinatorError):
    """A candidate that is not in the queue's in-sync set (or says it is not) may not campaign."""


class Fenced(CoordinatorError):
    """A leader-only write from a leader that is no longer the current one (its epoch is stale)."""


class NoSession(CoordinatorError):
    """Election needs a registered node (a live lease) first."""


# ---- typed results --------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: bytes
    mod_revision: int
    create_revision: int
    lease: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class Listing:
    """Every key under a prefix as of ``revision`` (watch from ``revision + 1`` to follow it)."""

    items: tuple[KeyValue, ...]
    revision: int

    def as_dict(self) -> dict[str, KeyValue]:
        return {kv.key: kv for kv in self.items}


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    kind: Literal["put", "delete"]
    key: str
    value: bytes  # empty for a delete
    mod_revision: int
    lease: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class WatchBatch:
    """The events of one write transaction under the watched prefix (one revision)."""

    revision: int
    events: tuple[Event, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Put:
    key: str
    value: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class Delete:
    key: str
    prefix: bool = False  # delete every key under ``key`` (a vhost's cascade)


Op = Put | Delete


@dataclasses.dataclass(frozen=True, slots=True)
class NodeInfo:
    node_id: str
    info: Mapping[str, Any]
    lease: int


@dataclasses.dataclass(frozen=True, slots=True)
class Membership:
    """The live nodes as of ``revision``."""

    nodes: Mapping[str, NodeInfo]
    revision: int


@dataclasses.dataclass(frozen=True, slots=True)
class Session:
    """A registration: the lease every key of this node hangs on. A new session (after a lost
    lease) has a new ``lease``; leaderships of the old one are gone."""

    node_id: str
    lease: int
    ttl: float


@dataclasses.dataclass(frozen=True, slots=True)
class LeaderInfo:
    holder: str
    epoch: int  # the revision of the winning transaction; strictly increasing per queue


@dataclasses.dataclass(frozen=True, slots=True)
class Leadership:
    """Proof of a won election: pass it to every leader-only write (fencing)."""

    queue_key: str
    holder: str
    epoch: int
    lease: int


@dataclasses.dataclass(frozen=True, slots=True)
class InSyncSet:
    members: tuple[str, ...]
    mod_revision: int  # 0 when never written


# ---- the port -------------------------------------------------------------------------------------
LeaseLostCallback = Callable[[Session], None]


class Coordinator(Protocol):
    """What the replicated-queue layer and the definitions layer need from a cluster store."""

    lease_ttl: float
    lease_margin: float

    async def start(self) -> None: ...

    async def close(self) -> None:
        """Stop keep-alives and revoke the lease (a clean leave: keys go at once, no TTL wait)."""
        ...

    # membership
    async def register_node(self, node_id: str, info: Mapping[str, Any]) -> Session:
        """Grant a lease, put ``nodes/<id>`` on it and keep it alive until ``close``."""
        ...

    @property
    def session(self) -> Session | None: ...

    async def nodes(self) -> Membership: ...

    def watch_nodes(self) -> AsyncIterator[Membership]:
        """The current membership, then a new snapshot after each join or leave."""
        ...

    def on_lease_lost(self, callback: LeaseLostCallback) -> None:
        """``callback(old_session)`` on the loop when the local timer says the lease may have
        expired (TTL - margin after the last keep-alive that was answered). The coordinator then
        revokes that lease and registers a new session (with a new lease)."""
        ...

    # KV with revisions (definitions under ``meta/``)
    async def get(self, key: str) -> KeyValue | None: ...

    async def list_prefix(self, prefix: str) -> Listing: ...

    def watch_prefix(self, prefix: str, from_revision: int) -> AsyncIterator[WatchBatch]: ...

    async def put_if(self, key: str, value: bytes, expected_mod_revision: int) -> int:
        """Write if the key's mod_revision is ``expected_mod_revision`` (0: absent); the new
        revision, or ``Conflict``."""
        ...

    async def delete_if(self, key: str, expected_mod_revision: int) -> int: ...

    async def commit(self, ops: Sequence[Op], expect: Mapping[str, int]) -> int:
        """All ``ops`` in one transaction if every ``expect`` key has that mod_revision (0:
        absent); the new revision, or ``Conflict`` (nothing written)."""
        ...

    async def compact(self, revision: int) -> None:
        """Forget history up to ``revision`` (watches from older revisions get ``Compacted``)."""
        ...

    # election per queue (``queue_key(vhost, name)``)
    async def campaign(self, qkey: str, candidate_id: str, eligible: bool) -> Leadership | None:
        """Become leader if nobody is: leader key (on this node's lease) + epoch bump in one
        transaction. None if a node (this one included) already leads; ``NotEligible`` if ``eligible`` is false or the
        candidate is not in the queue's in-sync set (when one was written)."""
        ...

    async def leader(self, qkey: str) -> LeaderInfo | None: ...

    async def resign(self, leadership: Leadership) -> None:
        """Drop the leader key if ``leadership`` is still current (a no-op otherwise)."""
        ...

    def watch_leader(self, qkey: str) -> AsyncIterator[LeaderInfo | None]:
        """The current leader (or None), then each change."""
        ...

    async def in_sync(self, qkey: str) -> InSyncSet: ...

    async def set_in_sync(self, leadership: Leadership, members: Sequence[str]) -> int:
        """Write the in-sync set; only the current leader may (``Fenced`` otherwise, also as soon as
        the local lease timer fired, before etcd expires anything)."""
        ...


# ---- helpers shared by the implementations --------------------------------------------------------
def encode_info(info: Mapping[str, Any]) -> bytes:
    return json.dumps(dict(info), sort_keys=True, separators=(",", ":")).encode()


def decode_info(raw: bytes) -> dict[str, Any]:
    try:
        out = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return out if isinstance(out, dict) else {}


def membership_from(listing: Listing) -> Membership:
    nodes = {kv.key[len(NODES):]: NodeInfo(kv.key[len(NODES):], decode_info(kv.value), kv.lease)
             for kv in listing.items}
    return Membership(nodes, listing.revision)


def leader_from(kv: KeyValue | None, epoch_kv: KeyValue | None) -> LeaderInfo | None:
    if kv is None:
        return None
    # The leader key and the epoch key are written in one transaction: same mod_revision.
    epoch = epoch_kv.mod_revision if epoch_kv is not None else kv.mod_revision
    return LeaderInfo(kv.value.decode(), epoch)


def encode_isr(members: Sequence[str]) -> bytes:
    return json.dumps(sorted(set(members))).encode()


def decode_isr(raw: bytes) -> tuple[str, ...]:
    try:
        out = json.loads(raw)
    except ValueError:
        return ()
    return tuple(str(m) for m in out) if isinstance(out, list) else ()
