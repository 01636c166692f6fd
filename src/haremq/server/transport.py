"""What every listener does to a freshly accepted socket."""

from __future__ import annotations

import asyncio
import socket

WRITE_BUFFER_HIGH = 4 * 1024 * 1024  # above this, pause_writing() back-pressures the connection


def accept(transport: asyncio.BaseTransport) -> tuple[str, int, bool]:
    """TCP_NODELAY, write-buffer limits; returns (peer host, peer port, is loopback).

    Loopback matters: the default ``guest`` user may only connect from it, as in RabbitMQ.
    """
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    set_limits = getattr(transport, "set_write_buffer_limits", None)
    if set_limits is not None:
        set_limits(high=WRITE_BUFFER_HIGH)
    peer = transport.get_extra_info("peername")
    host, port = (str(peer[0]), int(peer[1])) if peer else ("?", 0)
    return host, port, host.startswith("127.") or host in ("::1", "::ffff:127.0.0.1")
