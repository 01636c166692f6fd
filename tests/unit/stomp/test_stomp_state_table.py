"""The STOMP session state machine: every (state, command) pair, negotiation, transactions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from haremq.errors import CommandInvalid, ContentTooLarge, NotAllowed, PreconditionFailed, SyntaxError_
from haremq.protocol.stomp.frames import Frame, FrameParser, serialize
from haremq.protocol.stomp.session import (
    CLIENT_COMMANDS,
    SESSION_TABLE,
    Action,
    Commit,
    Connect,
    Disconnect,
    Failed,
    Held,
    Received,
    State,
    StompConnection,
    negotiate_version,
    parse_heart_beat,
)

# headers that satisfy every command's requirements in every version
FULL = {"destination": "/queue/a", "id": "s1", "message-id": "T_s1@@1", "subscription": "s1", "transaction": "t0"}


def frame(command: str, headers: dict[str, str] | None = None, body: bytes = b"", version: str = "1.2") -> bytes:
    return serialize(command, headers or {}, body, version)


def connected(version: str = "1.2", **headers: str) -> StompConnection:
    c = StompConnection()
    [e] = c.receive_data(frame("CONNECT", {"accept-version": version, "host": "/", **headers}))
    assert isinstance(e, Connect) and e.version == version
    return c


def to_state(state: State) -> StompConnection:
    if state is State.AWAIT_CONNECT:
        return StompConnection()
    c = connected()
    [held] = c.receive_data(frame("BEGIN", {"transaction": "t0"}))  # so t0-marked frames are valid
    assert isinstance(held, Held)
    if state is State.CLOSED:
        c.receive_data(frame("DISCONNECT"))
    assert c.state is state
    return c


@pytest.mark.parametrize("state", list(State))
@pytest.mark.parametrize("command", [*CLIENT_COMMANDS, "MESSAGE", "BOGUS"])
def test_every_state_command_pair(state: State, command: str) -> None:
    c = to_state(state)
    headers = dict(FULL, **({"accept-version": "1.2"} if command in ("CONNECT", "STOMP") else {}))
    if command == "BEGIN":
        headers["transaction"] = "fresh"
    events = c.receive_data(frame(command, headers))
    entry = SESSION_TABLE.get((state, command))
    if state is State.CLOSED:
        assert events == []
    elif entry is None:
        [e] = events
        assert isinstance(e, Failed) and isinstance(e.error, CommandInvalid)
        assert c.state is State.CLOSED
    else:
        _, nxt = entry
        assert len(events) == 1 and not isinstance(events[0], Failed), events
        assert c.state is nxt


def test_table_covers_connected_commands() -> None:
    for cmd in CLIENT_COMMANDS:
        if cmd not in ("CONNECT", "STOMP"):
            assert (State.CONNECTED, cmd) in SESSION_TABLE
            assert (State.AWAIT_CONNECT, cmd) not in SESSION_TABLE


@given(st.lists(st.sampled_from([*CLIENT_COMMANDS, "FOO"]), max_size=12))
def test_random_command_walks_follow_the_table(commands: list[str]) -> None:
    c = StompConnection()
    for cmd in commands:
        before = c.state
        headers = dict(FULL, **{"accept-version": "1.0,1.1,1.2"})
        headers.pop("transaction")  # no transactions in this walk
        events = c.receive_data(frame(cmd, headers))
        if before is State.CLOSED:
            assert events == []
            continue
        entry = SESSION_TABLE.get((before, cmd))
        if entry is None or cmd in ("BEGIN", "COMMIT", "ABORT"):
            assert isinstance(events[-1], Failed) and c.state is State.CLOSED
        else:
            assert c.state is entry[1]


# ---- negotiation ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("accept", "want"), [(None, "1.0"), ("1.0", "1.0"), ("1.1", "1.1"), ("1.0,1.1,1.2", "1.2"),
                                              ("1.1, 1.0", "1.1"), ("2.0", None), ("", None)])
def test_negotiate_version(accept: str | None, want: str | None) -> None:
    assert negotiate_version(accept) == want


def test_unsupported_version_is_an_error_with_version_header() -> None:
    c = StompConnection()
    [e] = c.receive_data(frame("CONNECT", {"accept-version": "2.0"}))
    assert isinstance(e, Failed) and isinstance(e.error, NotAllowed)
    assert ("version", "1.0,1.1,1.2") in e.headers
    c.send_error(e.error, e.receipt, e.headers)
    out = b"".join(c.data_to_send())
    assert out.startswith(b"ERROR\nmessage:not allowed\nversion:1.0,1.1,1.2\n")


@pytest.mark.parametrize(("value", "want"), [(None, (0, 0)), ("0,0", (0, 0)), ("1000,500", (1000, 500)),
                                             (" 10 , 20", (10, 20)), ("x,1", None), ("1", None), ("-1,0", None)])
def test_parse_heart_beat(value: str | None, want: tuple[int, int] | None) -> None:
    assert parse_heart_beat(value) == want


def test_heart_beat_negotiation() -> None:
    c = connected("1.2", **{"heart-beat": "2000,30"})
    assert c.recv_ms == 2000  # the client sends every 2 s
    assert c.send_ms == 100  # it wants ours every 30 ms: we send no faster than min_heartbeat_ms
    c.send_connected("s", "haremq")
    assert b"heart-beat:100,2000\n" in c.data_to_send()[0]
    c10 = connected("1.0", **{"heart-beat": "1000,1000"})
    assert c10.send_ms == c10.recv_ms == 0  # 1.0 has no heart-beating


def test_malformed_heart_beat() -> None:
    c = StompConnection()
    [e] = c.receive_data(frame("CONNECT", {"accept-version": "1.2", "heart-beat": "fast"}))
    assert isinstance(e, Failed) and isinstance(e.error, SyntaxError_)


def test_connect_then_pipelined_frames_use_new_escaping() -> None:
    c = StompConnection()
    data = frame("STOMP", {"accept-version": "1.2", "login": "a\\cb"}) + b"SEND\ndestination:/q\nh:x\\cy\n\n\x00"
    e1, e2 = c.receive_data(data)
    assert isinstance(e1, Connect) and e1.login == "a\\cb"
    assert isinstance(e2, Received) and e2.frame.headers["h"] == "x:y"


# ---- required headers ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("version", "command", "headers"), [
    ("1.2", "SEND", {}), ("1.2", "SUBSCRIBE", {"destination": "/q"}), ("1.0", "SUBSCRIBE", {}),
    ("1.2", "UNSUBSCRIBE", {}), ("1.0", "UNSUBSCRIBE", {}), ("1.2", "ACK", {"message-id": "x"}),
    ("1.1", "ACK", {"message-id": "x"}), ("1.0", "ACK", {}), ("1.1", "NACK", {"subscription": "x"}),
    ("1.2", "BEGIN", {}), ("1.2", "COMMIT", {}), ("1.2", "ABORT", {}),
])
def test_missing_required_header(version: str, command: str, headers: dict[str, str]) -> None:
    c = connected(version)
    [e] = c.receive_data(frame(command, {**headers, "receipt": "r1"}, version=version))
    assert isinstance(e, Failed) and isinstance(e.error, SyntaxError_) and e.receipt == "r1"


def test_nack_is_not_in_1_0() -> None:
    c = connected("1.0")
    [e] = c.receive_data(frame("NACK", {"message-id": "x"}, version="1.0"))
    assert isinstance(e, Failed) and isinstance(e.error, CommandInvalid)


@pytest.mark.parametrize(("version", "command", "headers"), [
    ("1.0", "SUBSCRIBE", {"destination": "/q"}), ("1.0", "UNSUBSCRIBE", {"destination": "/q"}),
    ("1.0", "ACK", {"message-id": "x"}), ("1.1", "ACK", {"message-id": "x", "subscription": "s"}),
    ("1.2", "ACK", {"id": "x"}), ("1.2", "NACK", {"id": "x"}),
])
def test_required_headers_present(version: str, command: str, headers: dict[str, str]) -> None:
    c = connected(version)
    [e] = c.receive_data(frame(command, headers, version=version))
    assert isinstance(e, Received)


# ---- transactions -------------------------------------------------------------------------------------
def test_transaction_holds_frames_until_commit() -> None:
    c = connected()
    evs = c.receive_data(frame("BEGIN", {"transaction": "t"})
                         + frame("SEND", {"destination": "/q", "transaction": "t"}, b"1")
                         + frame("ACK", {"id": "T_s@@1", "transaction": "t"})
                         + frame("SEND", {"destination": "/q"}, b"2")
                         + frame("COMMIT", {"transaction": "t", "receipt": "c"}))
    assert [type(e) for e in evs] == [Held, Held, Held, Received, Commit]
    commit = evs[-1]
    assert isinstance(commit, Commit)
    assert [r.action for r in commit.frames] == [Action.SEND, Action.ACK]
    assert c.transactions == {}


def test_abort_drops_frames() -> None:
    c = connected()
    evs = c.receive_data(frame("BEGIN", {"transaction": "t"}) + frame("SEND", {"destination": "/q", "transaction": "t"})
                         + frame("ABORT", {"transaction": "t"}))
    assert [type(e) for e in evs] == [Held, Held, Held]
    [e] = c.receive_data(frame("COMMIT", {"transaction": "t"}))
    assert isinstance(e, Failed) and isinstance(e.error, PreconditionFailed)


@pytest.mark.parametrize("data", [
    frame("BEGIN", {"transaction": "t"}) + frame("BEGIN", {"transaction": "t"}),
    frame("SEND", {"destination": "/q", "transaction": "nope"}),
    frame("ABORT", {"transaction": "nope"}),
])
def test_transaction_errors(data: bytes) -> None:
    c = connected()
    evs = c.receive_data(data)
    assert isinstance(evs[-1], Failed) and isinstance(evs[-1].error, PreconditionFailed)


def test_transaction_limits() -> None:
    c = StompConnection(max_transactions=2, max_transaction_frames=2)
    c.receive_data(frame("CONNECT", {"accept-version": "1.2"}))
    evs = c.receive_data(b"".join(frame("BEGIN", {"transaction": str(i)}) for i in range(3)))
    assert isinstance(evs[-1], Failed)
    c = StompConnection(max_transaction_frames=2)
    c.receive_data(frame("CONNECT", {"accept-version": "1.2"}) + frame("BEGIN", {"transaction": "t"}))
    evs = c.receive_data(b"".join(frame("SEND", {"destination": "/q", "transaction": "t"}) for _ in range(3)))
    assert isinstance(evs[-1], Failed)


# ---- errors and output -------------------------------------------------------------------------------
def test_parse_error_comes_after_earlier_frames() -> None:
    c = connected()
    evs = c.receive_data(frame("SEND", {"destination": "/q", "receipt": "1"}) + b"garbage here\n\n\x00")
    assert isinstance(evs[0], Received) and isinstance(evs[1], Failed)
    assert c.receive_data(frame("SEND", {"destination": "/q"})) == []


def test_oversize_body_fails_with_receipt() -> None:
    c = StompConnection(max_body=10)
    c.receive_data(frame("CONNECT", {"accept-version": "1.2"}))
    [e] = c.receive_data(b"SEND\ndestination:/q\nreceipt:r\ncontent-length:11\n\n")
    assert isinstance(e, Failed) and isinstance(e.error, ContentTooLarge) and e.receipt == "r"


def test_error_frame_golden() -> None:
    c = connected()
    c.send_error(PreconditionFailed("details here"), "r7")
    assert c.data_to_send() == [b"ERROR\nmessage:precondition failed\nreceipt-id:r7\ncontent-type:text/plain\n"
                                b"content-length:12\n\ndetails here\x00"]
    assert c.closed


def test_receipt_and_message_output() -> None:
    c = connected("1.1")
    c.send_receipt(Frame("SEND", {"receipt": "a:b"}))
    c.send_receipt(Frame("SEND", {}))
    c.send_message([("destination", "/queue/x"), ("message-id", "T_s@@1")], b"\x00")
    assert c.data_to_send() == [b"RECEIPT\nreceipt-id:a\\cb\n\n\x00",
                                b"MESSAGE\ndestination:/queue/x\nmessage-id:T_s@@1\ncontent-length:1\n\n\x00\x00"]


def test_disconnect_closes() -> None:
    c = connected()
    [e] = c.receive_data(frame("DISCONNECT", {"receipt": "bye"}))
    assert isinstance(e, Disconnect) and c.closed


def test_parser_is_shared() -> None:
    assert isinstance(StompConnection().parser, FrameParser)
