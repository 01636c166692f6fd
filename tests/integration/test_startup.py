"""Start-up: one broker per data directory (an flock the kernel drops when the holder dies), and
start-up errors as one line naming the listener or path, exit status 2, no traceback."""

from __future__ import annotations

import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile

import pika

from brokerproc import start_broker, stop_broker

HAREMQ = [sys.executable, "-m", "haremq.cli"]
PORTS_0 = ["--amqp-port", "0", "--stomp-port", "0", "--sqs-port", "0", "--management-port", "0"]


def serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HAREMQ, "serve", "--log-level", "warning", *PORTS_0, *args], capture_output=True,
                          text=True, timeout=30, env={**os.environ, **(env or {})})


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def publish_confirmed(port: int, queue: str, body: bytes) -> None:
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
    ch = conn.channel()
    ch.queue_declare(queue, durable=True)
    ch.confirm_delivery()
    ch.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2))
    conn.close()


def test_second_broker_on_a_live_data_dir_exits_naming_the_holder_pid() -> None:
    b = start_broker()
    try:
        publish_confirmed(b.port, "q", b"first")
        proc = serve("--data-dir", b.data_dir)
        assert proc.returncode == 2
        line = one_line(proc)
        assert b.data_dir in line and f"pid {b.proc.pid}" in line, line
        assert b.alive()
        # the first broker's data is untouched: no second queue directory appeared
        vhost_dirs = os.listdir(os.path.join(b.data_dir, "queues"))
        for v in vhost_dirs:
            assert not [q for q in os.listdir(os.path.join(b.data_dir, "queues", v)) if "~" in q]
    finally:
        stop_broker(b)


def test_store_check_refuses_a_data_dir_held_by_a_broker() -> None:
    b = start_broker()
    try:
        proc = subprocess.run([*HAREMQ, "store-check", b.data_dir], capture_output=True, text=True, timeout=30)
        assert proc.returncode == 2
        assert f"pid {b.proc.pid}" in one_line(proc)
    finally:
        stop_broker(b)
    proc = subprocess.run([*HAREMQ, "store-check", b.data_dir], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_killed_broker_leaves_no_lock_behind() -> None:
    b = start_broker()
    publish_confirmed(b.port, "q", b"kept")
    b.proc.send_signal(signal.SIGKILL)
    b.proc.wait(10)
    b2 = start_broker(data_dir=b.data_dir)
    try:
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b2.port))
        ch = conn.channel()
        assert ch.basic_get("q", auto_ack=True)[2] == b"kept"
        conn.close()
    finally:
        stop_broker(b2)


def test_port_in_use_names_the_listener() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        for flag, name in (("--amqp-port", "AMQP"), ("--stomp-port", "STOMP"), ("--sqs-port", "SQS"),
                           ("--management-port", "management")):
            proc = serve("--data-dir", tempfile.mkdtemp(prefix="haremq-it-"), flag, str(port))
            assert proc.returncode == 2
            assert one_line(proc) == f"haremq: cannot start: {name} port {port} in use"


def test_unwritable_data_dir_is_named() -> None:
    with tempfile.NamedTemporaryFile() as f:  # a file where a directory should be: not writable, even as root
        data_dir = os.path.join(f.name, "data")
        proc = serve("--data-dir", data_dir)
        assert proc.returncode == 2
        line = one_line(proc)
        assert line.startswith(f"haremq: cannot start: data dir {data_dir} is not writable"), line


def test_misspelled_environment_variable_is_reported_with_the_closest_name() -> None:
    b = start_broker(env={"HAREMQ_HEARTBEET": "7"})
    try:
        assert "HAREMQ_HEARTBEET" in b.log() and "did you mean HAREMQ_HEARTBEAT?" in b.log()
    finally:
        stop_broker(b)


def test_misspelled_config_file_key_names_the_closest_setting(tmp_path: pathlib.Path) -> None:
    conf = tmp_path / "haremq.toml"
    conf.write_text("[haremq]\nheartbeet = 7\n")
    proc = serve("--data-dir", str(tmp_path / "data"), "--config", str(conf))
    assert proc.returncode == 2
    assert "did you mean heartbeat?" in one_line(proc)
