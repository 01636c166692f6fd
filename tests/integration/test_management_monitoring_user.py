"""A ``monitoring`` user sees totals but no password hashes, definitions or messages of vhosts it cannot
read (management API, real broker process)."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from brokerproc import BrokerProcess, start_broker, stop_broker

ADMIN = "Basic " + base64.b64encode(b"guest:guest").decode()


@pytest.fixture(scope="module")
def hb() -> Iterator[BrokerProcess]:
    b = start_broker(env={"HAREMQ_HANDSHAKE_TIMEOUT": "0.5", "HAREMQ_HTTP_IDLE_TIMEOUT": "2"})
    yield b
    assert stop_broker(b) == 0, b.log()


def call(b: BrokerProcess, method: str, path: str, body: Any = None, auth: str = ADMIN) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(b.management_url + path, data=data, method=method,
                                 headers={"Content-Type": "application/json", "Authorization": auth})
    try:
        with urllib.request.urlopen(req, timeout=10) as res:
            raw, status = res.read(), res.status
    except urllib.error.HTTPError as e:
        raw, status = e.read(), e.code
    return status, json.loads(raw) if raw else None


def test_monitoring_user_cannot_read_password_hashes_or_foreign_messages(hb: BrokerProcess) -> None:
    """A ``monitoring`` user with no permission anywhere could read every user's password hash
    (/api/users, /api/definitions) and the payloads of messages in vhosts it cannot access.
    RabbitMQ: users, permissions and definitions are administrator-only; getting messages needs
    read access to the queue."""
    assert call(hb, "PUT", "/api/users/mon", {"password": "pw", "tags": "monitoring"})[0] in (201, 204)
    assert call(hb, "PUT", "/api/vhosts/secret")[0] in (201, 204)
    assert call(hb, "PUT", "/api/queues/secret/payroll", {"durable": False})[0] in (201, 204)
    assert call(hb, "POST", "/api/bindings/secret/e/amq.direct/q/payroll", {"routing_key": "payroll"})[0] == 201
    st, res = call(hb, "POST", "/api/exchanges/secret/amq.direct/publish",
                   {"routing_key": "payroll", "payload": "salary: 1M", "properties": {}})
    assert st == 200 and res == {"routed": True}
    mon = "Basic " + base64.b64encode(b"mon:pw").decode()
    assert call(hb, "GET", "/api/overview", auth=mon)[0] == 200  # monitoring may look at totals
    for path in ("/api/users", "/api/users/guest", "/api/definitions", "/api/permissions",
                 "/api/permissions/%2F/guest"):
        st, res = call(hb, "GET", path, auth=mon)
        assert st == 403, (path, res)
    st, res = call(hb, "POST", "/api/queues/secret/payroll/get", {"count": 1}, auth=mon)
    assert st == 403, res
    # the administrator (who has access to the vhost) still can
    assert call(hb, "PUT", "/api/permissions/secret/guest", {"configure": ".*", "write": ".*", "read": ".*"})[0] \
        in (201, 204)
    st, res = call(hb, "POST", "/api/queues/secret/payroll/get", {"count": 1})
    assert st == 200 and res[0]["payload"] == "salary: 1M"
