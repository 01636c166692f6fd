"""A tiny blocking raw-AMQP 0-9-1 client for bad-input tests: frames built and parsed with pamqp."""

from __future__ import annotations

import socket
import struct
import time
from typing import Any

from pamqp import body as pbody
from pamqp import commands as C
from pamqp import frame as pframe
from pamqp import header as pheader
from pamqp import heartbeat as pheartbeat

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
FRAME_END = b"\xce"


def raw_frame(ftype: int, channel: int, payload: bytes, end: bytes = FRAME_END) -> bytes:
    return struct.pack(">BHI", ftype, channel, len(payload)) + payload + end


def method_payload(class_id: int, method_id: int, args: bytes) -> bytes:
    return struct.pack(">HH", class_id, method_id) + args


def sstr(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return bytes((len(b),)) + b


class Closed(Exception):
    """The peer closed the socket."""


class RawAmqp:
    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.frame_max = 0
        self.channel_max = 0

    # ---- io -------------------------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_method(self, channel: int, method: Any) -> None:
        self.send(pframe.marshal(method, channel))

    def try_send_method(self, channel: int, method: Any) -> bool:
        """Send unless the peer already hung up (our close-ok may cross the server's socket close)."""
        try:
            self.send_method(channel, method)
        except (BrokenPipeError, ConnectionResetError):
            return False
        return True

    def send_publish(self, channel: int, exchange: str, routing_key: str, body: bytes,
                     props: C.Basic.Properties | None = None, body_size: int | None = None) -> None:
        self.send_method(channel, C.Basic.Publish(exchange=exchange, routing_key=routing_key))
        size = len(body) if body_size is None else body_size
        self.send(pframe.marshal(pheader.ContentHeader(0, size, props or C.Basic.Properties()), channel))
        if body:
            self.send(pframe.marshal(pbody.ContentBody(body), channel))

    def _fill(self, deadline: float) -> None:
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            raise Closed()
        self.buf += data

    def read_bytes(self, n: int, timeout: float = 5.0) -> bytes:
        deadline = time.monotonic() + timeout
        while len(self.buf) < n:
            self._fill(deadline)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_frame(self, timeout: float = 5.0) -> tuple[int, Any]:
        """(channel, pamqp frame object), skipping heartbeats."""
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 7:
                size = struct.unpack_from(">I", self.buf, 3)[0]
                if len(self.buf) >= size + 8:
                    used, channel, f = pframe.unmarshal(self.buf[:size + 8])
                    self.buf = self.buf[used:]
                    if isinstance(f, pheartbeat.Heartbeat):
                        continue
                    return channel, f
            self._fill(deadline)

    def expect(self, cls: type[Any], timeout: float = 5.0) -> tuple[int, Any]:
        channel, f = self.read_frame(timeout)
        assert isinstance(f, cls), f"expected {cls.__name__}, got {f!r} on channel {channel}"
        return channel, f

    def read_until_close(self, timeout: float = 5.0) -> tuple[int, Any]:
        """Skip deliveries etc. until a connection.close or channel.close arrives."""
        deadline = time.monotonic() + timeout
        while True:
            channel, f = self.read_frame(max(0.01, deadline - time.monotonic()))
            if isinstance(f, C.Connection.Close | C.Channel.Close):
                return channel, f

    def expect_connection_close(self, code: int, timeout: float = 5.0) -> C.Connection.Close:
        """connection.close with ``code``; we answer close-ok and the server must hang up."""
        channel, f = self.read_until_close(timeout)
        assert channel == 0 and isinstance(f, C.Connection.Close), f"expected connection.close, got {f!r}"
        assert f.reply_code == code, f"expected {code}, got {f.reply_code} {f.reply_text}"
        self.send_method(0, C.Connection.CloseOk())
        self.expect_eof()
        return f

    def expect_channel_close(self, channel: int, code: int, timeout: float = 5.0) -> C.Channel.Close:
        ch, f = self.read_until_close(timeout)
        assert isinstance(f, C.Channel.Close), f"expected channel.close, got {f!r}"
        assert ch == channel and f.reply_code == code, f"expected {code} on {channel}, got {f!r} on {ch}"
        self.send_method(channel, C.Channel.CloseOk())
        return f

    def expect_eof(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        try:
            while True:
                self._fill(deadline)
                self.buf = b""
        except Closed:
            return
        except TimeoutError:
            raise AssertionError("the server did not close the socket") from None

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> RawAmqp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- handshake ------------------------------------------------------------------------------
    def start(self, user: str = "guest", password: str = "guest") -> Any:
        """Header, start, start-ok (PLAIN). Returns what came back (tune or close)."""
        self.send(PROTOCOL_HEADER)
        _, start = self.expect(C.Connection.Start)
        assert b"PLAIN" in (start.mechanisms if isinstance(start.mechanisms, bytes)
                            else start.mechanisms.encode())
        self.send_method(0, C.Connection.StartOk(
            client_properties={"product": "haremq-raw-test", "capabilities": {"authentication_failure_close": True}},
            mechanism="PLAIN", response=f"\0{user}\0{password}", locale="en_US"))
        return self.read_frame()[1]

    def handshake(self, vhost: str = "/", user: str = "guest", password: str = "guest", heartbeat: int = 0,
                  frame_max: int | None = None) -> None:
        tune = self.start(user, password)
        assert isinstance(tune, C.Connection.Tune), tune
        self.frame_max = frame_max or tune.frame_max
        self.channel_max = tune.channel_max
        self.send_method(0, C.Connection.TuneOk(channel_max=tune.channel_max, frame_max=self.frame_max,
                                                heartbeat=heartbeat))
        self.send_method(0, C.Connection.Open(virtual_host=vhost))
        self.expect(C.Connection.OpenOk)

    def open_channel(self, channel: int = 1) -> None:
        self.send_method(channel, C.Channel.Open())
        self.expect(C.Channel.OpenOk)
