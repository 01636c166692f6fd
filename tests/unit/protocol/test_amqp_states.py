"""The AMQP connection state table, walked pair by pair: every (state, connection method) either
moves as CONNECTION_TABLE says or closes the connection with 503 COMMAND_INVALID."""

from __future__ import annotations

from typing import Any

import pytest
from pamqp import commands as C
from pamqp import frame as pframe

from haremq.protocol.amqp import codec
from haremq.protocol.amqp import connection as ev

METHODS: list[Any] = [
    C.Connection.StartOk(client_properties={}, mechanism="PLAIN", response="\0guest\0guest"),
    C.Connection.TuneOk(channel_max=0, frame_max=131072, heartbeat=0),
    C.Connection.Open(virtual_host="/"),
    C.Connection.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0),
    C.Connection.CloseOk(),
    C.Connection.Start(),
    C.Connection.Tune(),
    C.Connection.OpenOk(),
    C.Connection.Secure(challenge="x"),
    C.Connection.SecureOk(response="x"),
    C.Connection.Blocked(reason="x"),
    C.Connection.Unblocked(),
    C.Connection.UpdateSecret(new_secret="guest", reason="rotation"),
]

# how to bring a fresh connection into each state
PATH = [METHODS[0], METHODS[1], METHODS[2]]
REACH = {ev.State.AWAIT_START_OK: 0, ev.State.AWAIT_TUNE_OK: 1, ev.State.AWAIT_OPEN: 2, ev.State.OPEN: 3}


def in_state(state: ev.State) -> ev.AmqpConnection:
    conn = ev.AmqpConnection({})
    conn.receive_data(codec.PROTOCOL_HEADER)
    if state == ev.State.CLOSING:
        for m in PATH:
            conn.receive_data(pframe.marshal(m, 0))
        conn.close(ev.CommandInvalid("test"))
    else:
        for m in PATH[:REACH[state]]:
            conn.receive_data(pframe.marshal(m, 0))
    assert conn.state == state
    conn.data_to_send()
    return conn


@pytest.mark.parametrize("state", [*REACH, ev.State.CLOSING], ids=lambda s: s.value)
@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
def test_every_state_method_pair(state: ev.State, method: Any) -> None:
    conn = in_state(state)
    events = conn.receive_data(pframe.marshal(method, 0))
    nxt = ev.CONNECTION_TABLE.get((state, type(method)))
    if state == ev.State.CLOSING:
        # after our close only close / close-ok are read, everything else is dropped
        assert conn.state == (ev.State.CLOSED if nxt else ev.State.CLOSING)
        return
    if nxt is not None:
        assert conn.state == nxt
        assert not any(isinstance(e, ev.ConnectionClosed) and e.error is not None for e in events)
    else:
        closed = [e for e in events if isinstance(e, ev.ConnectionClosed)]
        assert closed and closed[0].error is not None and closed[0].error.reply_code == 503
        assert conn.state == ev.State.CLOSING


def test_channel_frames_before_open_are_unexpected() -> None:
    conn = in_state(ev.State.AWAIT_OPEN)
    events = conn.receive_data(pframe.marshal(C.Channel.Open(), 1))
    closed = [e for e in events if isinstance(e, ev.ConnectionClosed)]
    assert closed and closed[0].error is not None and closed[0].error.reply_code == 505
