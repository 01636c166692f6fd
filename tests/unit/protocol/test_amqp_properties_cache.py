"""Decoded AMQP content-header properties are cached per node (an object with a bound), not per process."""

from __future__ import annotations

import struct
from typing import Any

from pamqp import commands as C
from pamqp import frame as pframe
from pamqp import header as pheader

from haremq.message import Properties
from haremq.protocol.amqp import codec
from haremq.protocol.amqp import connection as ev


def _opened(cache: codec.PropertiesCache | None) -> ev.AmqpConnection:
    conn = ev.AmqpConnection({}, properties_cache=cache)
    conn.receive_data(codec.PROTOCOL_HEADER)
    conn.receive_data(pframe.marshal(C.Connection.StartOk(client_properties={}, mechanism="PLAIN",
                                                          response="\0guest\0guest"), 0))
    conn.receive_data(pframe.marshal(C.Connection.TuneOk(channel_max=2047, frame_max=131072, heartbeat=0), 0))
    conn.receive_data(pframe.marshal(C.Connection.Open(virtual_host="/"), 0))
    conn.receive_data(pframe.marshal(C.Channel.Open(), 1))
    conn.data_to_send()
    return conn


def _published_props(conn: ev.AmqpConnection, props: C.Basic.Properties) -> Any:
    data = pframe.marshal(C.Basic.Publish(exchange="", routing_key="q"), 1)
    data += pframe.marshal(pheader.ContentHeader(0, 0, props), 1)
    (pub,) = [e for e in conn.receive_data(data) if isinstance(e, ev.Publish)]
    return pub.props


def _header(props: Properties) -> bytes:
    return struct.pack(">HHQ", 60, 0, 0) + codec.encode_properties(props)


def test_connections_sharing_a_cache_get_one_properties_object_for_equal_headers() -> None:
    cache = codec.PropertiesCache()
    a, b = _opened(cache), _opened(cache)
    props = C.Basic.Properties(content_type="text/plain", delivery_mode=2)
    first = _published_props(a, props)
    assert first == Properties(content_type="text/plain", delivery_mode=2)
    assert _published_props(a, props) is first
    assert _published_props(b, props) is first  # so the store's identity check skips re-encoding
    assert len(cache) == 1


def test_connections_with_their_own_caches_share_nothing() -> None:
    a, b = _opened(None), _opened(None)
    props = C.Basic.Properties(content_type="text/plain")
    assert _published_props(a, props) is _published_props(a, props)
    assert _published_props(a, props) is not _published_props(b, props)


def test_cache_holds_at_most_its_limit() -> None:
    cache = codec.PropertiesCache(limit=8)
    for i in range(100):
        _, _, props, _ = cache.decode_content_header(_header(Properties(message_id=str(i))))
        assert props.message_id == str(i)
        assert len(cache) <= 8


def test_module_decoder_keeps_no_state_between_calls() -> None:
    payload = _header(Properties(app_id="x"))
    _, _, one, _ = codec.decode_content_header(payload)
    _, _, two, _ = codec.decode_content_header(payload)
    assert one == two and one is not two
