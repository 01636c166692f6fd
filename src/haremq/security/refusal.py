"""What the authentication service hands to listeners: who is asking (``Peer``) and why it said no.

Plain data, no state and no I/O, so the sans-IO protocol code (protocol/) may import it to map a
refusal to its own answer (AMQP 403, STOMP ERROR, HTTP 401, an AWS error code).
"""

from __future__ import annotations

import dataclasses
import enum


@dataclasses.dataclass(frozen=True, slots=True)
class Peer:
    """The client as the audit log names it: its protocol, ``host:port``, and whether it is local;
    ``cert_name``: the subject CN of its verified TLS client certificate (SASL EXTERNAL), if any."""

    protocol: str
    address: str
    loopback: bool
    cert_name: str | None = None


class Reason(enum.Enum):
    """Why a login was refused; each listener maps these to its protocol's answer."""

    NO_CREDENTIALS = "no credentials"
    MALFORMED = "malformed credentials"
    UNSUPPORTED_MECHANISM = "unsupported mechanism"
    UNKNOWN_USER = "unknown user"
    BAD_PASSWORD = "bad password"
    LOOPBACK_ONLY = "loopback only"
    UNKNOWN_KEY = "unknown access key"
    BAD_SIGNATURE = "bad signature"
    EXPIRED = "expired request"
    NOT_ALLOWED = "not allowed"  # authenticated, but not for this (vhost, management UI)


class LoginRefused(Exception):
    """A refused login, already written to the audit log by the service that raised it.

    ``user`` is the name as the log shows it (None when none could be read); ``detail`` is the text
    the client may be told (for SigV4, AWS's own message for that error).
    """

    def __init__(self, reason: Reason, user: str | None, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.user = user
        self.detail = detail
