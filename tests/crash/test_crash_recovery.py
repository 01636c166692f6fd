"""Crash tests with a real broker process: kill -9 at random points, torn and flipped segment bytes.

A confirmed persistent message must come back after any crash, exactly once; unacked ones may
come back redelivered; acked ones come back only if their ack was not yet durable (counted).
"""

from __future__ import annotations

import glob
import os
import random
import shutil
import tempfile
import threading
import time
from pathlib import Path

import pika
import pika.exceptions
import pytest

from brokerproc import BrokerProcess, start_broker, stop_broker

PERSISTENT = pika.BasicProperties(delivery_mode=2)


def connect(b: BrokerProcess) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port, heartbeat=0,
                                                             blocked_connection_timeout=10))


def drain(b: BrokerProcess, queue: str) -> list[tuple[bytes, bool]]:
    conn = connect(b)
    ch = conn.channel()
    out = []
    while True:
        method, _props, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            break
        out.append((body, method.redelivered))
    conn.close()
    return out


def publish_until_killed(b: BrokerProcess, queue: str, start: int, kill_after: float) -> list[int]:
    """Publish persistent messages with confirms; SIGKILL the broker after ``kill_after`` s."""
    confirmed: list[int] = []
    conn = connect(b)
    ch = conn.channel()
    ch.queue_declare(queue, durable=True)
    ch.confirm_delivery()
    killer = threading.Timer(kill_after, b.proc.kill)
    killer.start()
    i = start
    try:
        while True:
            ch.basic_publish("", queue, f"m{i}".encode(), PERSISTENT)
            confirmed.append(i)  # basic_publish returned: the broker confirmed it
            i += 1
    except (pika.exceptions.AMQPError, OSError):
        pass
    finally:
        killer.join()
        b.proc.wait(10)
    return confirmed


def test_confirmed_messages_survive_kill_9_rounds() -> None:
    data_dir = tempfile.mkdtemp(prefix="haremq-crash-")
    rng = random.Random(7)
    all_confirmed: list[int] = []
    acked: set[int] = set()
    next_id = 0
    b = start_broker(data_dir=data_dir)
    for _round in range(4):
        confirmed = publish_until_killed(b, "crashq", next_id, rng.uniform(0.3, 1.0))
        assert confirmed, "nothing was confirmed before the kill"
        all_confirmed += confirmed
        next_id = confirmed[-1] + 2  # the in-flight one may or may not be stored: skip its id
        b = start_broker(data_dir=data_dir)
        # consume and ack a few, so acks (remove records) are in the log for the next crash too
        conn = connect(b)
        ch = conn.channel()
        for _ in range(rng.randint(1, 20)):
            method, _p, body = ch.basic_get("crashq")
            if method is None:
                break
            ch.basic_ack(method.delivery_tag)
            acked.add(int(body[1:]))
        conn.close()
    got = drain(b, "crashq")
    stop_broker(b)
    ids = [int(body[1:]) for body, _ in got]
    assert len(ids) == len(set(ids)), "a message came back twice"
    missing = set(all_confirmed) - acked - set(ids)
    assert not missing, f"confirmed messages lost: {sorted(missing)[:10]}"
    came_back = acked & set(ids)
    # an ack is durable with the next group commit after it; a clean shutdown syncs, so none return
    assert not came_back, f"{len(came_back)} acked messages came back"
    unexpected = set(ids) - set(all_confirmed) - {i + 1 for i in all_confirmed}
    assert not unexpected, f"messages that were never published: {sorted(unexpected)[:10]}"
    shutil.rmtree(data_dir, ignore_errors=True)


def test_unacked_messages_come_back_redelivered_after_kill_9() -> None:
    data_dir = tempfile.mkdtemp(prefix="haremq-crash-")
    b = start_broker(data_dir=data_dir)
    conn = connect(b)
    ch = conn.channel()
    ch.queue_declare("rq", durable=True)
    ch.confirm_delivery()
    for i in range(10):
        ch.basic_publish("", "rq", f"m{i}".encode(), PERSISTENT)
    delivered = [ch.basic_get("rq") for _ in range(3)]
    assert all(m[0] is not None for m in delivered)
    ch.basic_ack(delivered[0][0].delivery_tag)
    time.sleep(0.3)  # let the ack's group commit happen
    b.proc.kill()
    b.proc.wait(10)
    b = start_broker(data_dir=data_dir)
    got = drain(b, "rq")
    stop_broker(b)
    assert [body for body, _ in got] == [f"m{i}".encode() for i in range(1, 10)]
    assert [red for _, red in got] == [True, True] + [False] * 7


def _segment(data_dir: str) -> str:
    segs = sorted(glob.glob(os.path.join(data_dir, "queues", "*", "*", "*.seg")))
    assert segs, "no segment written"
    return segs[-1]


def _fill(n: int) -> tuple[str, list[bytes]]:
    data_dir = tempfile.mkdtemp(prefix="haremq-torn-")
    b = start_broker(data_dir=data_dir)
    conn = connect(b)
    ch = conn.channel()
    ch.queue_declare("tq", durable=True)
    ch.confirm_delivery()
    bodies = [f"body-{i:05d}-".encode() + b"x" * 50 for i in range(n)]
    for body in bodies:
        ch.basic_publish("", "tq", body, PERSISTENT)
    conn.close()
    b.proc.kill()
    b.proc.wait(10)
    return data_dir, bodies


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_torn_tail_keeps_every_record_before_the_damage(seed: int) -> None:
    data_dir, bodies = _fill(200)
    seg = _segment(data_dir)
    raw = Path(seg).read_bytes()
    last = max(raw.rfind(body) + len(body) for body in bodies)
    cut = random.Random(seed).randrange(64, last)
    # a torn write: everything from the cut on never reached the disk (zeros, as in a pre-sized file)
    with open(seg, "r+b") as f:
        f.seek(cut)
        f.write(b"\0" * (len(raw) - cut))
    intact = [body for body in bodies if raw.find(body) >= 0 and raw.find(body) + len(body) <= cut - 1]
    b = start_broker(data_dir=data_dir)
    got = [body for body, _ in drain(b, "tq")]
    stop_broker(b)
    assert got[:len(intact)] == intact
    assert all(g in bodies for g in got)
    assert len(got) <= len(bodies)


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_flipped_bit_quarantines_but_keeps_the_rest(seed: int) -> None:
    data_dir, bodies = _fill(200)
    seg = _segment(data_dir)
    raw = bytearray(Path(seg).read_bytes())
    rng = random.Random(seed)
    first, last = raw.find(bodies[0]), raw.find(bodies[-1])
    pos = rng.randrange(first, last)
    raw[pos] ^= 1 << rng.randrange(8)
    Path(seg).write_bytes(bytes(raw))
    b = start_broker(data_dir=data_dir)
    got = [body for body, _ in drain(b, "tq")]
    alive = b.alive()
    stop_broker(b)
    assert alive
    assert all(g in bodies for g in got), "a damaged body was delivered"
    assert len(got) >= len(bodies) - 1, f"only {len(got)} of {len(bodies)} recovered"
    assert glob.glob(os.path.join(data_dir, "queues", "*", "*", "*.quarantined")), "damaged segment not quarantined"
