"""The two access rules every listener applies after (or while) checking credentials.

Pure functions over a ``User``, free of protocol imports, so core/ (``Broker.open_vhost``) and the
authentication service share one definition of each rule.
"""

from __future__ import annotations

from haremq.security.users import User


def loopback_refused(user: User, loopback: bool) -> bool:
    """RabbitMQ's ``loopback_users``: such a user (``guest`` by default) may only log in from this host."""
    return user.loopback_only and not loopback


def may_open_vhost(user: User, vhost: str) -> bool:
    """Has ``user`` any permissions in ``vhost`` (RabbitMQ: no permission entry, no access)."""
    return vhost in user.permissions


def vhost_refusal(user: User, vhost: str, exists: bool) -> tuple[str, str] | None:
    """Why ``user`` may not open ``vhost``: (text for the client, text for the audit log); None if it may.

    The client texts are RabbitMQ's connection.open refusals.
    """
    if not exists:
        return f"vhost {vhost} not found", f"vhost {vhost} not found"
    if not may_open_vhost(user, vhost):
        return f"access to vhost '{vhost}' refused for user '{user.name}'", f"no access to vhost '{vhost}'"
    return None
