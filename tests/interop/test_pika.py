"""pika (BlockingConnection and SelectConnection) against a real haremq process."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pika
import pika.exceptions as pexc
import pytest

from pikahelp import params, uniq

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def conn(broker: Any) -> Iterator[pika.BlockingConnection]:
    c = pika.BlockingConnection(params(broker.port))
    yield c
    if c.is_open:
        c.close()
    assert broker.alive()


@pytest.fixture
def ch(conn: pika.BlockingConnection) -> pika.adapters.blocking_connection.BlockingChannel:
    return conn.channel()


def wait_for(conn: pika.BlockingConnection, cond: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        conn.process_data_events(time_limit=0.05)
    return True


def get_body(ch: Any, queue: str, ack: bool = True) -> bytes | None:
    method, _props, body = ch.basic_get(queue, auto_ack=ack)
    return None if method is None else body


def drain(ch: Any, queue: str) -> list[bytes]:
    out = []
    while True:
        b = get_body(ch, queue)
        if b is None:
            return out
        out.append(b)


def count(ch: Any, queue: str) -> int:
    return ch.queue_declare(queue, passive=True).method.message_count


# ---- basics -----------------------------------------------------------------------------------
def test_declare_publish_get_with_properties(ch: Any) -> None:
    q = uniq("basic")
    ok = ch.queue_declare(q)
    assert ok.method.queue == q and ok.method.message_count == 0 and ok.method.consumer_count == 0
    props = pika.BasicProperties(content_type="application/json", correlation_id="c-1", message_id="m-1",
                                 headers={"k": "v", "n": 7, "nested": {"a": 1}}, delivery_mode=2, priority=3,
                                 timestamp=1_700_000_000, type="t", app_id="app")
    ch.basic_publish("", q, b'{"x": 1}', props)
    ch.basic_publish("", q, b"second")
    assert count(ch, q) == 2
    method, got, body = ch.basic_get(q)
    assert body == b'{"x": 1}'
    assert method.message_count == 1 and not method.redelivered
    assert method.exchange == "" and method.routing_key == q
    assert got.content_type == "application/json" and got.correlation_id == "c-1" and got.message_id == "m-1"
    assert got.headers == {"k": "v", "n": 7, "nested": {"a": 1}}
    assert got.delivery_mode == 2 and got.priority == 3 and got.timestamp == 1_700_000_000
    assert got.type == "t" and got.app_id == "app"
    ch.basic_ack(method.delivery_tag)
    assert get_body(ch, q) == b"second"
    assert ch.basic_get(q) == (None, None, None)
    # server-named queue
    anon = ch.queue_declare("", exclusive=True).method.queue
    assert anon.startswith("amq.gen-")


def test_large_message_spans_frames(ch: Any) -> None:
    q = uniq("large")
    ch.queue_declare(q)
    body = bytes(range(256)) * 4096  # 1 MiB > frame_max
    ch.basic_publish("", q, body)
    assert get_body(ch, q) == body


def test_consume_and_ack(conn: Any, ch: Any) -> None:
    q = uniq("consume")
    ch.queue_declare(q)
    for i in range(10):
        ch.basic_publish("", q, str(i).encode())
    got: list[bytes] = []

    def on_msg(c: Any, m: Any, p: Any, body: bytes) -> None:
        got.append(body)
        c.basic_ack(m.delivery_tag)

    tag = ch.basic_consume(q, on_msg)
    assert wait_for(conn, lambda: len(got) == 10)
    assert got == [str(i).encode() for i in range(10)]
    ch.basic_cancel(tag)
    assert count(ch, q) == 0
    assert ch.queue_declare(q, passive=True).method.consumer_count == 0


def test_nack_requeue_and_reject(ch: Any) -> None:
    q = uniq("nack")
    ch.queue_declare(q)
    ch.basic_publish("", q, b"a")
    ch.basic_publish("", q, b"b")
    m1, _, b1 = ch.basic_get(q)
    assert b1 == b"a" and not m1.redelivered
    ch.basic_nack(m1.delivery_tag, requeue=True)
    m2, _, b2 = ch.basic_get(q)
    assert b2 == b"a" and m2.redelivered  # back at its original place, flagged
    ch.basic_reject(m2.delivery_tag, requeue=False)  # dropped (no DLX)
    m3, _, b3 = ch.basic_get(q)
    assert b3 == b"b"
    ch.basic_reject(m3.delivery_tag, requeue=True)
    m4, _, b4 = ch.basic_get(q)
    assert b4 == b"b" and m4.redelivered
    ch.basic_nack(m4.delivery_tag, requeue=False)
    assert count(ch, q) == 0


def test_nack_multiple(ch: Any) -> None:
    q = uniq("nackm")
    ch.queue_declare(q)
    for b in (b"1", b"2", b"3"):
        ch.basic_publish("", q, b)
    tags = [ch.basic_get(q)[0].delivery_tag for _ in range(3)]
    ch.basic_nack(tags[1], multiple=True, requeue=True)  # 1 and 2 back
    assert count(ch, q) == 2
    ch.basic_ack(tags[2])
    assert drain(ch, q) == [b"1", b"2"]


def test_unknown_delivery_tag_is_406(ch: Any) -> None:
    ch.basic_ack(12345)
    with pytest.raises(pexc.ChannelClosedByBroker) as ei:
        ch.queue_declare(uniq("after"))
    assert ei.value.reply_code == 406


# ---- confirms -----------------------------------------------------------------------------------
def test_publisher_confirms_and_mandatory_unroutable(ch: Any) -> None:
    q = uniq("confirm")
    ch.queue_declare(q)
    ch.confirm_delivery()
    for i in range(20):
        ch.basic_publish("", q, str(i).encode(), mandatory=True)
    assert count(ch, q) == 20
    with pytest.raises(pexc.UnroutableError) as ei:
        ch.basic_publish("amq.direct", uniq("nowhere"), b"lost", mandatory=True)
    assert len(ei.value.messages) == 1 and ei.value.messages[0].body == b"lost"
    assert ei.value.messages[0].method.reply_code == 312
    # non-mandatory unroutable is silently acked
    ch.basic_publish("amq.direct", uniq("nowhere"), b"dropped")
    # publish to a missing exchange closes the channel with 404
    with pytest.raises(pexc.ChannelClosedByBroker) as ei2:
        ch.basic_publish(uniq("no-such-exchange"), "rk", b"x")
    assert ei2.value.reply_code == 404


# ---- exchanges ----------------------------------------------------------------------------------
def test_exchange_types_direct_fanout_topic_headers(ch: Any) -> None:
    qs = {n: uniq(n) for n in ("d1", "d2", "f1", "f2", "t1", "t2", "t3", "hall", "hany")}
    for q in qs.values():
        ch.queue_declare(q, exclusive=True)
    d, f, t, h = uniq("direct"), uniq("fanout"), uniq("topic"), uniq("headers")
    ch.exchange_declare(d, "direct")
    ch.exchange_declare(f, "fanout")
    ch.exchange_declare(t, "topic")
    ch.exchange_declare(h, "headers")
    ch.queue_bind(qs["d1"], d, "red")
    ch.queue_bind(qs["d2"], d, "green")
    ch.queue_bind(qs["f1"], f, "ignored")
    ch.queue_bind(qs["f2"], f)
    ch.queue_bind(qs["t1"], t, "stock.*.nyse")
    ch.queue_bind(qs["t2"], t, "stock.#")
    ch.queue_bind(qs["t3"], t, "#.eur")
    ch.queue_bind(qs["hall"], h, arguments={"x-match": "all", "a": "1", "b": "2"})
    ch.queue_bind(qs["hany"], h, arguments={"x-match": "any", "a": "1", "b": "2"})

    ch.basic_publish(d, "red", b"r")
    ch.basic_publish(d, "blue", b"nobody")
    ch.basic_publish(f, "whatever", b"fan")
    ch.basic_publish(t, "stock.ibm.nyse", b"t-ibm")
    ch.basic_publish(t, "stock.eur", b"t-eur")
    ch.basic_publish(t, "stock.a.b.nyse", b"t-deep")
    ch.basic_publish(t, "bond.eur", b"t-bond")
    ch.basic_publish(h, "", b"h-both", pika.BasicProperties(headers={"a": "1", "b": "2"}))
    ch.basic_publish(h, "", b"h-a", pika.BasicProperties(headers={"a": "1", "b": "3"}))
    ch.basic_publish(h, "", b"h-none", pika.BasicProperties(headers={"c": "1"}))

    assert drain(ch, qs["d1"]) == [b"r"]
    assert drain(ch, qs["d2"]) == []
    assert drain(ch, qs["f1"]) == [b"fan"]
    assert drain(ch, qs["f2"]) == [b"fan"]
    assert drain(ch, qs["t1"]) == [b"t-ibm"]
    assert drain(ch, qs["t2"]) == [b"t-ibm", b"t-eur", b"t-deep"]
    assert drain(ch, qs["t3"]) == [b"t-eur", b"t-bond"]
    assert drain(ch, qs["hall"]) == [b"h-both"]
    assert drain(ch, qs["hany"]) == [b"h-both", b"h-a"]

    # unbind stops routing
    ch.queue_unbind(qs["d1"], d, "red")
    ch.basic_publish(d, "red", b"r2")
    assert drain(ch, qs["d1"]) == []
    ch.exchange_delete(d)
    with pytest.raises(pexc.ChannelClosedByBroker) as ei:
        ch.exchange_declare(d, "direct", passive=True)
    assert ei.value.reply_code == 404


def test_exchange_to_exchange_binding(ch: Any) -> None:
    src, dst = uniq("e2e-src"), uniq("e2e-dst")
    q = uniq("e2e-q")
    ch.exchange_declare(src, "topic")
    ch.exchange_declare(dst, "fanout")
    ch.queue_declare(q, exclusive=True)
    ch.queue_bind(q, dst)
    ch.exchange_bind(destination=dst, source=src, routing_key="a.*")
    ch.basic_publish(src, "a.b", b"routed")
    ch.basic_publish(src, "b.b", b"not-routed")
    assert drain(ch, q) == [b"routed"]
    ch.exchange_unbind(destination=dst, source=src, routing_key="a.*")
    ch.basic_publish(src, "a.b", b"after-unbind")
    assert drain(ch, q) == []


def test_alternate_exchange(ch: Any) -> None:
    main, ae = uniq("main"), uniq("ae")
    q_main, q_ae = uniq("q-main"), uniq("q-ae")
    ch.exchange_declare(ae, "fanout")
    ch.exchange_declare(main, "direct", arguments={"alternate-exchange": ae})
    ch.queue_declare(q_main, exclusive=True)
    ch.queue_declare(q_ae, exclusive=True)
    ch.queue_bind(q_main, main, "known")
    ch.queue_bind(q_ae, ae)
    ch.confirm_delivery()
    ch.basic_publish(main, "known", b"k", mandatory=True)
    ch.basic_publish(main, "unknown", b"u", mandatory=True)  # routed by the AE: no return
    assert drain(ch, q_main) == [b"k"]
    assert drain(ch, q_ae) == [b"u"]


# ---- dead-lettering, TTL, max-length ------------------------------------------------------------
def _death(props: Any) -> list[dict[str, Any]]:
    deaths = props.headers["x-death"]
    assert isinstance(deaths, list)
    return deaths


def test_dlx_on_reject_writes_x_death(ch: Any) -> None:
    dlx, work, dlq = uniq("dlx"), uniq("work"), uniq("dlq")
    src = uniq("src")
    ch.exchange_declare(dlx, "fanout")
    ch.exchange_declare(src, "direct")
    ch.queue_declare(dlq, exclusive=True)
    ch.queue_bind(dlq, dlx)
    ch.queue_declare(work, exclusive=True, arguments={"x-dead-letter-exchange": dlx})
    ch.queue_bind(work, src, "rk1")
    ch.basic_publish(src, "rk1", b"poison", pika.BasicProperties(headers={"orig": "yes"}))
    m, _, _ = ch.basic_get(work)
    ch.basic_reject(m.delivery_tag, requeue=False)
    m2, props, body = ch.basic_get(dlq)
    assert body == b"poison"
    assert m2.exchange == dlx and m2.routing_key == "rk1"
    assert props.headers["orig"] == "yes"
    (d,) = _death(props)
    assert d["count"] == 1
    assert d["reason"] == "rejected"
    assert d["queue"] == work
    assert d["exchange"] == src
    assert d["routing-keys"] == ["rk1"]
    assert props.headers["x-first-death-reason"] == "rejected"
    assert props.headers["x-first-death-queue"] == work


def test_dlx_cycle_increments_x_death_count(ch: Any) -> None:
    # work dead-letters to the default exchange with routing key = the retry queue, which TTLs back
    work, retry = uniq("work"), uniq("retry")
    ch.queue_declare(work, exclusive=True, arguments={
        "x-dead-letter-exchange": "", "x-dead-letter-routing-key": retry})
    ch.queue_declare(retry, exclusive=True, arguments={
        "x-dead-letter-exchange": "", "x-dead-letter-routing-key": work, "x-message-ttl": 50})
    ch.basic_publish("", work, b"again")
    for attempt in (1, 2):
        deadline = time.monotonic() + 5
        while True:
            m, props, body = ch.basic_get(work)
            if m is not None:
                break
            assert time.monotonic() < deadline, f"attempt {attempt}: message never came back"
            time.sleep(0.02)
        assert body == b"again"
        if attempt == 1:
            assert props.headers is None or "x-death" not in props.headers
        else:
            deaths = {(d["queue"], d["reason"]): d for d in _death(props)}
            assert deaths[(work, "rejected")]["count"] == 1
            assert deaths[(retry, "expired")]["count"] == 1
        ch.basic_reject(m.delivery_tag, requeue=False)


def test_message_ttl_dead_letters_expired(ch: Any) -> None:
    dlx, q, dlq = uniq("dlx"), uniq("ttl"), uniq("ttl-dlq")
    ch.exchange_declare(dlx, "fanout")
    ch.queue_declare(dlq, exclusive=True)
    ch.queue_bind(dlq, dlx)
    ch.queue_declare(q, exclusive=True, arguments={"x-message-ttl": 200, "x-dead-letter-exchange": dlx})
    ch.basic_publish("", q, b"short-lived")
    assert count(ch, q) == 1
    deadline = time.monotonic() + 5
    while count(ch, dlq) == 0:
        assert time.monotonic() < deadline, "message was not dead-lettered after its TTL"
        time.sleep(0.05)
    assert count(ch, q) == 0
    _, props, body = ch.basic_get(dlq, auto_ack=True)
    assert body == b"short-lived"
    (d,) = _death(props)
    assert d["reason"] == "expired" and d["queue"] == q and d["count"] == 1
    assert d["exchange"] == "" and d["routing-keys"] == [q]


def test_per_message_expiration(ch: Any) -> None:
    q = uniq("exp")
    ch.queue_declare(q, exclusive=True)
    ch.basic_publish("", q, b"gone", pika.BasicProperties(expiration="100"))
    ch.basic_publish("", q, b"stays")
    time.sleep(0.3)
    assert drain(ch, q) == [b"stays"]


def test_max_length_drop_head_dead_letters_maxlen(ch: Any) -> None:
    q, dlq = uniq("maxlen"), uniq("maxlen-dlq")
    ch.queue_declare(dlq, exclusive=True)
    ch.queue_declare(q, exclusive=True, arguments={"x-max-length": 2, "x-dead-letter-exchange": "",
                                                   "x-dead-letter-routing-key": dlq})
    for b in (b"1", b"2", b"3", b"4"):
        ch.basic_publish("", q, b)
    assert drain(ch, q) == [b"3", b"4"]
    _, props, body = ch.basic_get(dlq, auto_ack=True)
    assert body == b"1"
    assert _death(props)[0]["reason"] == "maxlen"
    assert drain(ch, dlq) == [b"2"]


def test_max_length_reject_publish_nacks(ch: Any) -> None:
    q = uniq("reject-pub")
    ch.queue_declare(q, exclusive=True, arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    ch.confirm_delivery()
    ch.basic_publish("", q, b"fits")
    with pytest.raises(pexc.NackError):
        ch.basic_publish("", q, b"too-many")
    assert drain(ch, q) == [b"fits"]
    ch.basic_publish("", q, b"fits-again")  # room again
    assert drain(ch, q) == [b"fits-again"]


def test_priority_queue_ordering(ch: Any) -> None:
    q = uniq("prio")
    ch.queue_declare(q, exclusive=True, arguments={"x-max-priority": 10})
    for prio, body in ((1, b"p1"), (5, b"p5a"), (9, b"p9"), (None, b"p0"), (5, b"p5b"), (3, b"p3")):
        ch.basic_publish("", q, body, pika.BasicProperties(priority=prio))
    assert drain(ch, q) == [b"p9", b"p5a", b"p5b", b"p3", b"p1", b"p0"]


# ---- consumers, prefetch, redelivery -------------------------------------------------------------
def test_prefetch_limits_in_flight(conn: Any, ch: Any) -> None:
    q = uniq("qos")
    ch.queue_declare(q, exclusive=True)
    for i in range(6):
        ch.basic_publish("", q, str(i).encode())
    ch.basic_qos(prefetch_count=2)
    got: list[Any] = []
    ch.basic_consume(q, lambda c, m, p, b: got.append((m.delivery_tag, b)))
    assert wait_for(conn, lambda: len(got) >= 2)
    conn.process_data_events(time_limit=0.3)
    assert len(got) == 2, "prefetch=2 must hold back the rest"
    ch.basic_ack(got[0][0])
    assert wait_for(conn, lambda: len(got) == 3)
    conn.process_data_events(time_limit=0.2)
    assert len(got) == 3
    ch.basic_ack(got[2][0], multiple=True)
    assert wait_for(conn, lambda: len(got) == 5)
    conn.process_data_events(time_limit=0.2)
    assert len(got) == 5
    assert [b for _, b in got] == [b"0", b"1", b"2", b"3", b"4"]


def test_redelivered_after_channel_close(conn: Any) -> None:
    q = uniq("redeliver")
    ch1 = conn.channel()
    ch1.queue_declare(q)
    ch1.basic_publish("", q, b"m")
    got: list[Any] = []
    ch1.basic_consume(q, lambda c, m, p, b: got.append(m))
    assert wait_for(conn, lambda: len(got) == 1)
    assert not got[0].redelivered
    ch1.close()  # unacked -> requeued
    ch2 = conn.channel()
    m, _, body = ch2.basic_get(q)
    assert body == b"m" and m.redelivered
    ch2.basic_ack(m.delivery_tag)
    ch2.queue_delete(q)


def test_redelivered_after_connection_drop(broker: Any, ch: Any) -> None:
    q = uniq("redeliver-conn")
    ch.queue_declare(q)
    ch.basic_publish("", q, b"m")
    other = pika.BlockingConnection(params(broker.port))
    m, _, _ = other.channel().basic_get(q)
    assert not m.redelivered
    other.close()
    assert wait_for(ch.connection, lambda: count(ch, q) == 1)
    m2, _, _ = ch.basic_get(q, auto_ack=True)
    assert m2.redelivered
    ch.queue_delete(q)


def test_basic_recover_requeues(ch: Any) -> None:
    q = uniq("recover")
    ch.queue_declare(q, exclusive=True)
    ch.basic_publish("", q, b"x")
    m, _, _ = ch.basic_get(q)
    assert not m.redelivered and count(ch, q) == 0
    ch.basic_recover(requeue=True)
    m2, _, body = ch.basic_get(q)
    assert body == b"x" and m2.redelivered
    ch.basic_ack(m2.delivery_tag)
    with pytest.raises(pexc.ChannelClosedByBroker):
        ch.basic_ack(m.delivery_tag)  # the old tag is gone
        ch.queue_declare(q, passive=True)


def test_single_active_consumer(conn: Any) -> None:
    q = uniq("sac")
    ch = conn.channel()
    ch.queue_declare(q, arguments={"x-single-active-consumer": True})
    a: list[bytes] = []
    b: list[bytes] = []
    ch_a, ch_b = conn.channel(), conn.channel()
    tag_a = ch_a.basic_consume(q, lambda c, m, p, body: (a.append(body), c.basic_ack(m.delivery_tag)))
    ch_b.basic_consume(q, lambda c, m, p, body: (b.append(body), c.basic_ack(m.delivery_tag)))
    for i in range(5):
        ch.basic_publish("", q, f"x{i}".encode())
    assert wait_for(conn, lambda: len(a) == 5)
    conn.process_data_events(time_limit=0.2)
    assert b == [], "only the active consumer may receive"
    ch_a.basic_cancel(tag_a)
    for i in range(3):
        ch.basic_publish("", q, f"y{i}".encode())
    assert wait_for(conn, lambda: len(b) == 3)
    assert b == [b"y0", b"y1", b"y2"] and len(a) == 5
    ch.queue_delete(q)


def test_consumer_cancel_notification_on_queue_delete(conn: Any) -> None:
    q = uniq("cancel-notify")
    ch = conn.channel()
    ch.queue_declare(q)
    cancelled: list[Any] = []
    ch.add_on_cancel_callback(lambda frame: cancelled.append(frame))
    tag = ch.basic_consume(q, lambda *a: None)
    other = conn.channel()
    other.queue_delete(q)
    assert wait_for(conn, lambda: bool(cancelled))
    assert cancelled[0].method.consumer_tag == tag
    assert ch.is_open and not ch.consumer_tags
    # the channel still works after the cancel
    q2 = uniq("after-cancel")
    ch.queue_declare(q2, exclusive=True)
    ch.basic_publish("", q2, b"ok")
    assert get_body(ch, q2) == b"ok"


# ---- errors -----------------------------------------------------------------------------------------
def test_exclusive_queue_locked_from_other_connection(broker: Any, ch: Any) -> None:
    q = uniq("excl")
    ch.queue_declare(q, exclusive=True)
    other = pika.BlockingConnection(params(broker.port))
    try:
        for op in (lambda c: c.queue_declare(q, passive=True), lambda c: c.basic_consume(q, lambda *a: None),
                   lambda c: c.basic_get(q), lambda c: c.queue_declare(q, exclusive=True)):
            oc = other.channel()
            with pytest.raises(pexc.ChannelClosedByBroker) as ei:
                op(oc)
            assert ei.value.reply_code == 405, ei.value
    finally:
        other.close()
    # the owner still uses it; it dies with the owning connection
    ch.basic_publish("", q, b"mine")
    assert get_body(ch, q) == b"mine"
    ch.connection.close()
    c2 = pika.BlockingConnection(params(broker.port))
    with pytest.raises(pexc.ChannelClosedByBroker) as ei:
        c2.channel().queue_declare(q, passive=True)
    assert ei.value.reply_code == 404
    c2.close()


def test_passive_declare_missing_is_404(conn: Any) -> None:
    with pytest.raises(pexc.ChannelClosedByBroker) as ei:
        conn.channel().queue_declare(uniq("missing"), passive=True)
    assert ei.value.reply_code == 404
    with pytest.raises(pexc.ChannelClosedByBroker) as ei:
        conn.channel().exchange_declare(uniq("missing-ex"), passive=True)
    assert ei.value.reply_code == 404
    assert conn.is_open


def test_redeclare_mismatch_is_406(conn: Any) -> None:
    q, ex = uniq("mismatch"), uniq("mismatch-ex")
    ch = conn.channel()
    ch.queue_declare(q, durable=False, arguments={"x-max-length": 5})
    ch.exchange_declare(ex, "direct")
    ch.queue_declare(q, durable=False, arguments={"x-max-length": 5})  # identical: fine
    cases = [
        lambda c: c.queue_declare(q, durable=True, arguments={"x-max-length": 5}),
        lambda c: c.queue_declare(q, arguments={"x-max-length": 6}),
        lambda c: c.queue_declare(q),
        lambda c: c.exchange_declare(ex, "fanout"),
        lambda c: c.exchange_declare(ex, "direct", durable=True),
    ]
    for case in cases:
        c = conn.channel()
        with pytest.raises(pexc.ChannelClosedByBroker) as ei:
            case(c)
        assert ei.value.reply_code == 406
        assert "inequivalent arg" in ei.value.reply_text
    conn.channel().queue_delete(q)
    conn.channel().exchange_delete(ex)


def test_reserved_names_are_403(conn: Any) -> None:
    with pytest.raises(pexc.ChannelClosedByBroker) as ei:
        conn.channel().queue_declare("amq.mine")
    assert ei.value.reply_code == 403
    with pytest.raises(pexc.ChannelClosedByBroker) as ei:
        conn.channel().exchange_declare("amq.mine", "direct")
    assert ei.value.reply_code == 403


# ---- tx ---------------------------------------------------------------------------------------------
def test_tx_commit_and_rollback(ch: Any) -> None:
    q = uniq("tx")
    ch.queue_declare(q, exclusive=True)
    ch.tx_select()
    ch.basic_publish("", q, b"rolled-back")
    assert count(ch, q) == 0  # nothing before commit
    ch.tx_rollback()
    assert count(ch, q) == 0
    ch.basic_publish("", q, b"c1")
    ch.basic_publish("", q, b"c2")
    ch.tx_commit()
    assert count(ch, q) == 2
    # acks are transactional too
    m, _, body = ch.basic_get(q)
    assert body == b"c1"
    ch.basic_ack(m.delivery_tag)
    ch.tx_rollback()  # the ack is discarded; the message stays unacked
    ch.basic_recover(requeue=True)
    m2, _, body2 = ch.basic_get(q)
    assert body2 == b"c1" and m2.redelivered
    ch.basic_ack(m2.delivery_tag)
    ch.tx_commit()
    assert drain(ch, q) == [b"c2"]
    ch.tx_commit()


def test_tx_publish_to_missing_exchange_fails_on_arrival_not_at_commit(conn: Any) -> None:
    c = conn.channel()
    q = uniq("txa")
    c.queue_declare(q)
    c.tx_select()
    c.basic_publish("", q, b"first")
    c.basic_publish("no-such-exchange", "k", b"second")
    with pytest.raises(pexc.ChannelClosedByBroker) as ei:
        c.tx_commit()  # pika sees the close while waiting for commit-ok
    assert ei.value.reply_code == 404
    other = conn.channel()
    assert count(other, q) == 0  # nothing of the failed transaction was routed
    other.queue_delete(q)


def test_tx_and_confirm_are_exclusive(conn: Any) -> None:
    c = conn.channel()
    c.tx_select()
    with pytest.raises(pexc.ChannelClosedByBroker) as ei:
        c.confirm_delivery()
    assert ei.value.reply_code == 406


# ---- purge / delete ------------------------------------------------------------------------------
def test_purge_and_delete_if_unused_if_empty(conn: Any) -> None:
    ch = conn.channel()
    q = uniq("purge")
    ch.queue_declare(q)
    for i in range(3):
        ch.basic_publish("", q, str(i).encode())
    assert ch.queue_purge(q).method.message_count == 3
    assert count(ch, q) == 0
    ch.basic_publish("", q, b"left")
    c2 = conn.channel()
    with pytest.raises(pexc.ChannelClosedByBroker) as ei:
        c2.queue_delete(q, if_empty=True)
    assert ei.value.reply_code == 406
    cons = conn.channel()
    cons.basic_qos(prefetch_count=1)
    cons.basic_consume(q, lambda *a: None)
    c3 = conn.channel()
    with pytest.raises(pexc.ChannelClosedByBroker) as ei:
        c3.queue_delete(q, if_unused=True)
    assert ei.value.reply_code == 406
    cons.close()
    assert ch.queue_delete(q, if_unused=True).method.message_count == 1
    with pytest.raises(pexc.ChannelClosedByBroker) as ei:
        ch.queue_declare(q, passive=True)
    assert ei.value.reply_code == 404
    # deleting a missing queue is fine (RabbitMQ: delete-ok, 0 messages)
    assert conn.channel().queue_delete(uniq("never")).method.message_count == 0


# ---- SelectConnection ---------------------------------------------------------------------------------
def test_select_connection_round_trip(broker: Any) -> None:
    q = uniq("select")
    received: list[bytes] = []
    errors: list[Any] = []
    state: dict[str, Any] = {}

    def on_open(connection: Any) -> None:
        connection.channel(on_open_callback=on_channel)

    def on_channel(channel: Any) -> None:
        state["ch"] = channel
        channel.queue_declare(q, exclusive=True, callback=on_declared)

    def on_declared(frame: Any) -> None:
        # pika does not hold basic.publish behind a pending RPC: wait for select-ok before publishing
        state["ch"].confirm_delivery(on_confirm, callback=on_select_ok)

    def on_select_ok(frame: Any) -> None:
        ch = state["ch"]
        ch.basic_consume(q, on_message)
        for i in range(5):
            ch.basic_publish("", q, f"s{i}".encode())

    def maybe_done() -> None:
        confirms = state.get("confirms", [])
        if len(received) == 5 and confirms and max(m.delivery_tag for m in confirms) == 5:
            state["ch"].connection.close()

    def on_confirm(frame: Any) -> None:
        state.setdefault("confirms", []).append(frame.method)
        maybe_done()

    def on_message(ch: Any, method: Any, props: Any, body: bytes) -> None:
        received.append(body)
        ch.basic_ack(method.delivery_tag)
        maybe_done()

    conn = pika.SelectConnection(
        params(broker.port), on_open_callback=on_open,
        on_open_error_callback=lambda c, e: (errors.append(e), c.ioloop.stop()),
        on_close_callback=lambda c, reason: c.ioloop.stop())
    timer = threading.Timer(15, lambda: conn.ioloop.add_callback_threadsafe(conn.ioloop.stop))
    timer.start()
    try:
        conn.ioloop.start()
    finally:
        timer.cancel()
    assert not errors
    assert received == [f"s{i}".encode() for i in range(5)]
    confirmed = state.get("confirms", [])
    assert confirmed and all(isinstance(m, pika.spec.Basic.Ack) for m in confirmed)
    assert max(m.delivery_tag for m in confirmed) == 5
