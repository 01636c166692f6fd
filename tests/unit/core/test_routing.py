"""Routing tables: the topic trie agrees with a reference regex, headers matching follows RabbitMQ."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from haremq.core.routing import DirectTable, FanoutTable, HeadersTable, TopicTable, headers_match, topic_matches
from haremq.errors import PreconditionFailed

WORDS = st.sampled_from(["a", "b", "c", "stock", "usd", ""])
PATTERN_WORDS = st.sampled_from(["a", "b", "c", "stock", "usd", "*", "#", ""])


def regex_for(pattern: str) -> re.Pattern[str]:
    """An independent reference: every word (key and pattern) is terminated by a dot, so '*' is one
    ``[^.]*\\.`` and '#' is any number of them."""
    rx = ""
    for w in pattern.split("."):
        rx += r"(?:[^.]*\.)*" if w == "#" else (r"[^.]*\." if w == "*" else re.escape(w) + r"\.")
    return re.compile(rx)


def ref_match(pattern: str, key: str) -> bool:
    return regex_for(pattern).fullmatch(key + ".") is not None


@settings(max_examples=400, deadline=None)
@given(st.lists(PATTERN_WORDS, min_size=1, max_size=5).map(".".join),
       st.lists(WORDS, min_size=1, max_size=6).map(".".join))
def test_topic_reference_matcher_agrees_with_regex(pattern: str, key: str) -> None:
    assert topic_matches(pattern, key) == ref_match(pattern, key)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(PATTERN_WORDS, min_size=1, max_size=4).map(".".join), min_size=1, max_size=8),
       st.lists(st.lists(WORDS, min_size=1, max_size=5).map(".".join), min_size=1, max_size=8))
def test_topic_trie_agrees_with_reference(patterns: list[str], keys: list[str]) -> None:
    table = TopicTable()
    for i, p in enumerate(patterns):
        table.bind(f"q{i}", p, {})
    for k in keys:
        got = set(table.route(k, None))
        want = {f"q{i}" for i, p in enumerate(patterns) if ref_match(p, k)}
        assert got == want, (patterns, k)
        assert set(table.route(k, None)) == want  # cached answer is the same


def test_topic_examples_from_rabbitmq_tutorial() -> None:
    t = TopicTable()
    t.bind("Q1", "*.orange.*", {})
    t.bind("Q2", "*.*.rabbit", {})
    t.bind("Q2", "lazy.#", {})
    assert set(t.route("quick.orange.rabbit", None)) == {"Q1", "Q2"}
    assert set(t.route("lazy.orange.elephant", None)) == {"Q1", "Q2"}
    assert t.route("quick.orange.fox", None) == ["Q1"]
    assert t.route("lazy.brown.fox", None) == ["Q2"]
    assert t.route("lazy.pink.rabbit", None) == ["Q2"]  # once, though two bindings match
    assert t.route("quick.brown.fox", None) == []
    assert t.route("orange", None) == []
    assert t.route("lazy", None) == ["Q2"]


def test_topic_unbind_prunes_and_invalidates_cache() -> None:
    t = TopicTable()
    t.bind("Q", "a.#", {})
    assert t.route("a.b", None) == ["Q"]
    assert t.unbind("Q", "a.#", {})
    assert t.route("a.b", None) == []
    assert not t.unbind("Q", "a.#", {})
    assert len(t) == 0


def test_direct_and_fanout() -> None:
    d = DirectTable()
    assert d.bind("q1", "k", {})
    assert not d.bind("q1", "k", {})
    d.bind("q2", "k", {})
    assert d.route("k", None) == ["q1", "q2"]
    assert d.remove_dest("q1") == 1
    assert d.route("k", None) == ["q2"]
    f = FanoutTable()
    f.bind("a", "x", {})
    f.bind("b", "y", {})
    assert f.route("anything", None) == ["a", "b"]
    f.unbind("a", "x", {})
    assert f.route("", None) == ["b"]


@pytest.mark.parametrize(("args", "headers", "want"), [
    ({"x-match": "all", "a": 1, "b": "x"}, {"a": 1, "b": "x", "c": 3}, True),
    ({"x-match": "all", "a": 1, "b": "x"}, {"a": 1}, False),
    ({"x-match": "any", "a": 1, "b": "x"}, {"a": 2, "b": "x"}, True),
    ({"x-match": "any", "a": 1}, {"a": 2}, False),
    ({"x-match": "any"}, {"a": 2}, False),
    ({"x-match": "all"}, {}, True),
    ({"a": 1}, {"a": 1}, True),  # default is all
    ({"x-match": "all", "x-foo": 1}, {}, True),  # x- args ignored
    ({"x-match": "all-with-x", "x-foo": 1}, {}, False),
    ({"x-match": "any-with-x", "x-foo": 1}, {"x-foo": 1}, True),
    ({"x-match": "all", "a": None}, {"a": "anything"}, True),  # void matches on presence
])
def test_headers_match(args: dict[str, object], headers: dict[str, object], want: bool) -> None:
    assert headers_match(args, headers) is want


def test_headers_table_rejects_bad_x_match() -> None:
    with pytest.raises(PreconditionFailed):
        HeadersTable().bind("q", "", {"x-match": "some"})
