"""Start a real ``haremq serve`` with STOMP on an ephemeral port, and small stomp-py helpers."""

from __future__ import annotations

import base64
import json
import queue
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import stomp

from brokerproc import BrokerProcess, start_broker, stop_broker

StompBroker = BrokerProcess


def start_stomp_broker(*extra: str, env: dict[str, str] | None = None, data_dir: str | None = None) -> BrokerProcess:
    """A broker subprocess; ``.stomp_port`` and ``.amqp_port`` come from its ready line."""
    return start_broker(*extra, env=env, data_dir=data_dir, prefix="haremq-stomp-")


def stop_stomp_broker(b: BrokerProcess) -> int:
    return stop_broker(b)


@dataclass
class Collector(stomp.ConnectionListener):  # type: ignore[misc]
    """Records every frame stomp-py hands to a listener."""

    messages: queue.Queue[Any] = field(default_factory=queue.Queue)
    receipts: queue.Queue[str] = field(default_factory=queue.Queue)
    errors: queue.Queue[Any] = field(default_factory=queue.Queue)
    disconnected: queue.Queue[bool] = field(default_factory=queue.Queue)

    def on_message(self, frame: Any) -> None:
        self.messages.put(frame)

    def on_receipt(self, frame: Any) -> None:
        self.receipts.put(frame.headers["receipt-id"])

    def on_error(self, frame: Any) -> None:
        self.errors.put(frame)

    def on_disconnected(self) -> None:
        self.disconnected.put(True)

    def message(self, timeout: float = 5.0) -> Any:
        return self.messages.get(timeout=timeout)

    def no_message(self, wait: float = 0.3) -> bool:
        try:
            self.messages.get(timeout=wait)
        except queue.Empty:
            return True
        return False

    def receipt(self, timeout: float = 5.0) -> str:
        return self.receipts.get(timeout=timeout)

    def error(self, timeout: float = 5.0) -> Any:
        return self.errors.get(timeout=timeout)


def connect(port: int, version: str = "1.2", login: str = "guest", passcode: str = "guest",
            **kw: Any) -> tuple[stomp.Connection, Collector]:
    cls = {"1.0": stomp.Connection10, "1.1": stomp.Connection11, "1.2": stomp.Connection12}[version]
    heartbeats = kw.pop("heartbeats", (0, 0))
    if version == "1.0":
        conn = cls([("127.0.0.1", port)], **kw)
    else:
        conn = cls([("127.0.0.1", port)], heartbeats=heartbeats, **kw)
    listener = Collector()
    conn.set_listener("c", listener)
    conn.connect(login, passcode, wait=True)
    return conn, listener


def management(b: BrokerProcess, method: str, path: str, body: Any = None) -> int:
    """One management API call as guest (to create users, vhosts, permissions); the HTTP status."""
    req = urllib.request.Request(b.management_url + path, method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json",
                                          "Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()})
    try:
        with urllib.request.urlopen(req, timeout=10) as res:
            return int(res.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


class RawStomp:
    """A bare socket for sending malformed input and reading what comes back."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def frame(self, timeout: float = 5.0) -> tuple[str, dict[str, str], bytes] | None:
        """The next frame (skipping heart-beat EOLs), or None when the server closed the socket."""
        self.sock.settimeout(timeout)
        while True:
            self.buf = self.buf.lstrip(b"\r\n")
            end = self.buf.find(b"\n\n")
            if end >= 0:
                head = self.buf[:end].decode()
                lines = head.split("\n")
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    k, _, v = line.partition(":")
                    headers.setdefault(k, v)
                start = end + 2
                if "content-length" in headers:
                    stop = start + int(headers["content-length"])
                    if len(self.buf) > stop:
                        body = self.buf[start:stop]
                        self.buf = self.buf[stop + 1:]
                        return lines[0], headers, body
                else:
                    nul = self.buf.find(b"\0", start)
                    if nul >= 0:
                        body = self.buf[start:nul]
                        self.buf = self.buf[nul + 1:]
                        return lines[0], headers, body
            data = self.sock.recv(65536)
            if not data:
                return None
            self.buf += data

    def closed(self, timeout: float = 5.0) -> bool:
        """True when the server closes the socket within ``timeout`` (frames before it are dropped)."""
        self.sock.settimeout(timeout)
        try:
            while self.sock.recv(65536):
                pass
        except TimeoutError:
            return False
        except OSError:
            return True
        return True

    def close(self) -> None:
        self.sock.close()


def iter_frames(raw: RawStomp, n: int) -> Iterator[tuple[str, dict[str, str], bytes]]:
    for _ in range(n):
        f = raw.frame()
        assert f is not None
        yield f
