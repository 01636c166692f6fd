"""AMQP 0-9-1 semantics as RabbitMQ has them, through pika, against a real broker process."""

from __future__ import annotations

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


def wait_for(conn: Any, cond: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        conn.process_data_events(time_limit=0.05)
    return True


def exists(conn: Any, q: str) -> bool:
    try:
        conn.channel().queue_declare(q, passive=True)
    except pexc.ChannelClosedByBroker as e:
        assert e.reply_code == 404
        return False
    return True


def test_heartbeats_keep_an_idle_connection_alive(broker: Any) -> None:
    c = pika.BlockingConnection(params(broker.port, heartbeat=1))
    try:
        ch = c.channel()
        q = ch.queue_declare("", exclusive=True).method.queue
        c.sleep(3.5)  # services heartbeats; without the broker's, pika would drop the connection
        assert c.is_open
        ch.basic_publish("", q, b"still here")
        assert ch.basic_get(q, auto_ack=True)[2] == b"still here"
    finally:
        c.close()


def test_small_negotiated_frame_max_splits_bodies(broker: Any) -> None:
    c = pika.BlockingConnection(params(broker.port, frame_max=4096))
    try:
        ch = c.channel()
        q = ch.queue_declare("", exclusive=True).method.queue
        body = bytes(range(256)) * 400  # 100 KiB in 4 KiB frames, both ways
        ch.basic_publish("", q, body)
        got: list[bytes] = []
        ch.basic_consume(q, lambda c_, m, p, b: got.append(b), auto_ack=True)
        assert wait_for(c, lambda: bool(got))
        assert got == [body]
    finally:
        c.close()


def test_queue_x_expires_deletes_unused_queue(conn: Any) -> None:
    q = uniq("expires")
    conn.channel().queue_declare(q, arguments={"x-expires": 300})
    assert exists(conn, q)  # a passive declare counts as use (as in RabbitMQ): the clock restarts here
    time.sleep(0.15)
    assert exists(conn, q)
    time.sleep(1.0)  # untouched for > x-expires
    assert not exists(conn, q), "queue with x-expires was not deleted"


def test_auto_delete_queue_goes_with_its_last_consumer(conn: Any) -> None:
    q = uniq("autodel")
    ch = conn.channel()
    ch.queue_declare(q, auto_delete=True)
    t1 = ch.basic_consume(q, lambda *a: None)
    t2 = ch.basic_consume(q, lambda *a: None)
    ch.basic_cancel(t1)
    assert exists(conn, q)
    ch.basic_cancel(t2)
    assert not exists(conn, q)


def test_exclusive_consumer_refuses_others(conn: Any) -> None:
    q = uniq("exclusive-consumer")
    ch = conn.channel()
    ch.queue_declare(q, exclusive=True)
    ch.basic_consume(q, lambda *a: None, exclusive=True)
    other = conn.channel()
    with pytest.raises(pexc.ChannelClosedByBroker) as ei:
        other.basic_consume(q, lambda *a: None)
    assert ei.value.reply_code == 403


def test_consumer_tag_reuse_is_530(broker: Any) -> None:
    c = pika.BlockingConnection(params(broker.port))
    ch = c.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.basic_consume(q, lambda *a: None, consumer_tag="dup")
    with pytest.raises((pexc.ConnectionClosedByBroker, pexc.ChannelClosedByBroker, pexc.DuplicateConsumerTag)):
        ch.basic_consume(q, lambda *a: None, consumer_tag="dup")
        c.channel()
    if c.is_open:
        c.close()


def test_consumer_tag_reuse_raw_is_530(broker: Any) -> None:
    # pika refuses a duplicate tag client-side, so check the wire answer with a raw client
    from amqp_raw import RawAmqp
    from pamqp import commands as C

    with RawAmqp(broker.port) as c:
        c.handshake()
        c.open_channel(1)
        c.send_method(1, C.Queue.Declare(queue="", exclusive=True))
        _, ok = c.expect(C.Queue.DeclareOk)
        c.send_method(1, C.Basic.Consume(queue=ok.queue, consumer_tag="dup"))
        c.expect(C.Basic.ConsumeOk)
        c.send_method(1, C.Basic.Consume(queue=ok.queue, consumer_tag="dup"))
        c.expect_connection_close(530)


def test_max_length_bytes(conn: Any) -> None:
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True, arguments={"x-max-length-bytes": 10}).method.queue
    for b in (b"aaaa", b"bbbb", b"cccc"):
        ch.basic_publish("", q, b)
    got = []
    while (r := ch.basic_get(q, auto_ack=True))[0] is not None:
        got.append(r[2])
    assert got == [b"bbbb", b"cccc"]


def test_global_qos_limits_the_channel(conn: Any) -> None:
    ch = conn.channel()
    q1 = ch.queue_declare("", exclusive=True).method.queue
    q2 = ch.queue_declare("", exclusive=True).method.queue
    for i in range(5):
        ch.basic_publish("", q1, f"a{i}".encode())
        ch.basic_publish("", q2, f"b{i}".encode())
    ch.basic_qos(prefetch_count=3, global_qos=True)
    got: list[Any] = []
    ch.basic_consume(q1, lambda c, m, p, b: got.append(m))
    ch.basic_consume(q2, lambda c, m, p, b: got.append(m))
    assert wait_for(conn, lambda: len(got) >= 3)
    conn.process_data_events(time_limit=0.3)
    assert len(got) == 3
    ch.basic_ack(got[-1].delivery_tag, multiple=True)
    assert wait_for(conn, lambda: len(got) == 6)
    conn.process_data_events(time_limit=0.2)
    assert len(got) == 6


def test_no_ack_consumer_ignores_prefetch_and_settles(conn: Any) -> None:
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.basic_qos(prefetch_count=1)
    for i in range(10):
        ch.basic_publish("", q, str(i).encode())
    got: list[bytes] = []
    ch.basic_consume(q, lambda c, m, p, b: got.append(b), auto_ack=True)
    assert wait_for(conn, lambda: len(got) == 10)
    ch.close()
    c2 = conn.channel()
    assert c2.queue_declare(q, passive=True).method.message_count == 0


def test_consumer_priorities(conn: Any) -> None:
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    lo: list[bytes] = []
    hi: list[bytes] = []
    ch.basic_consume(q, lambda c, m, p, b: lo.append(b), auto_ack=True, arguments={"x-priority": 1})
    ch.basic_consume(q, lambda c, m, p, b: hi.append(b), auto_ack=True, arguments={"x-priority": 10})
    for i in range(6):
        ch.basic_publish("", q, str(i).encode())
    assert wait_for(conn, lambda: len(lo) + len(hi) == 6)
    assert len(hi) == 6 and lo == []


def test_publish_to_internal_exchange_is_403(conn: Any) -> None:
    ex = uniq("internal")
    conn.channel().exchange_declare(ex, "fanout", internal=True)
    ch = conn.channel()
    ch.confirm_delivery()
    with pytest.raises(pexc.ChannelClosedByBroker) as ei:
        ch.basic_publish(ex, "", b"x")
    assert ei.value.reply_code == 403
    conn.channel().exchange_delete(ex)


def test_user_id_must_match_the_login(conn: Any) -> None:
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.confirm_delivery()
    ch.basic_publish("", q, b"ok", pika.BasicProperties(user_id="guest"))
    with pytest.raises(pexc.ChannelClosedByBroker) as ei:
        ch.basic_publish("", q, b"forged", pika.BasicProperties(user_id="admin"))
    assert ei.value.reply_code == 406


def test_exchange_delete_if_unused_and_auto_delete(conn: Any) -> None:
    ch = conn.channel()
    ex, ad = uniq("ifunused"), uniq("autodel-ex")
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.exchange_declare(ex, "direct")
    ch.queue_bind(q, ex, "k")
    with pytest.raises(pexc.ChannelClosedByBroker) as ei:
        conn.channel().exchange_delete(ex, if_unused=True)
    assert ei.value.reply_code == 406
    ch.queue_unbind(q, ex, "k")
    ch.exchange_delete(ex, if_unused=True)
    ch.exchange_declare(ad, "fanout", auto_delete=True)
    ch.queue_bind(q, ad)
    ch.exchange_declare(ad, "fanout", passive=True)
    ch.queue_unbind(q, ad)
    with pytest.raises(pexc.ChannelClosedByBroker) as ei:
        conn.channel().exchange_declare(ad, "fanout", passive=True)
    assert ei.value.reply_code == 404


def test_basic_get_on_single_active_consumer_queue_with_consumer_is_405(conn: Any) -> None:
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True, arguments={"x-single-active-consumer": True}).method.queue
    ch.basic_consume(q, lambda *a: None)
    with pytest.raises(pexc.ChannelClosedByBroker) as ei:
        conn.channel().basic_get(q)
    assert ei.value.reply_code == 405


def test_invalid_queue_arguments_are_406(conn: Any) -> None:
    for args in ({"x-max-length": -1}, {"x-message-ttl": "soon"}, {"x-overflow": "explode"},
                 {"x-max-priority": 1000}, {"x-expires": 0}, {"x-queue-type": "nonsense"}):
        with pytest.raises(pexc.ChannelClosedByBroker) as ei:
            conn.channel().queue_declare(uniq("badargs"), arguments=args)
        assert ei.value.reply_code == 406, args
    assert conn.is_open


def test_cc_and_bcc_headers_route_and_bcc_is_stripped(conn: Any) -> None:
    ch = conn.channel()
    a, b, c = (ch.queue_declare("", exclusive=True).method.queue for _ in range(3))
    ex = uniq("cc")
    ch.exchange_declare(ex, "direct", auto_delete=True)
    for q in (a, b, c):
        ch.queue_bind(q, ex, q)
    ch.basic_publish(ex, a, b"m", pika.BasicProperties(headers={"CC": [b], "BCC": [c]}))
    for q in (a, b, c):
        _, props, body = ch.basic_get(q, auto_ack=True)
        assert body == b"m", q
        assert "BCC" not in (props.headers or {}), "BCC must not be delivered"


def test_many_channels_and_channel_reuse(conn: Any) -> None:
    chans = [conn.channel() for _ in range(50)]
    q = chans[0].queue_declare("", exclusive=True).method.queue
    for i, c in enumerate(chans):
        c.basic_publish("", q, str(i).encode())
    for c in chans[::2]:
        c.close()
    assert chans[1].queue_declare(q, passive=True).method.message_count == 50


# RabbitMQ accepts any UTF-8 short string as a name; pamqp's own name regex must not leak into ours
ODD_NAMES = ("pct%2Fname", "nul\x00name", "new\nline", "grüße", "snow☃man")


@pytest.mark.parametrize("stem", ODD_NAMES)
def test_names_with_any_utf8_work_end_to_end(conn: Any, stem: str) -> None:
    name = uniq(stem)
    ch = conn.channel()
    ch.confirm_delivery()
    ch.exchange_declare(name, "direct")
    assert ch.queue_declare(name).method.queue == name
    ch.queue_bind(name, name, routing_key=name)
    ch.basic_publish(name, name, b"odd", mandatory=True)
    got: list[tuple[str, str, str, bytes]] = []
    tag = ch.basic_consume(name, lambda c, m, p, b: got.append((m.consumer_tag, m.exchange, m.routing_key, b)),
                           auto_ack=True, consumer_tag=name)
    assert tag == name
    assert wait_for(conn, lambda: bool(got))
    assert got == [(name, name, name, b"odd")]
    ch.basic_cancel(name)
    ch.queue_unbind(name, name, routing_key=name)
    ch.queue_delete(name)
    ch.exchange_delete(name)


def test_durable_queues_exchanges_and_bindings_with_odd_names_survive_a_restart() -> None:
    from brokerproc import start_broker, stop_broker

    b = start_broker()
    names = [uniq(stem) for stem in ODD_NAMES]
    try:
        c = pika.BlockingConnection(params(b.port))
        ch = c.channel()
        ch.confirm_delivery()
        for n in names:
            assert ch.queue_declare(n, durable=True).method.queue == n
            ch.exchange_declare(n, "direct", durable=True)
            ch.queue_bind(n, n, routing_key=n)
            ch.basic_publish("", n, n.encode(), pika.BasicProperties(delivery_mode=2))
        c.close()
    finally:
        assert stop_broker(b) == 0, b.log()
    b = start_broker(data_dir=b.data_dir)
    try:
        c = pika.BlockingConnection(params(b.port))
        ch = c.channel()
        ch.confirm_delivery()
        for n in names:
            assert ch.queue_declare(n, passive=True).method.message_count == 1, n
            assert ch.basic_get(n, auto_ack=True)[2] == n.encode()
            ch.exchange_declare(n, passive=True)
            ch.basic_publish(n, n, b"via the restored binding", mandatory=True)  # unroutable would raise
            assert ch.basic_get(n, auto_ack=True)[2] == b"via the restored binding"
        c.close()
    finally:
        assert stop_broker(b) == 0, b.log()
    assert "Traceback" not in b.log()


def test_redeclare_of_an_exclusive_queue_is_405_before_any_equivalence(broker: Any, conn: Any) -> None:
    """RabbitMQ checks the lock first: another connection gets 405 whatever its declare says, and a
    mismatched ``exclusive`` flag is 405 on the owner's connection too, never 406."""
    q, shared = uniq("locked"), uniq("shared")
    conn.channel().queue_declare(q, exclusive=True)
    conn.channel().queue_declare(shared)
    other = pika.BlockingConnection(params(broker.port))
    try:
        for kw in ({"exclusive": True}, {"exclusive": False}, {"durable": True}, {"auto_delete": True},
                   {"arguments": {"x-max-length": 3}}, {"exclusive": True, "durable": True}):
            with pytest.raises(pexc.ChannelClosedByBroker) as ei:
                other.channel().queue_declare(q, **kw)
            assert ei.value.reply_code == 405, (kw, ei.value)
    finally:
        other.close()
    for name, kw in ((q, {"exclusive": False}), (q, {"exclusive": False, "durable": True}),
                     (shared, {"exclusive": True}), (shared, {"exclusive": True, "durable": True})):
        with pytest.raises(pexc.ChannelClosedByBroker) as ei:
            conn.channel().queue_declare(name, **kw)
        assert ei.value.reply_code == 405, (name, kw, ei.value)
        assert "exclusive property value does not match" in ei.value.reply_text
    # a matching redeclare by the owner is fine (exclusive queues are never durable, as in RabbitMQ);
    # an inequivalent auto_delete is still 406
    conn.channel().queue_declare(q, exclusive=True)
    conn.channel().queue_declare(q, exclusive=True, durable=True)
    with pytest.raises(pexc.ChannelClosedByBroker) as ei:
        conn.channel().queue_declare(q, exclusive=True, auto_delete=True)
    assert ei.value.reply_code == 406
    conn.channel().queue_delete(shared)


def test_declaring_the_default_exchange_is_403_passive_or_not(conn: Any) -> None:
    for kw in ({"passive": True}, {"exchange_type": "direct"}, {"exchange_type": "direct", "durable": True}):
        with pytest.raises(pexc.ChannelClosedByBroker) as ei:
            conn.channel().exchange_declare("", **kw)
        assert ei.value.reply_code == 403, (kw, ei.value)
        assert ei.value.reply_text == "ACCESS_REFUSED - operation not permitted on the default exchange"


def test_unbind_of_what_is_already_gone_is_unbind_ok(broker: Any, conn: Any) -> None:
    """RabbitMQ 3.10 removes bindings idempotently: a missing source, destination or binding is
    unbind-ok; bind still says 404, and the default exchange is still 403 either way."""
    ch = conn.channel()
    q, ex, ex2 = uniq("unbind-q"), uniq("unbind-x"), uniq("unbind-x2")
    ch.queue_declare(q)
    ch.exchange_declare(ex, "direct")
    ch.queue_unbind(uniq("no-queue"), ex, "rk")  # missing destination queue
    ch.queue_unbind(q, uniq("no-exchange"), "rk")  # missing source exchange
    ch.queue_unbind(uniq("no-queue"), uniq("no-exchange"), "rk")  # both
    ch.queue_unbind(q, ex, "never-bound")  # missing binding
    ch.exchange_unbind(uniq("no-dest"), ex, "rk")
    ch.exchange_unbind(ex, uniq("no-source"), "rk")
    ch.exchange_declare(ex2, "fanout")
    ch.exchange_unbind(ex2, ex, "never-bound")
    ch.queue_bind(q, ex, "rk")
    ch.basic_publish(ex, "rk", b"bound")
    ch.queue_unbind(q, ex, "rk")
    ch.queue_unbind(q, ex, "rk")  # twice
    ch.basic_publish(ex, "rk", b"unbound")
    assert ch.queue_declare(q, passive=True).method.message_count == 1
    for op in (lambda c: c.queue_bind(uniq("no-queue"), ex, "rk"), lambda c: c.queue_bind(q, uniq("no-x"), "rk"),
               lambda c: c.exchange_bind(uniq("no-dest"), ex, "rk")):
        with pytest.raises(pexc.ChannelClosedByBroker) as ei:
            op(conn.channel())
        assert ei.value.reply_code == 404
    for op in (lambda c: c.queue_unbind(q, "", q), lambda c: c.exchange_unbind("", ex, "rk"),
               lambda c: c.exchange_bind("", ex, "rk"), lambda c: c.exchange_unbind(ex, "", "rk")):
        with pytest.raises(pexc.ChannelClosedByBroker) as ei:
            op(conn.channel())
        assert ei.value.reply_code == 403
    ch.queue_delete(q)
    ch.exchange_delete(ex)
    ch.exchange_delete(ex2)


def test_unbind_from_another_connections_exclusive_queue(broker: Any, conn: Any) -> None:
    """405 only for a binding that exists (RabbitMQ checks the lock when it removes one)."""
    q = uniq("excl-unbind")
    ch = conn.channel()
    ch.queue_declare(q, exclusive=True)
    ch.queue_bind(q, "amq.direct", "bound")
    other = pika.BlockingConnection(params(broker.port))
    try:
        other.channel().queue_unbind(q, "amq.direct", "not-bound")
        with pytest.raises(pexc.ChannelClosedByBroker) as ei:
            other.channel().queue_unbind(q, "amq.direct", "bound")
        assert ei.value.reply_code == 405
    finally:
        other.close()
    ch.basic_publish("amq.direct", "bound", b"still bound")
    assert ch.basic_get(q, auto_ack=True)[2] == b"still bound"


def test_update_secret_reauthenticates_the_open_connection(broker: Any) -> None:
    c = pika.BlockingConnection(params(broker.port))
    ch = c.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    c.update_secret("guest", "token rotation")  # update-secret-ok; the connection carries on
    ch.basic_publish("", q, b"after update")
    assert ch.basic_get(q, auto_ack=True)[2] == b"after update"
    with pytest.raises(pexc.ConnectionClosedByBroker) as ei:
        c.update_secret("not-the-password", "bad rotation")
        c.channel()
    assert ei.value.reply_code == 530
    assert ei.value.reply_text == "NOT_ALLOWED - New secret was refused by one of the backends"
    assert broker.alive()


def test_refused_logins_and_connection_open_close_are_logged() -> None:
    """The client is told 'see the broker logfile': the log says who, from where, and why."""
    from amqp_raw import RawAmqp
    from pamqp import commands as C

    from brokerproc import start_broker, stop_broker

    b = start_broker("--log-level", "info")
    try:
        with RawAmqp(b.port) as bad:
            bad_port = bad.sock.getsockname()[1]
            assert isinstance(bad.start("guest", "wrong"), C.Connection.Close)
        with RawAmqp(b.port) as nobody:
            nobody_port = nobody.sock.getsockname()[1]
            assert isinstance(nobody.start("mallory", "x"), C.Connection.Close)
        with RawAmqp(b.port) as vh:
            vh_port = vh.sock.getsockname()[1]
            tune = vh.start()
            vh.send_method(0, C.Connection.TuneOk(channel_max=0, frame_max=tune.frame_max, heartbeat=0))
            vh.send_method(0, C.Connection.Open(virtual_host="no-such-vhost"))
            vh.expect_connection_close(530)
        with RawAmqp(b.port) as good:
            good_port = good.sock.getsockname()[1]
            good.handshake()
            good.send_method(0, C.Connection.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0))
            good.expect(C.Connection.CloseOk)
        with RawAmqp(b.port) as dropped:
            dropped_port = dropped.sock.getsockname()[1]
            dropped.handshake()
        with RawAmqp(b.port) as broken:
            broken_port = broken.sock.getsockname()[1]
            broken.handshake()
            broken.send_method(5, C.Basic.Qos(prefetch_count=1))  # channel never opened: 504
            broken.expect_connection_close(504)
        deadline = time.monotonic() + 5
        while f"peer=127.0.0.1:{broken_port} user='guest' reason=CHANNEL_ERROR" not in b.log():
            assert time.monotonic() < deadline, b.log()
            time.sleep(0.05)
        time.sleep(0.2)
        log = b.log()
    finally:
        stop_broker(b)
    for line in (
        f"login refused: protocol=amqp peer=127.0.0.1:{bad_port} user='guest' reason=invalid credentials",
        f"login refused: protocol=amqp peer=127.0.0.1:{nobody_port} user='mallory' reason=invalid credentials",
        f"login refused: protocol=amqp peer=127.0.0.1:{vh_port} user='guest' reason=vhost no-such-vhost not found",
        f"connection opened: protocol=amqp peer=127.0.0.1:{good_port} user='guest' vhost='/'",
        f"connection closed: protocol=amqp peer=127.0.0.1:{good_port} user='guest' reason=client closed: 200 bye",
        f"connection opened: protocol=amqp peer=127.0.0.1:{dropped_port} user='guest' vhost='/'",
        f"connection closed: protocol=amqp peer=127.0.0.1:{dropped_port} user='guest' "
        "reason=client unexpectedly closed TCP connection",
        f"connection closed: protocol=amqp peer=127.0.0.1:{broken_port} user='guest' reason=CHANNEL_ERROR - ",
    ):
        assert line in log, (line, log)
    assert f"connection opened: protocol=amqp peer=127.0.0.1:{bad_port}" not in log


def test_stomp_values_longer_than_a_short_string_reach_amqp_consumers_clipped(broker: Any, conn: Any) -> None:
    """A STOMP destination or header may exceed AMQP's 255-byte short string: the AMQP consumer gets
    the message with the value clipped, instead of its connection dying with 541."""
    import stomp

    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, "amq.topic", "#")
    got: list[tuple[str, Any, bytes]] = []
    ch.basic_consume(q, lambda c, m, p, b: got.append((m.routing_key, p.correlation_id, b)), auto_ack=True)
    s = stomp.Connection([("127.0.0.1", broker.stomp_port)])
    s.connect("guest", "guest", wait=True)
    try:
        s.send("/exchange/amq.topic/" + "k" * 300, "long key")
        s.send("/exchange/amq.topic/short", "long property", headers={"correlation-id": "ü" * 200})
    finally:
        s.disconnect()
    assert wait_for(conn, lambda: len(got) == 2)
    assert got[0] == ("k" * 255, None, b"long key")
    assert got[1] == ("short", "ü" * 127, b"long property")
    assert conn.is_open and broker.alive()
