"""Start and stop a real ``haremq serve`` subprocess with every listener on an ephemeral port.

The broker prints ``haremq X ready: amqp://H:P stomp://H:P sqs://H:P http://H:P``; the ports are
read from that line. Used by conftest's fixtures and by the protocol-specific test helpers.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

URL = re.compile(r"(amqps|amqp|stomps|stomp|sqs\+https|sqs|https|http)://[^\s:]+:(\d+)")
STARTED: list[subprocess.Popen[str]] = []  # every broker started, so a failed test cannot leak one


@dataclass
class BrokerProcess:
    proc: subprocess.Popen[str]
    port: int  # AMQP
    data_dir: str
    ports: dict[str, int] = field(default_factory=dict)  # scheme -> port, as printed

    @property
    def amqp_port(self) -> int:
        return self.port

    @property
    def stomp_port(self) -> int:
        return self.ports["stomp"]

    @property
    def sqs_port(self) -> int:
        return self.ports["sqs"]

    @property
    def management_port(self) -> int:
        return self.ports["http"]

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    @property
    def sqs_url(self) -> str:
        return f"http://127.0.0.1:{self.sqs_port}"

    @property
    def management_url(self) -> str:
        return f"http://127.0.0.1:{self.management_port}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        with open(os.path.join(self.data_dir, "broker.log")) as f:
            return f.read()


def start_broker(*extra: str, data_dir: str | None = None, env: dict[str, str] | None = None,
                 prefix: str = "haremq-it-") -> BrokerProcess:
    data_dir = data_dir or tempfile.mkdtemp(prefix=prefix)
    os.makedirs(data_dir, exist_ok=True)
    log = open(os.path.join(data_dir, "broker.log"), "a")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "haremq.cli", "serve", "--amqp-port", "0", "--data-dir", data_dir,
         "--log-level", "warning", "--stomp-port", "0", "--sqs-port", "0", "--management-port", "0", *extra],
        stdout=subprocess.PIPE, stderr=log, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )
    STARTED.append(proc)
    assert proc.stdout is not None
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if "ready:" in line:
            ports = {scheme: int(port) for scheme, port in URL.findall(line)}
            return BrokerProcess(proc, ports["amqp"], data_dir, ports)
    proc.kill()
    with open(os.path.join(data_dir, "broker.log")) as f:
        raise RuntimeError(f"broker did not start: {f.read()}")


def kill_leftovers(since: int) -> None:
    """Kill brokers started after ``STARTED[since]`` that are still running (a test failed before
    its cleanup)."""
    while len(STARTED) > since:
        proc = STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def stop_broker(b: BrokerProcess) -> int:
    """SIGTERM, then SIGKILL after 10 s; returns the exit status."""
    if b.proc.poll() is None:
        b.proc.send_signal(signal.SIGTERM)
        try:
            b.proc.wait(10)
        except subprocess.TimeoutExpired:
            b.proc.kill()
            b.proc.wait()
    return b.proc.returncode
