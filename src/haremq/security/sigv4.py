"""AWS Signature Version 4 verification (the ``Authorization`` header form that boto3 sends).

The canonical request is rebuilt from what arrived on the wire, exactly as the client built it
before sending (botocore ``SigV4Auth``):

    METHOD \\n canonical-uri \\n canonical-query \\n (name:value\\n for each signed header, sorted)
    \\n signed-header-names \\n hex(sha256(body))

String to sign: ``AWS4-HMAC-SHA256\\n<X-Amz-Date>\\n<date>/<region>/<service>/aws4_request\\n
hex(sha256(canonical request))``; key: HMAC chain over "AWS4"+secret, date, region, service,
"aws4_request" (a verifier may cache it through ``derive``). Requests older or newer than 15 minutes are refused, as
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


def derive_signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """The SigV4 signing key (uncached: the authentication service keeps the node's cache)."""
    k = hmac.new(("AWS4" + secret).encode(), date.encode(), hashlib.sha256).digest()
    for part in (region, service, "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    return k


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """The SigV4 signing key, derived afresh (a verifier that wants a cache passes ``derive``)."""
    return derive_signing_key(secret, date, region, service)


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
           secret_of: Callable[[str], str | None], now: float | None = None, *,
           derive: Callable[[str, str, str, str], bytes] = signing_key) -> tuple[str, str]:
    """Check a request's SigV4 signature; returns (access key id, region). Raises the AWS error otherwise.

    ``headers`` has lower-case names. ``secret_of`` maps an access key id to its secret (None = unknown);
    ``derive`` makes the signing key (the authentication service passes its own cache).
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
    payload_hash = headers.get("x-amz-content-sha256")
    if payload_hash is None or (payload_hash == "UNSIGNED-PAYLOAD" and "x-amz-content-sha256" not in signed):
        payload_hash = hashlib.sha256(body).hexdigest()
    elif payload_hash != "UNSIGNED-PAYLOAD" and payload_hash != hashlib.sha256(body).hexdigest():
        raise _BadSignature("The provided 'x-amz-content-sha256' header does not match what was computed.")
    _check(method, path, canonical_query(query), headers, signed, (payload_hash,), key_id, amz_date, date, region,
           service, signature, secret_of, derive)
    return key_id, region


def _check(method: str, path: str, canon_query: str, headers: dict[str, str], signed: list[str],
           payload_hashes: tuple[str, ...], key_id: str, amz_date: str, date: str, region: str, service: str,
           signature: str, secret_of: Callable[[str], str | None],
           derive: Callable[[str, str, str, str], bytes] = signing_key) -> None:
    """Rebuild the canonical request and compare signatures (any of ``payload_hashes`` may have been signed)."""
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
    scope = f"{date}/{region}/{service}/aws4_request"
    key = derive(secret, date, region, service)
    for payload_hash in payload_hashes:
        canonical = "\n".join((method, quote(unquote(path) or "/", safe="/~"), canon_query, "".join(canon_headers),
                               ";".join(signed), payload_hash))
        to_sign = f"{ALGORITHM}\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        if hmac.compare_digest(expected, signature):
            return
    raise _BadSignature("The request signature we calculated does not match the signature you provided. "
                        "Check your AWS Secret Access Key and signing method. Consult the service "
                        "documentation for details.")


def is_presigned(query: str) -> bool:
    """Does the query string carry a SigV4 signature (``X-Amz-Signature``, a presigned URL)?"""
    return "X-Amz-Signature=" in query or "x-amz-signature=" in query.lower()


def verify_presigned(method: str, path: str, query: str, headers: dict[str, str], body: bytes,
                     secret_of: Callable[[str], str | None], now: float | None = None, *,
                     derive: Callable[[str, str, str, str], bytes] = signing_key) -> tuple[str, str]:
    """Check a query-string (presigned) SigV4 signature: ``X-Amz-Algorithm``, ``X-Amz-Credential``,
    ``X-Amz-Date``, ``X-Amz-Expires``, ``X-Amz-SignedHeaders``, ``X-Amz-Signature``. Returns (key id, region).

    The canonical query is every parameter but ``X-Amz-Signature``; the payload hash is the body's
    SHA-256 (what botocore signs) or, for an empty body, also ``UNSIGNED-PAYLOAD``.
    """
    params: dict[str, str] = {}
    for part in query.split("&"):
        k, _, v = part.partition("=")
        params[unquote(k)] = unquote(v)
    if params.get("X-Amz-Algorithm") != ALGORITHM:
        raise IncompleteSignature(f"Unsupported X-Amz-Algorithm: {params.get('X-Amz-Algorithm', '')[:40]}")
    missing = [k for k in ("X-Amz-Credential", "X-Amz-Date", "X-Amz-SignedHeaders", "X-Amz-Signature")
               if k not in params]
    if missing:
        raise IncompleteSignature(f"AWS query-string parameters must include '{missing[0]}'.")
    cred = params["X-Amz-Credential"].split("/")
    if len(cred) != 5 or cred[4] != "aws4_request":
        raise IncompleteSignature("Credential must have exactly 5 slash-delimited elements, e.g. "
                                  "keyid/date/region/service/term")
    key_id, date, region, service, _ = cred
    amz_date = params["X-Amz-Date"]
    if not amz_date.startswith(date) or len(amz_date) != 16:
        raise IncompleteSignature("Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date "
                                  "from HTTP")
    try:
        ts = calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ"))
        expires = int(params.get("X-Amz-Expires", "900"))
    except ValueError:
        raise IncompleteSignature(f"Invalid X-Amz-Date or X-Amz-Expires: {amz_date[:40]}") from None
    if not 0 < expires <= 7 * 24 * 3600:
        raise IncompleteSignature("X-Amz-Expires must be between 1 and 604800 seconds.")
    now = time.time() if now is None else now
    if now > ts + expires or ts - now > MAX_SKEW:
        raise RequestExpired(f"Request has expired: signed at {amz_date}, valid for {expires} seconds.")
    unsigned = "&".join(p for p in query.split("&") if unquote(p.partition("=")[0]) != "X-Amz-Signature")
    hashes = (hashlib.sha256(body).hexdigest(),) + (() if body else ("UNSIGNED-PAYLOAD",))
    _check(method, path, canonical_query(unsigned), headers, params["X-Amz-SignedHeaders"].split(";"), hashes,
           key_id, amz_date, date, region, service, params["X-Amz-Signature"], secret_of, derive)
    return key_id, region
