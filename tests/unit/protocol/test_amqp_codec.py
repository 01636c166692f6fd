"""AMQP codec: round trips against pamqp (the reference encoder) and fuzzing of the decoder."""

from __future__ import annotations

import datetime
import struct
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp import commands as C
from pamqp import frame as pframe
from pamqp import header as pheader

from haremq.message import Properties
from haremq.protocol.amqp import codec
from haremq.protocol.amqp import connection as ev

# Codes a connection may close with when fed arbitrary bytes; anything else is a defect.
EXPECTED_CLOSE_CODES = {501, 502, 503, 504, 505, 530, 540}


def handshaken() -> ev.AmqpConnection:
    conn = ev.AmqpConnection({"product": "t"})
    conn.receive_data(codec.PROTOCOL_HEADER)
    conn.receive_data(pframe.marshal(C.Connection.StartOk(client_properties={}, mechanism="PLAIN",
                                                          response="\0guest\0guest"), 0))
    conn.receive_data(pframe.marshal(C.Connection.TuneOk(channel_max=2047, frame_max=131072, heartbeat=0), 0))
    events = conn.receive_data(pframe.marshal(C.Connection.Open(virtual_host="/"), 0))
    assert isinstance(events[0], ev.OpenVhost)
    assert conn.state == ev.State.OPEN
    events = conn.receive_data(pframe.marshal(C.Channel.Open(), 1))
    assert isinstance(events[0], ev.ChannelOpened)
    conn.data_to_send()
    return conn


def publish_bytes(channel: int, exchange: str, rk: str, body: bytes, props: C.Basic.Properties,
                  frame_max: int = 131072) -> bytes:
    out = pframe.marshal(C.Basic.Publish(exchange=exchange, routing_key=rk, mandatory=True), channel)
    out += pframe.marshal(pheader.ContentHeader(0, len(body), props), channel)
    step = frame_max - 8
    for i in range(0, len(body), step):
        from pamqp import body as pbody

        out += pframe.marshal(pbody.ContentBody(body[i:i + step]), channel)
    return out


def test_publish_decodes_in_one_read_and_split_byte_by_byte() -> None:
    props = C.Basic.Properties(content_type="text/plain", headers={"a": 1, "b": "x", "n": [1, 2]},
                               delivery_mode=2, priority=3, correlation_id="c", reply_to="r",
                               expiration="1000", message_id="m", timestamp=datetime.datetime(2024, 1, 2),
                               message_type="t", app_id="app")
    raw = publish_bytes(1, "ex", "rk", b"hello" * 1000, props, frame_max=4096)
    for chunks in ([raw], [raw[i:i + 1] for i in range(len(raw))]):
        conn = handshaken()
        conn.receive_data(b"")  # no-op
        events: list[Any] = []
        for c in chunks:
            events += conn.receive_data(c)
        assert len(events) == 1
        p = events[0]
        assert isinstance(p, ev.Publish)
        assert (p.exchange, p.routing_key, p.mandatory, p.body) == ("ex", "rk", True, b"hello" * 1000)
        assert p.props.headers == {"a": 1, "b": "x", "n": [1, 2]}
        assert (p.props.delivery_mode, p.props.priority, p.props.expiration) == (2, 3, "1000")


def test_empty_body_completes_on_header() -> None:
    conn = handshaken()
    events = conn.receive_data(publish_bytes(1, "", "q", b"", C.Basic.Properties()))
    assert isinstance(events[0], ev.Publish) and events[0].body == b""


@settings(max_examples=150, deadline=None)
@given(st.builds(
    Properties,
    content_type=st.none() | st.text(max_size=20),
    headers=st.none() | st.dictionaries(st.text(min_size=1, max_size=10),
                                        st.integers(-2**31, 2**31 - 1) | st.text(max_size=20) | st.booleans(),
                                        max_size=5),
    delivery_mode=st.none() | st.sampled_from([1, 2]),
    priority=st.none() | st.integers(0, 255),
    correlation_id=st.none() | st.text(max_size=30),
    expiration=st.none() | st.integers(0, 10**6).map(str),
    timestamp=st.none() | st.integers(0, 2**40),
))
def test_properties_round_trip(props: Properties) -> None:
    raw = codec.encode_properties(props)
    payload = struct.pack(">HHQ", 60, 0, 5) + raw
    _, size, decoded, raw_again = codec.decode_content_header(payload)
    assert size == 5 and raw_again == raw
    assert decoded == props


def test_deliver_frame_is_what_pamqp_decodes() -> None:
    frame = codec.deliver_method(3, codec.sstr("ctag"), 42, True, "ex", "key")
    used, channel, m = pframe.unmarshal(frame)
    assert (used, channel) == (len(frame), 3)
    assert isinstance(m, C.Basic.Deliver)
    assert (m.consumer_tag, m.delivery_tag, m.redelivered, m.exchange, m.routing_key) == ("ctag", 42, True, "ex", "key")
    frames = codec.content_frames(3, codec.encode_properties(Properties(content_type="a/b")), b"x" * 10000, 4096)
    assert len(frames) == 1 + 3
    _, _, h = pframe.unmarshal(frames[0])
    assert isinstance(h, pheader.ContentHeader) and h.body_size == 10000
    assert h.properties.content_type == "a/b"
    frame = codec.get_ok_method(1, 7, False, "", "q", 12)
    _, _, g = pframe.unmarshal(frame)
    assert isinstance(g, C.Basic.GetOk) and g.message_count == 12
    _, _, a = pframe.unmarshal(codec.confirm_frame(1, 99, True))
    assert isinstance(a, C.Basic.Ack) and a.delivery_tag == 99 and a.multiple
    _, _, n = pframe.unmarshal(codec.confirm_frame(1, 5, False, nack=True))
    assert isinstance(n, C.Basic.Nack) and n.delivery_tag == 5


def test_settle_fast_path() -> None:
    conn = handshaken()
    events = conn.receive_data(pframe.marshal(C.Basic.Ack(delivery_tag=9, multiple=True), 1)
                               + pframe.marshal(C.Basic.Nack(delivery_tag=3, requeue=False), 1)
                               + pframe.marshal(C.Basic.Reject(delivery_tag=4, requeue=True), 1))
    assert [(e.method_id, e.tag, e.bits) for e in events if isinstance(e, ev.Settle)] == [
        (80, 9, 1), (120, 3, 0), (90, 4, 1)]


def test_bad_protocol_header_gets_ours_back() -> None:
    conn = ev.AmqpConnection({})
    events = conn.receive_data(b"AMQP\x00\x01\x00\x00")
    assert isinstance(events[0], ev.BadHeader)
    assert conn.data_to_send() == [codec.PROTOCOL_HEADER]
    assert conn.state == ev.State.CLOSED
    conn = ev.AmqpConnection({})
    assert isinstance(conn.receive_data(b"GET / HTTP/1.1\r\n\r\n")[0], ev.BadHeader)


def close_code(events: list[ev.Event]) -> int | None:
    for e in events:
        if isinstance(e, ev.ConnectionClosed) and e.error is not None:
            return e.error.reply_code
    return None


def test_frame_too_large_is_501() -> None:
    conn = handshaken()
    big = struct.pack(">BHI", 3, 1, 200000)
    assert close_code(conn.receive_data(big)) == 501


def test_heartbeat_announcing_a_payload_is_501_at_once() -> None:
    conn = handshaken()
    assert close_code(conn.receive_data(struct.pack(">BHI", 8, 0, 2**31))) == 501


def test_method_on_unopened_channel_is_504() -> None:
    conn = handshaken()
    assert close_code(conn.receive_data(pframe.marshal(C.Basic.Qos(prefetch_count=1), 9))) == 504


def test_body_before_header_is_505() -> None:
    conn = handshaken()
    from pamqp import body as pbody

    assert close_code(conn.receive_data(pframe.marshal(pbody.ContentBody(b"x"), 1))) == 505


def test_bad_frame_end_is_501() -> None:
    conn = handshaken()
    raw = bytearray(pframe.marshal(C.Basic.Qos(prefetch_count=1), 1))
    raw[-1] = 0
    assert close_code(conn.receive_data(bytes(raw))) == 501


def test_after_close_only_close_ok_is_read() -> None:
    conn = handshaken()
    assert close_code(conn.receive_data(struct.pack(">BHI", 9, 0, 0) + b"\xce")) == 501
    assert conn.state == ev.State.CLOSING
    assert conn.receive_data(pframe.marshal(C.Basic.Qos(prefetch_count=1), 1)) == []
    events = conn.receive_data(pframe.marshal(C.Connection.CloseOk(), 0))
    assert conn.state == ev.State.CLOSED and isinstance(events[0], ev.ConnectionClosed)


@settings(max_examples=400, deadline=None)
@given(st.binary(min_size=1, max_size=300))
def test_fuzz_random_bytes_after_handshake(data: bytes) -> None:
    conn = handshaken()
    events = conn.receive_data(data)
    code = close_code(events)
    assert code is None or code in EXPECTED_CLOSE_CODES, code


@settings(max_examples=400, deadline=None)
@given(st.integers(1, 3), st.integers(0, 2), st.binary(max_size=120))
def test_fuzz_well_framed_garbage(ftype: int, channel: int, payload: bytes) -> None:
    conn = handshaken()
    data = struct.pack(">BHI", ftype, channel, len(payload)) + payload + b"\xce"
    events = conn.receive_data(data)
    code = close_code(events)
    assert code is None or code in EXPECTED_CLOSE_CODES, code


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_before_handshake(data: bytes) -> None:
    conn = ev.AmqpConnection({})
    events = conn.receive_data(codec.PROTOCOL_HEADER + data)
    code = close_code(events)
    assert code is None or code in EXPECTED_CLOSE_CODES, code


short_names = st.text(min_size=1).filter(lambda s: len(s.encode("utf-8")) <= 255)


@given(name=short_names)
def test_any_utf8_short_string_name_encodes_in_replies(name: str) -> None:
    """A name the decoder accepted can always be echoed back (pamqp's name regex is not ours)."""
    frame = codec.method_frame(1, codec.build(C.Queue.DeclareOk, queue=name, message_count=0, consumer_count=0))
    _, _, got = pframe.unmarshal(frame)
    assert isinstance(got, C.Queue.DeclareOk) and got.queue == name
    frame = codec.method_frame(1, codec.build(C.Basic.ConsumeOk, consumer_tag=name))
    assert pframe.unmarshal(frame)[2].consumer_tag == name


@given(text=st.text(max_size=300))
def test_reply_text_is_clipped_to_255_bytes_on_a_character_boundary(text: str) -> None:
    clipped = codec.clip_sstr("é" + text)
    assert len(clipped.encode("utf-8", "replace")) <= 255
    assert ("é" + text).startswith(clipped)
