"""While the metadata store's disk is slow, answers that report a definitions change (declare-ok,
RECEIPT, HTTP 2xx) wait for it, and the event loop keeps serving everyone else meanwhile."""

from __future__ import annotations

import base64
import json
import socket
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pika
import pika.exceptions
import pytest

from haremq.testing.server import BrokerThread


class SlowDisk:
    """Stands in for the SQLite connection: every statement waits for ``gate`` (a slow fsync)."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.gate = threading.Event()

    def execute(self, *args: Any) -> Any:
        self.gate.wait(10)
        return self.real.execute(*args)

    def close(self) -> None:
        self.real.close()




def held_until_gate(disk: SlowDisk, call: Callable[[], Any], still_served: Callable[[], Any]) -> Any:
    """``call`` does not finish while the disk is held; ``still_served`` finishes meanwhile."""
    with ThreadPoolExecutor(1) as pool:
        fut: Future[Any] = pool.submit(call)
        time.sleep(0.4)
        assert not fut.done(), "answered before the definition was durable"
        started = time.monotonic()
        still_served()
        assert time.monotonic() - started < 0.5, "the event loop waited for the metadata store"
        assert not fut.done()
        disk.gate.set()
        return fut.result(10)


def http(port: int, method: str, path: str, body: Any = None) -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode(),
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as res:
        return int(res.status)


def test_queue_declare_ok_waits_for_the_definition_while_others_are_served(
        slow: tuple[BrokerThread, SlowDisk]) -> None:
    bt, disk = slow
    busy = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", bt.port))
    other = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", bt.port))
    other_ch = other.channel()
    busy_ch = busy.channel()
    held_until_gate(disk, lambda: busy_ch.queue_declare("held-q", durable=True),
                    lambda: other_ch.queue_declare("", exclusive=True))
    assert busy_ch.queue_declare("held-q", passive=True).method.queue == "held-q"
    busy.close()
    other.close()


def test_management_user_put_answers_once_durable_while_others_are_served(
        slow: tuple[BrokerThread, SlowDisk]) -> None:
    bt, disk = slow
    assert bt.node is not None and bt.node.http is not None
    port = bt.node.http.management_port
    assert port is not None
    status = held_until_gate(disk, lambda: http(port, "PUT", "/api/users/slow", {"password": "pw", "tags": ""}),
                             lambda: http(port, "GET", "/api/overview"))
    assert status == 201
    assert bt.node.broker.metadata.load()["users"][-1]["name"] == "slow"  # type: ignore[attr-defined]


def test_stomp_receipt_of_a_queue_creating_subscribe_waits_for_the_definition(
        slow: tuple[BrokerThread, SlowDisk]) -> None:
    bt, disk = slow
    assert bt.node is not None and bt.node.stomp_port is not None
    sock = socket.create_connection(("127.0.0.1", bt.node.stomp_port), timeout=10)

    def frame(command: str, **headers: str) -> bytes:
        sock.sendall((command + "\n" + "".join(f"{k}:{v}\n" for k, v in headers.items()) + "\n\0").encode())
        got = b""
        while b"\0" not in got:
            got += sock.recv(4096)
        return got

    assert frame("CONNECT", **{"accept-version": "1.2", "host": "/", "login": "guest", "passcode": "guest"}
                 ).startswith(b"CONNECTED")
    other = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", bt.port))
    got = held_until_gate(disk, lambda: frame("SUBSCRIBE", id="1", destination="/queue/held-s", receipt="r1"),
                          lambda: other.channel())
    assert got.startswith(b"RECEIPT")
    other.close()
    sock.close()


class BrokenDisk:
    def __init__(self, real: Any) -> None:
        self.real = real

    def execute(self, *args: Any) -> Any:
        raise sqlite3.OperationalError("disk I/O error")

    def close(self) -> None:
        self.real.close()


def test_a_failed_definitions_write_is_refused_not_answered_as_kept() -> None:
    with BrokerThread() as bt:
        assert bt.node is not None and bt.node.http is not None
        port = bt.node.http.management_port
        assert port is not None
        metadata: Any = bt.node.broker.metadata
        metadata.db = BrokenDisk(metadata.db)
        with pytest.raises(urllib.error.HTTPError) as info:
            http(port, "PUT", "/api/users/lost", {"password": "pw", "tags": ""})
        assert info.value.code == 503
        assert "lost" not in bt.node.broker.users.users  # memory follows the disk
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", bt.port))
        ch = conn.channel()
        with pytest.raises(pika.exceptions.AMQPConnectionError):
            ch.queue_declare("lost-q", durable=True)  # no declare-ok: the connection is dropped


def test_another_connection_sees_no_queue_whose_declare_is_not_yet_durable(
        slow: tuple[BrokerThread, SlowDisk]) -> None:
    """A durable queue exists for others only once its definition is on disk (commit, then apply): a
    second connection's passive declare meanwhile is 404, never a declare-ok naming a queue a crash
    could still lose; once the write is durable it is there for everyone."""
    bt, disk = slow
    first = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", bt.port))
    second = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", bt.port))
    first_ch, second_ch = first.channel(), second.channel()
    with ThreadPoolExecutor(1) as pool:
        declared = pool.submit(lambda: first_ch.queue_declare("shared-q", durable=True))
        time.sleep(0.4)
        assert not declared.done()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
            second_ch.queue_declare("shared-q", passive=True)
        assert refused.value.reply_code == 404
        assert not declared.done()
        disk.gate.set()
        assert declared.result(10).method.queue == "shared-q"
    assert second.channel().queue_declare("shared-q", passive=True).method.queue == "shared-q"
    for c in (first, second):
        c.close()
