"""Hostile and broken clients against a real broker: the right reply code, and nobody else hurt.

Every test runs next to a healthy pika connection opened before it; afterwards that connection must
still publish and consume, and the broker process must still be alive.
"""

from __future__ import annotations

import os
import socket
import struct
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pika
import pika.exceptions as pexc
import pytest
from amqp_raw import FRAME_END, PROTOCOL_HEADER, Closed, RawAmqp, method_payload, raw_frame, sstr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pamqp import commands as C
from pamqp import frame as pframe
from pamqp import header as pheader

pytestmark = pytest.mark.timeout(60)


def uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def pika_params(port: int, user: str = "guest", password: str = "guest", vhost: str = "/") -> Any:
    return pika.ConnectionParameters(host="127.0.0.1", port=port, virtual_host=vhost,
                                     credentials=pika.PlainCredentials(user, password), connection_attempts=1,
                                     socket_timeout=5, blocked_connection_timeout=10)


def assert_healthy(conn: pika.BlockingConnection) -> None:
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.confirm_delivery()
    for i in range(3):
        ch.basic_publish("", q, f"ok{i}".encode(), mandatory=True)
    got: list[bytes] = []
    ch.basic_consume(q, lambda c, m, p, b: (got.append(b), c.basic_ack(m.delivery_tag)))
    deadline = time.monotonic() + 5
    while len(got) < 3 and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.05)
    assert got == [b"ok0", b"ok1", b"ok2"]
    ch.close()


@pytest.fixture(autouse=True)
def bystander(broker: Any) -> Iterator[pika.BlockingConnection]:
    """A well-behaved client that must not notice anything."""
    conn = pika.BlockingConnection(pika_params(broker.port))
    yield conn
    assert broker.alive(), "the broker process died"
    assert_healthy(conn)
    conn.close()
    assert broker.alive()


@pytest.fixture
def raw(broker: Any) -> Iterator[RawAmqp]:
    c = RawAmqp(broker.port)
    yield c
    c.close()


@pytest.fixture
def opened(raw: RawAmqp) -> RawAmqp:
    raw.handshake()
    raw.open_channel(1)
    return raw


# ---- before the handshake ---------------------------------------------------------------------
@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello
    os.urandom(64),
    b"\x00",
])
def test_random_bytes_get_our_header_then_close(raw: RawAmqp, data: bytes) -> None:
    if data[:1] == b"A":
        data = b"X" + data[1:]
    raw.send(data)
    assert raw.read_bytes(8) == PROTOCOL_HEADER
    raw.expect_eof()


@pytest.mark.parametrize("header", [
    b"AMQP\x00\x01\x00\x00",  # AMQP 1.0
    b"AMQP\x03\x01\x00\x00",  # AMQP 1.0 SASL
    b"AMQP\x01\x01\x00\x09",  # 0-9 (old style)
    b"AMQP\x00\x00\x08\x00",  # 0-8
])
def test_wrong_protocol_header(raw: RawAmqp, header: bytes) -> None:
    raw.send(header)
    assert raw.read_bytes(8) == PROTOCOL_HEADER
    raw.expect_eof()


def test_header_in_pieces_is_accepted(raw: RawAmqp) -> None:
    for b in PROTOCOL_HEADER:
        raw.send(bytes((b,)))
        time.sleep(0.01)
    raw.expect(C.Connection.Start)


def test_truncated_header_then_hangup(broker: Any) -> None:
    for partial in (b"AM", b"AMQP\x00\x00", PROTOCOL_HEADER + b"\x01\x00"):
        s = socket.create_connection(("127.0.0.1", broker.port), timeout=5)
        s.sendall(partial)
        s.close()


def test_method_before_start_ok_is_503(raw: RawAmqp) -> None:
    raw.send(PROTOCOL_HEADER)
    raw.expect(C.Connection.Start)
    raw.send_method(0, C.Connection.Open(virtual_host="/"))
    raw.expect_connection_close(503)


def test_channel_method_before_open_is_rejected(raw: RawAmqp) -> None:
    raw.send(PROTOCOL_HEADER)
    raw.expect(C.Connection.Start)
    raw.send_method(1, C.Channel.Open())
    _, f = raw.read_until_close()
    assert isinstance(f, C.Connection.Close) and f.reply_code in (503, 504, 505)


# ---- authentication and vhosts -------------------------------------------------------------------
def test_wrong_credentials_raw_403(raw: RawAmqp) -> None:
    reply = raw.start("guest", "not-the-password")
    assert isinstance(reply, C.Connection.Close), reply
    assert reply.reply_code == 403 and "ACCESS_REFUSED" in reply.reply_text
    raw.send_method(0, C.Connection.CloseOk())
    raw.expect_eof()


def test_unknown_user_raw_403(raw: RawAmqp) -> None:
    reply = raw.start("nobody", "guest")
    assert isinstance(reply, C.Connection.Close) and reply.reply_code == 403


def test_unknown_mechanism_is_refused(raw: RawAmqp) -> None:
    raw.send(PROTOCOL_HEADER)
    raw.expect(C.Connection.Start)
    raw.send_method(0, C.Connection.StartOk(client_properties={}, mechanism="EXTERNAL", response="",
                                            locale="en_US"))
    raw.expect_connection_close(403)


@pytest.mark.parametrize("response", ["guest\0guest", "\0guest", "\0\xff\xfe\0guest", ""])
def test_malformed_plain_response_is_403(raw: RawAmqp, response: str) -> None:
    raw.send(PROTOCOL_HEADER)
    raw.expect(C.Connection.Start)
    raw.send_method(0, C.Connection.StartOk(client_properties={}, mechanism="PLAIN", response=response,
                                            locale="en_US"))
    raw.expect_connection_close(403)


def test_wrong_credentials_pika(broker: Any) -> None:
    with pytest.raises((pexc.ProbableAuthenticationError, pexc.AuthenticationError)) as ei:
        pika.BlockingConnection(pika_params(broker.port, password="wrong"))
    assert "403" in str(ei.value) or "ACCESS_REFUSED" in str(ei.value)


def test_unknown_vhost_raw_530(raw: RawAmqp) -> None:
    tune = raw.start()
    assert isinstance(tune, C.Connection.Tune)
    raw.send_method(0, C.Connection.TuneOk(channel_max=tune.channel_max, frame_max=tune.frame_max, heartbeat=0))
    raw.send_method(0, C.Connection.Open(virtual_host="/no-such-vhost"))
    f = raw.expect_connection_close(530)
    assert "NOT_ALLOWED" in f.reply_text


def test_unknown_vhost_pika(broker: Any) -> None:
    with pytest.raises(pexc.AMQPConnectionError) as ei:
        pika.BlockingConnection(pika_params(broker.port, vhost="no-such-vhost"))
    assert "530" in repr(ei.value) or "NOT_ALLOWED" in repr(ei.value)


def test_tune_ok_frame_max_too_small_is_501(raw: RawAmqp) -> None:
    raw.start()
    raw.send_method(0, C.Connection.TuneOk(channel_max=0, frame_max=1024, heartbeat=0))
    raw.expect_connection_close(501)


# ---- framing after the handshake ---------------------------------------------------------------
def test_frame_larger_than_frame_max_is_501(raw: RawAmqp) -> None:
    raw.handshake(frame_max=4096)
    raw.open_channel(1)
    payload = method_payload(50, 10, b"\x00\x00" + sstr("q") + b"\x00" + struct.pack(">I", 0))
    raw.send(raw_frame(1, 1, payload + b"\x00" * 8000))
    raw.expect_connection_close(501)


def test_frame_header_announcing_huge_size_is_501(opened: RawAmqp) -> None:
    # only the 7-byte header: the broker must not wait for (or buffer) 2 GiB
    opened.send(struct.pack(">BHI", 3, 1, 0x7FFFFFFF))
    opened.expect_connection_close(501)


def test_bad_frame_end_is_501(opened: RawAmqp) -> None:
    opened.send(pframe.marshal(C.Basic.Qos(prefetch_count=1), 1)[:-1] + b"\x00")
    opened.expect_connection_close(501)


def test_unknown_frame_type_is_501(opened: RawAmqp) -> None:
    opened.send(raw_frame(9, 0, b"abc"))
    opened.expect_connection_close(501)


def test_heartbeat_on_channel_is_501(opened: RawAmqp) -> None:
    opened.send(raw_frame(8, 1, b""))
    opened.expect_connection_close(501)


def test_method_on_unopened_channel_is_504(opened: RawAmqp) -> None:
    opened.send_method(5, C.Queue.Declare(queue=uniq("raw")))
    f = opened.expect_connection_close(504)
    assert f.class_id == 50 and f.method_id == 10


def test_method_on_closed_channel_is_504(opened: RawAmqp) -> None:
    opened.send_method(1, C.Channel.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0))
    opened.expect(C.Channel.CloseOk)
    opened.send_method(1, C.Basic.Qos(prefetch_count=1))
    opened.expect_connection_close(504)


def test_second_channel_open_is_504(opened: RawAmqp) -> None:
    opened.send_method(1, C.Channel.Open())
    opened.expect_connection_close(504)


def test_channel_max_limits_open_channels_not_channel_numbers(raw: RawAmqp) -> None:
    """As RabbitMQ: any number 1-65535 may be opened; the channel past the negotiated count is 530."""
    tune = raw.start()
    assert isinstance(tune, C.Connection.Tune) and tune.channel_max == 2047
    raw.send_method(0, C.Connection.TuneOk(channel_max=3, frame_max=tune.frame_max, heartbeat=0))
    raw.send_method(0, C.Connection.Open(virtual_host="/"))
    raw.expect(C.Connection.OpenOk)
    for n in (65535, 2048, 1):
        raw.open_channel(n)
    raw.send_method(2048, C.Channel.Close(reply_code=200, reply_text="", class_id=0, method_id=0))
    raw.expect(C.Channel.CloseOk)
    raw.open_channel(4000)  # a closed channel frees its place
    raw.send_method(65535, C.Basic.Qos(prefetch_count=1))
    assert raw.expect(C.Basic.QosOk)[0] == 65535
    raw.send_method(7, C.Channel.Open())
    f = raw.expect_connection_close(530)
    assert f.reply_text == ("NOT_ALLOWED - number of channels opened (3) has reached the negotiated "
                            "channel_max (3)")


def test_channel_number_above_the_default_channel_max_opens(raw: RawAmqp) -> None:
    raw.handshake()
    assert raw.channel_max == 2047
    raw.open_channel(65535)
    raw.send_method(65535, C.Queue.Declare(queue="", exclusive=True))
    assert raw.expect(C.Queue.DeclareOk)[0] == 65535


def test_content_header_on_unopened_channel(opened: RawAmqp) -> None:
    opened.send(pframe.marshal(pheader.ContentHeader(0, 3, C.Basic.Properties()), 7))
    opened.expect_connection_close(504)


def test_body_without_header_is_505(opened: RawAmqp) -> None:
    opened.send(raw_frame(3, 1, b"orphan body"))
    opened.expect_connection_close(505)


def test_method_instead_of_content_header_is_505(opened: RawAmqp) -> None:
    opened.send_method(1, C.Basic.Publish(exchange="", routing_key="x"))
    opened.send_method(1, C.Basic.Qos(prefetch_count=1))
    opened.expect_connection_close(505)


def test_body_bigger_than_announced_is_501(opened: RawAmqp) -> None:
    opened.send_method(1, C.Basic.Publish(exchange="", routing_key="x"))
    opened.send(pframe.marshal(pheader.ContentHeader(0, 5, C.Basic.Properties()), 1))
    opened.send(raw_frame(3, 1, b"0123456789"))
    opened.expect_connection_close(501)


def test_body_split_then_overflow_is_501(opened: RawAmqp) -> None:
    opened.send_method(1, C.Basic.Publish(exchange="", routing_key="x"))
    opened.send(pframe.marshal(pheader.ContentHeader(0, 6, C.Basic.Properties()), 1))
    opened.send(raw_frame(3, 1, b"012"))
    opened.send(raw_frame(3, 1, b"3456"))
    opened.expect_connection_close(501)


def test_content_header_wrong_class_is_rejected(opened: RawAmqp) -> None:
    opened.send_method(1, C.Basic.Publish(exchange="", routing_key="x"))
    opened.send(raw_frame(2, 1, struct.pack(">HHQH", 50, 0, 1, 0)))
    _, f = opened.read_until_close()
    assert isinstance(f, C.Connection.Close) and f.reply_code in (501, 505)


def test_truncated_method_frame_is_502(opened: RawAmqp) -> None:
    # queue.declare whose arguments stop in the middle of the queue name
    opened.send(raw_frame(1, 1, method_payload(50, 10, b"\x00\x00\x20abc")))
    f = opened.expect_connection_close(502)
    assert f.class_id == 50 and f.method_id == 10


def test_truncated_publish_is_502(opened: RawAmqp) -> None:
    opened.send(raw_frame(1, 1, method_payload(60, 40, b"\x00\x00\x10ab")))
    opened.expect_connection_close(502)


def test_truncated_ack_is_502(opened: RawAmqp) -> None:
    opened.send(raw_frame(1, 1, method_payload(60, 80, b"\x00\x00")))
    opened.expect_connection_close(502)


def test_too_short_method_frame(opened: RawAmqp) -> None:
    opened.send(raw_frame(1, 1, b"\x00"))
    _, f = opened.read_until_close()
    assert isinstance(f, C.Connection.Close) and f.reply_code in (501, 502)


def test_unknown_method_is_rejected(opened: RawAmqp) -> None:
    opened.send(raw_frame(1, 1, method_payload(60, 999, b"")))
    _, f = opened.read_until_close()
    assert isinstance(f, C.Connection.Close) and f.reply_code in (503, 540)


def test_server_only_method_from_client_is_rejected(opened: RawAmqp) -> None:
    opened.send_method(1, C.Basic.Deliver(consumer_tag="x", delivery_tag=1, exchange="", routing_key="q"))
    _, f = opened.read_until_close()
    assert isinstance(f, C.Connection.Close) and f.reply_code in (503, 540)


def test_truncated_frame_then_hangup(broker: Any) -> None:
    with RawAmqp(broker.port) as c:
        c.handshake()
        c.open_channel(1)
        frame = pframe.marshal(C.Queue.Declare(queue=uniq("half")), 1)
        c.send(frame[: len(frame) // 2])
    with RawAmqp(broker.port) as c:
        c.handshake()
        c.open_channel(1)
        c.send_method(1, C.Basic.Publish(exchange="", routing_key="x"))
        c.send(pframe.marshal(pheader.ContentHeader(0, 100, C.Basic.Properties()), 1))
        c.send(raw_frame(3, 1, b"only part of it"))
    # a third client sees a sane broker
    with RawAmqp(broker.port) as c:
        c.handshake()
        c.open_channel(1)


def test_garbage_field_table_in_queue_declare_is_502(opened: RawAmqp) -> None:
    # queue.declare(ticket, "q", bits, table) where the table holds an unknown field type 'Z'
    table = sstr("x-bad") + b"Z" + b"\x01\x02\x03"
    args = b"\x00\x00" + sstr(uniq("garbage")) + b"\x00" + struct.pack(">I", len(table)) + table
    opened.send(raw_frame(1, 1, method_payload(50, 10, args)))
    opened.expect_connection_close(502)


def test_field_table_length_overruns_frame_is_502(opened: RawAmqp) -> None:
    args = b"\x00\x00" + sstr(uniq("overrun")) + b"\x00" + struct.pack(">I", 1000) + b"\x05x-abcS"
    opened.send(raw_frame(1, 1, method_payload(50, 10, args)))
    opened.expect_connection_close(502)


def test_garbage_headers_table_in_content_header_is_502(opened: RawAmqp) -> None:
    opened.send_method(1, C.Basic.Publish(exchange="", routing_key="x"))
    table = sstr("h") + b"Z" + b"\x00"
    props = struct.pack(">H", 0x2000) + struct.pack(">I", len(table)) + table
    opened.send(raw_frame(2, 1, struct.pack(">HHQ", 60, 0, 0) + props))
    opened.expect_connection_close(502)


def test_invalid_utf8_queue_name(opened: RawAmqp) -> None:
    args = b"\x00\x00" + sstr(b"\xff\xfe\xfd") + b"\x00" + struct.pack(">I", 0)
    opened.send(raw_frame(1, 1, method_payload(50, 10, args)))
    _, f = opened.read_until_close()
    assert f.reply_code in (502, 406)


def test_invalid_utf8_in_publish_routing_key(opened: RawAmqp) -> None:
    args = b"\x00\x00" + sstr("") + sstr(b"\xc3\x28") + b"\x00"
    opened.send(raw_frame(1, 1, method_payload(60, 40, args)))
    opened.expect_connection_close(502)


# ---- channel-level errors keep the connection ---------------------------------------------------
def test_mismatched_redeclare_is_406_channel_close(opened: RawAmqp) -> None:
    q = uniq("redeclare")
    opened.send_method(1, C.Queue.Declare(queue=q, durable=False))
    opened.expect(C.Queue.DeclareOk)
    opened.send_method(1, C.Queue.Declare(queue=q, durable=True))
    f = opened.expect_channel_close(1, 406)
    assert f.class_id == 50 and f.method_id == 10
    assert "inequivalent arg 'durable'" in f.reply_text
    # the connection lives on: a fresh channel works, the old number can be reopened
    opened.open_channel(2)
    opened.send_method(2, C.Queue.Delete(queue=q))
    _, ok = opened.expect(C.Queue.DeleteOk)
    assert ok.message_count == 0
    opened.open_channel(1)


def test_frames_after_channel_close_are_ignored_until_close_ok(opened: RawAmqp) -> None:
    opened.send_method(1, C.Queue.Declare(queue=uniq("missing"), passive=True))
    ch, f = opened.read_until_close()
    assert ch == 1 and isinstance(f, C.Channel.Close) and f.reply_code == 404
    # before our close-ok: methods and content on channel 1 are dropped silently
    opened.send_method(1, C.Queue.Declare(queue=uniq("dropped")))
    opened.send_publish(1, "", "nowhere", b"dropped")
    opened.send_method(1, C.Channel.CloseOk())
    opened.open_channel(1)
    opened.send_method(1, C.Basic.Qos(prefetch_count=5))
    opened.expect(C.Basic.QosOk)


def test_publish_to_missing_exchange_is_404_channel_close(opened: RawAmqp) -> None:
    opened.send_publish(1, uniq("no-exchange"), "rk", b"x")
    f = opened.expect_channel_close(1, 404)
    assert f.class_id == 60 and f.method_id == 40
    opened.open_channel(1)


def test_connection_close_handshake(opened: RawAmqp) -> None:
    opened.send_method(0, C.Connection.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0))
    opened.expect(C.Connection.CloseOk)
    opened.expect_eof()


def test_pipelined_garbage_after_valid_frames(broker: Any) -> None:
    """Valid frames and a bad one in a single write: the valid ones take effect, then 501."""
    q = uniq("pipelined")
    with RawAmqp(broker.port) as c:
        c.handshake()
        c.open_channel(1)
        data = (pframe.marshal(C.Queue.Declare(queue=q), 1)
                + pframe.marshal(C.Basic.Publish(exchange="", routing_key=q), 1)
                + pframe.marshal(pheader.ContentHeader(0, 2, C.Basic.Properties()), 1)
                + raw_frame(3, 1, b"hi")
                + raw_frame(1, 1, b"\x00\x32\x00\x0a", end=b"\x00"))
        c.send(data)
        c.expect(C.Queue.DeclareOk)
        c.expect_connection_close(501)
    conn = pika.BlockingConnection(pika_params(broker.port))
    try:
        ch = conn.channel()
        _, _, body = ch.basic_get(q, auto_ack=True)
        assert body == b"hi"
        ch.queue_delete(q)
    finally:
        conn.close()


# ---- Hypothesis: random frames after a valid handshake --------------------------------------------
# every connection-level reply code a broken frame may legitimately earn
CONNECTION_CODES = {402, 403, 501, 502, 503, 504, 505, 506, 530, 540}
CHANNEL_CODES = {311, 312, 313, 403, 404, 405, 406}

method_ids = st.sampled_from([
    (10, 50), (10, 51), (20, 10), (20, 20), (20, 40), (40, 10), (40, 20), (40, 30), (50, 10), (50, 20),
    (50, 30), (50, 40), (50, 50), (60, 10), (60, 20), (60, 30), (60, 40), (60, 70), (60, 80), (60, 90),
    (60, 100), (60, 110), (60, 120), (85, 10), (90, 10), (90, 20), (90, 30), (0, 0), (999, 1),
])


@st.composite
def random_frames(draw: Any) -> bytes:
    frames = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["method", "header", "body", "heartbeat", "junk-type", "bad-end", "raw"]))
        channel = draw(st.sampled_from([0, 1, 1, 1, 2, 65535]))
        payload = draw(st.binary(max_size=64))
        if kind == "method":
            cid, mid = draw(method_ids)
            frames.append(raw_frame(1, channel, method_payload(cid, mid, payload)))
        elif kind == "header":
            frames.append(raw_frame(2, channel, struct.pack(">HHQ", 60, 0, draw(st.integers(0, 2**20))) + payload))
        elif kind == "body":
            frames.append(raw_frame(3, channel, payload))
        elif kind == "heartbeat":
            frames.append(raw_frame(8, channel, b""))
        elif kind == "junk-type":
            frames.append(raw_frame(draw(st.sampled_from([0, 4, 7, 65, 206, 255])), channel, payload))
        elif kind == "bad-end":
            frames.append(raw_frame(1, channel, payload, end=draw(st.sampled_from([b"\x00", b"\xcf", b"\xff"]))))
        else:
            frames.append(payload)
    return b"".join(frames)


def _await_verdict(c: RawAmqp, timeout: float) -> str | None:
    """Read until close-ok (our close was answered), a connection.close (checked) or EOF; None on timeout."""
    deadline = time.monotonic() + timeout
    try:
        while True:
            ch, f = c.read_frame(timeout=max(0.01, deadline - time.monotonic()))
            if isinstance(f, C.Connection.CloseOk):
                return "answered"
            if isinstance(f, C.Connection.Close):
                assert ch == 0
                assert f.reply_code in CONNECTION_CODES, f
                c.try_send_method(0, C.Connection.CloseOk())
                return f"closed-{f.reply_code}"
            if isinstance(f, C.Channel.Close):
                assert f.reply_code in CHANNEL_CODES | CONNECTION_CODES, f
                c.try_send_method(ch, C.Channel.CloseOk())
    except Closed:
        # only legitimate when the random bytes themselves ended the connection (e.g. a close-ok)
        return "eof"
    except TimeoutError:
        return None


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
          database=None)
@given(data=random_frames())
def test_hypothesis_random_frames_after_handshake(broker: Any, data: bytes) -> None:
    with RawAmqp(broker.port, timeout=3) as c:
        c.handshake()
        c.open_channel(1)
        c.send(data)
        # then a well-formed close: answered with close-ok, or the connection was closed with a proper code
        # (the broker may have closed already and hung up: then our close meets a reset socket)
        c.try_send_method(0, C.Connection.Close(reply_code=200, reply_text="done", class_id=0, method_id=0))
        verdict = _await_verdict(c, 0.5)
        if verdict is None:
            # the random bytes announced a frame whose payload has not arrived yet: complete it with
            # zeros, so the frame-end byte is wrong (or the frame is oversized) and the broker must say so
            try:
                c.send(b"\x00" * (c.frame_max + 16))
            except (BrokenPipeError, ConnectionResetError):
                pass
            verdict = _await_verdict(c, 8)
        assert verdict is not None, f"no verdict for {data!r}"
    assert broker.alive()


def test_unsolicited_close_ok_ends_connection(opened: RawAmqp) -> None:
    """A connection.close-ok we never asked for: the broker drops the connection (RabbitMQ: 504)."""
    opened.send_method(0, C.Connection.CloseOk())
    try:
        _, f = opened.read_until_close(timeout=2)
    except Closed:
        return
    assert isinstance(f, C.Connection.Close) and f.reply_code in (503, 504)


# valid frames, odd values: every sequence must end in a proper reply, never in a 541 internal error
names = st.sampled_from(["hq-a", "hq-b", "", "amq.x", "amq.rabbitmq.reply-to", "hq-ex", "amq.direct"])
arg_values = st.one_of(st.integers(-2, 300), st.booleans(), st.text(max_size=5),
                       st.none(), st.floats(allow_nan=False, width=32), st.lists(st.integers(0, 3), max_size=2),
                       st.dictionaries(st.sampled_from(["a", "b"]), st.integers(0, 3), max_size=2))
arg_tables = st.dictionaries(st.sampled_from([
    "x-message-ttl", "x-expires", "x-max-length", "x-max-length-bytes", "x-overflow", "x-dead-letter-exchange",
    "x-dead-letter-routing-key", "x-max-priority", "x-single-active-consumer", "x-queue-type", "x-match",
    "alternate-exchange", "x-priority", "other"]), arg_values, max_size=3)
flags = st.booleans()
tags = st.integers(0, 5)


@st.composite
def valid_methods(draw: Any) -> list[Any]:
    out: list[Any] = []
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.integers(0, 17))
        q, ex = draw(names), draw(names)
        if kind == 0:
            out.append(C.Queue.Declare(queue=q, passive=draw(flags), durable=draw(flags), exclusive=draw(flags),
                                       auto_delete=draw(flags), arguments=draw(arg_tables)))
        elif kind == 1:
            out.append(C.Exchange.Declare(exchange=ex, exchange_type=draw(st.sampled_from(
                ["direct", "fanout", "topic", "headers", "x-bogus"])), passive=draw(flags), durable=draw(flags),
                auto_delete=draw(flags), internal=draw(flags), arguments=draw(arg_tables)))
        elif kind == 2:
            out.append(C.Queue.Bind(queue=q, exchange=ex, routing_key=draw(st.sampled_from(["", "a.*", "#"])),
                                    arguments=draw(arg_tables)))
        elif kind == 3:
            out.append(C.Queue.Unbind(queue=q, exchange=ex, routing_key="a.*", arguments=draw(arg_tables)))
        elif kind == 4:
            out.append(C.Basic.Consume(queue=q, consumer_tag=draw(st.sampled_from(["", "t1"])),
                                       no_ack=draw(flags), exclusive=draw(flags), arguments=draw(arg_tables)))
        elif kind == 5:
            out.append(C.Basic.Cancel(consumer_tag=draw(st.sampled_from(["", "t1", "nope"]))))
        elif kind == 6:
            out.append(C.Basic.Get(queue=q, no_ack=draw(flags)))
        elif kind == 7:
            out.append(draw(st.sampled_from([C.Basic.Ack, C.Basic.Nack, C.Basic.Reject]))(
                delivery_tag=draw(tags)))
        elif kind == 8:
            out.append(C.Basic.Qos(prefetch_count=draw(st.integers(0, 3)), global_=draw(flags)))
        elif kind == 9:
            out.append(("publish", ex, q, draw(st.binary(max_size=20)), draw(st.sampled_from([
                None, {"priority": 250}, {"expiration": "0"}, {"expiration": "abc"}, {"user_id": "mallory"},
                {"reply_to": "amq.rabbitmq.reply-to"}, {"headers": {"x-death": "not-a-list", "CC": ["hq-a"]}},
                {"headers": {"BCC": ["hq-b"], "x-deduplication-id": "d"}}, {"delivery_mode": 2}])),
                draw(flags)))
        elif kind == 10:
            out.append(draw(st.sampled_from([C.Tx.Select(), C.Tx.Commit(), C.Tx.Rollback(),
                                             C.Confirm.Select()])))
        elif kind == 11:
            out.append(C.Basic.Recover(requeue=draw(flags)))
        elif kind == 12:
            out.append(C.Queue.Purge(queue=q))
        elif kind == 13:
            out.append(C.Queue.Delete(queue=q, if_unused=draw(flags), if_empty=draw(flags)))
        elif kind == 14:
            out.append(C.Exchange.Delete(exchange=ex, if_unused=draw(flags)))
        elif kind == 15:
            cls = draw(st.sampled_from([C.Exchange.Bind, C.Exchange.Unbind]))
            out.append(cls(destination=ex, source=draw(names), routing_key="#", arguments=draw(arg_tables)))
        elif kind == 16:
            out.append(C.Channel.Flow(active=draw(flags)))
        else:
            out.append(C.Basic.Recover(requeue=draw(flags)))
    return out


def _encode(channel: int, items: list[Any]) -> bytes:
    data = b""
    for m in items:
        if isinstance(m, tuple):
            _, ex, rk, body, props, mandatory = m
            data += pframe.marshal(C.Basic.Publish(exchange=ex, routing_key=rk, mandatory=mandatory), channel)
            data += pframe.marshal(pheader.ContentHeader(0, len(body), C.Basic.Properties(**(props or {}))),
                                   channel)
            if body:
                data += raw_frame(3, channel, body)
        else:
            data += pframe.marshal(m, channel)
    return data


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
          database=None)
@given(items=valid_methods())
def test_hypothesis_valid_methods_odd_values(broker: Any, items: list[Any]) -> None:
    try:
        data = _encode(1, items)
    except (TypeError, ValueError):  # pamqp refuses to build it: nothing to send
        return
    with RawAmqp(broker.port, timeout=3) as c:
        c.handshake()
        c.open_channel(1)
        c.send(data)
        c.try_send_method(0, C.Connection.Close(reply_code=200, reply_text="done", class_id=0, method_id=0))
        verdict = _await_verdict(c, 3)
        assert verdict is not None and verdict != "eof", f"no verdict for {items!r}"
    assert broker.alive()
    with open(os.path.join(broker.data_dir, "broker.log")) as f:
        assert "Traceback" not in f.read(), items


def test_after_the_storm_a_raw_client_still_works(broker: Any) -> None:
    with RawAmqp(broker.port) as c:
        c.handshake()
        c.open_channel(1)
        q = uniq("storm")
        c.send_method(1, C.Queue.Declare(queue=q, exclusive=True))
        c.expect(C.Queue.DeclareOk)
        c.send_publish(1, "", q, b"calm", C.Basic.Properties(content_type="text/plain"))
        c.send_method(1, C.Basic.Get(queue=q, no_ack=True))
        c.expect(C.Basic.GetOk)
        _, hdr = c.read_frame()
        assert isinstance(hdr, pheader.ContentHeader) and hdr.body_size == 4
        _, body = c.read_frame()
        assert body.value == b"calm"
    assert FRAME_END == b"\xce"


def test_no_internal_errors_logged(broker: Any) -> None:
    """Nothing above may have tripped an internal error (541) or an unhandled exception."""
    with open(os.path.join(broker.data_dir, "broker.log")) as f:
        text = f.read()
    assert "Traceback" not in text and "internal error" not in text, text[-5000:]


def test_error_reply_quoting_a_long_non_ascii_name_is_sent(opened: RawAmqp) -> None:
    """The 404 text quotes a 254-byte name: it is clipped to 255 bytes, not 255 characters."""
    args = b"\x00\x00" + sstr("ü" * 127) + b"\x01" + struct.pack(">I", 0)  # passive (pamqp refuses the name)
    opened.send(raw_frame(1, 1, method_payload(50, 10, args)))
    f = opened.expect_channel_close(1, 404)
    assert f.reply_text.startswith("NOT_FOUND - no queue 'üü")
    opened.open_channel(1)
