"""stomp-py against a real broker process: every version, ack mode, receipts, transactions,
heart-beats, durable subscriptions, cross-protocol with pika, and bad input."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pika
import pytest
import stomp
from stomp_helpers import (
    Collector,
    RawStomp,
    StompBroker,
    connect,
    management,
    start_stomp_broker,
    stop_stomp_broker,
)

VERSIONS = ["1.0", "1.1", "1.2"]


@pytest.fixture(scope="module")
def broker() -> Iterator[StompBroker]:
    b = start_stomp_broker()
    yield b
    assert stop_stomp_broker(b) == 0, b.log()


def qname() -> str:
    return "q-" + uuid.uuid4().hex[:10]


def ack(conn: stomp.Connection, version: str, frame: Any, **kw: Any) -> None:
    if version == "1.2":
        conn.ack(frame.headers["ack"], **kw)
    elif version == "1.1":
        conn.ack(frame.headers["message-id"], frame.headers["subscription"], **kw)
    else:
        conn.ack(frame.headers["message-id"], **kw)


def nack(conn: stomp.Connection, version: str, frame: Any, **kw: Any) -> None:
    if version == "1.2":
        conn.nack(frame.headers["ack"], **kw)
    else:
        conn.nack(frame.headers["message-id"], frame.headers["subscription"], **kw)




def collect(ls: Collector, n: int, timeout: float = 5.0) -> list[Any]:
    return [ls.message(timeout) for _ in range(n)]


# ---- basics in every version ------------------------------------------------------------------------
@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("mode", ["auto", "client", "client-individual"])
def test_send_subscribe_ack(broker: StompBroker, version: str, mode: str) -> None:
    q = qname()
    c, ls = connect(broker.stomp_port, version)
    c.subscribe(f"/queue/{q}", id="s1", ack=mode, receipt="sub")
    assert ls.receipt() == "sub"
    for i in range(3):
        c.send(f"/queue/{q}", f"m{i}", headers={"x-n": str(i)})
    msgs = collect(ls, 3)
    assert [m.body for m in msgs] == ["m0", "m1", "m2"]
    for i, m in enumerate(msgs):
        assert m.headers["destination"] == f"/queue/{q}"
        assert m.headers["subscription"] == "s1"
        assert m.headers["redelivered"] == "false"
        assert m.headers["x-delivery-count"] == "0"
        assert m.headers["x-n"] == str(i)
        assert ("ack" in m.headers) == (version == "1.2" and mode != "auto")
    if mode == "client":
        ack(c, version, msgs[-1], receipt="a")  # cumulative: acks all three
        assert ls.receipt() == "a"
    elif mode == "client-individual":
        for m in msgs:
            ack(c, version, m)
    c.disconnect(receipt="bye")
    # nothing comes back: everything was settled
    c2, l2 = connect(broker.stomp_port, version)
    c2.subscribe(f"/queue/{q}", id="s2", ack="auto")
    assert l2.no_message(0.4)
    c2.disconnect()


@pytest.mark.parametrize("version", VERSIONS)
def test_unacked_messages_are_redelivered(broker: StompBroker, version: str) -> None:
    q = qname()
    c, ls = connect(broker.stomp_port, version)
    c.subscribe(f"/queue/{q}", id="s1", ack="client-individual")
    for i in range(3):
        c.send(f"/queue/{q}", f"m{i}")
    msgs = collect(ls, 3)
    ack(c, version, msgs[0])
    ack(c, version, msgs[2], receipt="r")
    assert ls.receipt() == "r"
    c.disconnect()
    c2, l2 = connect(broker.stomp_port, version)
    c2.subscribe(f"/queue/{q}", id="s1", ack="client")
    m = l2.message()
    assert m.body == "m1"
    assert m.headers["redelivered"] == "true"
    assert m.headers["x-delivery-count"] == "1"
    ack(c2, version, m)
    c2.disconnect()


def test_client_mode_ack_is_cumulative_per_subscription(broker: StompBroker) -> None:
    q = qname()
    c, ls = connect(broker.stomp_port)
    c.subscribe(f"/queue/{q}", id="s1", ack="client")
    for i in range(4):
        c.send(f"/queue/{q}", f"m{i}")
    msgs = collect(ls, 4)
    c.ack(msgs[1].headers["ack"], receipt="r")  # settles m0 and m1
    assert ls.receipt() == "r"
    c.disconnect()
    c2, l2 = connect(broker.stomp_port)
    c2.subscribe(f"/queue/{q}", id="s1", ack="auto")
    assert [m.body for m in collect(l2, 2)] == ["m2", "m3"]
    assert l2.no_message(0.3)
    c2.disconnect()


def test_prefetch_count(broker: StompBroker) -> None:
    q = qname()
    c, ls = connect(broker.stomp_port)
    c.subscribe(f"/queue/{q}", id="s1", ack="client-individual", headers={"prefetch-count": "2"})
    for i in range(5):
        c.send(f"/queue/{q}", f"m{i}")
    msgs = collect(ls, 2)
    assert ls.no_message(0.3)
    c.ack(msgs[0].headers["ack"])
    assert ls.message().body == "m2"
    c.disconnect()


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_nack_requeues_and_requeue_false_dead_letters(broker: StompBroker, version: str) -> None:
    q, dlq = qname(), qname()
    c, ls = connect(broker.stomp_port, version)
    c.subscribe(f"/queue/{dlq}", id="dead", ack="auto")
    c.subscribe(f"/queue/{q}", id="s1", ack="client-individual",
                headers={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq})
    c.send(f"/queue/{q}", "hello")
    m = ls.message()
    nack(c, version, m)
    again = ls.message()
    assert again.body == "hello" and again.headers["redelivered"] == "true"
    assert again.headers["x-delivery-count"] == "1"
    nack(c, version, again, requeue="false")
    dead = ls.message()
    assert dead.body == "hello" and dead.headers["subscription"] == "dead"
    c.disconnect()


def test_unsubscribe_requeues_unacked(broker: StompBroker) -> None:
    q = qname()
    c, ls = connect(broker.stomp_port)
    c.subscribe(f"/queue/{q}", id="s1", ack="client")
    c.send(f"/queue/{q}", "x")
    ls.message()
    c.unsubscribe("s1", receipt="u")
    assert ls.receipt() == "u"
    c.subscribe(f"/queue/{q}", id="s2", ack="auto")
    m = ls.message()
    assert m.body == "x" and m.headers["redelivered"] == "true"
    c.disconnect()


# ---- receipts and transactions -------------------------------------------------------------------
def test_every_frame_gets_its_receipt(broker: StompBroker) -> None:
    q = qname()
    c, ls = connect(broker.stomp_port)
    c.subscribe(f"/queue/{q}", id="s1", ack="client", receipt="1")
    c.send(f"/queue/{q}", "x", receipt="2")
    m = ls.message()
    c.ack(m.headers["ack"], receipt="3")
    c.begin("tx1", receipt="4")
    c.commit("tx1", receipt="5")
    c.begin("tx2", receipt="6")
    c.abort("tx2", receipt="7")
    c.unsubscribe("s1", receipt="8")
    assert [ls.receipt() for _ in range(8)] == [str(i) for i in range(1, 9)]
    c.disconnect(receipt="9")
    assert ls.receipt() == "9"


@pytest.mark.parametrize("version", VERSIONS)
def test_transactions_hold_sends_and_acks(broker: StompBroker, version: str) -> None:
    q = qname()
    c, ls = connect(broker.stomp_port, version)
    c.subscribe(f"/queue/{q}", id="s1", ack="client-individual")
    c.begin("t1")
    c.send(f"/queue/{q}", "a", transaction="t1")
    c.send(f"/queue/{q}", "b", transaction="t1")
    assert ls.no_message(0.3)  # held until commit
    c.commit("t1")
    msgs = collect(ls, 2)
    assert [m.body for m in msgs] == ["a", "b"]
    c.begin("t2")
    c.send(f"/queue/{q}", "dropped", transaction="t2")
    ack(c, version, msgs[0], transaction="t2")  # aborted: stays unacked
    c.abort("t2")
    c.begin("t3")
    ack(c, version, msgs[1], transaction="t3")
    c.commit("t3", receipt="done")
    assert ls.receipt() == "done"
    assert ls.no_message(0.3)
    c.disconnect()
    c2, l2 = connect(broker.stomp_port, version)
    c2.subscribe(f"/queue/{q}", id="s1", ack="auto")
    assert l2.message().body == "a"  # its ack was aborted
    assert l2.no_message(0.3)
    c2.disconnect()


# ---- heart-beats ------------------------------------------------------------------------------------
class Beats(Collector):
    def __init__(self) -> None:
        super().__init__()
        self.beats = 0

    def on_heartbeat(self) -> None:
        self.beats += 1


def test_heart_beats_both_ways(broker: StompBroker) -> None:
    c = stomp.Connection12([("127.0.0.1", broker.stomp_port)], heartbeats=(200, 200))
    listener = Beats()
    c.set_listener("b", listener)
    c.connect("guest", "guest", wait=True)
    time.sleep(1.5)
    assert c.is_connected()
    assert listener.beats >= 3
    assert listener.disconnected.empty()
    q = qname()
    c.subscribe(f"/queue/{q}", id="s")
    c.send(f"/queue/{q}", "still here")
    assert listener.message().body == "still here"
    c.disconnect()


def test_silent_client_is_dropped(broker: StompBroker) -> None:
    raw = RawStomp(broker.stomp_port)
    raw.send(b"CONNECT\naccept-version:1.2\nhost:/\nlogin:guest\npasscode:guest\nheart-beat:200,0\n\n\x00")
    f = raw.frame()
    assert f is not None and f[0] == "CONNECTED" and f[1]["heart-beat"] == "0,200"
    t0 = time.monotonic()
    assert raw.closed(timeout=3)
    assert 0.3 < time.monotonic() - t0 < 2.0
    raw.close()


def test_client_that_beats_is_kept(broker: StompBroker) -> None:
    raw = RawStomp(broker.stomp_port)
    raw.send(b"CONNECT\naccept-version:1.2\nlogin:guest\npasscode:guest\nheart-beat:200,0\n\n\x00")
    assert raw.frame() is not None
    for _ in range(10):
        time.sleep(0.1)
        raw.send(b"\n")
    raw.send(b"DISCONNECT\nreceipt:r\n\n\x00")
    f = raw.frame()
    assert f is not None and f[0] == "RECEIPT" and f[1]["receipt-id"] == "r"
    raw.close()


# ---- destinations ---------------------------------------------------------------------------------------
def test_topic_fans_out_to_every_subscription(broker: StompBroker) -> None:
    c1, l1 = connect(broker.stomp_port)
    c2, l2 = connect(broker.stomp_port)
    c1.subscribe("/topic/news.*", id="a", receipt="r1")
    c2.subscribe("/topic/news.#", id="b", receipt="r2")
    assert l1.receipt() == "r1" and l2.receipt() == "r2"
    c1.send("/topic/news.sport", "goal")
    for ls in (l1, l2):
        m = ls.message()
        assert m.body == "goal" and m.headers["destination"] == "/topic/news.sport"
    c1.send("/topic/news.sport.football", "deep")
    assert l2.message().body == "deep"
    assert l1.no_message(0.3)
    c1.disconnect()
    c2.disconnect()


def test_durable_topic_subscription_across_reconnect(broker: StompBroker) -> None:
    sub_id = "dur-" + uuid.uuid4().hex[:8]
    c, _l = connect(broker.stomp_port)
    c.subscribe("/topic/durable.test", id=sub_id, ack="client-individual", headers={"durable": "true",
                                                                                   "auto-delete": "false"})
    c.disconnect()
    p, _ = connect(broker.stomp_port)
    p.send("/topic/durable.test", "while away", receipt="sent")
    p.disconnect()
    c2, l2 = connect(broker.stomp_port)
    c2.subscribe("/topic/durable.test", id=sub_id, ack="client-individual", headers={"durable": "true",
                                                                                    "auto-delete": "false"})
    m = l2.message()
    assert m.body == "while away"
    c2.ack(m.headers["ack"])
    # UNSUBSCRIBE with durable:true ends the subscription for good
    c2.unsubscribe(sub_id, headers={"durable": "true"}, receipt="gone")
    assert l2.receipt() == "gone"
    c2.send("/topic/durable.test", "nobody listens")
    c2.subscribe("/topic/durable.test", id=sub_id, headers={"durable": "true"})
    assert l2.no_message(0.3)
    c2.disconnect()


def test_exchange_destination(broker: StompBroker) -> None:
    c, ls = connect(broker.stomp_port)
    c.subscribe("/exchange/amq.direct/k1", id="d", receipt="r")
    assert ls.receipt() == "r"
    c.send("/exchange/amq.direct/k1", "direct hit")
    c.send("/exchange/amq.direct/k2", "miss")
    m = ls.message()
    assert m.body == "direct hit" and m.headers["destination"] == "/exchange/amq.direct/k1"
    assert ls.no_message(0.3)
    c.disconnect()


def test_amq_queue_destination_needs_existing_queue(broker: StompBroker) -> None:
    q = qname()
    c, ls = connect(broker.stomp_port)
    c.send(f"/queue/{q}", "made it", receipt="r")  # declares q
    assert ls.receipt() == "r"
    c.subscribe(f"/amq/queue/{q}", id="s")
    assert ls.message().body == "made it"
    c.send(f"/amq/queue/{q}", "again")
    assert ls.message().body == "again"
    c.disconnect()


def test_temp_queue_reply_to(broker: StompBroker) -> None:
    service = qname()
    server, sl = connect(broker.stomp_port)
    server.subscribe(f"/queue/{service}", id="svc", receipt="ready")
    assert sl.receipt() == "ready"
    client, cl = connect(broker.stomp_port)
    client.send(f"/queue/{service}", "ping", headers={"reply-to": "/temp-queue/replies", "correlation-id": "c1"})
    req = sl.message()
    reply_to = req.headers["reply-to"]
    assert reply_to.startswith("/reply-queue/amq.gen-")
    server.send(reply_to, "pong", headers={"correlation-id": req.headers["correlation-id"]})
    resp = cl.message()
    assert resp.body == "pong" and resp.headers["correlation-id"] == "c1"
    assert resp.headers["subscription"] == "/temp-queue/replies"
    client.disconnect()
    server.disconnect()


# ---- cross-protocol ---------------------------------------------------------------------------------------
def test_pika_publishes_stomp_consumes(broker: StompBroker) -> None:
    q = qname()
    amqp = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker.amqp_port))
    ch = amqp.channel()
    ch.queue_declare(q, durable=True)
    c, ls = connect(broker.stomp_port)
    c.subscribe(f"/queue/{q}", id="s", receipt="r")
    assert ls.receipt() == "r"
    props = pika.BasicProperties(content_type="application/json", correlation_id="corr", reply_to="back",
                                 priority=3, message_id="mid-1", type="order", app_id="shop", delivery_mode=2,
                                 expiration="60000", headers={"tenant": "acme", "n": 42, "ok": True})
    ch.basic_publish("", q, b'{"a": 1}', props)
    m = ls.message()
    h = m.headers
    assert m.body == '{"a": 1}'
    assert h["content-type"] == "application/json"
    assert h["correlation-id"] == "corr" and h["reply-to"] == "back" and h["priority"] == "3"
    assert h["amqp-message-id"] == "mid-1" and h["type"] == "order" and h["app-id"] == "shop"
    assert h["persistent"] == "true" and h["expiration"] == "60000"
    assert h["tenant"] == "acme" and h["n"] == "42" and h["ok"] == "true"
    c.disconnect()
    amqp.close()


def test_stomp_publishes_pika_consumes(broker: StompBroker) -> None:
    q = qname()
    c, ls = connect(broker.stomp_port)
    c.send(f"/queue/{q}", "\x00binary\x00body", content_type="application/octet-stream",
           headers={"persistent": "true", "correlation-id": "corr", "priority": "5", "tenant": "acme",
                    "amqp-message-id": "mid-2", "reply-to": "/queue/answers"}, receipt="r")
    assert ls.receipt() == "r"
    c.disconnect()
    amqp = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker.amqp_port))
    ch = amqp.channel()
    method, props, body = ch.basic_get(q, auto_ack=True)
    assert method is not None
    assert body == b"\x00binary\x00body"
    assert props.content_type == "application/octet-stream"
    assert props.delivery_mode == 2 and props.correlation_id == "corr" and props.priority == 5
    assert props.message_id == "mid-2" and props.reply_to == "/queue/answers"
    assert props.headers["tenant"] == "acme"
    assert "destination" not in props.headers and "receipt" not in props.headers
    amqp.close()


def test_stomp_topic_reaches_amqp_binding(broker: StompBroker) -> None:
    amqp = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker.amqp_port))
    ch = amqp.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, "amq.topic", "alerts.#")
    c, ls = connect(broker.stomp_port)
    c.send("/topic/alerts.disk", "full", receipt="r")
    assert ls.receipt() == "r"
    method, _, body = ch.basic_get(q, auto_ack=True)
    assert method is not None and method.routing_key == "alerts.disk" and body == b"full"
    c.disconnect()
    amqp.close()


# ---- bad input --------------------------------------------------------------------------------------------------
def _connect_raw(port: int) -> RawStomp:
    raw = RawStomp(port)
    raw.send(b"CONNECT\naccept-version:1.2\nlogin:guest\npasscode:guest\n\n\x00")
    f = raw.frame()
    assert f is not None and f[0] == "CONNECTED"
    return raw


def _expect_error(raw: RawStomp, message: str, receipt: str | None = None) -> dict[str, str]:
    f = raw.frame()
    assert f is not None, "connection closed without an ERROR frame"
    command, headers, body = f
    assert command == "ERROR", f
    assert headers["message"] == message, f
    assert body, "ERROR frame without details"
    if receipt is not None:
        assert headers["receipt-id"] == receipt
    assert raw.closed()
    raw.close()
    return headers


@pytest.mark.parametrize(("data", "message"), [
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\n\n\x00", "malformed frame"),  # a TLS hello
    (b"FROB\nreceipt:r1\n\n\x00", "command invalid"),
    (b"SEND\n\nno destination\x00", "syntax error"),
    (b"SEND\ndestination:/nowhere/x\n\n\x00", "syntax error"),
    (b"SEND\ndestination:/queue/a\nh:" + b"x" * 70000 + b"\n\n\x00", "malformed frame"),
    (b"SEND\ndestination:/queue/a\ncontent-length:99999999999\n\n", "content too large"),
    (b"ACK\nid:T_nosuch@@1\n\n\x00", "precondition failed"),
    (b"CONNECT\naccept-version:1.2\n\n\x00", "command invalid"),
    (b"COMMIT\ntransaction:none\n\n\x00", "precondition failed"),
])
def test_bad_frames_get_error_and_close(broker: StompBroker, data: bytes, message: str) -> None:
    raw = _connect_raw(broker.stomp_port)
    raw.send(data)
    _expect_error(raw, message)
    assert broker.alive()


def test_garbage_before_connect(broker: StompBroker) -> None:
    raw = RawStomp(broker.stomp_port)
    raw.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    _expect_error(raw, "malformed frame")


def test_frame_before_connect(broker: StompBroker) -> None:
    raw = RawStomp(broker.stomp_port)
    raw.send(b"SEND\ndestination:/queue/a\n\n\x00")
    _expect_error(raw, "command invalid")


def test_unsupported_version(broker: StompBroker) -> None:
    raw = RawStomp(broker.stomp_port)
    raw.send(b"CONNECT\naccept-version:2.0\n\n\x00")
    headers = _expect_error(raw, "not allowed")
    assert headers["version"] == "1.0,1.1,1.2"


def test_send_to_unknown_amq_queue(broker: StompBroker) -> None:
    raw = _connect_raw(broker.stomp_port)
    raw.send(b"SEND\ndestination:/amq/queue/does-not-exist\nreceipt:r42\n\nx\x00")
    _expect_error(raw, "not found", receipt="r42")


def test_bad_login(broker: StompBroker) -> None:
    c = stomp.Connection12([("127.0.0.1", broker.stomp_port)])
    listener = Collector()
    c.set_listener("c", listener)
    with pytest.raises(stomp.exception.ConnectFailedException):
        c.connect("guest", "wrong", wait=True)
    err = listener.error()
    assert err.headers["message"] == "access refused"
    raw = RawStomp(broker.stomp_port)
    raw.send(b"CONNECT\naccept-version:1.2\nlogin:nobody\npasscode:x\nreceipt:c\n\n\x00")
    _expect_error(raw, "access refused", receipt="c")


def test_broker_unaffected_after_bad_input(broker: StompBroker) -> None:
    for junk in (b"\x00" * 100, b"\xff" * 5000, b"\r\r\r", b"SEND\n" * 1000):
        raw = RawStomp(broker.stomp_port)
        raw.send(junk)
        raw.close()
    assert broker.alive()
    q = qname()
    c, ls = connect(broker.stomp_port)
    c.subscribe(f"/queue/{q}", id="s")
    c.send(f"/queue/{q}", "ok")
    assert ls.message().body == "ok"
    c.disconnect()


def test_no_stomp_flag() -> None:
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "haremq.cli", "serve", "--amqp-port", "0", "--no-stomp",
                             "--sqs-port", "0", "--management-port", "0",
                             "--data-dir", tempfile.mkdtemp(prefix="haremq-nostomp-"), "--log-level", "warning"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "ready: amqp://" in line and "stomp://" not in line
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


# ---- refused SENDs: an ERROR with the receipt-id, never a RECEIPT (issue 9, item 3) --------------------------------
def _declare_full_queue(amqp_port: int, q: str, body: bytes = b"old") -> pika.BlockingConnection:
    """A queue of one message at most, already holding one, that refuses further publishes."""
    amqp = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", amqp_port))
    ch = amqp.channel()
    ch.queue_declare(q, durable=True, arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    ch.basic_publish("", q, body)
    return amqp


def _queue_bodies(amqp: pika.BlockingConnection, q: str) -> list[bytes]:
    ch = amqp.channel()
    bodies = []
    while True:
        method, _props, body = ch.basic_get(q, auto_ack=False)
        if method is None:
            return bodies
        bodies.append(body)


def _refused(ls: Collector, receipt: str) -> Any:
    """The ERROR for a refused frame: it names ``receipt``, no RECEIPT came, and the connection ended."""
    err = ls.error()
    assert err.headers.get("receipt-id") == receipt, err.headers
    assert ls.disconnected.get(timeout=5)
    assert receipt not in list(ls.receipts.queue)
    return err


def test_send_to_full_reject_publish_queue_gets_error_not_receipt(broker: StompBroker) -> None:
    q = qname()
    amqp = _declare_full_queue(broker.amqp_port, q)
    c, ls = connect(broker.stomp_port)
    c.send(f"/amq/queue/{q}", "refused", receipt="r1")
    err = _refused(ls, "r1")
    assert err.headers["message"] == "resource error"
    assert "reject-publish" in err.body
    assert _queue_bodies(amqp, q) == [b"old"]  # the refused message is not stored
    amqp.close()


def test_send_to_queue_declared_full_over_stomp_headers(broker: StompBroker) -> None:
    q = qname()
    c, ls = connect(broker.stomp_port)
    h = {"x-max-length": "1", "x-overflow": "reject-publish"}
    c.send(f"/queue/{q}", "kept", headers=h, receipt="r1")
    assert ls.receipt() == "r1"
    c.send(f"/queue/{q}", "refused", headers=h, receipt="r2")
    _refused(ls, "r2")
    amqp = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker.amqp_port))
    assert _queue_bodies(amqp, q) == [b"kept"]
    amqp.close()


def test_send_refused_without_receipt_still_gets_error(broker: StompBroker) -> None:
    """A refusal is an error the client sees even when it asked for no receipt."""
    q = qname()
    amqp = _declare_full_queue(broker.amqp_port, q)
    c, ls = connect(broker.stomp_port)
    c.send(f"/amq/queue/{q}", "refused")
    err = ls.error()
    assert err.headers["message"] == "resource error" and "receipt-id" not in err.headers
    assert _queue_bodies(amqp, q) == [b"old"]
    amqp.close()


def test_receipts_waiting_for_the_disk_come_before_the_error(broker: StompBroker) -> None:
    """A persistent SEND still waiting for its fsync was kept: its RECEIPT goes out before the ERROR of a
    refused SEND pipelined right behind it (the client must not resend what was stored)."""
    q, full = qname(), qname()
    amqp = _declare_full_queue(broker.amqp_port, full)
    raw = _connect_raw(broker.stomp_port)
    raw.send(f"SEND\ndestination:/queue/{q}\npersistent:true\nreceipt:kept\n\nx\x00"
             f"SEND\ndestination:/amq/queue/{full}\nreceipt:refused\n\ny\x00".encode())
    f = raw.frame()
    assert f is not None and f[0] == "RECEIPT" and f[1]["receipt-id"] == "kept", f
    _expect_error(raw, "resource error", receipt="refused")
    assert amqp.channel().queue_declare(q, passive=True).method.message_count == 1
    amqp.close()


def test_commit_with_refused_send_gets_error_for_the_commit(broker: StompBroker) -> None:
    q = qname()
    amqp = _declare_full_queue(broker.amqp_port, q)
    c, ls = connect(broker.stomp_port)
    c.begin("t1", receipt="b")
    c.send(f"/amq/queue/{q}", "refused", transaction="t1", receipt="s")
    c.commit("t1", receipt="c")
    _refused(ls, "c")
    assert list(ls.receipts.queue) == ["b"]  # the held SEND got no RECEIPT: its message was never kept
    assert _queue_bodies(amqp, q) == [b"old"]
    amqp.close()


def test_transactional_send_receipt_comes_at_commit(broker: StompBroker) -> None:
    """A transactional SEND is receipted once its message is kept at COMMIT (as RabbitMQ), not when held;
    an aborted SEND gets none."""
    q = qname()
    c, ls = connect(broker.stomp_port)
    c.subscribe(f"/queue/{q}", id="s", receipt="sub")
    assert ls.receipt() == "sub"
    c.begin("t1")
    c.send(f"/queue/{q}", "a", transaction="t1", receipt="s1")
    c.begin("t2")
    c.send(f"/queue/{q}", "dropped", transaction="t2", receipt="s2")
    c.abort("t2", receipt="ab")
    assert ls.receipt() == "ab"
    c.commit("t1", receipt="c1")
    assert [ls.receipt(), ls.receipt()] == ["s1", "c1"]
    assert ls.message().body == "a"
    assert ls.no_message(0.3)
    assert ls.receipts.empty()
    c.disconnect()


def test_failed_fsync_sends_error_not_receipt_for_persistent_sends(monkeypatch: pytest.MonkeyPatch) -> None:
    """Mirrors tests/integration/test_fsync_failure.py for STOMP: the SEND whose fsync fails and every later
    persistent SEND get an ERROR; transient SENDs still get their RECEIPT."""
    from haremq.testing import running_broker

    def client(port: int) -> None:
        c, ls = connect(port)
        c.send("/queue/dur", "ok", headers={"persistent": "true"}, receipt="r0")
        assert ls.receipt() == "r0"

        def broken_fsync(fd: int) -> None:
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(os, "fsync", broken_fsync)
        c.send("/queue/dur", "lost?", headers={"persistent": "true"}, receipt="r1")
        assert _refused(ls, "r1").headers["message"] == "resource error"
        c2, l2 = connect(port)
        c2.send("/queue/dur", "transient", receipt="t")
        assert l2.receipt() == "t"
        c2.send("/queue/dur", "no", headers={"persistent": "true"}, receipt="r2")  # refused at once now
        assert _refused(l2, "r2").headers["message"] == "resource error"

    async def main() -> None:
        async with running_broker() as node:
            await asyncio.to_thread(client, node.stomp_port)
            assert node.broker.store_broken
            # ok, the one whose fsync failed (in RAM, never receipted) and the transient one
            assert node.broker.vhosts["/"].queues["dur"].message_count == 3

    asyncio.run(asyncio.wait_for(main(), 60))


def test_shutdown_sends_error_even_while_a_receipt_waits_for_the_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """A broker stopping does not wait for a slow fsync to tell a STOMP client: the ERROR goes out, and
    the RECEIPT that never became durable does not."""
    from haremq.testing import running_broker

    real_fsync, calls = os.fsync, []

    def slow_fsync(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 1:  # the SEND's: long enough for the broker to stop while it waits
            time.sleep(2)
        real_fsync(fd)

    def client(port: int) -> tuple[Any, list[str]]:
        c, ls = connect(port)
        monkeypatch.setattr(os, "fsync", slow_fsync)
        c.send("/queue/slow", "x", headers={"persistent": "true"}, receipt="r1")
        err = ls.error(timeout=10)
        return err, list(ls.receipts.queue)

    async def main() -> None:
        async with running_broker() as node:
            task = asyncio.ensure_future(asyncio.to_thread(client, node.stomp_port))
            while not node.waiting:  # the RECEIPT is held for the disk
                await asyncio.sleep(0.01)
        err, receipts = await task
        assert err.headers["message"] == "connection forced"
        assert receipts == []

    asyncio.run(asyncio.wait_for(main(), 60))



def test_persistent_send_on_full_disk_gets_error_not_receipt(small_fs: str) -> None:
    """Mirrors tests/crash/test_disk_full.py for STOMP: the SEND the store cannot write gets an ERROR
    with its receipt-id and is not stored; every receipted message is."""
    b = start_stomp_broker(data_dir=os.path.join(small_fs, "data"), env={"HAREMQ_DISK_FREE_LIMIT": "0"})
    c, ls = connect(b.stomp_port)
    body = "x" * 65536
    receipted, refused = 0, False
    for i in range(200):  # 12.5 MiB: far more than fits
        c.send("/queue/full", body, headers={"persistent": "true"}, receipt=f"r{i}")
        deadline = time.monotonic() + 10
        while ls.receipts.empty() and ls.errors.empty() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not ls.errors.empty():
            _refused(ls, f"r{i}")
            refused = True
            break
        assert ls.receipt(timeout=0) == f"r{i}"
        receipted += 1
    assert receipted > 0 and b.alive()
    amqp = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.amqp_port))
    # every RECEIPT stands for a stored message
    assert amqp.channel().queue_declare("full", passive=True).method.message_count == receipted
    amqp.close()
    assert refused
    assert stop_stomp_broker(b) == 0, b.log()


# ---- CONNECT without login (issue 9, item 7) ---------------------------------------------------------------------
def test_connect_without_login_is_refused_by_default(broker: StompBroker) -> None:
    raw = RawStomp(broker.stomp_port)
    raw.send(b"CONNECT\naccept-version:1.2\nhost:/\nreceipt:c\n\n\x00")
    _expect_error(raw, "access refused", receipt="c")
    c = stomp.Connection12([("127.0.0.1", broker.stomp_port)])
    listener = Collector()
    c.set_listener("c", listener)
    with pytest.raises(stomp.exception.ConnectFailedException):
        c.connect(wait=True)
    assert listener.error().headers["message"] == "access refused"


def _raw_connect(port: int, host: str, address: str = "127.0.0.1") -> tuple[str, dict[str, str], bytes] | None:
    raw = RawStomp.__new__(RawStomp)
    raw.sock, raw.buf = socket.create_connection((address, port), timeout=5), b""
    raw.send(f"CONNECT\naccept-version:1.2\nhost:{host}\n\n\x00".encode())
    f = raw.frame()
    raw.close()
    return f


def test_stomp_default_user_logs_in_with_that_users_permissions_only() -> None:
    b = start_stomp_broker(env={"HAREMQ_STOMP_DEFAULT_USER": "limited", "HAREMQ_STOMP_DEFAULT_PASS": "pw"})
    try:
        assert management(b, "PUT", "/api/vhosts/lv") in (201, 204)
        assert management(b, "PUT", "/api/users/limited", {"password": "pw", "tags": ""}) in (201, 204)
        assert management(b, "PUT", "/api/permissions/lv/limited",
                          {"configure": "^lim-", "write": "^(lim-|amq\\.default$)", "read": "^lim-"}) in (201, 204)
        # the default vhost is not the user's: refused
        f = _raw_connect(b.stomp_port, "/")
        assert f is not None and f[0] == "ERROR" and f[1]["message"] == "not allowed", f
        assert "user='limited' reason=no access to vhost '/'" in _log_until(b, "no access to vhost")
        # its own vhost: accepted, with its permissions there
        c = stomp.Connection12([("127.0.0.1", b.stomp_port)], vhost="lv")
        ls = Collector()
        c.set_listener("c", ls)
        c.connect(wait=True)
        c.subscribe("/queue/lim-a", id="s", receipt="sub")
        assert ls.receipt() == "sub"
        c.send("/queue/lim-a", "mine", receipt="r")
        assert ls.receipt() == "r"
        assert ls.message().body == "mine"
        c.send("/queue/other", "not mine", receipt="x")
        err = ls.error()
        assert err.headers["message"] == "access refused" and err.headers["receipt-id"] == "x"
        # a wrong stomp_default_pass is a refused login, not a fallback to anything else
        assert management(b, "PUT", "/api/users/limited", {"password": "changed", "tags": ""}) in (201, 204)
        f = _raw_connect(b.stomp_port, "lv")
        assert f is not None and f[0] == "ERROR" and f[1]["message"] == "access refused", f
    finally:
        assert stop_stomp_broker(b) == 0, b.log()


def _non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
        except OSError:
            return None
        addr = str(s.getsockname()[0])
    return None if addr.startswith("127.") or addr == "0.0.0.0" else addr


def test_stomp_default_user_guest_is_loopback_only() -> None:
    address = _non_loopback_address()
    if address is None:
        pytest.skip("no non-loopback IPv4 address")
    b = start_stomp_broker("--bind", "0.0.0.0", env={"HAREMQ_STOMP_DEFAULT_USER": "guest",
                                                    "HAREMQ_STOMP_DEFAULT_PASS": "guest"})
    try:
        f = _raw_connect(b.stomp_port, "/")
        assert f is not None and f[0] == "CONNECTED", f
        f = _raw_connect(b.stomp_port, "/", address)
        assert f is not None and f[0] == "ERROR" and f[1]["message"] == "access refused", f
        log = _log_until(b, "reason=user may only connect from loopback")
        assert f"peer={address}:" in log and "user='guest' reason=user may only connect from loopback" in log
    finally:
        assert stop_stomp_broker(b) == 0, b.log()


# ---- audit log (issue 9, item 11) ------------------------------------------------------------------------------------
def _log_until(b: StompBroker, needle: str, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        log = b.log()
        if needle in log or time.monotonic() > deadline:
            return log
        time.sleep(0.05)


def test_refused_logins_and_connections_are_audited() -> None:
    b = start_stomp_broker("--log-level", "info")
    try:
        raw = RawStomp(b.stomp_port)
        raw.send(b"CONNECT\naccept-version:1.2\nlogin:guest\npasscode:wrong\n\n\x00")
        _expect_error(raw, "access refused")
        raw = RawStomp(b.stomp_port)
        raw.send(b"CONNECT\naccept-version:1.2\nlogin:nobody\npasscode:x\n\n\x00")
        _expect_error(raw, "access refused")
        raw = RawStomp(b.stomp_port)
        raw.send(b"CONNECT\naccept-version:1.2\n\n\x00")
        _expect_error(raw, "access refused")
        c, _ls = connect(b.stomp_port)
        c.disconnect()
        log = _log_until(b, "reason=client sent DISCONNECT")
        lines = [line for line in log.splitlines() if "haremq.audit" in line and "protocol=stomp" in line]
        refused = [line for line in lines if "login refused:" in line]
        assert len(refused) == 3, lines
        assert "user='guest'" in refused[0] and "reason=invalid password" in refused[0]
        assert "user='nobody'" in refused[1] and "reason=unknown user" in refused[1]
        assert "user=None" in refused[2] and "reason=no credentials" in refused[2]
        assert all("peer=127.0.0.1:" in line for line in lines)
        opened = [line for line in lines if "connection opened" in line]
        assert len(opened) == 1 and "INFO" in opened[0] and "user='guest'" in opened[0] and "vhost='/'" in opened[0]
        closed = [line for line in lines if "connection closed" in line]
        assert len(closed) == 4 and all("INFO" in line for line in closed), closed
        assert sum("reason=login refused" in line for line in closed) == 3
        assert "user='guest'" in closed[-1] and "reason=client sent DISCONNECT" in closed[-1]
    finally:
        assert stop_stomp_broker(b) == 0, b.log()
