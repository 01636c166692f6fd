"""Start and stop a real ``haremq serve`` subprocess with every listener on an ephemeral port.

The broker prints ``haremq X ready: amqp://H:P stomp://H:P sqs://H:P http://H:P``; the ports are
read from that line. Used by conftest's fixtures and by the protocol-specific test helpers.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

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

    def api(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
            user: str = "guest", password: str = "guest") -> tuple[int, Any]:
        """One management API call as a tool makes it (JSON body, Basic auth): (status, parsed JSON, or
        the text when it is not JSON)."""
        data = None if body is None else json.dumps(body).encode()
        auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.management_port}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json", "Authorization": auth,
                                              **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=10) as res:
                raw, status = res.read(), res.status
        except urllib.error.HTTPError as e:
            raw, status = e.read(), e.code
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode()


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
