"""Start and stop a private RabbitMQ node for side-by-side benchmarks (AMQP now, STOMP later).

All node state lives in one folder; ports default to ones that do not collide with haremq (AMQP 5673, STOMP 61614,
management 15673). The node is stopped by the PID of its Erlang VM, never by name, and the shared
``epmd`` daemon is left alone.

Usage from code::

    with RabbitNode("/tmp/rmq-bench") as node:
        print(node.amqp_url, node.beam_pid, node.rss_kib())

Usage from the shell (start, print the URL, stop on Ctrl-C)::

    python bench/rabbitmq.py --dir /tmp/rmq-bench
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
INSTALL_HINT = "apt-get update && apt-get install -y --no-install-recommends rabbitmq-server"


def rss_kib(pid: int) -> int | None:
    """VmRSS of a process in KiB, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _port_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


class RabbitNode:
    """A private RabbitMQ node: ``start()``, ``stop()``, or use as a context manager."""

    def __init__(self, base_dir: str | os.PathLike[str] | None = None, *, amqp_port: int = 5673,
                 stomp_port: int = 61614, mgmt_port: int = 15673, node_name: str = "rabbit@localhost",
                 plugins: tuple[str, ...] = ("rabbitmq_management", "rabbitmq_stomp"),
                 extra_conf: str = "", keep_dir: bool = False, amqps_port: int | None = None,
                 tls_files: tuple[str, str] | None = None) -> None:
        self._tmp = base_dir is None
        self.base = Path(base_dir or tempfile.mkdtemp(prefix="rmq-bench-"))
        self.amqp_port, self.stomp_port, self.mgmt_port = amqp_port, stomp_port, mgmt_port
        self.node_name, self.plugins, self.extra_conf = node_name, plugins, extra_conf
        self.keep_dir = keep_dir
        self.amqps_port, self.tls_files = amqps_port, tls_files  # an AMQPS listener: port, (cert, key)
        self.proc: subprocess.Popen[bytes] | None = None
        self.beam_pid: int | None = None

    @property
    def amqp_url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/"

    @property
    def amqps_url(self) -> str:
        return f"amqps://guest:guest@127.0.0.1:{self.amqps_port}/"

    @property
    def stomp_address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.stomp_port)

    def _write_config(self) -> dict[str, str]:
        self.base.mkdir(parents=True, exist_ok=True)
        for sub in ("mnesia", "log", "home"):
            (self.base / sub).mkdir(exist_ok=True)
        conf = [f"listeners.tcp.default = 127.0.0.1:{self.amqp_port}",
                "loopback_users.guest = true",
                "distribution.listener.interface = 127.0.0.1"]
        if self.amqps_port is not None and self.tls_files is not None:
            # AMQPS as haremq's: TLS 1.2+, no client certificates asked for
            cert, key = self.tls_files
            conf += [f"listeners.ssl.default = 127.0.0.1:{self.amqps_port}", f"ssl_options.cacertfile = {cert}",
                     f"ssl_options.certfile = {cert}", f"ssl_options.keyfile = {key}",
                     "ssl_options.verify = verify_none", "ssl_options.fail_if_no_peer_cert = false",
                     "ssl_options.versions.1 = tlsv1.3", "ssl_options.versions.2 = tlsv1.2"]
        if "rabbitmq_stomp" in self.plugins:
            conf.append(f"stomp.listeners.tcp.1 = 127.0.0.1:{self.stomp_port}")
        if "rabbitmq_management" in self.plugins:
            conf += ["management.tcp.ip = 127.0.0.1", f"management.tcp.port = {self.mgmt_port}"]
        (self.base / "rabbitmq.conf").write_text("\n".join(conf) + "\n" + self.extra_conf)
        (self.base / "enabled_plugins").write_text("[" + ",".join(self.plugins) + "].\n")
        env = dict(os.environ)
        env.update({
            "HOME": str(self.base / "home"),
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self.base / "rabbit.pid"),
            "RABBITMQ_NODENAME": self.node_name,
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        })
        return env

    def start(self, timeout: float = 60.0) -> RabbitNode:
        if not os.path.exists(SERVER):
            raise RuntimeError(f"RabbitMQ is not installed: {INSTALL_HINT}")
        if _port_open("127.0.0.1", self.amqp_port):
            raise RuntimeError(f"port {self.amqp_port} is already in use")
        env = self._write_config()
        with contextlib.suppress(FileNotFoundError):
            (self.base / "rabbit.pid").unlink()
        log = open(self.base / "log" / "console.log", "ab")  # noqa: SIM115 - kept open for the child
        self.proc = subprocess.Popen([SERVER], env=env, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rabbitmq-server exited with {self.proc.returncode}; "
                                   f"see {self.base / 'log'}")
            if self.beam_pid is None:
                with contextlib.suppress(OSError, ValueError):
                    self.beam_pid = int((self.base / "rabbit.pid").read_text().strip())
            if self.beam_pid is not None and _port_open("127.0.0.1", self.amqp_port):
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"RabbitMQ did not listen on {self.amqp_port} within {timeout}s")

    def rss_kib(self) -> int | None:
        """RSS of the Erlang VM (beam.smp) in KiB."""
        return rss_kib(self.beam_pid) if self.beam_pid else None

    def stop(self, timeout: float = 30.0) -> None:
        # SIGTERM to the Erlang VM makes it stop the node cleanly (OTP >= 20); the wrapper script then exits.
        if self.beam_pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.beam_pid, signal.SIGTERM)
        if self.proc is not None:
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                if self.beam_pid:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self.beam_pid, signal.SIGKILL)
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                self.proc.wait(5)
        if self.beam_pid:
            deadline = time.monotonic() + timeout
            while rss_kib(self.beam_pid) is not None and time.monotonic() < deadline:
                time.sleep(0.1)
        self.proc, self.beam_pid = None, None
        if self._tmp and not self.keep_dir:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> RabbitNode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description="run a private RabbitMQ node until Ctrl-C")
    ap.add_argument("--dir", help="state folder (default: a temporary one, removed on exit)")
    ap.add_argument("--amqp-port", type=int, default=5673)
    ap.add_argument("--stomp-port", type=int, default=61614)
    ap.add_argument("--mgmt-port", type=int, default=15673)
    args = ap.parse_args()
    node = RabbitNode(args.dir, amqp_port=args.amqp_port, stomp_port=args.stomp_port, mgmt_port=args.mgmt_port)
    node.start()
    print(f"rabbitmq ready: {node.amqp_url} stomp=127.0.0.1:{node.stomp_port} beam_pid={node.beam_pid}", flush=True)
    try:
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        node.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
