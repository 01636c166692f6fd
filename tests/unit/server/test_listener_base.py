"""The listener base (``haremq.server.listener.ClientListener``): timers, read-pause reasons, shutdown
grace, open/close audit, registration; run on a real event loop with short intervals and a fake
transport, so each rule is checked without a client."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

import pytest

from haremq.config import Settings
from haremq.core.broker import BrokerStats
from haremq.core.consumer import Session
from haremq.server.listener import DISK_ALARM, MEMORY_ALARM, ClientListener


class FakeTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.pauses = 0
        self.resumes = 0
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 7

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        assert not self.closed
        self.pauses += 1

    def resume_reading(self) -> None:
        self.resumes += 1

    def writelines(self, data: Iterable[bytes]) -> None:
        self.written.extend(data)


class FakeBroker:
    def __init__(self) -> None:
        self.closed: list[object] = []
        self.resumed: list[object] = []
        self.stats = BrokerStats()

    def connection_closed(self, conn: object) -> None:
        self.closed.append(conn)

    def resume(self, session: object) -> None:
        self.resumed.append(session)

    def flush(self) -> None:
        pass


class FakeNode:
    def __init__(self, **settings: Any) -> None:
        self.settings = Settings(**settings)
        self.broker = FakeBroker()
        self.clients: dict[str, set[ClientListener]] = {}
        self.waiting: dict[object, None] = {}

    def register(self, conn: ClientListener) -> None:
        self.clients.setdefault(conn.protocol, set()).add(conn)

    def unregister(self, conn: ClientListener) -> None:
        self.clients[conn.protocol].discard(conn)

    def loop_time(self) -> float:
        return asyncio.get_running_loop().time()

    def flush_output(self) -> None:
        pass


class FakeSession:
    paused = False


class Probe(ClientListener, asyncio.Protocol):
    """A protocol that queues ``HB`` as its heartbeat and ``BYE`` as its forced close."""

    protocol = "probe"
    log = logging.getLogger("haremq.probe")

    def __init__(self, node: FakeNode, *, can_say_goodbye: bool = True) -> None:
        super().__init__(node)  # type: ignore[arg-type]
        self.out: list[bytes] = []
        self.can_say_goodbye = can_say_goodbye
        self.subs = [FakeSession(), FakeSession()]
        self.ended = False

    def write_pending(self) -> None:
        out, self.out = self.out, []
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.writelines(out)
            self.last_send = self.node.loop_time()

    def sessions(self) -> Iterable[Session]:
        return self.subs  # type: ignore[return-value]

    def queue_heartbeat(self) -> None:
        self.out.append(b"HB")

    def force_close(self, reason: str) -> bool:
        if self.can_say_goodbye:
            self.out.append(b"BYE " + reason.encode())
        return self.can_say_goodbye

    def connection_ended(self) -> None:
        self.ended = True


def connect(node: FakeNode | None = None, **kw: Any) -> tuple[Probe, FakeTransport]:
    p = Probe(node or FakeNode(), **kw)
    t = FakeTransport()
    p.connection_made(t)  # type: ignore[arg-type]
    return p, t


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_accept_registers_the_connection_and_notes_its_peer() -> None:
    async def main() -> None:
        node = FakeNode()
        p, _t = connect(node)
        assert node.clients["probe"] == {p}
        assert p.peer == ("127.0.0.1", 40000) and p.peer_name == "127.0.0.1:40000"
        assert p.loopback and not p.tls
        assert node.broker.stats.connections_opened == 1  # counted once, for the management API
        assert p.buffered_bytes() == 7
        p.connection_lost(None)
        assert node.clients["probe"] == set() and p.ended and node.broker.closed == [p]

    run(main())


def test_reading_resumes_only_when_every_pause_reason_is_gone() -> None:
    async def main() -> None:
        p, t = connect()
        p.pause_reading(MEMORY_ALARM)
        p.pause_reading(DISK_ALARM)
        p.pause_reading(DISK_ALARM)
        assert t.pauses == 1 and p.reading_paused
        p.resume_reading(MEMORY_ALARM)
        assert t.resumes == 0 and p.reading_paused
        p.resume_reading("not a reason it holds")
        assert t.resumes == 0
        p.resume_reading(DISK_ALARM)
        assert t.resumes == 1 and not p.reading_paused and p.read_pauses == set()

    run(main())


def test_alarms_hold_back_only_connections_that_published() -> None:
    async def main() -> None:
        reader, rt = connect()
        publisher, pt = connect()
        publisher.published = True
        for conn in (reader, publisher):
            conn.apply_alarms(memory=True, disk=False)
        assert rt.pauses == 0 and pt.pauses == 1 and publisher.read_pauses == {MEMORY_ALARM}
        publisher.apply_alarms(memory=True, disk=True)
        publisher.apply_alarms(memory=False, disk=True)
        assert pt.resumes == 0  # the disk alarm still holds it
        publisher.apply_alarms(memory=False, disk=False)
        assert pt.resumes == 1

    run(main())


def test_heartbeat_is_sent_while_idle_and_a_silent_peer_is_closed() -> None:
    async def main() -> None:
        p, t = connect()
        p.start_heartbeats(0.02, 0.12, "missed heartbeats")
        await asyncio.sleep(0.07)
        assert t.written.count(b"HB") >= 2 and not t.closed
        await asyncio.sleep(0.15)
        assert t.closed and p.close_reason == "missed heartbeats"

    run(main())


def test_a_peer_that_keeps_sending_is_not_timed_out() -> None:
    async def main() -> None:
        p, t = connect()
        p.start_heartbeats(0, 0.08, "missed heartbeats")
        for _ in range(10):
            await asyncio.sleep(0.02)
            p.last_recv = p.node.loop_time()
        assert not t.closed and t.written == []  # no send side: no heartbeats

    run(main())


def test_time_with_reading_paused_does_not_count_as_peer_silence() -> None:
    async def main() -> None:
        p, t = connect()
        p.start_heartbeats(0, 0.08, "missed heartbeats")
        p.pause_reading(MEMORY_ALARM)
        await asyncio.sleep(0.2)
        assert not t.closed
        p.resume_reading(MEMORY_ALARM)
        await asyncio.sleep(0.2)
        assert t.closed

    run(main())


def test_handshake_timeout_closes_a_connection_that_never_opens() -> None:
    async def main() -> None:
        p, t = connect(FakeNode(handshake_timeout=0.05))
        await asyncio.sleep(0.1)
        assert t.closed and p.close_reason == "handshake timeout"

    run(main())


def test_finished_handshake_stops_the_timer_and_is_audited(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        p, t = connect(FakeNode(handshake_timeout=0.05))
        p.vhost = object()  # type: ignore[assignment]
        p.handshake_done("/")
        await asyncio.sleep(0.1)
        assert not t.closed
        p.close_reason = "client said bye"
        p.connection_lost(None)

    with caplog.at_level(logging.INFO, logger="haremq.audit"):
        run(main())
    lines = [r.getMessage() for r in caplog.records if r.name == "haremq.audit"]
    assert lines == ["connection opened: protocol=probe peer=127.0.0.1:40000 user='?' vhost='/'",
                     "connection closed: protocol=probe peer=127.0.0.1:40000 user=None reason=client said bye"]


def test_close_of_an_unopened_connection_is_not_audited_unless_the_protocol_asks(
        caplog: pytest.LogCaptureFixture) -> None:
    class Audited(Probe):
        AUDIT_UNOPENED = True
        EOF_REASON = "peer hung up"

    async def main() -> None:
        p, _t = connect()
        p.connection_lost(None)
        q = Audited(FakeNode())
        q.connection_made(FakeTransport())  # type: ignore[arg-type]
        q.connection_lost(None)

    with caplog.at_level(logging.INFO, logger="haremq.audit"):
        run(main())
    lines = [r.getMessage() for r in caplog.records if r.name == "haremq.audit"]
    assert lines == ["connection closed: protocol=probe peer=127.0.0.1:40000 user=None reason=peer hung up"]


def test_shutdown_says_goodbye_then_aborts_after_the_grace_period() -> None:
    async def main() -> None:
        p, t = connect()
        p.shutdown("shutdown", grace=0.05)
        assert t.written == [b"BYE shutdown"] and not t.closed
        await asyncio.sleep(0.1)
        assert t.closed

    run(main())


def test_shutdown_closes_at_once_when_there_is_no_one_to_tell() -> None:
    async def main() -> None:
        p, t = connect(can_say_goodbye=False)
        p.shutdown("shutdown", grace=10)
        assert t.closed and t.written == []

    run(main())


def test_connection_lost_cancels_the_pending_abort() -> None:
    async def main() -> None:
        p, t = connect()
        p.shutdown("shutdown", grace=0.05)
        p.connection_lost(None)
        assert p._abort_timer is not None and p._abort_timer.cancelled()
        assert not t.closed

    run(main())


def test_write_pause_holds_every_session_and_resume_restarts_them() -> None:
    async def main() -> None:
        p, _t = connect()
        p.pause_writing()
        assert p.paused and all(s.paused for s in p.subs)
        p.resume_writing()
        assert not p.paused and not any(s.paused for s in p.subs)
        assert p.node.broker.resumed == p.subs

    run(main())
