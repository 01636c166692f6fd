"""SigV4 verification against requests signed by botocore's own SigV4Auth."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from haremq.errors import (
    IncompleteSignature,
    InvalidClientTokenId,
    MissingAuthenticationToken,
    RequestExpired,
    SignatureDoesNotMatch,
)
from haremq.security import sigv4

SECRETS = {"AKID": "s3cret", "guest": "guest"}


def signed(body: bytes = b'{"QueueName":"q"}', url: str = "http://127.0.0.1:9324/", key: str = "AKID",
           secret: str = "s3cret", region: str = "us-east-1") -> tuple[str, str, str, dict[str, str], bytes]:
    r = AWSRequest("POST", url, data=body, headers={"X-Amz-Target": "AmazonSQS.CreateQueue",
                                                  "Content-Type": "application/x-amz-json-1.0"})
    SigV4Auth(Credentials(key, secret), "sqs", region).add_auth(r)
    parts = urlsplit(url)
    headers = {k.lower(): v for k, v in r.headers.items()}
    headers["host"] = parts.netloc
    return "POST", parts.path or "/", parts.query, headers, body


def test_valid_signature() -> None:
    m, p, q, h, b = signed()
    assert sigv4.verify(m, p, q, h, b, SECRETS.get) == ("AKID", "us-east-1")


def test_other_region_and_query_string() -> None:
    m, p, q, h, b = signed(url="http://localhost:1/some/path?b=2&a=1%20x", region="eu-west-1")
    assert sigv4.verify(m, p, q, h, b, SECRETS.get) == ("AKID", "eu-west-1")


@pytest.mark.parametrize("tamper", ["body", "target", "host", "signature", "secret"])
def test_tampered_requests_fail(tamper: str) -> None:
    m, p, q, h, b = signed(secret="other" if tamper == "secret" else "s3cret")
    if tamper == "body":
        b = b'{"QueueName":"evil"}'
    elif tamper == "target":
        h["x-amz-target"] = "AmazonSQS.DeleteQueue"
    elif tamper == "host":
        h["host"] = "evil:1"
    elif tamper == "signature":
        h["authorization"] = h["authorization"][:-4] + "0000"
    with pytest.raises(SignatureDoesNotMatch):
        sigv4.verify(m, p, q, h, b, SECRETS.get)


def test_unknown_key_missing_and_malformed() -> None:
    m, p, q, h, b = signed(key="NOPE")
    with pytest.raises(InvalidClientTokenId):
        sigv4.verify(m, p, q, h, b, SECRETS.get)
    del h["authorization"]
    with pytest.raises(MissingAuthenticationToken):
        sigv4.verify(m, p, q, h, b, SECRETS.get)
    for bad in ("Basic Zm9vOmJhcg==", "AWS4-HMAC-SHA256 Credential=a/b", "AWS4-HMAC-SHA256 garbage",
                "AWS4-HMAC-SHA256 Credential=a/b/c/d/e, SignedHeaders=host, Signature=00"):
        h["authorization"] = bad
        with pytest.raises(IncompleteSignature):
            sigv4.verify(m, p, q, h, b, SECRETS.get)


def test_expired_and_future_timestamps() -> None:
    m, p, q, h, b = signed()
    now = time.time()
    assert sigv4.verify(m, p, q, h, b, SECRETS.get, now=now + 14 * 60)
    with pytest.raises(RequestExpired):
        sigv4.verify(m, p, q, h, b, SECRETS.get, now=now + 16 * 60)
    with pytest.raises(RequestExpired):
        sigv4.verify(m, p, q, h, b, SECRETS.get, now=now - 16 * 60)
