"""Hypothesis fuzzing of the STOMP parser and session.

Whatever the bytes, and however they are split into reads: nothing raises, every failure is one of
``EXPECTED_ERRORS``, nothing comes after a failure, and valid frames survive any split.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from haremq.errors import CommandInvalid, ContentTooLarge, FrameError, NotAllowed, PreconditionFailed, SyntaxError_
from haremq.protocol.stomp.frames import V10, V11, V12, Frame, FrameParser, ParseError, serialize
from haremq.protocol.stomp.session import Failed, StompConnection

# the only errors the parser may report
PARSER_ERRORS = (FrameError, SyntaxError_, ContentTooLarge)
# ... and the session on top of it (unknown/out-of-state command, bad version, transaction misuse)
EXPECTED_ERRORS = (*PARSER_ERRORS, CommandInvalid, NotAllowed, PreconditionFailed)

COMMANDS = ["CONNECT", "STOMP", "SEND", "SUBSCRIBE", "UNSUBSCRIBE", "ACK", "NACK", "BEGIN", "COMMIT", "ABORT",
            "DISCONNECT", "MESSAGE"]
header_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20)
headers = st.dictionaries(header_text.filter(lambda k: bool(k) and k != "content-length"), header_text, max_size=5)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, prev = [], 0
    for p in points:
        out.append(data[prev:p])
        prev = p
    out.append(data[prev:])
    return out


def feed_all(p: FrameParser, chunks: list[bytes]) -> list[Frame | ParseError]:
    out: list[Frame | ParseError] = []
    for chunk in chunks:
        out += p.feed(chunk)
    return out


@settings(max_examples=400)
@given(st.binary(max_size=600), st.lists(st.integers(0, 600), max_size=8),
       st.sampled_from([V10, V11, V12]))
def test_parser_never_raises_on_garbage(data: bytes, cuts: list[int], version: str) -> None:
    p = FrameParser(max_header_size=256, max_headers=8, max_body=128)
    p.version = version
    out = feed_all(p, split(data, cuts))
    errors = [o for o in out if isinstance(o, ParseError)]
    assert len(errors) <= 1
    if errors:
        assert out[-1] is errors[0]
        assert isinstance(errors[0].error, PARSER_ERRORS), errors[0].error
        assert p.failed and p.feed(b"SEND\n\n\x00") == []


@settings(max_examples=300)
@given(st.lists(st.tuples(st.sampled_from(COMMANDS[2:]), headers, st.binary(max_size=40)), min_size=1, max_size=5),
       st.lists(st.integers(0, 2000), max_size=10), st.sampled_from([V11, V12]))
def test_valid_frames_survive_any_split(frames: list[tuple[str, dict[str, str], bytes]], cuts: list[int],
                                        version: str) -> None:
    data = b"\n".join(serialize(c, h, b, version) for c, h, b in frames)
    p = FrameParser()
    p.version = version
    out = feed_all(p, split(data, cuts))
    assert all(isinstance(f, Frame) for f in out), out
    got = [(f.command, {k: v for k, v in f.headers.items() if k != "content-length"}, f.body)
           for f in out if isinstance(f, Frame)]
    want = [(c, {k: v for k, v in h.items() if k != "content-length"}, b) for c, h, b in frames]
    assert got == want


@settings(max_examples=300)
@given(st.lists(st.one_of(
    st.tuples(st.sampled_from([*COMMANDS, "BOGUS"]), headers, st.binary(max_size=20)).map(
        lambda t: serialize(t[0], t[1], t[2], V12)),
    st.binary(max_size=40),
    st.just(b"\n"),
), max_size=8), st.lists(st.integers(0, 1000), max_size=6))
def test_session_never_raises(chunks: list[bytes], cuts: list[int]) -> None:
    c = StompConnection(max_header_size=512, max_body=256)
    events = []
    for piece in split(b"".join(chunks), cuts):
        events += c.receive_data(piece)
    failures = [e for e in events if isinstance(e, Failed)]
    assert len(failures) <= 1
    if failures:
        assert events[-1] is failures[0]
        assert isinstance(failures[0].error, EXPECTED_ERRORS), failures[0].error
        assert c.closed
