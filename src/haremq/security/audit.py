"""One place that records who tried to get in, from where, and how it ended.

Every listener (AMQP, STOMP, SQS, management) calls these instead of writing its own log line, so an
operator greps one logger (``haremq.audit``) and one format for every protocol, as RabbitMQ logs
``connection_closed`` / ``invalid credentials`` lines. The front-door issue will add usage records and
definition changes behind the same functions.
"""

from __future__ import annotations

import logging

log = logging.getLogger("haremq.audit")


def login_refused(protocol: str, peer: str, user: str | None, reason: str) -> None:
    """A refused authentication: unknown user, wrong password, loopback-only user, no credentials."""
    log.warning("login refused: protocol=%s peer=%s user=%r reason=%s", protocol, peer, user, reason)


def connection_opened(protocol: str, peer: str, user: str, vhost: str) -> None:
    """A client finished its handshake and is now authenticated."""
    log.info("connection opened: protocol=%s peer=%s user=%r vhost=%r", protocol, peer, user, vhost)


def connection_closed(protocol: str, peer: str, user: str | None, reason: str) -> None:
    """A client connection ended (closed by either side, or dropped)."""
    log.info("connection closed: protocol=%s peer=%s user=%r reason=%s", protocol, peer, user, reason)
