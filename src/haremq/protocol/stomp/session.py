"""The STOMP session as a sans-IO state machine: ``receive_data`` bytes -> events.

The server feeds bytes in and writes ``data_to_send()`` out. This object owns framing, version
and heart-beat negotiation, required headers, and transactions (frames marked with a
``transaction`` header are held here until COMMIT, dropped on ABORT). It does not authenticate,
route or deliver: those come out as events, and the answers go back in as calls
(``send_connected``, ``send_message``, ``send_receipt``, ``send_error``).

States are data. ``SESSION_TABLE`` maps (state, command) to (action, next state); any pair not in
it is a protocol error: the server sends an ERROR frame and closes the connection, as the spec
requires. Errors found while parsing are not written here: they come out as a ``Failed`` event *in
order* after the events before them, so the server can answer those first (receipts, MESSAGEs)
and only then write the ERROR. From the moment a ``Failed`` or ``Disconnect`` event is produced
the state is CLOSED and further input is ignored.

Per the spec a RECEIPT means "everything up to this frame is processed", so the server sends it
(``send_receipt``) after handling each event's frame; this object never queues one on its own.
"""

from __future__ import annotations

import dataclasses
import enum

from haremq.errors import CommandInvalid, HareError, NotAllowed, PreconditionFailed, SyntaxError_
from haremq.protocol.stomp.frames import V10, V11, V12, VERSIONS, Frame, FrameParser, ParseError, serialize


class State(enum.Enum):
    AWAIT_CONNECT = "await-connect"
    CONNECTED = "connected"
    CLOSED = "closed"


class Action(enum.Enum):
    """What the server does with a frame that the table accepted."""

    CONNECT = "connect"
    SEND = "send"
    SUBSCRIBE = "subscribe"
    UNSUBSCRIBE = "unsubscribe"
    ACK = "ack"
    NACK = "nack"
    BEGIN = "begin"
    COMMIT = "commit"
    ABORT = "abort"
    DISCONNECT = "disconnect"


CLIENT_COMMANDS = ("CONNECT", "STOMP", "SEND", "SUBSCRIBE", "UNSUBSCRIBE", "ACK", "NACK", "BEGIN", "COMMIT",
                   "ABORT", "DISCONNECT")

# (state, command) -> (action, next state). A frame before CONNECT, a second CONNECT, or anything
# after DISCONNECT is not here, and so is an error. CLOSED reads nothing.
SESSION_TABLE: dict[tuple[State, str], tuple[Action, State]] = {
    (State.AWAIT_CONNECT, "CONNECT"): (Action.CONNECT, State.CONNECTED),
    (State.AWAIT_CONNECT, "STOMP"): (Action.CONNECT, State.CONNECTED),
    (State.CONNECTED, "SEND"): (Action.SEND, State.CONNECTED),
    (State.CONNECTED, "SUBSCRIBE"): (Action.SUBSCRIBE, State.CONNECTED),
    (State.CONNECTED, "UNSUBSCRIBE"): (Action.UNSUBSCRIBE, State.CONNECTED),
    (State.CONNECTED, "ACK"): (Action.ACK, State.CONNECTED),
    (State.CONNECTED, "NACK"): (Action.NACK, State.CONNECTED),
    (State.CONNECTED, "BEGIN"): (Action.BEGIN, State.CONNECTED),
    (State.CONNECTED, "COMMIT"): (Action.COMMIT, State.CONNECTED),
    (State.CONNECTED, "ABORT"): (Action.ABORT, State.CONNECTED),
    (State.CONNECTED, "DISCONNECT"): (Action.DISCONNECT, State.CLOSED),
}

# Headers a frame must carry, per version. UNSUBSCRIBE in 1.0 needs ``id`` or ``destination``
# (checked in code); NACK does not exist in 1.0 (checked in code).
REQUIRED_HEADERS: dict[tuple[Action, str], tuple[str, ...]] = {}
for _v in VERSIONS:
    REQUIRED_HEADERS[(Action.SEND, _v)] = ("destination",)
    REQUIRED_HEADERS[(Action.SUBSCRIBE, _v)] = ("destination",) if _v == V10 else ("destination", "id")
    REQUIRED_HEADERS[(Action.UNSUBSCRIBE, _v)] = () if _v == V10 else ("id",)
    REQUIRED_HEADERS[(Action.BEGIN, _v)] = ("transaction",)
    REQUIRED_HEADERS[(Action.COMMIT, _v)] = ("transaction",)
    REQUIRED_HEADERS[(Action.ABORT, _v)] = ("transaction",)
REQUIRED_HEADERS[(Action.ACK, V10)] = ("message-id",)
REQUIRED_HEADERS[(Action.ACK, V11)] = ("message-id", "subscription")
REQUIRED_HEADERS[(Action.NACK, V11)] = ("message-id", "subscription")
REQUIRED_HEADERS[(Action.ACK, V12)] = ("id",)
REQUIRED_HEADERS[(Action.NACK, V12)] = ("id",)

_TX_ACTIONS = (Action.SEND, Action.ACK, Action.NACK)


# ---- events -----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class Connect:
    """CONNECT/STOMP accepted by the table; the server authenticates and calls ``send_connected``."""

    frame: Frame
    version: str
    login: str | None
    passcode: str | None
    host: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class Received:
    """A frame for the server to act on (SEND, SUBSCRIBE, UNSUBSCRIBE, ACK, NACK outside a transaction)."""

    action: Action
    frame: Frame


@dataclasses.dataclass(frozen=True, slots=True)
class Held:
    """BEGIN, ABORT, or a frame held for its transaction: nothing to do but the receipt (which, for a
    held SEND, the server gives at COMMIT, once the message is kept)."""

    frame: Frame


@dataclasses.dataclass(frozen=True, slots=True)
class Commit:
    """COMMIT: apply ``frames`` (SEND/ACK/NACK, in arrival order; SENDs receipted as applied), then
    receipt ``frame``."""

    frame: Frame
    frames: tuple[Received, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Disconnect:
    frame: Frame


@dataclasses.dataclass(frozen=True, slots=True)
class Failed:
    """Protocol error: the server sends ``send_error(error, receipt)`` and closes."""

    error: HareError
    receipt: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


Event = Connect | Received | Held | Commit | Disconnect | Failed


def negotiate_version(accept: str | None) -> str | None:
    """Highest version both sides speak; a CONNECT without ``accept-version`` is 1.0."""
    if accept is None:
        return V10
    offered = {v.strip() for v in accept.split(",")}
    for v in reversed(VERSIONS):
        if v in offered:
            return v
    return None


def parse_heart_beat(value: str | None) -> tuple[int, int] | None:
    """``cx,cy`` in milliseconds; (0, 0) when absent; None when malformed."""
    if value is None:
        return 0, 0
    parts = value.split(",")
    if len(parts) != 2:
        return None
    a, b = parts[0].strip(), parts[1].strip()
    if not (a.isdigit() and b.isdigit() and a.isascii() and b.isascii()):
        return None
    return int(a), int(b)


class StompConnection:
    """One STOMP connection, server side."""

    def __init__(self, *, max_header_size: int = 65536, max_headers: int = 1000,
                 max_body: int = 128 * 1024 * 1024, min_heartbeat_ms: int = 100,
                 max_transactions: int = 100, max_transaction_frames: int = 10000) -> None:
        self.parser = FrameParser(max_header_size=max_header_size, max_headers=max_headers, max_body=max_body)
        self.state = State.AWAIT_CONNECT
        self.version = V10
        self.min_heartbeat_ms = min_heartbeat_ms
        self.max_transactions = max_transactions
        self.max_transaction_frames = max_transaction_frames
        # negotiated heart-beat periods (ms, 0 = none): we send every ``send_ms``; the client
        # promised to send at least every ``recv_ms``
        self.send_ms = 0
        self.recv_ms = 0
        self.transactions: dict[str, list[Received]] = {}
        self._out: list[bytes] = []

    # ---- input ----------------------------------------------------------------------------------
    def receive_data(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        if self.state is State.CLOSED:
            return events
        items = self.parser.feed(data)
        while True:
            for item in items:
                self._on_item(item, events)
                if self.closed:
                    return events
            # the parser stops after a CONNECT so the frames behind it use the negotiated escaping
            if not items or not isinstance(items[-1], Frame) or items[-1].command not in ("CONNECT", "STOMP"):
                return events
            items = self.parser.resume()

    def _fail(self, events: list[Event], err: HareError, receipt: str | None,
              headers: tuple[tuple[str, str], ...] = ()) -> None:
        events.append(Failed(err, receipt, headers))
        self.state = State.CLOSED

    def _on_item(self, item: Frame | ParseError, events: list[Event]) -> None:
        if isinstance(item, ParseError):
            self._fail(events, item.error, item.receipt)
            return
        frame = item
        h = frame.headers
        receipt = h.get("receipt")
        entry = SESSION_TABLE.get((self.state, frame.command))
        if entry is None:
            if frame.command not in CLIENT_COMMANDS:
                self._fail(events, CommandInvalid(f"unknown command '{frame.command[:40]}'"), receipt)
            elif self.state is State.AWAIT_CONNECT:
                self._fail(events, CommandInvalid(f"{frame.command} before CONNECT"), receipt)
            else:
                self._fail(events, CommandInvalid(f"{frame.command} not allowed in state {self.state.value}"),
                           receipt)
            return
        action, nxt = entry
        if action is Action.CONNECT:
            self._connect(frame, events)
            return
        version = self.version
        if action is Action.NACK and version == V10:
            self._fail(events, CommandInvalid("NACK is not part of STOMP 1.0"), receipt)
            return
        for name in REQUIRED_HEADERS.get((action, version), ()):
            if name not in h:
                self._fail(events, SyntaxError_(f"{frame.command} frame is missing required header '{name}'"),
                           receipt)
                return
        if action is Action.UNSUBSCRIBE and "id" not in h and "destination" not in h:
            self._fail(events, SyntaxError_("UNSUBSCRIBE frame needs an 'id' or 'destination' header"), receipt)
            return
        self.state = nxt
        if action is Action.DISCONNECT:
            events.append(Disconnect(frame))
            return
        if action is Action.BEGIN:
            tx = h["transaction"]
            if tx in self.transactions:
                self._fail(events, PreconditionFailed(f"transaction '{tx}' is already active"), receipt)
            elif len(self.transactions) >= self.max_transactions:
                self._fail(events, PreconditionFailed(f"more than {self.max_transactions} open transactions"),
                           receipt)
            else:
                self.transactions[tx] = []
                events.append(Held(frame))
            return
        if action is Action.COMMIT or action is Action.ABORT:
            tx = h["transaction"]
            held = self.transactions.pop(tx, None)
            if held is None:
                self._fail(events, PreconditionFailed(f"transaction '{tx}' is not active"), receipt)
            elif action is Action.COMMIT:
                events.append(Commit(frame, tuple(held)))
            else:
                events.append(Held(frame))
            return
        txn = h.get("transaction")
        if txn is not None and action in _TX_ACTIONS:
            frames = self.transactions.get(txn)
            if frames is None:
                self._fail(events, PreconditionFailed(f"transaction '{txn}' is not active"), receipt)
                return
            if len(frames) >= self.max_transaction_frames:
                self._fail(events, PreconditionFailed(
                    f"transaction '{txn}' holds more than {self.max_transaction_frames} frames"), receipt)
                return
            frames.append(Received(action, frame))
            events.append(Held(frame))
            return
        events.append(Received(action, frame))

    def _connect(self, frame: Frame, events: list[Event]) -> None:
        h = frame.headers
        receipt = h.get("receipt")
        version = negotiate_version(h.get("accept-version"))
        if version is None:
            self._fail(events, NotAllowed(f"supported protocol versions are {','.join(VERSIONS)}"), receipt,
                       (("version", ",".join(VERSIONS)),))
            return
        hb = parse_heart_beat(h.get("heart-beat")) if version != V10 else (0, 0)
        if hb is None:
            self._fail(events, SyntaxError_(f"malformed heart-beat header {h.get('heart-beat', '')[:40]!r}"),
                       receipt)
            return
        cx, cy = hb
        # we send as often as the client wants to hear from us, and expect it as often as it
        # offers; neither faster than ``min_heartbeat_ms`` (a 1 ms heart-beat would be a busy loop)
        floor = self.min_heartbeat_ms
        self.send_ms = max(cy, floor) if cy else 0
        self.recv_ms = max(cx, floor) if cx else 0
        self.version = version
        self.parser.version = version
        self.state = State.CONNECTED
        events.append(Connect(frame, version, h.get("login"), h.get("passcode"), h.get("host")))

    # ---- output ---------------------------------------------------------------------------------
    def data_to_send(self) -> list[bytes]:
        out = self._out
        self._out = []
        return out

    def send_connected(self, session: str, server: str) -> None:
        headers = [("version", self.version), ("session", session), ("server", server)]
        if self.version != V10:
            headers.append(("heart-beat", f"{self.send_ms},{self.recv_ms}"))
        self._out.append(serialize("CONNECTED", headers, b"", self.version))

    def send_message(self, headers: list[tuple[str, str]], body: bytes) -> None:
        self._out.append(serialize("MESSAGE", headers, body, self.version))

    def send_receipt(self, frame: Frame) -> None:
        """RECEIPT for ``frame`` if it asked for one."""
        receipt = frame.headers.get("receipt")
        if receipt is not None:
            self._out.append(serialize("RECEIPT", [("receipt-id", receipt)], b"", self.version))

    def send_error(self, err: HareError, receipt: str | None = None,
                   headers: tuple[tuple[str, str], ...] = ()) -> None:
        """ERROR frame: ``message`` from the error registry, details in the body. Closes the session."""
        h = [("message", err.stomp_message)]
        if receipt is not None:
            h.append(("receipt-id", receipt))
        h.extend(headers)
        h.append(("content-type", "text/plain"))
        self._out.append(serialize("ERROR", h, (err.text or err.stomp_message).encode("utf-8"), self.version))
        self.state = State.CLOSED
        self.transactions.clear()

    def send_heartbeat(self) -> None:
        self._out.append(b"\n")

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED


__all__ = ["SESSION_TABLE", "V10", "V11", "V12", "Action", "Commit", "Connect", "Disconnect", "Event", "Failed",
           "Held", "Received", "State", "StompConnection"]
