"""AWS Signature Version 4 verification (the ``Authorization`` header form that boto3 sends).

The canonical request is rebuilt from what arrived on the wire, exactly as the client built it
before sending (botocore ``SigV4Auth``):

    METHOD \\n canonical-uri \\n canonical-query \\n (name:value\\n for each signed header, sorted)
    \\n signed-header-names \\n hex(sha256(body))

String to sign: ``AWS4-HMAC-SHA256\\n<X-Amz-Date>\\n<date>/<region>/<service>/aws4_request\\n
hex(sha256(canonical request))``; key: HMAC chain over "AWS4"+secret, date, region, service,
"aws4_request" (cached per key and day). Requests older or newer than 15 minutes are refused, as
AWS does, so a captured request cannot be replayed later.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import time
from collections.abc import Callable
from urllib.parse import quote, unquote

from haremq.errors import IncompleteSignature, InvalidClientTokenId, MissingAuthenticationToken, RequestExpired
from haremq.errors import SignatureDoesNotMatch as _BadSignature

ALGORITHM = "AWS4-HMAC-SHA256"
MAX_SKEW = 15 * 60
_key_cache: dict[tuple[str, str, str, str], bytes] = {}


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    ck = (secret, date, region, service)
    key = _key_cache.get(ck)
    if key is None:
        k = hmac.new(("AWS4" + secret).encode(), date.encode(), hashlib.sha256).digest()
        for part in (region, service, "aws4_request"):
            k = hmac.new(k, part.encode(), hashlib.sha256).digest()
        if len(_key_cache) > 1024:
            _key_cache.clear()
        key = _key_cache[ck] = k
    return key


def canonical_query(query: str) -> str:
    if not query:
        return ""
    pairs = []
    for part in query.split("&"):
        if not part:
            continue
        k, _, v = part.partition("=")
        pairs.append((quote(unquote(k), safe="-_.~"), quote(unquote(v), safe="-_.~")))
    pairs.sort()
    return "&".join(f"{k}={v}" for k, v in pairs)


def parse_authorization(value: str) -> tuple[str, str, str, str, str, list[str], str]:
    """(access key, date, region, service, terminator, signed headers, signature) of an Authorization header."""
    if not value.startswith(ALGORITHM + " "):
        raise IncompleteSignature(f"Unsupported authorization type: {value.split(' ', 1)[0][:40]}")
    fields: dict[str, str] = {}
    for item in value[len(ALGORITHM) + 1:].split(","):
        k, sep, v = item.strip().partition("=")
        if sep:
            fields[k] = v
    missing = [k for k in ("Credential", "SignedHeaders", "Signature") if k not in fields]
    if missing:
        raise IncompleteSignature(f"Authorization header requires '{missing[0]}' parameter.")
    cred = fields["Credential"].split("/")
    if len(cred) != 5:
        raise IncompleteSignature("Credential must have exactly 5 slash-delimited elements, e.g. "
                                  "keyid/date/region/service/term")
    return cred[0], cred[1], cred[2], cred[3], cred[4], fields["SignedHeaders"].split(";"), fields["Signature"]


def verify(method: str, path: str, query: str, headers: dict[str, str], body: bytes,
           secret_of: Callable[[str], str | None], now: float | None = None) -> tuple[str, str]:
    """Check a request's SigV4 signature; returns (access key id, region). Raises the AWS error otherwise.

    ``headers`` has lower-case names. ``secret_of`` maps an access key id to its secret (None = unknown).
    """
    auth = headers.get("authorization")
    if auth is None:
        raise MissingAuthenticationToken("Request is missing Authentication Token")
    key_id, date, region, service, term, signed, signature = parse_authorization(auth)
    amz_date = headers.get("x-amz-date", "")
    if term != "aws4_request" or not amz_date.startswith(date) or len(amz_date) != 16:
        raise IncompleteSignature("Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date "
                                  "from HTTP")
    try:
        ts = calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ"))
    except ValueError:
        raise IncompleteSignature(f"Invalid X-Amz-Date: {amz_date[:40]}") from None
    now = time.time() if now is None else now
    if abs(now - ts) > MAX_SKEW:
        raise RequestExpired(f"Signature expired: {amz_date} is now earlier than "
                             f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(now - MAX_SKEW))} "
                             f"({time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(now))} - 15 min.)")
    secret = secret_of(key_id)
    if secret is None:
        raise InvalidClientTokenId("The security token included in the request is invalid.")
    if "host" not in signed:
        raise _BadSignature("The request signature we calculated does not match the signature you provided.")
    canon_headers = []
    for name in signed:
        v = headers.get(name)
        if v is None:
            raise _BadSignature("The request signature we calculated does not match the signature you provided. "
                                f"Signed header '{name[:40]}' is missing.")
        canon_headers.append(f"{name}:{' '.join(v.split())}\n")
    payload_hash = headers.get("x-amz-content-sha256")
    if payload_hash is None or (payload_hash == "UNSIGNED-PAYLOAD" and "x-amz-content-sha256" not in signed):
        payload_hash = hashlib.sha256(body).hexdigest()
    elif payload_hash != "UNSIGNED-PAYLOAD" and payload_hash != hashlib.sha256(body).hexdigest():
        raise _BadSignature("The provided 'x-amz-content-sha256' header does not match what was computed.")
    canonical = "\n".join((method, quote(unquote(path) or "/", safe="/~"), canonical_query(query),
                           "".join(canon_headers), ";".join(signed), payload_hash))
    scope = f"{date}/{region}/{service}/aws4_request"
    to_sign = f"{ALGORITHM}\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    expected = hmac.new(signing_key(secret, date, region, service), to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature):
        raise _BadSignature("The request signature we calculated does not match the signature you provided. "
                            "Check your AWS Secret Access Key and signing method. Consult the service "
                            "documentation for details.")
    return key_id, region
