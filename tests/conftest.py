"""Shared fixtures: a real ``haremq serve`` subprocess on an ephemeral port."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest


@dataclass
class BrokerProcess:
    proc: subprocess.Popen[str]
    port: int
    data_dir: str

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def alive(self) -> bool:
        return self.proc.poll() is None


def start_broker(*extra: str, data_dir: str | None = None) -> BrokerProcess:
    data_dir = data_dir or tempfile.mkdtemp(prefix="haremq-it-")
    log = open(os.path.join(data_dir, "broker.log"), "w")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "haremq.cli", "serve", "--amqp-port", "0", "--data-dir", data_dir,
         "--log-level", "warning", "--stomp-port", "0", *extra],
        stdout=subprocess.PIPE, stderr=log, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        m = re.search(r"ready: amqp://[^:]+:(\d+)", line)
        if m:
            return BrokerProcess(proc, int(m.group(1)), data_dir)
    proc.kill()
    with open(os.path.join(data_dir, "broker.log")) as f:
        raise RuntimeError(f"broker did not start: {f.read()}")


def stop_broker(b: BrokerProcess) -> None:
    if b.proc.poll() is None:
        b.proc.send_signal(signal.SIGTERM)
        try:
            b.proc.wait(10)
        except subprocess.TimeoutExpired:
            b.proc.kill()
            b.proc.wait()


@pytest.fixture(scope="module")
def broker() -> Iterator[BrokerProcess]:
    """One real broker process shared by a test module."""
    b = start_broker()
    yield b
    stop_broker(b)
    assert b.proc.returncode == 0, "broker did not shut down cleanly"


@pytest.fixture
def fresh_broker() -> Iterator[BrokerProcess]:
    """A real broker process for a single test."""
    b = start_broker()
    yield b
    stop_broker(b)
