"""Start a real ``haremq serve`` with every listener on an ephemeral port; boto3 clients for it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

READY = re.compile(r"ready: amqp://[^:]+:(\d+) stomp://[^:]+:(\d+) sqs://[^:]+:(\d+) http://[^:]+:(\d+)")


@dataclass
class HttpBroker:
    proc: subprocess.Popen[str]
    amqp_port: int
    stomp_port: int
    sqs_port: int
    management_port: int
    data_dir: str

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


def start_http_broker(*extra: str) -> HttpBroker:
    data_dir = tempfile.mkdtemp(prefix="haremq-http-")
    log = open(os.path.join(data_dir, "broker.log"), "w")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "haremq.cli", "serve", "--amqp-port", "0", "--stomp-port", "0", "--sqs-port", "0",
         "--management-port", "0", "--data-dir", data_dir, "--log-level", "warning", *extra],
        stdout=subprocess.PIPE, stderr=log, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        m = READY.search(line)
        if m:
            a, s, q, h = (int(x) for x in m.groups())
            return HttpBroker(proc, a, s, q, h, data_dir)
    proc.kill()
    with open(os.path.join(data_dir, "broker.log")) as f:
        raise RuntimeError(f"broker did not start: {f.read()}")


def stop_http_broker(b: HttpBroker) -> int:
    if b.proc.poll() is None:
        b.proc.send_signal(signal.SIGTERM)
        try:
            b.proc.wait(10)
        except subprocess.TimeoutExpired:
            b.proc.kill()
            b.proc.wait()
    return b.proc.returncode


def sqs_client(b: HttpBroker, key: str = "guest", secret: str = "guest", **kw: Any) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client("sqs", endpoint_url=b.sqs_url, region_name="us-east-1", aws_access_key_id=key,
                        aws_secret_access_key=secret,
                        config=Config(retries={"max_attempts": 1}, read_timeout=30, **kw))
