"""An in-process broker on an ephemeral port, for our tests and for users' own.

``running_broker()`` is an async context manager for code already inside an event loop;
``BrokerThread`` runs one on a private loop in a background thread so synchronous clients
(pika's BlockingConnection, kombu, Celery, boto3) can talk to it from the test's thread. Every
listener is exposed (``amqp_url``, ``stomp_port``, ``sqs_endpoint_url``, ``management_url``), and a
temporary data directory it created is removed when it stops.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any

from haremq.config import Settings
from haremq.server.node import Node


def _settings(**overrides: Any) -> Settings:
    """Settings for a test broker: free ports, and a fresh temporary data directory unless given."""
    data_dir = overrides.pop("data_dir", None) or tempfile.mkdtemp(prefix="haremq-test-")
    base = Settings(amqp_port=0, stomp_port=0, sqs_port=0, management_port=0, data_dir=data_dir, amqps_port=0,
                    stomps_port=0, sqs_https_port=0, management_https_port=0)
    return dataclasses.replace(base, **overrides).validate()


@asynccontextmanager
async def running_broker(**overrides: Any) -> AsyncIterator[Node]:
    """Start a broker node on 127.0.0.1 and a free port; stop it (and remove its temporary data
    directory) on exit."""
    settings = _settings(**overrides)
    node = Node(settings)
    try:
        await node.start()
        try:
            yield node
        finally:
            await node.stop()
    finally:
        if "data_dir" not in overrides:
            shutil.rmtree(settings.data_dir, ignore_errors=True)


class BrokerThread:
    """A broker on its own event loop in a daemon thread. Use as a context manager."""

    def __init__(self, **overrides: Any) -> None:
        self._own_dir = "data_dir" not in overrides  # only a directory we made is ours to remove
        self.settings = _settings(**overrides)
        self.node: Node | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    @property
    def port(self) -> int:
        assert self.node is not None
        return self.node.amqp_port

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    @property
    def amqp_url(self) -> str:
        """``amqp://guest:guest@127.0.0.1:PORT/`` for pika, aio-pika, kombu, Celery."""
        return self.url

    @property
    def stomp_port(self) -> int:
        assert self.node is not None and self.node.stomp_port is not None, "STOMP is disabled"
        return self.node.stomp_port

    @property
    def sqs_port(self) -> int:
        assert self.node is not None and self.node.http is not None and self.node.http.sqs_port is not None, \
            "the SQS API is disabled"
        return self.node.http.sqs_port

    @property
    def sqs_endpoint_url(self) -> str:
        """``endpoint_url`` for boto3 (access key ``guest``, secret ``guest``)."""
        return f"http://127.0.0.1:{self.sqs_port}"

    @property
    def management_port(self) -> int:
        assert self.node is not None and self.node.http is not None \
            and self.node.http.management_port is not None, "the management API is disabled"
        return self.node.http.management_port

    @property
    def management_url(self) -> str:
        """Base URL of the management API, ``/metrics`` and the dashboard (user guest/guest)."""
        return f"http://127.0.0.1:{self.management_port}"

    @property
    def amqps_port(self) -> int:
        """AMQP over TLS (when ``tls_cert_file`` and ``tls_key_file`` are given)."""
        assert self.node is not None and self.node.amqps_port is not None, "TLS is not configured"
        return self.node.amqps_port

    @property
    def stomps_port(self) -> int:
        assert self.node is not None and self.node.stomps_port is not None, "TLS or STOMP is off"
        return self.node.stomps_port

    @property
    def sqs_https_endpoint_url(self) -> str:
        """``endpoint_url`` for boto3 over TLS (pass ``verify=`` the CA file)."""
        assert self.node is not None and self.node.http is not None and self.node.http.sqs_https_port is not None, \
            "TLS or the SQS API is off"
        return f"https://127.0.0.1:{self.node.http.sqs_https_port}"

    @property
    def management_https_url(self) -> str:
        assert self.node is not None and self.node.http is not None \
            and self.node.http.management_https_port is not None, "TLS or the management API is off"
        return f"https://127.0.0.1:{self.node.http.management_https_port}"

    def _run(self) -> None:
        async def main() -> None:
            self.node = Node(self.settings)
            self._stop = asyncio.Event()
            self.loop = asyncio.get_running_loop()
            try:
                await self.node.start()
            except BaseException as exc:
                self._error = exc
                self._ready.set()
                return
            self._ready.set()
            await self._stop.wait()
            await self.node.stop()

        asyncio.run(main())

    def start(self) -> BrokerThread:
        self._thread = threading.Thread(target=self._run, name="haremq-broker", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        if self.loop is not None and self._stop is not None and self._thread is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(10)
        if self._own_dir and (self._thread is None or not self._thread.is_alive()):
            shutil.rmtree(self.settings.data_dir, ignore_errors=True)

    def __enter__(self) -> BrokerThread:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
