"""``AmqpConnection.send_content``: the public way the server queues a deliver / get-ok / return with
its content, split at the connection's ``frame_max`` (the server no longer writes into ``_out``)."""

from __future__ import annotations

from pamqp import body as pbody
from pamqp import frame as pframe
from pamqp import header as pheader

from haremq.protocol.amqp import codec
from haremq.protocol.amqp import connection as ev


def test_send_content_queues_method_header_and_body_split_at_frame_max() -> None:
    conn = ev.AmqpConnection({}, frame_max=4096)
    body = bytes(range(256)) * 40  # 10240 bytes: three body frames at frame_max 4096
    method = codec.deliver_method(3, codec.sstr("ctag"), 7, False, "ex", "rk")
    conn.send_content(method, 3, b"\x00\x00", body)
    frames = conn.data_to_send()
    assert frames[0] == method
    wire = b"".join(frames[1:])
    got = b""
    offset = 0
    header = None
    while offset < len(wire):
        used, channel, value = pframe.unmarshal(wire[offset:])
        assert channel == 3 and used <= 4096
        offset += used
        if isinstance(value, pheader.ContentHeader):
            header = value
        else:
            assert isinstance(value, pbody.ContentBody)
            got += value.value
    assert header is not None and header.body_size == len(body)
    assert got == body
    assert len(frames) - 1 >= 4  # header + three body frames
