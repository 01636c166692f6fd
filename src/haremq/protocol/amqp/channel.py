"""AMQP 0-9-1 channels as sans-IO handlers: channel events in, frames out, broker calls through a port.

``AmqpChannels`` holds a connection's open channels and turns the channel events of ``AmqpConnection``
(publish, settle, method, open, close) into calls on a ``BrokerPort`` and frames on the connection:
what each method does (declares, qos, consume, get, publish with mandatory returns, settle, recover,
confirm numbering, tx buffering, flow) and how a peer error maps to ``channel.close`` (or, for a
connection-level code, to the owner's ``fail_connection``). It opens no socket, reads no clock and
knows no core type: the server implements the port over the core's ``Broker`` (server/amqp.py), the
tests with a fake.

Publisher confirms and a deferred ``tx.commit-ok`` are filed in the channel's ``outcomes`` behind the
log positions the command wrote (``BrokerPort.written``); the server's durability tracker calls
``flush_confirms`` when positions commit and ``fail_confirms`` when they never will.

Hot path: a publish is one call here and one ``BrokerPort.publish`` (the broker's bound method); an
ack is one call here and one ``ChannelSession.ack`` (the core session's bound method).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from pamqp import commands as C

from haremq.errors import HareError, NotFound, NotImplementedByBroker, PreconditionFailed, ResourceError
from haremq.message import Message
from haremq.protocol.amqp import codec
from haremq.protocol.amqp import connection as ev
from haremq.store.answers import Answers
from haremq.store.api import Positions

UNROUTABLE, REJECTED = 1, 2
"""``BrokerPort.publish`` results besides routed (0): no queue took it (mandatory return) / a queue
refused it (a confirm becomes a nack)."""


class ChannelSession(Protocol):
    """The broker's per-channel session, as far as a channel drives it."""

    prefetch: int
    global_prefetch: int
    flow: bool

    def ack(self, tag: int, multiple: bool) -> None: ...

    def nack(self, tag: int, multiple: bool, requeue: bool) -> None: ...

    def recover(self) -> None: ...

    def close(self) -> None: ...


class DeclaredQueue(Protocol):
    """What queue.declare-ok reports."""

    @property
    def name(self) -> str: ...

    @property
    def message_count(self) -> int: ...

    @property
    def consumer_count(self) -> int: ...


class Started(Protocol):
    """A consumer as basic.consume-ok names it."""

    @property
    def tag(self) -> str: ...


class Held(Protocol):
    """A message taken by basic.get."""

    @property
    def msg(self) -> Message: ...

    @property
    def delivery_count(self) -> int: ...


class ChannelStats(Protocol):
    """The broker's counters a channel moves (the management API and /metrics read them)."""

    received_confirm: int
    confirmed: int
    returned: int
    channels_opened: int


class BrokerPort(Protocol):
    """The broker operations an AMQP channel needs. ``written`` is filled by every command with the
    highest log position it appended per log (cleared by the caller before a command)."""

    written: Positions

    @property
    def stats(self) -> ChannelStats: ...

    publish: Callable[[ChannelSession, str, Message], int]
    """Route and enqueue: 0 routed, ``UNROUTABLE``, ``REJECTED`` (the broker's bound method)."""

    def open_session(self, sink: ChannelSink) -> ChannelSession: ...

    def publish_target(self, s: ChannelSession, exchange: str) -> object: ...

    def resume(self, s: ChannelSession) -> None: ...

    def exchange_declare(self, s: ChannelSession, name: str, type_: str, *, passive: bool, durable: bool,
                         auto_delete: bool, internal: bool, arguments: dict[str, Any]) -> object: ...

    def exchange_delete(self, s: ChannelSession, name: str, *, if_unused: bool) -> None: ...

    def exchange_bind(self, s: ChannelSession, destination: str, source: str, routing_key: str,
                      arguments: dict[str, Any], *, unbind: bool) -> None: ...

    def queue_declare(self, s: ChannelSession, name: str, *, passive: bool, durable: bool, exclusive: bool,
                      auto_delete: bool, arguments: dict[str, Any]) -> DeclaredQueue: ...

    def queue_bind(self, s: ChannelSession, queue: str, exchange: str, routing_key: str,
                   arguments: dict[str, Any], *, unbind: bool) -> None: ...

    def queue_purge(self, s: ChannelSession, name: str) -> int: ...

    def queue_delete(self, s: ChannelSession, name: str, *, if_unused: bool, if_empty: bool) -> int: ...

    def consume(self, s: ChannelSession, queue: str, tag: str, *, no_ack: bool, exclusive: bool,
                arguments: dict[str, Any]) -> Started: ...

    def cancel(self, s: ChannelSession, tag: str) -> None: ...

    def get(self, s: ChannelSession, queue: str, *, no_ack: bool) -> tuple[int, Held, int] | None: ...


class ChannelSink(Protocol):
    """What the broker calls back on a channel (the core's delivery sink)."""

    def deliver(self, consumer_tag: str, delivery_tag: int, redelivered: bool, queue: str,
                msg: Message) -> None: ...

    def consumer_cancelled(self, consumer_tag: str) -> None: ...


class Owner(Protocol):
    """The connection side a channel reports to (the listener): it writes output, watches alarms."""

    published: bool
    """Set once the connection routed a publish (alarms then stop reading it)."""
    client_properties: dict[str, Any]

    def write_pending(self) -> None:
        """Write buffered output (the durability tracker flushes it after a release)."""
        ...


def props_raw(msg: Message) -> bytes:
    """The message's encoded properties, encoded once and kept on the message."""
    raw = msg.encoded_props
    if raw is None:
        raw = msg.encoded_props = codec.encode_properties(msg.props)
    return raw


class AmqpChannel:
    """One open channel: its broker session plus AMQP-only state (confirms, tx, last queue)."""

    __slots__ = ("channels", "confirm", "confirm_seq", "conn", "ctag_cache", "held_cancels", "last_queue",
                 "number", "outcomes", "port", "proto", "session", "tx", "tx_acks", "tx_publishes",
                 "want_output")

    def __init__(self, channels: AmqpChannels, number: int) -> None:
        self.channels = channels.channels
        self.conn = channels.owner
        self.proto = channels.proto
        self.port = channels.port
        self.want_output = channels.want_output
        self.number = number
        self.session: ChannelSession = channels.port.open_session(self)
        self.confirm = False
        self.confirm_seq = 0
        # answers not yet sent, in publish order, each behind the log positions it wrote: a confirm
        # (token seq: ack, -seq: nack) or a deferred tx.commit-ok (token 0); see server/durability.py
        self.outcomes = Answers()
        self.tx = False
        self.tx_publishes: list[ev.Publish] = []
        self.tx_acks: list[ev.Settle] = []
        self.last_queue = ""
        self.ctag_cache: dict[str, bytes] = {}
        # basic.cancel frames held back while this channel's own queue.delete runs (sent after delete-ok)
        self.held_cancels: list[bytes] | None = None

    # ---- the broker's delivery sink -------------------------------------------------------------
    def deliver(self, consumer_tag: str, delivery_tag: int, redelivered: bool, queue: str, msg: Message) -> None:
        ctag = self.ctag_cache.get(consumer_tag)
        if ctag is None:
            ctag = self.ctag_cache[consumer_tag] = codec.sstr(consumer_tag)
        self.proto.send_content(codec.deliver_method(self.number, ctag, delivery_tag, redelivered, msg.exchange,
                                                     msg.routing_key), self.number, props_raw(msg), msg.body)
        self.want_output()

    def consumer_cancelled(self, consumer_tag: str) -> None:
        self.ctag_cache.pop(consumer_tag, None)
        caps = self.conn.client_properties.get("capabilities")
        if isinstance(caps, dict) and caps.get("consumer_cancel_notify"):
            # only clients that announced it understand a server-sent basic.cancel (as RabbitMQ)
            frame = codec.method_frame(self.number, codec.build(C.Basic.Cancel, consumer_tag=consumer_tag,
                                                                nowait=True))
            if self.held_cancels is not None:
                self.held_cancels.append(frame)
                return
            self.proto.write(frame)
            self.want_output()

    # ---- errors ---------------------------------------------------------------------------------
    def close_with(self, err: HareError) -> None:
        """A channel error: channel.close with its code; the session ends, the connection stays."""
        self.proto.close_channel(self.number, err)
        self.channels.pop(self.number, None)
        self.session.close()

    # ---- confirms (the durability tracker's waiter) -----------------------------------------------
    def fail_confirms(self, err: HareError) -> None:
        """Nack every confirm still waiting for the disk; a waiting tx.commit closes the channel."""
        if self.channels.get(self.number) is not self:
            self.outcomes.clear()
            return
        write = self.proto.write
        commit_waiting = False
        for token in self.outcomes.tokens():
            if token:
                write(codec.confirm_frame(self.number, abs(token), False, nack=True))
            else:
                commit_waiting = True
        self.outcomes.clear()
        if commit_waiting:
            self.close_with(ResourceError(f"transaction not durable: {err.text}"))

    def flush_confirms(self) -> bool:
        """Send what is committed, coalesced: one ``ack multiple`` per run of successes.

        Returns True when outcomes remain that wait for the disk.
        """
        outcomes = self.outcomes
        if self.channels.get(self.number) is not self:
            # closed while waiting for the disk: its confirms must not reach a reopened channel
            outcomes.clear()
            return False
        write = self.proto.write
        run_end = 0
        acked = 0
        items = outcomes.items  # Answers.pop_ready, inlined: this runs once per confirm
        while items:
            token, log, lsn = items[0]
            if log is not None and log.committed_lsn < lsn:
                break
            items.popleft()
            if token is None:
                continue  # a barrier: a later answer also wrote to this log
            if token > 0:
                run_end = token
                acked += 1
                continue
            if run_end:
                write(codec.confirm_frame(self.number, run_end, True))
                run_end = 0
            if token:
                write(codec.confirm_frame(self.number, -token, False, nack=True))
            else:
                write(codec.method_frame(self.number, codec.build(C.Tx.CommitOk)))
        if run_end:
            write(codec.confirm_frame(self.number, run_end, True))
        if acked:
            self.port.stats.confirmed += acked
        return bool(outcomes)

    # ---- hot path -------------------------------------------------------------------------------
    def publish(self, e: ev.Publish) -> None:
        if e.immediate:
            raise NotImplementedByBroker("immediate=true")
        if self.tx:
            # checked on arrival, as RabbitMQ does, so a bad publish fails here, not half a commit later
            self.port.publish_target(self.session, e.exchange)
            self.tx_publishes.append(e)
            return
        self.route(e)

    def route(self, e: ev.Publish) -> None:
        self.conn.published = True
        msg = Message(e.exchange, e.routing_key, e.props, e.body, e.raw_props)
        port = self.port
        if self.confirm:
            self.confirm_seq += 1
            written = port.written
            written.clear()
            port.stats.received_confirm += 1
            result = port.publish(self.session, e.exchange, msg)
            # the confirm waits for the log positions this publish appended (none: at once)
            token = self.confirm_seq if result != REJECTED else -self.confirm_seq
            n = len(written)  # Answers.add inlined for no log / one log (once per message)
            if n == 0:
                self.outcomes.items.append((token, None, 0))
            elif n == 1:
                for log in written:
                    self.outcomes.items.append((token, log, written[log]))
            else:
                self.outcomes.add(token, written)
        else:
            result = port.publish(self.session, e.exchange, msg)
        if result == UNROUTABLE and e.mandatory:
            port.stats.returned += 1
            self.proto.send_content(codec.return_method(self.number, 312, "NO_ROUTE", e.exchange, e.routing_key),
                                    self.number, e.raw_props, e.body)

    def settle(self, e: ev.Settle) -> None:
        if self.tx:
            self.tx_acks.append(e)
            return
        self.apply_settle(e)

    def apply_settle(self, e: ev.Settle) -> None:
        s = self.session
        if e.method_id == 80:
            s.ack(e.tag, bool(e.bits & 1))
        elif e.method_id == 120:
            s.nack(e.tag, bool(e.bits & 1), bool(e.bits & 2))
        else:
            s.nack(e.tag, False, bool(e.bits & 1))

    # ---- basic ----------------------------------------------------------------------------------
    def qos(self, m: Any) -> None:
        if m.prefetch_size:
            raise NotImplementedByBroker(f"prefetch_size!=0 ({m.prefetch_size})")
        if m.global_:
            self.session.global_prefetch = m.prefetch_count
        else:
            self.session.prefetch = m.prefetch_count
        self.port.resume(self.session)
        self.proto.send_method(self.number, codec.build(C.Basic.QosOk))

    def queue_name(self, name: str) -> str:
        if name:
            return name
        if not self.last_queue:
            raise NotFound("no previously declared queue")
        return self.last_queue

    def consume(self, m: Any) -> None:
        queue = self.queue_name(m.queue)
        c = self.port.consume(self.session, queue, m.consumer_tag, no_ack=m.no_ack, exclusive=m.exclusive,
                              arguments=dict(m.arguments or {}))
        if not m.nowait:
            self.proto.send_method(self.number, codec.build(C.Basic.ConsumeOk, consumer_tag=c.tag))

    def cancel(self, m: Any) -> None:
        self.port.cancel(self.session, m.consumer_tag)
        self.ctag_cache.pop(m.consumer_tag, None)
        if not m.nowait:
            self.proto.send_method(self.number, codec.build(C.Basic.CancelOk, consumer_tag=m.consumer_tag))

    def get(self, m: Any) -> None:
        queue = self.queue_name(m.queue)
        got = self.port.get(self.session, queue, no_ack=m.no_ack)
        if got is None:
            self.proto.send_method(self.number, codec.build(C.Basic.GetEmpty))
            return
        tag, entry, count = got
        msg = entry.msg
        self.proto.send_content(codec.get_ok_method(self.number, tag, entry.delivery_count > 1, msg.exchange,
                                                    msg.routing_key, count), self.number, props_raw(msg), msg.body)

    def recover(self, m: Any) -> None:
        if not m.requeue:
            raise NotImplementedByBroker("requeue=false")
        self.session.recover()
        if isinstance(m, C.Basic.Recover):
            self.proto.send_method(self.number, codec.build(C.Basic.RecoverOk))

    # ---- exchange / queue -------------------------------------------------------------------------
    def exchange_declare(self, m: Any) -> None:
        self.port.exchange_declare(self.session, m.exchange, m.exchange_type, passive=m.passive,
                                   durable=m.durable, auto_delete=m.auto_delete, internal=m.internal,
                                   arguments=dict(m.arguments or {}))
        if not m.nowait:
            self.proto.send_method(self.number, codec.build(C.Exchange.DeclareOk))

    def exchange_delete(self, m: Any) -> None:
        self.port.exchange_delete(self.session, m.exchange, if_unused=m.if_unused)
        if not m.nowait:
            self.proto.send_method(self.number, codec.build(C.Exchange.DeleteOk))

    def exchange_bind(self, m: Any) -> None:
        unbind = isinstance(m, C.Exchange.Unbind)
        self.port.exchange_bind(self.session, m.destination, m.source, m.routing_key,
                                dict(m.arguments or {}), unbind=unbind)
        if not m.nowait:
            ok = C.Exchange.UnbindOk if unbind else C.Exchange.BindOk
            self.proto.send_method(self.number, codec.build(ok))

    def queue_declare(self, m: Any) -> None:
        q = self.port.queue_declare(self.session, m.queue, passive=m.passive, durable=m.durable,
                                    exclusive=m.exclusive, auto_delete=m.auto_delete,
                                    arguments=dict(m.arguments or {}))
        self.last_queue = q.name
        if not m.nowait:
            self.proto.send_method(self.number, codec.build(
                C.Queue.DeclareOk, queue=q.name, message_count=q.message_count, consumer_count=q.consumer_count))

    def queue_bind(self, m: Any) -> None:
        unbind = isinstance(m, C.Queue.Unbind)
        queue = self.queue_name(m.queue)
        self.port.queue_bind(self.session, queue, m.exchange, m.routing_key, dict(m.arguments or {}),
                             unbind=unbind)
        if unbind:
            self.proto.send_method(self.number, codec.build(C.Queue.UnbindOk))
        elif not m.nowait:
            self.proto.send_method(self.number, codec.build(C.Queue.BindOk))

    def queue_purge(self, m: Any) -> None:
        n = self.port.queue_purge(self.session, self.queue_name(m.queue))
        if not m.nowait:
            self.proto.send_method(self.number, codec.build(C.Queue.PurgeOk, message_count=n))

    def queue_delete(self, m: Any) -> None:
        """delete-ok goes before the basic.cancel of this channel's own consumers, as RabbitMQ sends
        them (py-amqp, waiting for delete-ok, raises ConsumerCancelled on a cancel that comes first)."""
        held: list[bytes] = []
        self.held_cancels = held
        try:
            n = self.port.queue_delete(self.session, self.queue_name(m.queue),
                                       if_unused=m.if_unused, if_empty=m.if_empty)
            if not m.nowait:
                self.proto.send_method(self.number, codec.build(C.Queue.DeleteOk, message_count=n))
        finally:
            self.held_cancels = None
            for frame in held:
                self.proto.write(frame)

    # ---- confirm / tx / flow ---------------------------------------------------------------------
    def confirm_select(self, m: Any) -> None:
        if self.tx:
            raise PreconditionFailed("cannot switch from tx to confirm mode")
        self.confirm = True
        if not m.nowait:
            self.proto.send_method(self.number, codec.build(C.Confirm.SelectOk))

    def tx_select(self, m: Any) -> None:
        if self.confirm:
            raise PreconditionFailed("cannot switch from confirm to tx mode")
        self.tx = True
        self.proto.send_method(self.number, codec.build(C.Tx.SelectOk))

    def tx_commit(self, m: Any) -> None:
        if not self.tx:
            raise PreconditionFailed("channel is not transactional")
        publishes, acks = self.tx_publishes, self.tx_acks
        self.tx_publishes, self.tx_acks = [], []
        written = self.port.written
        written.clear()
        for p in publishes:
            self.route(p)  # (not in confirm mode: ``written`` gathers the whole transaction)
        for a in acks:
            self.apply_settle(a)
        if written or self.outcomes:
            self.outcomes.add(0, written)  # commit-ok once the transaction is on disk (and after an earlier one)
        else:
            self.proto.send_method(self.number, codec.build(C.Tx.CommitOk))

    def tx_rollback(self, m: Any) -> None:
        if not self.tx:
            raise PreconditionFailed("channel is not transactional")
        self.tx_publishes.clear()
        self.tx_acks.clear()
        self.proto.send_method(self.number, codec.build(C.Tx.RollbackOk))

    def flow(self, m: Any) -> None:
        self.session.flow = bool(m.active)
        if m.active:
            self.port.resume(self.session)
        self.proto.send_method(self.number, codec.build(C.Channel.FlowOk, active=m.active))

    def unsupported(self, m: Any) -> None:
        raise NotImplementedByBroker(f"method {m.name} is not supported from a client")


METHODS: dict[type[Any], Callable[[AmqpChannel, Any], None]] = {
    C.Basic.Qos: AmqpChannel.qos, C.Basic.Consume: AmqpChannel.consume, C.Basic.Cancel: AmqpChannel.cancel,
    C.Basic.Get: AmqpChannel.get, C.Basic.Recover: AmqpChannel.recover, C.Basic.RecoverAsync: AmqpChannel.recover,
    C.Exchange.Declare: AmqpChannel.exchange_declare, C.Exchange.Delete: AmqpChannel.exchange_delete,
    C.Exchange.Bind: AmqpChannel.exchange_bind, C.Exchange.Unbind: AmqpChannel.exchange_bind,
    C.Queue.Declare: AmqpChannel.queue_declare, C.Queue.Bind: AmqpChannel.queue_bind,
    C.Queue.Unbind: AmqpChannel.queue_bind, C.Queue.Purge: AmqpChannel.queue_purge,
    C.Queue.Delete: AmqpChannel.queue_delete, C.Confirm.Select: AmqpChannel.confirm_select,
    C.Tx.Select: AmqpChannel.tx_select, C.Tx.Commit: AmqpChannel.tx_commit, C.Tx.Rollback: AmqpChannel.tx_rollback,
    C.Channel.Flow: AmqpChannel.flow,
}
"""What each channel method does (a method not listed is refused with 540 NOT_IMPLEMENTED)."""


class AmqpChannels:
    """A connection's open channels: channel events in, frames out on ``proto``, broker calls through
    ``port``. A peer error closes the channel with its code; a connection-level code goes to
    ``fail_connection`` (the owner closes the connection)."""

    __slots__ = ("channels", "fail_connection", "owner", "port", "proto", "want_output")

    def __init__(self, proto: ev.AmqpConnection, port: BrokerPort, owner: Owner, *,
                 want_output: Callable[[], None], fail_connection: Callable[[HareError], None]) -> None:
        self.proto = proto
        self.port = port
        self.owner = owner
        self.want_output = want_output  # output was buffered outside the owner's read (a delivery)
        self.fail_connection = fail_connection
        self.channels: dict[int, AmqpChannel] = {}

    def _failed(self, ch: AmqpChannel, class_id: int, method_id: int, err: HareError) -> None:
        if not err.class_id:
            err.class_id, err.method_id = class_id, method_id
        if err.closes_connection:
            self.fail_connection(err)
        else:
            ch.close_with(err)

    # ---- events (the owner maps each event type to one of these) ------------------------------------
    def on_publish(self, e: ev.Publish) -> None:
        ch = self.channels.get(e.channel)
        if ch is not None:
            try:
                ch.publish(e)
            except HareError as err:
                self._failed(ch, 60, 40, err)

    def on_settle(self, e: ev.Settle) -> None:
        ch = self.channels.get(e.channel)
        if ch is not None:
            try:
                ch.settle(e)
            except HareError as err:
                self._failed(ch, 60, e.method_id, err)

    def on_method(self, e: ev.MethodReceived) -> None:
        ch = self.channels.get(e.channel)
        if ch is None:
            return
        m = e.method
        try:
            METHODS.get(type(m), AmqpChannel.unsupported)(ch, m)
        except HareError as err:
            self._failed(ch, m.index >> 16, m.index & 0xFFFF, err)

    def on_channel_opened(self, e: ev.ChannelOpened) -> None:
        self.channels[e.channel] = AmqpChannel(self, e.channel)
        self.port.stats.channels_opened += 1

    def on_channel_closed(self, e: ev.ChannelClosed | ev.ChannelFailed) -> None:
        ch = self.channels.pop(e.channel, None)
        if ch is not None:
            ch.session.close()

    def close_all(self) -> list[AmqpChannel]:
        """The connection is over: end every session; returns the channels that were open."""
        closed = list(self.channels.values())
        for ch in closed:
            ch.session.close()
        self.channels.clear()
        return closed
