"""Derived SigV4 signing keys live in the verifier's bounded ``SigningKeys``, found by access key and scope."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from haremq.errors import SignatureDoesNotMatch
from haremq.protocol.sqs import sigv4


def signed(secret: str = "s3cret", region: str = "us-east-1") -> tuple[str, str, str, dict[str, str], bytes]:
    """A request signed by botocore for access key AKID."""
    url = "http://127.0.0.1:9324/"
    r = AWSRequest("POST", url, data=b'{"QueueName":"q"}', headers={
        "X-Amz-Target": "AmazonSQS.CreateQueue", "Content-Type": "application/x-amz-json-1.0"})
    SigV4Auth(Credentials("AKID", secret), "sqs", region).add_auth(r)
    headers = {k.lower(): v for k, v in r.headers.items()}
    headers["host"] = urlsplit(url).netloc
    return "POST", "/", "", headers, b'{"QueueName":"q"}'


@pytest.fixture
def derivations(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    """Every signing-key derivation (secret left out), in order."""
    seen: list[tuple[str, ...]] = []
    real = sigv4.signing_key

    def counting(secret: str, date: str, region: str, service: str) -> bytes:
        seen.append((date, region, service))
        return real(secret, date, region, service)

    monkeypatch.setattr(sigv4, "signing_key", counting)
    return seen


def test_a_key_is_derived_once_per_access_key_and_scope(derivations: list[tuple[str, ...]]) -> None:
    keys = sigv4.SigningKeys()
    secrets = {"AKID": "s3cret"}
    for _ in range(3):
        m, p, q, h, b = signed()
        assert sigv4.verify(m, p, q, h, b, secrets.get, keys=keys) == ("AKID", "us-east-1")
    m, p, q, h, b = signed(region="eu-west-1")
    sigv4.verify(m, p, q, h, b, secrets.get, keys=keys)
    assert [r for _, r, _ in derivations] == ["us-east-1", "eu-west-1"]
    assert len(keys) == 2


def test_without_a_verifier_cache_every_request_derives(derivations: list[tuple[str, ...]]) -> None:
    for _ in range(2):
        m, p, q, h, b = signed()
        sigv4.verify(m, p, q, h, b, {"AKID": "s3cret"}.get)
    assert len(derivations) == 2


def test_a_changed_secret_is_not_answered_from_the_cache(derivations: list[tuple[str, ...]]) -> None:
    keys = sigv4.SigningKeys()
    secrets = {"AKID": "s3cret"}
    m, p, q, h, b = signed(secret="s3cret")
    sigv4.verify(m, p, q, h, b, secrets.get, keys=keys)
    secrets["AKID"] = "rotated"
    with pytest.raises(SignatureDoesNotMatch):  # signed with the old secret
        sigv4.verify(m, p, q, h, b, secrets.get, keys=keys)
    m, p, q, h, b = signed(secret="rotated")
    assert sigv4.verify(m, p, q, h, b, secrets.get, keys=keys) == ("AKID", "us-east-1")
    assert len(derivations) == 2 and len(keys) == 1  # the old key, then the rotated one (kept)


def test_the_cache_never_holds_the_secret_in_clear() -> None:
    keys = sigv4.SigningKeys()
    secret = "a-very-recognisable-secret"
    keys.get("AKID", secret, "20260101", "us-east-1", "sqs")

    def flat(v: Any) -> list[Any]:
        if isinstance(v, dict):
            return [x for k, w in v.items() for x in flat(k) + flat(w)]
        if isinstance(v, tuple | list):
            return [x for w in v for x in flat(w)]
        return [v]

    for v in flat(keys._keys):
        raw = v.encode() if isinstance(v, str) else v
        assert secret.encode() not in raw and b"AWS4" + secret.encode() not in raw


def test_the_cache_holds_at_most_its_limit() -> None:
    keys = sigv4.SigningKeys(limit=4)
    for i in range(20):
        assert keys.get(f"K{i}", "s", "20260101", "us-east-1", "sqs") == sigv4.signing_key(
            "s", "20260101", "us-east-1", "sqs")
        assert len(keys) <= 4
