"""Encryption at rest through a real broker: pika publishes with ``--encryption-key-file``, the
segment files never hold the body, a restart delivers it; without the key (or with a wrong one)
the node refuses to start with one line naming the key id, and the data stays intact."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pika

from brokerproc import start_broker, stop_broker
from haremq.store.crypto import new_key_line

HAREMQ = [sys.executable, "-m", "haremq.cli"]
SECRET = b"classified-payload-5d1e"
NO_KEY_ENV = {k: v for k, v in os.environ.items() if not k.startswith("HAREMQ_ENCRYPTION")}


def serve(data_dir: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HAREMQ, "serve", "--log-level", "warning", "--amqp-port", "0", "--stomp-port", "0",
                           "--sqs-port", "0", "--management-port", "0", "--data-dir", data_dir, *args],
                          capture_output=True, text=True, timeout=30, env=NO_KEY_ENV)


def segment_bytes(data_dir: str) -> bytes:
    out = []
    for root, _d, names in os.walk(os.path.join(data_dir, "queues")):
        out += [pathlib.Path(root, n).read_bytes() for n in names if ".seg" in n]
    return b"".join(out)


def test_encrypted_broker_keeps_bodies_sealed_and_refuses_to_start_without_the_right_key(
        tmp_path: pathlib.Path) -> None:
    keyfile = tmp_path / "keys"
    keyfile.write_text(new_key_line(5) + "\n")
    data_dir = str(tmp_path / "data")
    b = start_broker("--encryption-key-file", str(keyfile), data_dir=data_dir, env=NO_KEY_ENV)
    try:
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port))
        ch = conn.channel()
        ch.queue_declare("sealed", durable=True)
        ch.confirm_delivery()
        ch.basic_publish("", "sealed", SECRET, pika.BasicProperties(delivery_mode=2, headers={"x-h": "hidden-hdr"}))
        conn.close()
    finally:
        stop_broker(b)
    disk = segment_bytes(data_dir)
    assert disk and SECRET not in disk and b"hidden-hdr" not in disk

    proc = serve(data_dir)  # no key
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "cannot start" in proc.stderr and "key id 5" in proc.stderr, proc.stderr
    wrong = tmp_path / "wrong"
    wrong.write_text(new_key_line(5) + "\n")
    proc = serve(data_dir, "--encryption-key-file", str(wrong))
    assert proc.returncode == 2 and "wrong encryption key for key id 5" in proc.stderr, proc.stderr
    assert segment_bytes(data_dir) == disk  # refused starts changed nothing

    b = start_broker("--encryption-key-file", str(keyfile), data_dir=data_dir, env=NO_KEY_ENV)
    try:
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port))
        ch = conn.channel()
        method, props, body = ch.basic_get("sealed", auto_ack=True)
        assert method is not None and body == SECRET and props.headers == {"x-h": "hidden-hdr"}
        conn.close()
    finally:
        stop_broker(b)


def test_store_rewrap_refuses_a_data_dir_held_by_a_running_broker(tmp_path: pathlib.Path) -> None:
    keyfile = tmp_path / "keys"
    keyfile.write_text(new_key_line(1) + "\n")
    b = start_broker("--encryption-key-file", str(keyfile), env=NO_KEY_ENV)
    try:
        proc = subprocess.run([*HAREMQ, "store-rewrap", b.data_dir, "--encryption-key-file", str(keyfile)],
                              capture_output=True, text=True, timeout=30, env=NO_KEY_ENV)
        assert proc.returncode == 2
        assert "in use by another haremq broker" in proc.stderr and "stop it before store-rewrap" in proc.stderr
        assert b.alive()
    finally:
        stop_broker(b)
