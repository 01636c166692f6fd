"""Start and stop a real ``haremq serve`` subprocess on ephemeral ports (used by conftest and tests)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass


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
    os.makedirs(data_dir, exist_ok=True)
    log = open(os.path.join(data_dir, "broker.log"), "a")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "haremq.cli", "serve", "--amqp-port", "0", "--data-dir", data_dir,
         "--log-level", "warning", "--stomp-port", "0", "--sqs-port", "0", "--management-port", "0", *extra],
        stdout=subprocess.PIPE, stderr=log, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
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
