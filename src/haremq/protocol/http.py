"""HTTP requests and responses as plain values: what the HTTP listener hands to the sans-IO APIs."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(slots=True)
class HttpRequest:
    method: str
    path: str  # raw (percent-encoded) path, without the query
    query: str  # raw query string, without "?"
    headers: dict[str, str]  # lower-case names; repeated headers joined with ","
    body: bytes
    peer: str = ""
    loopback: bool = False


@dataclasses.dataclass(slots=True)
class HttpResponse:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = dataclasses.field(default_factory=list)
