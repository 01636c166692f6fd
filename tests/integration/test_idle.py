"""An idle broker uses no CPU, whatever the fsync policy (a flusher that spins would show here)."""

from __future__ import annotations

import os
import time

import pika
import pytest

from brokerproc import start_broker, stop_broker


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.parametrize("policy", ["always", "interval", "off"])
def test_idle_after_persistent_traffic(policy: str) -> None:
    b = start_broker(env={"HAREMQ_FSYNC": policy})
    try:
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port))
        ch = conn.channel()
        ch.queue_declare("idle", durable=True)
        ch.confirm_delivery()
        for _ in range(50):
            ch.basic_publish("", "idle", b"x", pika.BasicProperties(delivery_mode=2))
        conn.close()
        time.sleep(0.5)
        before = cpu_seconds(b.proc.pid)
        time.sleep(2.0)
        used = cpu_seconds(b.proc.pid) - before
        assert used < 0.3, f"idle broker used {used:.2f} s of CPU in 2 s (fsync={policy})"
    finally:
        stop_broker(b)
