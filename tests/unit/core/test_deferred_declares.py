"""Deferred declares in the core: a new durable exchange, queue or binding is checked, committed,
and applied only when its commit completes (here by hand: a store whose commits wait)."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future

import pytest

from haremq.core.broker import ROUTED, UNROUTABLE, Broker
from haremq.core.consumer import NoDeliveries, Session
from haremq.core.policy import Policy
from haremq.errors import PreconditionFailed
from haremq.message import Message, Properties
from haremq.security.users import Permission, User
from haremq.store.api import Change
from haremq.store.memory import MemoryMetadataStore


class WaitingStore(MemoryMetadataStore):
    """Commits complete when the test says so (``finish``), in order."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting: list[tuple[Future[int], Sequence[Change]]] = []

    def commit(self, changes: Sequence[Change]) -> Future[int]:
        fut: Future[int] = Future()
        self.waiting.append((fut, changes))
        return fut

    def pending(self) -> Future[int] | None:
        return self.waiting[-1][0] if self.waiting else None

    def finish(self, error: BaseException | None = None) -> None:
        for fut, changes in self.waiting:
            if error is None:
                super().commit(changes)
                fut.set_result(self.revision)
            else:
                fut.set_exception(error)
        self.waiting.clear()


@pytest.fixture
def setup() -> tuple[Broker, WaitingStore, Session]:
    store = WaitingStore()
    broker = Broker(metadata=store)
    user = User("u", "", ())
    user.permissions["/"] = Permission()
    return broker, store, Session(broker.vhosts["/"], user, object(), NoDeliveries())


def test_a_deferred_durable_queue_is_invisible_until_its_commit_completes(setup: tuple[Broker, WaitingStore,
                                                                                 Session]) -> None:
    broker, store, s = setup
    vh = s.vhost
    q = broker.queue_declare(s, "dq", durable=True, defer=True)
    assert "dq" not in vh.queues and vh.pending_queues["dq"] is q
    assert broker.pending_definitions() is not None
    msg = Message("", "dq", Properties(), b"x")
    assert broker.publish(s, "", msg) == UNROUTABLE
    store.finish()
    assert vh.queues["dq"] is q and not vh.pending_queues
    assert broker.pending_definitions() is None
    assert broker.publish(s, "", msg) == ROUTED


def test_an_equivalent_declare_of_a_pending_queue_shares_it_and_an_inequivalent_one_is_refused(
        setup: tuple[Broker, WaitingStore, Session]) -> None:
    broker, store, s = setup
    q = broker.queue_declare(s, "twin", durable=True, defer=True)
    assert broker.queue_declare(s, "twin", durable=True, defer=True) is q
    assert len(store.waiting) == 2  # the second answer waits for a later revision
    with pytest.raises(PreconditionFailed):
        broker.queue_declare(s, "twin", durable=False, defer=True)
    store.finish()
    assert s.vhost.queues["twin"] is q and len(store.queues) == 1


def test_a_delete_of_a_pending_queue_commits_after_it_and_it_never_appears(
        setup: tuple[Broker, WaitingStore, Session]) -> None:
    broker, store, s = setup
    broker.queue_declare(s, "gone", durable=True, defer=True)
    assert broker.queue_delete(s, "gone") == 0
    assert [c.op for _, cs in store.waiting for c in cs] == ["put", "delete"]
    store.finish()
    assert "gone" not in s.vhost.queues and not s.vhost.pending_queues and not store.queues


def test_a_failed_commit_applies_no_queue_exchange_or_binding(setup: tuple[Broker, WaitingStore, Session]) -> None:
    broker, store, s = setup
    broker.exchange_declare(s, "fx", "fanout", durable=True, defer=True)
    q = broker.queue_declare(s, "fq", durable=True, defer=True)
    store.finish(OSError("disk I/O error"))
    assert "fx" not in s.vhost.exchanges and "fq" not in s.vhost.queues and q.deleted
    assert not s.vhost.pending_queues and not s.vhost.pending_exchanges
    broker.exchange_declare(s, "bx", "fanout", durable=True)
    broker.queue_declare(s, "bq", durable=True)
    store.finish()
    broker.queue_bind(s, "bq", "bx", "", defer=True)
    assert not s.vhost.exchanges["bx"].bindings
    store.finish(OSError("disk I/O error"))
    assert not s.vhost.exchanges["bx"].bindings


def test_a_deferred_binding_to_a_queue_deleted_meanwhile_is_not_made(
        setup: tuple[Broker, WaitingStore, Session]) -> None:
    broker, store, s = setup
    broker.exchange_declare(s, "x", "fanout", durable=True)
    broker.queue_declare(s, "q", durable=True)
    store.finish()
    broker.queue_bind(s, "q", "x", "", defer=True)
    broker.queue_delete(s, "q")
    store.finish()
    assert not s.vhost.exchanges["x"].bindings and not store.bindings


def test_a_deferred_queue_gets_the_vhost_policy_and_counts_as_created_once(
        setup: tuple[Broker, WaitingStore, Session]) -> None:
    broker, store, s = setup
    s.vhost.set_policy(Policy.parse("/", "cap", {"pattern": "^pq$", "definition": {"max-length": 3}}))
    q = broker.queue_declare(s, "pq", durable=True, defer=True)
    broker.queue_declare(s, "pq", durable=True, defer=True)  # an equivalent racing declare
    assert (broker.stats.queues_declared, broker.stats.queues_created) == (2, 1)
    store.finish()
    assert s.vhost.queues["pq"] is q and q.policy is not None and q.args.max_length == 3
