"""A confirm belongs to the channel that published: a closed channel's pending confirm never reaches the
next channel opened with the same number (real broker process, slow group commit)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from amqp_raw import RawAmqp
from pamqp import commands as C

from brokerproc import BrokerProcess, start_broker, stop_broker

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def slow_sync_broker() -> Iterator[BrokerProcess]:
    """At most one group commit a second: right after one, the next confirm visibly waits for the disk."""
    b = start_broker(env={"HAREMQ_FSYNC": "interval", "HAREMQ_FSYNC_INTERVAL": "1.0"})
    yield b
    stop_broker(b)


def test_confirm_of_closed_channel_is_not_sent_to_its_successor(slow_sync_broker: BrokerProcess) -> None:
    q = f"confirm-{uuid.uuid4().hex[:8]}"
    with RawAmqp(slow_sync_broker.port) as c:
        c.handshake()
        c.open_channel(1)
        c.send_method(1, C.Queue.Declare(queue=q, durable=True))
        c.expect(C.Queue.DeclareOk)
        c.send_method(1, C.Confirm.Select())
        c.expect(C.Confirm.SelectOk)
        c.send_publish(1, "", q, b"primer", C.Basic.Properties(delivery_mode=2))
        c.expect(C.Basic.Ack)  # synced at once: a group commit just happened
        c.send_publish(1, "", q, b"persistent", C.Basic.Properties(delivery_mode=2))
        time.sleep(0.1)  # this confirm now waits ~1 s for the next group commit
        c.send_method(1, C.Channel.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0))
        c.expect(C.Channel.CloseOk)
        c.open_channel(1)  # same number, new channel: nothing was published on it
        c.send_method(1, C.Confirm.Select())
        c.expect(C.Confirm.SelectOk)
        got = []
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            try:
                got.append(c.read_frame(timeout=deadline - time.monotonic()))
            except TimeoutError:
                break
        assert not [f for f in got if isinstance(f[1], C.Basic.Ack | C.Basic.Nack)], got
