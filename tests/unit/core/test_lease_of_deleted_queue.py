"""A lease taken from a queue that was deleted (and re-declared) settles nothing in the new queue."""

from __future__ import annotations

from pathlib import Path

from haremq.core.broker import Broker
from haremq.message import Message, Properties
from haremq.store.file import FileQueueStore
from haremq.store.memory import MemoryMetadataStore
from haremq.testing import FakeClock, session_for

P = Properties(delivery_mode=2)


def test_nack_of_lease_from_deleted_queue_keeps_the_new_queues_messages(tmp_path: Path) -> None:
    store = FileQueueStore(tmp_path, fsync="off", segment_size=1 << 20)
    b = Broker(clock=FakeClock(), store=store, metadata=MemoryMetadataStore())
    s, _ = session_for(b)
    b.queue_declare(s, "q", durable=True)
    b.publish(s, "", Message("", "q", P, b"old"))
    got = b.get(s, "q", no_ack=False)
    assert got is not None
    b.queue_delete(s, "q")
    b.queue_declare(s, "q", durable=True)
    b.publish(s, "", Message("", "q", P, b"new"))  # same seq as the old lease's entry
    s.nack(got[0], multiple=False, requeue=False)
    recovered = store.recover()
    assert [r.body for r in recovered[("/", "q")]] == [b"new"]
    store.close()
