"""The node's one authentication service: every listener (AMQP, STOMP, SQS, management) asks it.

Each entry point returns the authenticated ``User`` or raises ``LoginRefused`` with a ``Reason``,
after writing exactly one ``haremq.security.audit.login_refused`` line; listeners only map the
reason to their protocol's answer.

The front-door issue extends this class, not the listeners: password KDFs go behind ``password``
(the only caller of ``check_password``); caches of verified credentials drop on password change;
SASL EXTERNAL (the verified TLS client certificate's CN, carried on ``Peer``) is a branch of ``sasl``;
rate limits per user and peer go where every refusal passes, ``_refuse``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import NoReturn, Protocol, TypeVar
from urllib.parse import unquote

from pamqp import decode

from haremq.clock import Clock
from haremq.errors import (
    AccessRefused,
    HareError,
    IncompleteSignature,
    InvalidClientTokenId,
    MissingAuthenticationToken,
    RequestExpired,
)
from haremq.security import audit
from haremq.security import sigv4 as _sigv4
from haremq.security.access import loopback_refused, vhost_refusal
from haremq.security.refusal import LoginRefused, Peer, Reason
from haremq.security.users import User, UserStore, check_password

V = TypeVar("V")

# what the audit log says for each reason (the operator's view; the client hears less)
_LOG = {
    Reason.UNKNOWN_USER: "unknown user",
    Reason.BAD_PASSWORD: "invalid password",
    Reason.LOOPBACK_ONLY: "user may only connect from loopback",
}
# AMQP and management logs say "invalid credentials" for both, as RabbitMQ's do
_VAGUE_LOG = frozenset({"amqp", "http"})
_SIGV4_REASONS: dict[type[HareError], Reason] = {
    MissingAuthenticationToken: Reason.NO_CREDENTIALS,
    IncompleteSignature: Reason.MALFORMED,
    RequestExpired: Reason.EXPIRED,
    InvalidClientTokenId: Reason.UNKNOWN_KEY,
}
SIGNING_KEY_CACHE = 1024


def _plain(response: bytes) -> tuple[str | None, str | None]:
    """SASL PLAIN: ``authzid NUL authcid NUL password`` (RFC 4616)."""
    parts = response.split(b"\x00")
    if len(parts) != 3:
        return None, None
    return parts[1].decode(), parts[2].decode()


def _amqplain(response: bytes) -> tuple[str | None, str | None]:
    """AMQPLAIN: an AMQP field table (without its length prefix) with LOGIN and PASSWORD."""
    _, table = decode.field_table(len(response).to_bytes(4, "big") + response)
    login, password = table.get("LOGIN"), table.get("PASSWORD")
    login = login.decode() if isinstance(login, bytes) else login
    password = password.decode() if isinstance(password, bytes) else password
    return (login if isinstance(login, str) else None), (password if isinstance(password, str) else None)


# SASL mechanism -> (login, password) parser. EXTERNAL has no password (the TLS client certificate
# names the user): it is a branch of ``Authenticator.sasl``, offered only to a peer with a certificate.
_SASL: dict[str, Callable[[bytes], tuple[str | None, str | None]]] = {"PLAIN": _plain, "AMQPLAIN": _amqplain}
MECHANISMS = " ".join(_SASL)


class SignedRequest(Protocol):
    """What SigV4 verification reads of an HTTP request (``protocol.http.HttpRequest`` has it)."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


class Authenticator:
    """Owned by the node: holds the user store, the clock (SigV4 expiry) and the SigV4 key cache."""

    def __init__(self, users: UserStore, clock: Clock, *, default_login: tuple[str, str] | None = None) -> None:
        self.users = users
        self.clock = clock
        self.default_login = default_login
        # SigV4 signing keys, keyed by a salted digest of the secret (never the secret itself), so a
        # changed secret misses the cache; bounded, least recently used goes first
        self._keys: OrderedDict[tuple[bytes, str, str, str], bytes] = OrderedDict()
        self._salt = os.urandom(16)

    @property
    def sasl_mechanisms(self) -> str:
        """What connection.start offers a peer without a client certificate: PLAIN and AMQPLAIN."""
        return MECHANISMS

    def mechanisms_for(self, peer: Peer) -> str:
        """What connection.start offers this peer: EXTERNAL first when it presented a verified TLS
        client certificate (as RabbitMQ's rabbitmq_auth_mechanism_ssl), then the password ones."""
        return f"EXTERNAL {MECHANISMS}" if peer.cert_name is not None else MECHANISMS

    # ---- entry points ----------------------------------------------------------------------------
    def sasl(self, mechanism: str, response: bytes, peer: Peer) -> User:
        """AMQP connection.start-ok: PLAIN, AMQPLAIN, or EXTERNAL (see ``external``)."""
        if mechanism == "EXTERNAL" and peer.cert_name is not None:
            return self.external(peer)
        parse = _SASL.get(mechanism)
        if parse is None:
            self._refuse(peer, Reason.UNSUPPORTED_MECHANISM, None, f"unsupported authentication mechanism {mechanism}",
                         f"unsupported authentication mechanism '{mechanism}'")
        try:
            login, password = parse(response)
        except (UnicodeDecodeError, ValueError, IndexError, KeyError, TypeError):
            login = password = None
        if login is None or password is None:
            self._refuse(peer, Reason.MALFORMED, login, f"malformed {mechanism} response")
        return self.password(login, password, peer)

    def password(self, name: str, password: str, peer: Peer, *, action: str | None = None) -> User:
        """A user name and password (STOMP login, HTTP Basic, dashboard login, AMQP update-secret:
        ``action`` then prefixes the log line)."""
        user = self.users.users.get(name)
        reason = (Reason.UNKNOWN_USER if user is None else
                  Reason.BAD_PASSWORD if not check_password(password, user.password_hash) else
                  Reason.LOOPBACK_ONLY if loopback_refused(user, peer.loopback) else None)
        if reason is None:
            assert user is not None
            return user
        text = "invalid credentials" if reason is not Reason.LOOPBACK_ONLY and peer.protocol in _VAGUE_LOG \
            else _LOG[reason]
        self._refuse(peer, reason, name, f"{action} refused: {text}" if action else text)

    def external(self, peer: Peer) -> User:
        """SASL EXTERNAL: the user named by the verified client certificate's subject CN (RabbitMQ's
        ``ssl_cert_login_from = common_name``). The TLS handshake was the proof: no password is
        checked, but the user must exist and the loopback rule holds."""
        name = peer.cert_name
        assert name is not None
        user = self.users.users.get(name)
        reason = (Reason.UNKNOWN_USER if user is None else
                  Reason.LOOPBACK_ONLY if loopback_refused(user, peer.loopback) else None)
        if reason is not None:
            self._refuse(peer, reason, name, f"EXTERNAL (client certificate CN={name}): {_LOG[reason]}")
        assert user is not None
        return user

    def default_user(self, peer: Peer) -> User:
        """No login given: the configured default login (STOMP's ``stomp_default_user``), else refused."""
        if self.default_login is None:
            self._refuse(peer, Reason.NO_CREDENTIALS, None,
                         "no credentials (no login header, and no stomp_default_user is configured)")
        return self.password(*self.default_login, peer)

    def trusted(self, name: str, peer: Peer, why: str) -> User:
        """Act as ``name`` without credentials because the operator said so (``--sqs-any-credentials``)."""
        user = self.users.users.get(name)
        if user is None:
            self._refuse(peer, Reason.UNKNOWN_USER, name, f"{why}: no default user", "no default user to act as")
        return user

    def sigv4(self, req: SignedRequest, peer: Peer) -> tuple[User, str]:
        """An AWS SigV4-signed request (header or presigned URL), checked against the clock:
        (user owning the access key, region the request was signed for)."""
        found: list[User] = []

        def secret_of(key_id: str) -> str | None:
            hit = self.users.by_access_key(key_id)
            if hit is None:
                return None
            found.append(hit[0])
            return hit[1]

        now = self.clock.time()
        try:
            if "authorization" not in req.headers and _sigv4.is_presigned(req.query):
                _, region = _sigv4.verify_presigned(req.method, req.path, req.query, req.headers, req.body,
                                                    secret_of, now, derive=self._signing_key)
            else:
                _, region = _sigv4.verify(req.method, req.path, req.query, req.headers, req.body, secret_of, now,
                                          derive=self._signing_key)
        except AccessRefused as err:
            key = _access_key_of(req)
            who = f"{found[0].name} (access key {key})" if found else key
            log = f"{err.sqs_code}: {err.text}"
            if isinstance(err, InvalidClientTokenId):
                log += (" (unknown access key: give a user this key with the management API, or start haremq "
                        "with --sqs-any-credentials to accept any key)")
            self._refuse(peer, _SIGV4_REASONS.get(type(err), Reason.BAD_SIGNATURE), who, log, err.text)
        user = found[0]
        if loopback_refused(user, peer.loopback):
            text = f"User {user.name} can only connect via localhost"
            self._refuse(peer, Reason.LOOPBACK_ONLY, f"{user.name} (access key {_access_key_of(req)})",
                         f"AccessDenied: {text}", text)
        return user, region

    def vhost(self, user: User, name: str, vhosts: Mapping[str, V], peer: Peer) -> V:
        """May ``user`` open vhost ``name`` (AMQP connection.open, STOMP CONNECT host)? The vhost if so."""
        vh = vhosts.get(name)
        refusal = vhost_refusal(user, name, vh is not None)
        if refusal is not None:
            self._refuse(peer, Reason.NOT_ALLOWED, user.name, refusal[1], refusal[0])
        assert vh is not None
        return vh

    def refuse(self, peer: Peer, user: str | None, log: str) -> None:
        """Audit a refusal the listener decides itself (management: malformed Basic header, not a
        management user), in the same format as the service's own."""
        audit.login_refused(peer.protocol, peer.address, user, log)

    # ---- internals --------------------------------------------------------------------------------
    def _refuse(self, peer: Peer, reason: Reason, user: str | None, log: str, detail: str | None = None) -> NoReturn:
        """The one place a refusal is audited and raised."""
        audit.login_refused(peer.protocol, peer.address, user, log)
        raise LoginRefused(reason, user, detail or log)

    def _signing_key(self, secret: str, date: str, region: str, service: str) -> bytes:
        ck = (hmac.new(self._salt, secret.encode(), hashlib.sha256).digest(), date, region, service)
        key = self._keys.get(ck)
        if key is not None:
            self._keys.move_to_end(ck)
            return key
        key = self._keys[ck] = _sigv4.derive_signing_key(secret, date, region, service)
        if len(self._keys) > SIGNING_KEY_CACHE:
            self._keys.popitem(last=False)
        return key


def _access_key_of(req: SignedRequest) -> str | None:
    """The access key id a request claims (Authorization header or presigned query), for the audit log."""
    auth = req.headers.get("authorization")
    if auth is not None:
        return auth.partition("Credential=")[2].split("/", 1)[0][:128] or None
    for part in req.query.split("&"):
        if part.startswith("X-Amz-Credential="):
            return unquote(part[len("X-Amz-Credential="):]).split("/", 1)[0][:128] or None
    return None
