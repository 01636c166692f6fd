"""Golden frames for STOMP 1.0, 1.1 and 1.2: parsing, escaping, content-length, limits."""

from __future__ import annotations

import pytest

from haremq.errors import ContentTooLarge, FrameError, SyntaxError_
from haremq.protocol.stomp.frames import V10, V11, V12, Frame, FrameParser, ParseError, escape, serialize


def parse_all(data: bytes, version: str = V12, **limits: int) -> list[Frame | ParseError]:
    p = FrameParser(**limits)
    p.version = version
    out = p.feed(data)
    while out and isinstance(out[-1], Frame) and out[-1].command in ("CONNECT", "STOMP"):
        more = p.resume()
        if not more:
            break
        out += more
    return out


def test_connect_frame_1_0() -> None:
    [f] = parse_all(b"CONNECT\nlogin:guest\npasscode:guest\n\n\x00", V10)
    assert f == Frame("CONNECT", {"login": "guest", "passcode": "guest"}, b"")


def test_send_with_crlf_lines_1_2() -> None:
    [f] = parse_all(b"SEND\r\ndestination:/queue/a\r\n\r\nhello\x00")
    assert f == Frame("SEND", {"destination": "/queue/a"}, b"hello")


def test_content_length_body_may_contain_nul() -> None:
    [f] = parse_all(b"SEND\ndestination:/queue/a\ncontent-length:5\n\na\x00b\x00c\x00")
    assert isinstance(f, Frame) and f.body == b"a\x00b\x00c"


def test_content_length_must_be_followed_by_nul() -> None:
    [e] = parse_all(b"SEND\ndestination:/queue/a\ncontent-length:2\n\nabc\x00")
    assert isinstance(e, ParseError) and isinstance(e.error, FrameError)


def test_repeated_header_first_wins() -> None:
    [f] = parse_all(b"MESSAGE\nfoo:World\nfoo:Hello\n\n\x00")
    assert isinstance(f, Frame) and f.headers["foo"] == "World"


@pytest.mark.parametrize(("version", "raw", "value"), [
    (V10, b"a\\nb\\c", "a\\nb\\c"),  # 1.0: no escaping at all
    (V11, b"a\\nb\\cc\\\\d", "a\nb:c\\d"),
    (V12, b"a\\r\\nb\\cc\\\\d", "a\r\nb:c\\d"),
])
def test_header_unescaping_per_version(version: str, raw: bytes, value: str) -> None:
    [f] = parse_all(b"SEND\ndestination:/q\nh:" + raw + b"\n\n\x00", version)
    assert isinstance(f, Frame) and f.headers["h"] == value


@pytest.mark.parametrize("version", [V11, V12])
def test_undefined_escape_is_fatal(version: str) -> None:
    [e] = parse_all(b"SEND\ndestination:/q\nh:a\\tb\n\n\x00", version)
    assert isinstance(e, ParseError) and isinstance(e.error, SyntaxError_)


def test_1_1_does_not_unescape_cr() -> None:
    [e] = parse_all(b"SEND\nh:a\\rb\n\n\x00", V11)
    assert isinstance(e, ParseError)


def test_connect_headers_are_never_unescaped() -> None:
    [f] = parse_all(b"CONNECT\nlogin:a\\cb\n\n\x00", V12)
    assert isinstance(f, Frame) and f.headers["login"] == "a\\cb"


def test_heartbeat_eols_between_frames() -> None:
    p = FrameParser()
    assert p.feed(b"\n\r\n\n") == []
    assert p.heartbeats == 3
    [f] = p.feed(b"SEND\ndestination:/q\n\nx\x00\n\n")
    assert isinstance(f, Frame)
    assert p.heartbeats == 5


def test_partial_input_byte_by_byte() -> None:
    data = b"SEND\ndestination:/q\ncontent-length:3\n\n\x00\x01\x02\x00SEND\ndestination:/r\n\nbody\x00"
    p = FrameParser()
    out: list[Frame | ParseError] = []
    for i in range(len(data)):
        out += p.feed(data[i:i + 1])
    assert out == [Frame("SEND", {"destination": "/q", "content-length": "3"}, b"\x00\x01\x02"),
                   Frame("SEND", {"destination": "/r"}, b"body")]
    assert p.buffered == 0


def test_many_frames_in_one_read() -> None:
    data = b"".join(serialize("SEND", {"destination": f"/queue/{i}"}, str(i).encode()) for i in range(50))
    out = parse_all(data)
    assert [f.body for f in out if isinstance(f, Frame)] == [str(i).encode() for i in range(50)]


def test_frames_after_connect_use_negotiated_escaping() -> None:
    # the parser stops after CONNECT; the caller sets the version and resumes
    p = FrameParser()
    out = p.feed(b"CONNECT\naccept-version:1.2\n\n\x00SEND\ndestination:/q\nh:a\\cb\n\n\x00")
    assert [f.command for f in out if isinstance(f, Frame)] == ["CONNECT"]
    p.version = V12
    [f] = p.resume()
    assert isinstance(f, Frame) and f.headers["h"] == "a:b"


def test_header_block_limit() -> None:
    [e] = parse_all(b"SEND\nh:" + b"x" * 600 + b"\n\n\x00", max_header_size=256)
    assert isinstance(e, ParseError) and isinstance(e.error, FrameError)
    # an unterminated header block is refused as soon as it passes the limit
    p = FrameParser(max_header_size=256)
    [e] = p.feed(b"SEND\nh:" + b"x" * 300)
    assert isinstance(e, ParseError)
    assert p.feed(b"more") == []  # the parser stays failed


def test_body_limit_with_and_without_content_length() -> None:
    [e] = parse_all(b"SEND\ndestination:/q\ncontent-length:2000\nreceipt:r9\n\n", max_body=1000)
    assert isinstance(e, ParseError) and isinstance(e.error, ContentTooLarge) and e.receipt == "r9"
    p = FrameParser(max_body=1000)
    assert p.feed(b"SEND\ndestination:/q\n\n" + b"x" * 500) == []
    [e] = p.feed(b"x" * 600)
    assert isinstance(e, ParseError) and isinstance(e.error, ContentTooLarge)


def test_header_count_limit() -> None:
    [e] = parse_all(b"SEND\n" + b"".join(b"h%d:v\n" % i for i in range(20)) + b"\n\x00", max_headers=10)
    assert isinstance(e, ParseError)


@pytest.mark.parametrize("raw", [b"send\n\n\x00", b"SE ND\n\n\x00", b"\xff\xfe\n\n\x00", b"SEND\nnocolon\n\n\x00",
                                 b"SEND\n:empty-name\n\n\x00", b"SEND\ncontent-length:-1\n\n\x00", b"\rX"])
def test_malformed(raw: bytes) -> None:
    out = parse_all(raw)
    assert len(out) == 1 and isinstance(out[0], ParseError)


# ---- serializer -----------------------------------------------------------------------------------
def test_serialize_golden_1_2() -> None:
    assert serialize("MESSAGE", [("destination", "/queue/a"), ("k", "a:b\nc\\d\re")], b"hi", V12) == (
        b"MESSAGE\ndestination:/queue/a\nk:a\\cb\\nc\\\\d\\re\ncontent-length:2\n\nhi\x00")


def test_serialize_golden_1_1_keeps_cr() -> None:
    assert serialize("RECEIPT", [("receipt-id", "a:b\r")], b"", V11) == b"RECEIPT\nreceipt-id:a\\cb\r\n\n\x00"


def test_serialize_golden_1_0_has_no_escapes() -> None:
    assert serialize("MESSAGE", [("k", "a:b\nc")], b"", V10) == b"MESSAGE\nk:a:b c\n\n\x00"


def test_connected_is_never_escaped() -> None:
    assert serialize("CONNECTED", [("version", "1.2"), ("server", "a:b")], b"", V12) == (
        b"CONNECTED\nversion:1.2\nserver:a:b\n\n\x00")


@pytest.mark.parametrize("version", [V11, V12])
def test_roundtrip_escaping(version: str) -> None:
    value = "line1\nline2:colon\\slash"
    [f] = parse_all(serialize("SEND", [("h", value)], b"\x00body\x00", version), version)
    assert isinstance(f, Frame) and f.headers["h"] == value and f.body == b"\x00body\x00"


def test_escape_function() -> None:
    assert escape("a\nb", V10) == "a b"
    assert escape("a\rb", V11) == "a\rb"
    assert escape("a\rb", V12) == "a\\rb"


def test_1_1_cr_is_header_data_but_1_2_strips_it() -> None:
    [f11] = parse_all(b"SEND\r\nh:v\r\n\n\x00", V11)
    [f12] = parse_all(b"SEND\r\nh:v\r\n\n\x00", V12)
    assert isinstance(f11, Frame) and f11.headers["h"] == "v\r"
    assert isinstance(f12, Frame) and f12.headers["h"] == "v"
