"""The record and value codecs round-trip whatever a header table can hold."""

from __future__ import annotations

import datetime
import decimal
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from haremq.store import records as R

leaf = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(), st.binary(),
    st.decimals(allow_nan=False, allow_infinity=False),
    st.datetimes(timezones=st.just(datetime.UTC)),
)
values = st.recursive(leaf, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                   st.dictionaries(st.text(), kids, max_size=4)), max_leaves=20)


@given(st.dictionaries(st.text(), values, max_size=6))
def test_table_roundtrip(table: dict[str, Any]) -> None:
    assert R.decode_table(R.encode_table(table)) == table


@given(headers=st.none() | st.dictionaries(st.text(), values, max_size=4), prio=st.none() | st.integers(0, 255),
       ctype=st.none() | st.text(), ts=st.none() | st.integers(0, 2**63 - 1))
def test_properties_roundtrip(headers: Any, prio: Any, ctype: Any, ts: Any) -> None:
    props = {"headers": headers, "priority": prio, "content_type": ctype, "timestamp": ts, "delivery_mode": 2}
    want = {k: v for k, v in props.items() if v is not None}
    assert R.decode_properties(R.encode_properties(props)) == want


def test_unknown_types_are_stored_as_repr_not_rejected() -> None:
    class Odd:
        def __repr__(self) -> str:
            return "Odd()"

    assert R.decode_table(R.encode_table({"o": Odd(), "d": decimal.Decimal("1")})) == {"o": "Odd()",
                                                                                      "d": decimal.Decimal("1")}


@given(seq=st.integers(0, 2**64 - 1), ex=st.text(max_size=50), rk=st.text(max_size=300), body=st.binary())
def test_publish_payload_roundtrip(seq: int, ex: str, rk: str, body: bytes) -> None:
    rec = R.encode_record(R.PUBLISH, 0, 1, R.encode_publish_payload(seq, ex, rk, None, body))
    v = R.PublishView(rec)
    assert (v.seq, v.exchange, v.routing_key, rec[v.body_off:]) == (seq, ex, rk, body)
    assert R.body_offset(rec) == v.body_off and R.decode_properties(v.props_raw) == {}


def test_props_cache_reuses_the_encoding_of_the_same_properties_object() -> None:
    """The encoding cache is an object's state (one per queue log), not module state."""
    from haremq.message import Properties

    props = Properties(content_type="text/plain", delivery_mode=2, headers={"k": 1})
    a, b = R.PropsCache(), R.PropsCache()
    enc = a.encode(props)
    assert enc == R.encode_properties(props) and a.props is props and b.props is None
    assert a.encode(props) is enc  # the same object: the cached bytes
    other = Properties(content_type="text/plain", delivery_mode=2)
    assert a.encode(other) == R.encode_properties(other) and a.props is other
    assert not hasattr(R, "_last_props")
