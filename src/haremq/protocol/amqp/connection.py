"""The AMQP 0-9-1 connection as a sans-IO state machine: ``receive_data`` bytes -> events.

The server feeds bytes in and writes ``data_to_send()`` out; it never parses a frame. This object
owns framing, the handshake states, channel numbering and content assembly (method -> header ->
body frames). It does not authenticate, route or store: it hands those decisions to the server
as events and takes the answers as calls (``send_tune``, ``send_open_ok``, ``close_channel``...).

States are data: ``CONNECTION_TABLE`` says which method may arrive in which state and where it
leads. Anything else is ``UNEXPECTED_FRAME``/``COMMAND_INVALID`` and closes the connection with
that code, as RabbitMQ does. After a connection error nothing but ``connection.close-ok`` is
read (spec 2.3.5.2); after a channel error the channel ignores all but close/close-ok.
"""

from __future__ import annotations

import enum
import mmap
import struct
from typing import Any

from pamqp import commands as C

from haremq.errors import (
    ChannelError,
    CommandInvalid,
    FrameError,
    HareError,
    NotAllowed,
    PreconditionFailed,
    UnexpectedFrame,
)
from haremq.message import Properties
from haremq.protocol.amqp import codec

_frame_hdr = struct.Struct(">BHI")
_PUBLISH_ID = b"\x00\x3c\x00\x28"
_ACK_CLASS = b"\x00\x3c"


class State(enum.Enum):
    AWAIT_HEADER = "await-header"
    AWAIT_START_OK = "await-start-ok"
    AWAIT_TUNE_OK = "await-tune-ok"
    AWAIT_OPEN = "await-open"
    OPEN = "open"
    CLOSING = "closing"  # we sent connection.close, waiting for close-ok
    CLOSED = "closed"


# (state, incoming method class) -> next state. The server's answer (tune, open-ok) does not move
# the state: the client's next method does, so an out-of-order client is caught here.
CONNECTION_TABLE: dict[tuple[State, type[Any]], State] = {
    (State.AWAIT_START_OK, C.Connection.StartOk): State.AWAIT_TUNE_OK,
    (State.AWAIT_TUNE_OK, C.Connection.TuneOk): State.AWAIT_OPEN,
    (State.AWAIT_OPEN, C.Connection.Open): State.OPEN,
    (State.OPEN, C.Connection.Close): State.CLOSED,
    (State.OPEN, C.Connection.UpdateSecret): State.OPEN,
    (State.OPEN, C.Connection.CloseOk): State.CLOSED,
    (State.AWAIT_TUNE_OK, C.Connection.Close): State.CLOSED,
    (State.AWAIT_OPEN, C.Connection.Close): State.CLOSED,
    (State.AWAIT_START_OK, C.Connection.Close): State.CLOSED,
    (State.CLOSING, C.Connection.CloseOk): State.CLOSED,
    (State.CLOSING, C.Connection.Close): State.CLOSED,
}


# ---- events -----------------------------------------------------------------------------------
class Event:
    __slots__ = ()


class StartOk(Event):
    __slots__ = ("client_properties", "mechanism", "response")

    def __init__(self, mechanism: str, response: bytes, client_properties: dict[str, Any]) -> None:
        self.mechanism, self.response, self.client_properties = mechanism, response, client_properties


class TuneOk(Event):
    __slots__ = ("channel_max", "frame_max", "heartbeat")

    def __init__(self, channel_max: int, frame_max: int, heartbeat: int) -> None:
        self.channel_max, self.frame_max, self.heartbeat = channel_max, frame_max, heartbeat


class OpenVhost(Event):
    __slots__ = ("vhost",)

    def __init__(self, vhost: str) -> None:
        self.vhost = vhost


class UpdateSecret(Event):
    """connection.update-secret (RabbitMQ extension): re-authenticate the open connection."""

    __slots__ = ("new_secret", "reason")

    def __init__(self, new_secret: bytes, reason: str) -> None:
        self.new_secret, self.reason = new_secret, reason


class ChannelOpened(Event):
    __slots__ = ("channel",)

    def __init__(self, channel: int) -> None:
        self.channel = channel


class ChannelClosed(Event):
    """The channel is gone (peer closed it, or answered our close)."""

    __slots__ = ("channel",)

    def __init__(self, channel: int) -> None:
        self.channel = channel


class ChannelFailed(Event):
    """We closed the channel for a protocol error found here; the server ends its session."""

    __slots__ = ("channel", "error")

    def __init__(self, channel: int, error: HareError) -> None:
        self.channel, self.error = channel, error


class MethodReceived(Event):
    __slots__ = ("channel", "method")

    def __init__(self, channel: int, method: Any) -> None:
        self.channel, self.method = channel, method


class Publish(Event):
    __slots__ = ("body", "channel", "exchange", "immediate", "mandatory", "props", "raw_props", "routing_key")

    def __init__(self, channel: int, exchange: str, routing_key: str, mandatory: bool, immediate: bool,
                 props: Properties, raw_props: bytes, body: bytes) -> None:
        self.channel = channel
        self.exchange = exchange
        self.routing_key = routing_key
        self.mandatory = mandatory
        self.immediate = immediate
        self.props = props
        self.raw_props = raw_props
        self.body = body


class Settle(Event):
    """basic.ack (method 80), basic.nack (120), basic.reject (90) from a consumer."""

    __slots__ = ("bits", "channel", "method_id", "tag")

    def __init__(self, channel: int, method_id: int, tag: int, bits: int) -> None:
        self.channel, self.method_id, self.tag, self.bits = channel, method_id, tag, bits


class ConnectionClosed(Event):
    """The connection is over; the server closes the socket once output is flushed."""

    __slots__ = ("error", "reply_code", "reply_text")

    def __init__(self, reply_code: int, reply_text: str, error: HareError | None = None) -> None:
        self.reply_code, self.reply_text, self.error = reply_code, reply_text, error


class BadHeader(Event):
    """Not an AMQP 0-9-1 client: we answered with our header; close the socket."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


# ---- channels ---------------------------------------------------------------------------------
class _Channel:
    __slots__ = ("body", "body_size", "closing", "got", "pending", "props", "raw_props")

    def __init__(self) -> None:
        self.closing = False
        self.pending: tuple[str, str, bool, bool] | None = None  # publish awaiting content
        self.props: Properties | None = None
        self.raw_props = b""
        self.body_size = -1  # -1: header not yet seen
        self.body: list[bytes] = []
        self.got = 0


class AmqpConnection:
    def __init__(self, server_properties: dict[str, Any], *, channel_max: int = 2047,
                 frame_max: int = 131072, heartbeat: int = 60, max_message_size: int = 128 * 1024 * 1024,
                 mechanisms: str = "PLAIN AMQPLAIN", properties_cache: codec.PropertiesCache | None = None) -> None:
        """``properties_cache``: decoded content headers shared with the node's other connections
        (its own when None)."""
        self.state = State.AWAIT_HEADER
        self.server_properties = server_properties
        self.channel_max = channel_max
        self.frame_max = frame_max
        self.heartbeat = heartbeat
        self.max_message_size = max_message_size
        self.mechanisms = mechanisms
        self._recv_frame_max = codec.FRAME_MIN_SIZE
        # Input buffer: the socket reads straight into it (get_buffer / buffer_updated, as asyncio's
        # BufferedProtocol), frames are parsed in place, and only a trailing partial frame is moved
        # to the front. It holds at least one maximal frame, so parsing always makes progress. An
        # anonymous mmap: pages are committed only when written, so an idle connection costs ~0.
        self._cap = max(256 * 1024, frame_max + 64)
        self._rbuf = mmap.mmap(-1, self._cap)
        self._rmv = memoryview(self._rbuf)
        self._rlen = 0
        self._out: list[bytes] = []
        self._close_last: bytes | None = None  # connection.close for a parse error: sent after earlier replies
        self.channels: dict[int, _Channel] = {}
        cache = codec.PropertiesCache() if properties_cache is None else properties_cache
        self._decode_header = cache.decode_content_header

    # ---- output ---------------------------------------------------------------------------------
    def data_to_send(self) -> list[bytes]:
        out, self._out = self._out, []
        if self._close_last is not None:
            # frames parsed before the bad one are answered first (the server handles their events
            # after receive_data returns); connection.close must be the last thing we send
            out.append(self._close_last)
            self._close_last = None
        return out

    def write(self, data: bytes) -> None:
        """Queue one ready-made frame (a confirm, a held basic.cancel)."""
        self._out.append(data)

    def send_content(self, method_frame: bytes, channel: int, props_raw: bytes, body: bytes) -> None:
        """Queue a content-carrying method (deliver, get-ok, return) with its header and body frames,
        split at this connection's negotiated ``frame_max``."""
        out = self._out
        out.append(method_frame)
        codec.append_content(out, channel, props_raw, body, self.frame_max)

    def send_method(self, channel: int, method: Any) -> None:
        self._out.append(codec.method_frame(channel, method))

    def send_tune(self) -> None:
        self.send_method(0, codec.build(C.Connection.Tune, channel_max=self.channel_max,
                                        frame_max=self.frame_max, heartbeat=self.heartbeat))

    def send_open_ok(self) -> None:
        self.send_method(0, codec.build(C.Connection.OpenOk))

    def send_heartbeat(self) -> None:
        self._out.append(codec.HEARTBEAT_FRAME)

    def close_channel(self, channel: int, error: HareError) -> None:
        """A channel-level error: send channel.close and ignore the channel until close-ok."""
        ch = self.channels.get(channel)
        if ch is None or ch.closing:
            return
        ch.closing = True
        ch.pending = None
        self.send_method(channel, codec.build(
            C.Channel.Close, reply_code=error.reply_code, reply_text=codec.clip_sstr(error.reply_text),
            class_id=error.class_id, method_id=error.method_id))

    def close(self, error: HareError) -> None:
        """A connection-level error (or shutdown): send connection.close, read only close-ok."""
        if self.state in (State.CLOSING, State.CLOSED):
            return
        if self.state == State.AWAIT_HEADER:
            self.state = State.CLOSED
            return
        self.state = State.CLOSING
        self.send_method(0, codec.build(
            C.Connection.Close, reply_code=error.reply_code, reply_text=codec.clip_sstr(error.reply_text),
            class_id=error.class_id, method_id=error.method_id))

    # ---- input ----------------------------------------------------------------------------------
    def get_buffer(self, sizehint: int = -1) -> memoryview:
        """Where the next socket read should land (never empty)."""
        if self.state == State.CLOSED:
            self._rlen = 0  # nothing more is read: let the peer's bytes fall on the floor
        return self._rmv[self._rlen:]

    def buffer_updated(self, nbytes: int) -> list[Event]:
        """``nbytes`` were read into the buffer ``get_buffer`` returned: parse them."""
        self._rlen += nbytes
        return self._process()

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed bytes from elsewhere (tests, fuzzers, non-buffered transports)."""
        events: list[Event] = []
        view = memoryview(data)
        while len(view) and self.state != State.CLOSED:
            free = self.get_buffer()
            take = min(len(free), len(view))
            free[:take] = view[:take]
            view = view[take:]
            events += self.buffer_updated(take)
        return events

    def _process(self) -> list[Event]:
        events: list[Event] = []
        if self.state == State.CLOSED:
            self._rlen = 0
            return events
        buf = self._rmv
        pos = 0
        n = self._rlen
        if self.state == State.AWAIT_HEADER:
            if n < 8:
                if buf[:n] != codec.PROTOCOL_HEADER[:n]:
                    return self._bad_header(bytes(buf[:n]), events)
                return events
            if buf[:8] != codec.PROTOCOL_HEADER:
                return self._bad_header(bytes(buf[:8]), events)
            pos = 8
            self.state = State.AWAIT_START_OK
            self.send_method(0, codec.build(
                C.Connection.Start, version_major=0, version_minor=9,
                server_properties=self.server_properties, mechanisms=self.mechanisms, locales="en_US"))
        try:
            while n - pos >= 7:
                ftype, channel, size = _frame_hdr.unpack_from(buf, pos)
                if size > self._recv_frame_max - 8:
                    raise FrameError(f"frame size {size + 8} exceeds negotiated frame_max "
                                     f"{self._recv_frame_max}")
                if ftype == codec.FRAME_HEARTBEAT and size:
                    # checked before waiting for the payload: a "heartbeat" announcing 2 GiB must not
                    # make us buffer it
                    raise FrameError(f"heartbeat frame with a {size}-byte payload")
                end = pos + 7 + size
                if end >= n:
                    break
                if buf[end] != codec.FRAME_END:
                    raise FrameError(f"frame end byte 0x{buf[end]:02x} is not 0xCE")
                start = pos + 7
                pos = end + 1
                if self.state == State.CLOSING:
                    if ftype == codec.FRAME_METHOD and channel == 0:
                        m = codec.decode_method(buf[start:end])
                        if isinstance(m, C.Connection.CloseOk | C.Connection.Close):
                            if isinstance(m, C.Connection.Close):
                                self.send_method(0, codec.build(C.Connection.CloseOk))
                            self.state = State.CLOSED
                            events.append(ConnectionClosed(0, "closed"))
                            break
                    continue
                if ftype == codec.FRAME_METHOD:
                    if channel:
                        ch = self.channels.get(channel)
                        if ch is not None and ch.pending is None and not ch.closing and size >= 4:
                            tag4 = buf[start:start + 4]
                            if tag4 == _PUBLISH_ID:
                                ch.pending = codec.decode_publish(buf[start:end])
                                ch.body_size = -1
                                continue
                            if tag4[:2] == _ACK_CLASS and tag4[3] in (80, 90, 120) and tag4[2] == 0:
                                mid, tag, bits = codec.decode_ack(buf[start:end])
                                events.append(Settle(channel, mid, tag, bits))
                                continue
                    self._method(channel, codec.decode_method(buf[start:end]), events)
                elif ftype == codec.FRAME_HEADER:
                    self._header(channel, buf[start:end], events)
                elif ftype == codec.FRAME_BODY:
                    self._body(channel, bytes(buf[start:end]), events)  # the one copy of a body
                elif ftype == codec.FRAME_HEARTBEAT:
                    if channel != 0:
                        raise FrameError("heartbeat frame on a non-zero channel")
                else:
                    raise FrameError(f"unknown frame type {ftype}")
                if self.state == State.CLOSED:
                    break
        except HareError as err:
            if not err.closes_connection:
                err = CommandInvalid(err.text, class_id=err.class_id, method_id=err.method_id)
            out, self._out = self._out, []
            self.close(err)
            if self._out:
                self._close_last = self._out.pop()
            self._out = out + self._out
            events.append(ConnectionClosed(err.reply_code, err.reply_text, err))
            self._rlen = 0
            return events
        rest = n - pos
        if rest and pos:
            self._rbuf.move(0, pos, rest)  # a partial frame (at most one) moves to the front
        self._rlen = rest
        return events

    def _bad_header(self, got: bytes, events: list[Event]) -> list[Event]:
        self._out.append(codec.PROTOCOL_HEADER)
        self.state = State.CLOSED
        self._rlen = 0
        events.append(BadHeader(got))
        return events

    def _method(self, channel: int, m: Any, events: list[Event]) -> None:
        if channel == 0:
            self._connection_method(m, events)
            return
        if self.state != State.OPEN:
            raise UnexpectedFrame(f"expected connection method, got {m.name} on channel {channel}")
        ch = self.channels.get(channel)
        if isinstance(m, C.Channel.Open):
            if ch is not None:
                raise ChannelError(f"second 'channel.open' seen on channel {channel}", class_id=20,
                                   method_id=10)
            # channel_max caps how many channels are open, not their numbers: 65535 is a valid channel
            if len(self.channels) >= self.channel_max:
                raise NotAllowed(f"number of channels opened ({len(self.channels)}) has reached the "
                                 f"negotiated channel_max ({self.channel_max})")
            self.channels[channel] = _Channel()
            self.send_method(channel, codec.build(C.Channel.OpenOk))
            events.append(ChannelOpened(channel))
            return
        if ch is None:
            raise ChannelError(f"expected 'channel.open' on channel {channel}", class_id=m.index >> 16,
                               method_id=m.index & 0xFFFF)
        if isinstance(m, C.Channel.Close):
            del self.channels[channel]
            self.send_method(channel, codec.build(C.Channel.CloseOk))
            events.append(ChannelClosed(channel))
            return
        if isinstance(m, C.Channel.CloseOk):
            if ch.closing:
                del self.channels[channel]
                events.append(ChannelClosed(channel))
            return
        if ch.closing:
            return  # spec: drop everything but close / close-ok on a closing channel
        if ch.pending is not None:
            raise UnexpectedFrame(f"expected content header for class 60, got non content header frame "
                                  f"instead ({m.name})")
        events.append(MethodReceived(channel, m))

    def _connection_method(self, m: Any, events: list[Event]) -> None:
        nxt = CONNECTION_TABLE.get((self.state, type(m)))
        if nxt is None:
            raise CommandInvalid(f"unexpected {m.name} in state {self.state.value}", class_id=m.index >> 16,
                                 method_id=m.index & 0xFFFF)
        self.state = nxt
        if isinstance(m, C.Connection.StartOk):
            resp = m.response
            events.append(StartOk(m.mechanism, resp.encode("latin-1") if isinstance(resp, str) else bytes(resp),
                                  dict(m.client_properties or {})))
        elif isinstance(m, C.Connection.TuneOk):
            fm = m.frame_max or self.frame_max
            if fm < codec.FRAME_MIN_SIZE or fm > self.frame_max:
                raise FrameError(f"frame_max={fm} < {codec.FRAME_MIN_SIZE} min size" if fm < codec.FRAME_MIN_SIZE
                                 else f"frame_max={fm} > {self.frame_max} max size")
            self.frame_max = fm
            self._recv_frame_max = fm
            if m.channel_max and m.channel_max < self.channel_max:
                self.channel_max = m.channel_max
            self.heartbeat = m.heartbeat
            events.append(TuneOk(self.channel_max, fm, m.heartbeat))
        elif isinstance(m, C.Connection.Open):
            events.append(OpenVhost(m.virtual_host or "/"))
        elif isinstance(m, C.Connection.UpdateSecret):
            secret = m.new_secret
            events.append(UpdateSecret(secret.encode("utf-8") if isinstance(secret, str) else bytes(secret or b""),
                                       m.reason or ""))
        elif isinstance(m, C.Connection.Close):
            self.send_method(0, codec.build(C.Connection.CloseOk))
            events.append(ConnectionClosed(m.reply_code or 0, m.reply_text or ""))
        elif isinstance(m, C.Connection.CloseOk):
            events.append(ConnectionClosed(0, "closed"))

    def _header(self, channel: int, payload: codec.Buf, events: list[Event]) -> None:
        ch = self.channels.get(channel)
        if ch is None:
            raise ChannelError(f"content header on unopened channel {channel}")
        if ch.closing:
            return
        if ch.pending is None or ch.body_size != -1:
            raise UnexpectedFrame("expected method frame, got unexpected content header")
        class_id, size, props, raw = self._decode_header(payload)
        if class_id != 60:
            raise FrameError(f"content header for class {class_id}, expected 60")
        ch.props, ch.raw_props, ch.body_size, ch.got = props, raw, size, 0
        ch.body = []
        if size > self.max_message_size:
            ch.pending = None
            err = PreconditionFailed(
                f"message size {size} is larger than configured max size {self.max_message_size}",
                class_id=60, method_id=40)
            self.close_channel(channel, err)
            events.append(ChannelFailed(channel, err))
        elif size == 0:
            self._complete(channel, ch, events)

    def _body(self, channel: int, payload: bytes, events: list[Event]) -> None:
        ch = self.channels.get(channel)
        if ch is None:
            raise ChannelError(f"content body on unopened channel {channel}")
        if ch.closing:
            return
        if ch.pending is None or ch.body_size < 0:
            raise UnexpectedFrame("expected content header, got unexpected content body")
        ch.got += len(payload)
        if ch.got > ch.body_size:
            raise FrameError(f"content body is {ch.got} bytes, header announced {ch.body_size}")
        ch.body.append(payload)
        if ch.got == ch.body_size:
            self._complete(channel, ch, events)

    def _complete(self, channel: int, ch: _Channel, events: list[Event]) -> None:
        assert ch.pending is not None and ch.props is not None
        exchange, rk, mandatory, immediate = ch.pending
        body = ch.body[0] if len(ch.body) == 1 else b"".join(ch.body)
        events.append(Publish(channel, exchange, rk, mandatory, immediate, ch.props, ch.raw_props, body))
        ch.pending = None
        ch.body = []
        ch.props = None
