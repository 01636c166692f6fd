"""The one durability tracker (server/durability.py): answers wait for the (log, lsn) positions their
command wrote, are released in filing order per waiter, and are all refused when the logs fail."""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path
from typing import Any

import pytest

from haremq.core.broker import Broker
from haremq.errors import ResourceError
from haremq.message import Message, Properties
from haremq.protocol.amqp import connection as ev
from haremq.protocol.amqp.channel import AmqpChannel, AmqpChannels
from haremq.server.durability import WAIT, Answers, Durability, Gate
from haremq.store.api import CommitLog, Positions
from haremq.store.file import FileQueueStore
from haremq.store.memory import MemoryMetadataStore
from haremq.testing import FakeClock, session_for


class FakeLog:
    """A CommitLog whose commits the test moves by hand."""

    epoch = 0

    def __init__(self) -> None:
        self.appended_lsn = 0
        self.committed_lsn = 0
        self.failed: BaseException | None = None


class Recorder:
    """A waiter that releases its answers in order and records them (and refusals)."""

    def __init__(self) -> None:
        self.answers = Answers()
        self.sent: list[Any] = []
        self.refused: list[Any] = []
        self.conn = self

    def write_pending(self) -> None:
        pass

    def file(self, tracker: Durability, token: Any, written: Positions) -> None:
        self.answers.add(token, written)
        if self.flush_confirms():
            tracker.hold(self)

    def flush_confirms(self) -> bool:
        while (t := self.answers.pop_ready()) is not WAIT:
            self.sent.append(t)
        return bool(self.answers)

    def fail_confirms(self, err: Any) -> None:
        self.refused.extend(self.answers.tokens())
        self.answers.clear()


def pos(*pairs: tuple[FakeLog, int]) -> Positions:
    out: Positions = {}
    for log, lsn in pairs:
        out[log] = lsn
    return out


def test_answers_go_out_in_filing_order_across_two_logs() -> None:
    """B's log commits first, but B was filed after A: B waits for A."""
    t = Durability()
    l1, l2 = FakeLog(), FakeLog()
    w = Recorder()
    w.file(t, "A", pos((l1, 5)))
    w.file(t, "B", pos((l2, 3)))
    l2.committed_lsn = 3
    t.committed([l2])
    assert w.sent == [] and t.waiting
    l1.committed_lsn = 5
    t.committed([l1])
    assert w.sent == ["A", "B"] and not t.waiting


def test_an_answer_that_wrote_to_two_logs_waits_for_both() -> None:
    t = Durability()
    l1, l2 = FakeLog(), FakeLog()
    w = Recorder()
    w.file(t, "fanout", pos((l1, 1), (l2, 7)))
    assert len(w.answers) == 2  # one barrier for the extra log, then the answer
    l2.committed_lsn = 7
    t.committed([l2])
    assert w.sent == []
    l1.committed_lsn = 1
    t.committed([l1])
    assert w.sent == ["fanout"]


def test_a_waiter_on_a_log_that_commits_first_is_released_before_another_log_commits() -> None:
    t = Durability()
    slow, fast = FakeLog(), FakeLog()
    w1, w2 = Recorder(), Recorder()
    w1.file(t, "on-slow", pos((slow, 1)))
    w2.file(t, "on-fast", pos((fast, 1)))
    fast.committed_lsn = 1
    t.committed([fast])
    assert w2.sent == ["on-fast"] and w1.sent == []
    assert list(t.waiting) == [w1]


def test_an_answer_that_wrote_nothing_goes_out_at_once_unless_an_earlier_one_waits() -> None:
    t = Durability()
    log = FakeLog()
    w = Recorder()
    w.file(t, "transient", {})
    assert w.sent == ["transient"] and not t.waiting
    w.file(t, "persistent", pos((log, 1)))
    w.file(t, "transient-2", {})
    assert w.sent == ["transient"]  # never ahead of the one waiting for the disk
    log.committed_lsn = 1
    t.committed()
    assert w.sent == ["transient", "persistent", "transient-2"]


def test_a_log_failure_refuses_everything_waiting_and_every_later_wait() -> None:
    t = Durability()
    l1, l2 = FakeLog(), FakeLog()
    w1, w2 = Recorder(), Recorder()
    w1.file(t, "a", pos((l1, 1)))
    w1.file(t, "b", pos((l2, 1)))
    w2.file(t, "c", pos((l2, 2)))

    async def main() -> None:
        request = asyncio.ensure_future(t.wait(pos((l1, 1))))
        await asyncio.sleep(0)
        t.fail(ResourceError("fsync failed"))
        with pytest.raises(ResourceError):
            await request
        with pytest.raises(ResourceError):
            await t.wait(pos((l1, 2)))

    asyncio.run(main())
    assert (w1.refused, w2.refused, w1.sent, w2.sent) == (["a", "b"], ["c"], [], [])
    w3 = Recorder()
    w3.file(t, "late", pos((l1, 9)))  # filed after the failure: refused at once, never held
    assert w3.refused == ["late"] and not t.waiting


def test_an_http_wait_returns_once_its_positions_are_committed() -> None:
    t = Durability()
    log = FakeLog()

    async def main() -> None:
        assert t.pending == 0
        await t.wait({})  # wrote nothing: no wait
        request = asyncio.ensure_future(t.wait(pos((log, 2))))
        await asyncio.sleep(0)
        log.committed_lsn = 1
        t.committed([log])
        await asyncio.sleep(0)
        assert not request.done()
        log.committed_lsn = 2
        t.committed([log])
        await asyncio.wait_for(request, 1)
        assert t.pending == 0

    asyncio.run(main())


def test_a_gate_holds_later_answers_until_it_opens() -> None:
    t = Durability()
    gate = Gate()
    w = Recorder()
    w.answers.add_gate(None, gate)
    w.file(t, "receipt", {})
    assert w.sent == []
    gate.open()
    t.committed()
    assert w.sent == ["receipt"]


# ---- the AMQP channel: coalesced confirms -----------------------------------------------------------
class _Conn:
    """The owner and broker port a channel handler needs here (only a session to open)."""

    def __init__(self, broker: Broker) -> None:
        self.published = False
        self.client_properties: dict[str, Any] = {}
        self.broker = broker
        self.written = broker.written
        self.stats = broker.stats
        self.proto = ev.AmqpConnection({})
        self.chans = AmqpChannels(self.proto, self, self,  # type: ignore[arg-type]
                                  want_output=lambda: None, fail_connection=lambda err: None)
        self.channels = self.chans.channels

    def open_session(self, sink: Any) -> Any:
        return session_for(self.broker)[0]

    def write_pending(self) -> None:
        pass


def _frames(out: list[bytes]) -> list[tuple[str, int]]:
    got = []
    for f in out:
        class_id, method_id = struct.unpack_from(">HH", f, 7)
        if (class_id, method_id) == (90, 21):
            got.append(("commit-ok", 0))
            continue
        tag, bits = struct.unpack_from(">QB", f, 11)
        kind = {80: "ack", 120: "nack"}[method_id]
        got.append((kind + ("*" if bits & 1 else ""), tag))
    return got


def test_channel_confirms_coalesce_into_ack_multiple_per_run_and_stop_at_the_first_waiting() -> None:
    conn = _Conn(Broker())
    ch = AmqpChannel(conn.chans, 1)
    conn.channels[1] = ch
    log = FakeLog()
    for seq, lsn in [(1, 1), (2, 2), (3, 3)]:
        ch.outcomes.add(seq, pos((log, lsn)))
    ch.outcomes.add(-4, pos((log, 3)))  # refused by a queue: a nack, in its place
    ch.outcomes.add(5, pos((log, 4)))
    ch.outcomes.add(0, pos((log, 5)))  # a tx.commit-ok
    log.committed_lsn = 2
    assert ch.flush_confirms()
    assert _frames(conn.proto.data_to_send()) == [("ack*", 2)]
    log.committed_lsn = 5
    assert not ch.flush_confirms()
    assert _frames(conn.proto.data_to_send()) == [("ack*", 3), ("nack", 4), ("ack*", 5), ("commit-ok", 0)]


def test_channel_refusal_nacks_every_waiting_confirm() -> None:
    conn = _Conn(Broker())
    ch = AmqpChannel(conn.chans, 1)
    conn.channels[1] = ch
    log = FakeLog()
    ch.outcomes.add(1, pos((log, 1)))
    ch.outcomes.add(2, {})
    ch.fail_confirms(ResourceError("fsync failed"))
    assert _frames(conn.proto.data_to_send()) == [("nack", 1), ("nack", 2)]
    assert not ch.outcomes


# ---- the core's outcome: Broker.written ---------------------------------------------------------------
def test_a_fanout_publish_writes_one_position_per_durable_queue_log(tmp_path: Path) -> None:
    store = FileQueueStore(tmp_path, fsync="always")
    b = Broker(clock=FakeClock(), store=store, metadata=MemoryMetadataStore())
    s, _sink = session_for(b)
    b.exchange_declare(s, "fan", "fanout", durable=True)
    for name in ("q1", "q2"):
        b.queue_declare(s, name, durable=True)
        b.queue_bind(s, name, "fan", "", {})
    b.queue_declare(s, "transient-q", durable=False)
    b.queue_bind(s, "transient-q", "fan", "", {})
    b.written.clear()
    b.publish(s, "fan", Message("fan", "", Properties(delivery_mode=2), b"x"))
    logs: list[CommitLog] = list(b.written)
    assert sorted(b.written.values()) == [1, 1] and len({id(x) for x in logs}) == 2
    assert not Durability.is_committed(b.written)
    store.sync()
    store.advance_commits()
    assert Durability.is_committed(b.written)
    b.written.clear()
    b.publish(s, "fan", Message("fan", "", Properties(), b"transient"))
    assert b.written == {}  # transient: nothing to wait for
    store.close()
