"""The authentication service with a fake clock: every refusal reason, one audit line each, SigV4 expiry
and skew measured on the injected clock, and the bounded signing-key cache."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import pytest
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from pamqp import encode

from haremq.protocol.http import HttpRequest
from haremq.security import auth as auth_module
from haremq.security.auth import Authenticator
from haremq.security.refusal import LoginRefused, Peer, Reason
from haremq.security.users import User, UserStore
from haremq.testing.fakes import FakeClock

LOCAL = Peer("amqp", "127.0.0.1:5000", True)
REMOTE = Peer("stomp", "10.0.0.9:5000", False)
SQS_LOCAL = Peer("sqs", "127.0.0.1:5000", True)


def make(default_login: tuple[str, str] | None = None, lag: float = 0.0) -> tuple[Authenticator, FakeClock]:
    users = UserStore()
    users.add("guest", "guest", loopback_only=True)
    users.add("alice", "wonder", vhosts=())
    users.add_access_key("alice", "AKID", "s3cret")
    users.add_access_key("guest", "GUEST", "guest")
    clock = FakeClock(start=0.0, wall=time.time() - lag)  # wall clock now (minus ``lag``), moved by the test
    return Authenticator(users, clock, default_login=default_login), clock


def signed(key: str = "AKID", secret: str = "s3cret", *, presign: bool = False, body: bytes = b"{}",
           authorization: str | None = None) -> HttpRequest:
    r = AWSRequest("POST", "http://127.0.0.1:9324/", data=body,
                   headers={"X-Amz-Target": "AmazonSQS.ListQueues", "Content-Type": "application/x-amz-json-1.0"})
    if presign:
        SigV4QueryAuth(Credentials(key, secret), "sqs", "eu-west-1", expires=60).add_auth(r)
    else:
        SigV4Auth(Credentials(key, secret), "sqs", "eu-west-1").add_auth(r)
    p = r.prepare()
    headers = {k.lower(): v for k, v in p.headers.items()}
    headers["host"] = "127.0.0.1:9324"
    if authorization is not None:
        headers["authorization"] = authorization
    parts = urlsplit(p.url)
    return HttpRequest("POST", parts.path or "/", parts.query, headers, body, "127.0.0.1:5000", True)


@pytest.fixture
def audit_lines(caplog: pytest.LogCaptureFixture) -> Callable[[], list[str]]:
    caplog.set_level(logging.INFO, logger="haremq.audit")
    return lambda: [r.getMessage() for r in caplog.records if r.name == "haremq.audit"]


def refused(call: Callable[[], object]) -> LoginRefused:
    with pytest.raises(LoginRefused) as info:
        call()
    return info.value


def amqplain(**fields: str) -> bytes:
    return encode.field_table(dict(fields))[4:]


# ---- every refusal reason: the right code, exactly one audit line -----------------------------------------
CASES: list[tuple[str, Callable[[Authenticator], object], Reason, str]] = [
    ("sasl EXTERNAL", lambda a: a.sasl("EXTERNAL", b"", LOCAL), Reason.UNSUPPORTED_MECHANISM,
     "user=None reason=unsupported authentication mechanism EXTERNAL"),
    ("PLAIN without separators", lambda a: a.sasl("PLAIN", b"guest", LOCAL), Reason.MALFORMED,
     "reason=malformed PLAIN response"),
    ("PLAIN not UTF-8", lambda a: a.sasl("PLAIN", b"\x00\xff\x00x", LOCAL), Reason.MALFORMED,
     "reason=malformed PLAIN response"),
    ("AMQPLAIN garbage", lambda a: a.sasl("AMQPLAIN", b"\x05LOGINSx", LOCAL), Reason.MALFORMED,
     "reason=malformed AMQPLAIN response"),
    ("PLAIN unknown user", lambda a: a.sasl("PLAIN", b"\x00mallory\x00x", LOCAL), Reason.UNKNOWN_USER,
     "user='mallory' reason=invalid credentials"),
    ("AMQPLAIN bad password", lambda a: a.sasl("AMQPLAIN", amqplain(LOGIN="guest", PASSWORD="no"), LOCAL),
     Reason.BAD_PASSWORD, "user='guest' reason=invalid credentials"),
    ("STOMP unknown user", lambda a: a.password("nobody", "x", REMOTE), Reason.UNKNOWN_USER,
     "protocol=stomp peer=10.0.0.9:5000 user='nobody' reason=unknown user"),
    ("STOMP bad password", lambda a: a.password("alice", "x", REMOTE), Reason.BAD_PASSWORD,
     "user='alice' reason=invalid password"),
    ("guest from afar", lambda a: a.password("guest", "guest", REMOTE), Reason.LOOPBACK_ONLY,
     "user='guest' reason=user may only connect from loopback"),
    ("update-secret", lambda a: a.password("guest", "old", LOCAL, action="update-secret"), Reason.BAD_PASSWORD,
     "reason=update-secret refused: invalid credentials"),
    ("no default login", lambda a: a.default_user(REMOTE), Reason.NO_CREDENTIALS, "user=None reason=no credentials"),
    ("no default user to trust", lambda a: a.trusted("ghost", SQS_LOCAL, "--sqs-any-credentials"),
     Reason.UNKNOWN_USER, "user='ghost' reason=--sqs-any-credentials: no default user"),
    ("SigV4 unsigned", lambda a: a.sigv4(HttpRequest("POST", "/", "", {"host": "h"}, b"", "p", True), SQS_LOCAL),
     Reason.NO_CREDENTIALS, "reason=MissingAuthenticationToken: "),
    ("SigV4 unknown key", lambda a: a.sigv4(signed(key="NOPE"), SQS_LOCAL), Reason.UNKNOWN_KEY,
     "user='NOPE' reason=InvalidClientTokenId: "),
    ("SigV4 wrong secret", lambda a: a.sigv4(signed(secret="guess"), SQS_LOCAL), Reason.BAD_SIGNATURE,
     "user='alice (access key AKID)' reason=SignatureDoesNotMatch: "),
    ("SigV4 garbled header", lambda a: a.sigv4(signed(authorization="AWS4-HMAC-SHA256 Credential=AKID"), SQS_LOCAL),
     Reason.MALFORMED, "reason=IncompleteSignature: "),
    ("SigV4 guest from afar", lambda a: a.sigv4(signed("GUEST", "guest"), Peer("sqs", "10.0.0.9:1", False)),
     Reason.LOOPBACK_ONLY, "user='guest (access key GUEST)' reason=AccessDenied: User guest can only connect"),
    ("vhost unknown", lambda a: a.vhost(a.users.users["guest"], "nope", {"/": "vh"}, LOCAL),
     Reason.NOT_ALLOWED, "user='guest' reason=vhost nope not found"),
    ("vhost without permission", lambda a: a.vhost(a.users.users["alice"], "/", {"/": "vh"}, REMOTE),
     Reason.NOT_ALLOWED, "user='alice' reason=no access to vhost '/'"),
]


@pytest.mark.parametrize(("case", "call", "reason", "line"), CASES, ids=[c[0] for c in CASES])
def test_each_refusal_has_its_reason_and_one_audit_line(
        case: str, call: Callable[[Authenticator], object], reason: Reason, line: str,
        audit_lines: Callable[[], list[str]]) -> None:
    a, _ = make()
    err = refused(lambda: call(a))
    assert err.reason is reason
    lines = audit_lines()
    assert len(lines) == 1 and lines[0].startswith("login refused: ") and line in lines[0], lines


def test_accepted_logins_return_the_user_and_log_nothing(audit_lines: Callable[[], list[str]]) -> None:
    a, _ = make(default_login=("alice", "wonder"))
    guest = a.users.users["guest"]
    assert a.sasl("PLAIN", b"\x00guest\x00guest", LOCAL) is guest
    assert a.sasl("AMQPLAIN", amqplain(LOGIN="guest", PASSWORD="guest"), LOCAL) is guest
    assert a.password("alice", "wonder", REMOTE).name == "alice"
    assert a.default_user(REMOTE).name == "alice"
    assert a.trusted("guest", SQS_LOCAL, "--sqs-any-credentials") is guest
    assert a.sigv4(signed(), SQS_LOCAL) == (a.users.users["alice"], "eu-west-1")
    assert a.vhost(guest, "/", {"/": "the vhost"}, LOCAL) == "the vhost"
    assert audit_lines() == []


def test_default_login_is_checked_like_any_password() -> None:
    """A configured default user with a wrong configured password is refused, not let in."""
    a, _ = make(default_login=("alice", "stale"))
    assert refused(lambda: a.default_user(REMOTE)).reason is Reason.BAD_PASSWORD


def test_refusal_detail_is_the_client_text() -> None:
    a, _ = make()
    assert refused(lambda: a.sasl("EXTERNAL", b"", LOCAL)).detail == "unsupported authentication mechanism 'EXTERNAL'"
    err = refused(lambda: a.vhost(a.users.users["alice"], "/", {"/": 1}, LOCAL))
    assert err.detail == "access to vhost '/' refused for user 'alice'"
    assert refused(lambda: a.sigv4(signed(secret="guess"), SQS_LOCAL)).detail.startswith(
        "The request signature we calculated does not match")


# ---- SigV4 against the injected clock -----------------------------------------------------------------
def test_sigv4_expiry_follows_the_injected_clock() -> None:
    """A request signed now is good for 15 minutes on the service's clock, then RequestExpired."""
    a, clock = make()
    req = signed()
    clock.advance(14 * 60)
    assert a.sigv4(req, SQS_LOCAL)[0].name == "alice"
    clock.advance(2 * 60)
    err = refused(lambda: a.sigv4(req, SQS_LOCAL))
    assert err.reason is Reason.EXPIRED and err.detail.startswith("Signature expired")


def test_sigv4_refuses_requests_from_the_future() -> None:
    """Clock skew: a request dated 16 minutes after the broker's clock is refused too (AWS: 15 min)."""
    a, _ = make(lag=16 * 60)
    assert refused(lambda: a.sigv4(signed(), SQS_LOCAL)).reason is Reason.EXPIRED
    b, _ = make(lag=14 * 60)
    assert b.sigv4(signed(), SQS_LOCAL)[0].name == "alice"


def test_presigned_url_expires_on_the_injected_clock() -> None:
    a, clock = make()
    req = signed(presign=True, body=b"")
    assert a.sigv4(req, SQS_LOCAL) == (a.users.users["alice"], "eu-west-1")
    clock.advance(61)
    assert refused(lambda: a.sigv4(req, SQS_LOCAL)).reason is Reason.EXPIRED


# ---- the signing-key cache ----------------------------------------------------------------------------
def test_signing_key_cache_is_bounded_and_never_holds_the_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth_module, "SIGNING_KEY_CACHE", 3)
    a, _ = make()
    for i in range(10):
        secret = f"secret-number-{i}"
        a.users.add_access_key("alice", f"KEY{i}", secret)
        a.sigv4(signed(f"KEY{i}", secret), SQS_LOCAL)
        assert all(secret not in part for ck in a._keys for part in ck if isinstance(part, str))
        assert all(secret.encode() not in ck[0] for ck in a._keys)
    assert len(a._keys) == 3


def test_changed_secret_is_not_served_from_the_cache() -> None:
    """After a key's secret changes, requests signed with the old secret are refused at once."""
    a, _ = make()
    a.sigv4(signed(), SQS_LOCAL)  # caches the key derived from "s3cret"
    a.users.add_access_key("alice", "AKID", "rotated")
    assert refused(lambda: a.sigv4(signed(), SQS_LOCAL)).reason is Reason.BAD_SIGNATURE
    assert a.sigv4(signed(secret="rotated"), SQS_LOCAL)[0].name == "alice"


def test_user_type_is_the_store_user() -> None:
    a, _ = make()
    assert isinstance(a.password("guest", "guest", LOCAL), User)


def test_sasl_external_is_offered_and_accepted_only_with_a_verified_client_certificate(
        audit_lines: Callable[[], list[str]]) -> None:
    a, _ = make()
    with_cert = Peer("amqp", "127.0.0.1:5000", True, cert_name="guest")
    assert a.mechanisms_for(LOCAL) == "PLAIN AMQPLAIN"
    assert a.mechanisms_for(with_cert).split() == ["EXTERNAL", "PLAIN", "AMQPLAIN"]
    assert a.sasl("EXTERNAL", b"", with_cert) is a.users.users["guest"]  # no password asked
    assert audit_lines() == []
    assert refused(lambda: a.sasl("EXTERNAL", b"", LOCAL)).reason is Reason.UNSUPPORTED_MECHANISM


@pytest.mark.parametrize(("peer", "reason", "line"), [
    (Peer("amqp", "127.0.0.1:5000", True, cert_name="mallory"), Reason.UNKNOWN_USER,
     "EXTERNAL (client certificate CN=mallory): unknown user"),
    (Peer("amqp", "10.0.0.9:5000", False, cert_name="guest"), Reason.LOOPBACK_ONLY,
     "EXTERNAL (client certificate CN=guest): user may only connect from loopback"),
])
def test_sasl_external_refusals_are_audited(peer: Peer, reason: Reason, line: str,
                                            audit_lines: Callable[[], list[str]]) -> None:
    a, _ = make()
    assert refused(lambda: a.sasl("EXTERNAL", b"", peer)).reason is reason
    lines = audit_lines()
    assert len(lines) == 1 and line in lines[0], lines
