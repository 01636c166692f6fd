"""Real etcd members for the coordinator tests: free loopback ports, a temp data dir each.

etcd cannot listen on port 0 and advertise what it got, so ports are picked free by binding and
released just before the start; a start that loses that race is retried with new ports.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field

ETCD = shutil.which("etcd") or "/usr/bin/etcd"


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class Member:
    name: str
    client_port: int
    peer_port: int
    data_dir: str
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.endpoint}/health", timeout=0.5) as r:
                return b'"true"' in r.read()
        except OSError:
            return False

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)


@dataclass
class EtcdCluster:
    members: list[Member] = field(default_factory=list)
    tmp: str = ""

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    def stop(self) -> None:
        """SIGKILL: the data is thrown away, and a graceful stop with a dead peer takes seconds."""
        for m in self.members:
            m.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)


def start_etcd(size: int = 1, attempts: int = 3) -> EtcdCluster:
    if not shutil.which(ETCD):
        raise RuntimeError("etcd not found: install Debian's etcd-server (the CI script does)")
    for _ in range(attempts):
        cluster = _try_start(size)
        if cluster is not None:
            return cluster
    raise RuntimeError(f"could not start a {size}-member etcd")


def _try_start(size: int) -> EtcdCluster | None:
    tmp = tempfile.mkdtemp(prefix="haremq-etcd-")
    ports = _free_ports(2 * size)
    members = [Member(f"m{i}", ports[2 * i], ports[2 * i + 1], f"{tmp}/m{i}") for i in range(size)]
    initial = ",".join(f"{m.name}=http://127.0.0.1:{m.peer_port}" for m in members)
    cluster = EtcdCluster(members, tmp)
    for m in members:
        m.proc = subprocess.Popen(
            [ETCD, "--name", m.name, "--data-dir", m.data_dir,
             "--listen-client-urls", f"http://{m.endpoint}", "--advertise-client-urls", f"http://{m.endpoint}",
             "--listen-peer-urls", f"http://127.0.0.1:{m.peer_port}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{m.peer_port}",
             "--initial-cluster", initial, "--initial-cluster-state", "new",
             # a new etcd leader within ~0.5-1 s: well inside lease TTL - margin (see docs/cluster.md)
             "--heartbeat-interval", "50", "--election-timeout", "500", "--log-level", "error"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if any(m.proc is not None and m.proc.poll() is not None for m in members):
            break  # a port was taken meanwhile: retry on new ones
        if all(m.healthy() for m in members):
            return cluster
        time.sleep(0.05)
    with contextlib.suppress(Exception):
        cluster.stop()
    return None
