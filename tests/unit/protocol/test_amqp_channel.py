"""The sans-IO AMQP channel handlers (protocol/amqp/channel.py) driven with real frames through a real
``AmqpConnection`` and a fake broker port: no socket, no loop, no core."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pamqp import body as pbody
from pamqp import commands as C
from pamqp import frame as pframe
from pamqp import header as pheader

from haremq.core import broker as core_broker
from haremq.core.broker import BrokerStats
from haremq.errors import HareError, NotFound
from haremq.message import Message
from haremq.protocol.amqp import channel as amqp_channel
from haremq.protocol.amqp import codec
from haremq.protocol.amqp import connection as ev
from haremq.protocol.amqp.channel import REJECTED, UNROUTABLE, AmqpChannels, ChannelSink
from haremq.store.api import CommitLog, Positions


class FakeLog:
    """A CommitLog whose commits the test moves by hand."""

    epoch = 0

    def __init__(self) -> None:
        self.appended_lsn = 0
        self.committed_lsn = 0
        self.failed: BaseException | None = None


class FakeSession:
    def __init__(self) -> None:
        self.prefetch = 0
        self.global_prefetch = 0
        self.flow = True
        self.closed = False
        self.settled: list[tuple[Any, ...]] = []

    def ack(self, tag: int, multiple: bool) -> None:
        self.settled.append(("ack", tag, multiple))

    def nack(self, tag: int, multiple: bool, requeue: bool) -> None:
        self.settled.append(("nack", tag, multiple, requeue))

    def recover(self) -> None:
        self.settled.append(("recover",))

    def close(self) -> None:
        self.closed = True


class Declared:
    def __init__(self, name: str) -> None:
        self.name, self.message_count, self.consumer_count = name, 0, 0


class FakePort:
    """Records what the channels ask of the broker; ``results`` decides each publish's outcome and
    ``log`` (when set) is the durable log a publish appends to."""

    def __init__(self) -> None:
        self.written: Positions = {}
        self.stats = BrokerStats()
        self.sessions: list[FakeSession] = []
        self.published: list[tuple[str, str, bytes]] = []
        self.results: list[int] = []
        self.log: FakeLog | None = None
        self.declare_error: HareError | None = None
        self.publish: Callable[[Any, str, Message], int] = self._publish

    def _publish(self, s: Any, exchange: str, msg: Message) -> int:
        self.published.append((exchange, msg.routing_key, msg.body))
        if self.log is not None:
            self.log.appended_lsn += 1
            log: CommitLog = self.log
            self.written[log] = self.log.appended_lsn
        return self.results.pop(0) if self.results else 0

    def open_session(self, sink: ChannelSink) -> FakeSession:
        s = FakeSession()
        self.sessions.append(s)
        return s

    def publish_target(self, s: Any, exchange: str) -> object:
        return exchange

    def resume(self, s: Any) -> None:
        pass

    def queue_declare(self, s: Any, name: str, **kw: Any) -> Declared:
        if self.declare_error is not None:
            raise self.declare_error
        return Declared(name or "amq.gen-1")

    def __getattr__(self, name: str) -> Any:  # the declares these tests do not exercise
        raise AssertionError(f"unexpected port call {name}")


class Owner:
    def __init__(self) -> None:
        self.published = False
        self.client_properties: dict[str, Any] = {}
        self.failed: list[HareError] = []

    def write_pending(self) -> None:
        pass


class Harness:
    """One open AMQP connection (handshake done) with its channel handlers."""

    def __init__(self) -> None:
        self.proto = ev.AmqpConnection({})
        self.port = FakePort()
        self.owner = Owner()
        self.chans = AmqpChannels(self.proto, self.port, self.owner,
                                  want_output=lambda: None, fail_connection=self.owner.failed.append)
        self.proto.receive_data(codec.PROTOCOL_HEADER)
        for m in (C.Connection.StartOk(client_properties={}, mechanism="PLAIN", response="\0guest\0guest"),
                  C.Connection.TuneOk(channel_max=0, frame_max=131072, heartbeat=0),
                  C.Connection.Open(virtual_host="/")):
            self.proto.receive_data(pframe.marshal(m, 0))
        self.proto.data_to_send()
        self.handlers: dict[type[Any], Callable[[Any], None]] = {
            ev.Publish: self.chans.on_publish, ev.Settle: self.chans.on_settle, ev.MethodReceived: self.chans.on_method,
            ev.ChannelOpened: self.chans.on_channel_opened, ev.ChannelClosed: self.chans.on_channel_closed,
            ev.ChannelFailed: self.chans.on_channel_closed,
        }

    def feed(self, data: bytes) -> None:
        for e in self.proto.receive_data(data):
            self.handlers[type(e)](e)

    def method(self, channel: int, m: Any) -> None:
        self.feed(pframe.marshal(m, channel))

    def publish(self, channel: int, routing_key: str, body: bytes, *, mandatory: bool = False) -> None:
        self.feed(pframe.marshal(C.Basic.Publish(exchange="", routing_key=routing_key, mandatory=mandatory), channel)
                  + pframe.marshal(pheader.ContentHeader(0, len(body)), channel)
                  + pframe.marshal(pbody.ContentBody(body), channel))

    def out(self) -> list[tuple[int, Any]]:
        """Frames sent since the last call, decoded: (channel, method or header or body)."""
        data = b"".join(self.proto.data_to_send())
        frames = []
        while data:
            used, channel, f = pframe.unmarshal(data)
            data = data[used:]
            frames.append((channel, f))
        return frames

    def open(self, channel: int) -> None:
        self.method(channel, C.Channel.Open())
        assert [f.name for _, f in self.out()] == ["Channel.OpenOk"]


def _confirms(frames: list[tuple[int, Any]]) -> list[tuple[str, int, bool]]:
    return [(f.name, f.delivery_tag, f.multiple) for _, f in frames]


def test_publish_results_named_in_the_channel_module_match_the_core() -> None:
    assert (amqp_channel.UNROUTABLE, amqp_channel.REJECTED) == (core_broker.UNROUTABLE, core_broker.REJECTED)


def test_confirms_are_numbered_per_channel_and_coalesce_into_one_ack_multiple() -> None:
    h = Harness()
    h.open(1)
    h.method(1, C.Confirm.Select())
    assert [f.name for _, f in h.out()] == ["Confirm.SelectOk"]
    for i in range(3):
        h.publish(1, "q", b"m%d" % i)
    ch = h.chans.channels[1]
    assert not ch.flush_confirms()
    assert _confirms(h.out()) == [("Basic.Ack", 3, True)]
    assert h.owner.published
    # a refused publish is a nack in its place; a durable one waits for its log position
    log = FakeLog()
    h.port.log = log
    h.port.results = [0, REJECTED, 0]
    for i in range(3):
        h.publish(1, "q", b"d%d" % i)
    assert ch.flush_confirms()
    assert h.out() == []
    log.committed_lsn = 3
    assert not ch.flush_confirms()
    assert _confirms(h.out()) == [("Basic.Ack", 4, True), ("Basic.Nack", 5, False), ("Basic.Ack", 6, True)]


def test_failed_commit_nacks_every_waiting_confirm() -> None:
    h = Harness()
    h.open(1)
    h.method(1, C.Confirm.Select())
    h.out()
    h.port.log = FakeLog()
    h.publish(1, "q", b"a")
    h.publish(1, "q", b"b")
    ch = h.chans.channels[1]
    ch.fail_confirms(HareError("fsync failed"))
    assert _confirms(h.out()) == [("Basic.Nack", 1, False), ("Basic.Nack", 2, False)]
    assert not ch.outcomes


def test_tx_buffers_publishes_and_acks_until_commit_and_rollback_drops_them() -> None:
    h = Harness()
    h.open(1)
    h.method(1, C.Tx.Select())
    h.publish(1, "q", b"one")
    h.publish(1, "q", b"two")
    h.method(1, C.Basic.Ack(delivery_tag=7, multiple=True))
    assert h.port.published == [] and h.port.sessions[0].settled == []
    h.method(1, C.Tx.Commit())
    assert [f.name for _, f in h.out()] == ["Tx.SelectOk", "Tx.CommitOk"]
    assert h.port.published == [("", "q", b"one"), ("", "q", b"two")]
    assert h.port.sessions[0].settled == [("ack", 7, True)]
    h.publish(1, "q", b"dropped")
    h.method(1, C.Basic.Reject(delivery_tag=8, requeue=True))
    h.method(1, C.Tx.Rollback())
    h.method(1, C.Tx.Commit())
    assert [f.name for _, f in h.out()] == ["Tx.RollbackOk", "Tx.CommitOk"]
    assert len(h.port.published) == 2 and h.port.sessions[0].settled == [("ack", 7, True)]


def test_tx_commit_ok_waits_for_the_transactions_log_positions() -> None:
    h = Harness()
    h.open(1)
    h.method(1, C.Tx.Select())
    h.out()
    log = FakeLog()
    h.port.log = log
    h.publish(1, "q", b"durable")
    h.method(1, C.Tx.Commit())
    ch = h.chans.channels[1]
    assert ch.flush_confirms() and h.out() == []
    log.committed_lsn = 1
    assert not ch.flush_confirms()
    assert [f.name for _, f in h.out()] == ["Tx.CommitOk"]


def test_mandatory_unroutable_publish_is_returned_with_its_body() -> None:
    h = Harness()
    h.open(1)
    h.port.results = [UNROUTABLE, UNROUTABLE]
    h.publish(1, "nowhere", b"lost", mandatory=False)
    assert h.out() == []
    h.publish(1, "nowhere", b"back", mandatory=True)
    frames = h.out()
    ret = frames[0][1]
    assert isinstance(ret, C.Basic.Return)
    assert (ret.reply_code, ret.reply_text, ret.routing_key) == (312, "NO_ROUTE", "nowhere")
    assert frames[-1][1].value == b"back"


def test_channel_error_closes_only_that_channel() -> None:
    h = Harness()
    h.open(1)
    h.open(2)
    h.port.declare_error = NotFound("no queue 'x' in vhost '/'")
    h.method(1, C.Queue.Declare(queue="x", passive=True))
    (channel, close), = h.out()
    assert channel == 1 and isinstance(close, C.Channel.Close)
    assert (close.reply_code, close.class_id, close.method_id) == (404, 50, 10)
    assert 1 not in h.chans.channels and h.port.sessions[0].closed
    assert h.owner.failed == [] and h.proto.state == ev.State.OPEN
    h.port.declare_error = None
    h.method(2, C.Queue.Declare(queue="x"))
    assert [(c, f.name) for c, f in h.out()] == [(2, "Queue.DeclareOk")]
    assert not h.port.sessions[1].closed


def test_connection_level_error_goes_to_the_owner() -> None:
    h = Harness()
    h.open(1)
    h.method(1, C.Basic.Qos(prefetch_size=10))
    (err,) = h.owner.failed
    assert err.reply_code == 540 and (err.class_id, err.method_id) == (60, 10)
    assert h.out() == []
