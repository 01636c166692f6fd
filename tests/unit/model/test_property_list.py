"""The AMQP basic-property list has one owner (``haremq.message``); everything else derives from it."""

from __future__ import annotations

import dataclasses

from haremq.message import BASIC_PROPERTIES, PROPERTY_NAMES, Properties
from haremq.protocol.amqp import codec
from haremq.store import memory, records


def test_properties_fields_are_the_basic_property_list_in_order() -> None:
    assert tuple(f.name for f in dataclasses.fields(Properties)) == PROPERTY_NAMES


def test_flag_bits_run_from_the_most_significant_bit_down_as_in_the_spec() -> None:
    bits = [bit for _, bit, _ in BASIC_PROPERTIES]
    assert bits == [0x8000 >> i for i in range(len(bits))]
    assert len(bits) == 14  # content-type .. cluster-id: basic class of AMQP 0-9-1


def test_codec_and_stores_use_the_one_list() -> None:
    assert codec._PROPS is BASIC_PROPERTIES
    assert records.PROPERTY_NAMES is PROPERTY_NAMES
    assert memory.PROPERTY_NAMES is PROPERTY_NAMES


def test_store_presence_mask_keeps_the_on_disk_order() -> None:
    """The record format's mask bit i is property i: a data directory written earlier reads the same."""
    raw = records.encode_properties(Properties(cluster_id="c"))
    assert raw[:2] == (1 << 13).to_bytes(2, "little")
    assert records.decode_properties(raw) == {"cluster_id": "c"}
