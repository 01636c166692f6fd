"""The command line: invalid settings exit 2 with one clear line; SIGTERM closes clients with 320."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile

import pika
import pika.exceptions
import pytest

from brokerproc import start_broker

SERVE = [sys.executable, "-m", "haremq.cli", "serve"]


@pytest.mark.parametrize(("args", "env", "needle"), [
    (["--amqp-port", "70000"], {}, "amqp_port"),
    (["--amqp-port", "abc"], {}, "amqp_port"),
    (["--log-level", "loud"], {}, "log_level"),
    ([], {"HAREMQ_HEARTBEAT": "-5"}, "heartbeat"),
    (["--config", "/nonexistent/haremq.toml"], {}, "config"),
])
def test_invalid_setting_exits_2_with_one_line(args: list[str], env: dict[str, str], needle: str) -> None:
    proc = subprocess.run([*SERVE, *args], capture_output=True, text=True, timeout=30,
                          env={**os.environ, **env})
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr


def test_unknown_key_in_config_file() -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write('amqp_port = 5999\nfrobnicate = true\n')
    proc = subprocess.run([*SERVE, "--config", f.name], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "frobnicate" in proc.stderr


def test_config_file_and_env_are_applied() -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write('[haremq]\nheartbeat = 7\n')
    b = start_broker("--config", f.name)
    try:
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port))
        assert conn._impl.params.heartbeat == 7
        conn.close()
    finally:
        b.proc.send_signal(signal.SIGTERM)
        b.proc.wait(10)


def test_sigterm_closes_connections_with_connection_forced() -> None:
    b = start_broker()
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port))
    ch = conn.channel()
    ch.queue_declare("q")
    b.proc.send_signal(signal.SIGTERM)
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as info:
        conn.process_data_events(time_limit=5)
        conn.process_data_events(time_limit=5)
    assert info.value.reply_code == 320
    assert b.proc.wait(10) == 0
