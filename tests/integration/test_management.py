"""Management API, /metrics and ``haremq ctl`` against a real broker process; schemathesis finds no 5xx."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pika
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "interop"))
from sqs_helpers import HttpBroker, sqs_client, start_http_broker, stop_http_broker

from brokerproc import start_broker

AUTH = "Basic " + base64.b64encode(b"guest:guest").decode()


@pytest.fixture(scope="module")
def hb() -> Iterator[HttpBroker]:
    b = start_http_broker()
    yield b
    assert stop_http_broker(b) == 0, b.log()


def call(hb: HttpBroker, method: str, path: str, body: Any = None, auth: str | None = AUTH) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if auth:
        headers["Authorization"] = auth
    req = urllib.request.Request(hb.management_url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as res:
            raw = res.read()
            status = res.status
    except urllib.error.HTTPError as e:
        raw, status = e.read(), e.code
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode()


def ctl(hb: HttpBroker, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "haremq.cli", "ctl", "--url", hb.management_url, *args],
                          capture_output=True, text=True, timeout=30)


def test_auth_required(hb: HttpBroker) -> None:
    assert call(hb, "GET", "/api/overview", auth=None)[0] == 401
    bad = "Basic " + base64.b64encode(b"guest:nope").decode()
    assert call(hb, "GET", "/api/overview", auth=bad)[0] == 401
    assert call(hb, "GET", "/api/nope")[0] == 404


def test_queue_lifecycle_and_browse(hb: HttpBroker) -> None:
    assert call(hb, "PUT", "/api/queues/%2F/mq1", {"durable": True, "arguments": {"x-max-length": 100}})[0] == 201
    st, q = call(hb, "GET", "/api/queues/%2F/mq1")
    assert st == 200 and q["arguments"] == {"x-max-length": 100} and q["messages"] == 0
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", hb.amqp_port))
    ch = conn.channel()
    for i in range(3):
        ch.basic_publish("", "mq1", f"m{i}".encode())
    st, msgs = call(hb, "POST", "/api/queues/%2F/mq1/get", {"count": 2, "ackmode": "browse"})
    assert st == 200 and [m["payload"] for m in msgs] == ["m0", "m1"]
    # browsing took nothing and changed no counts or order
    st, q = call(hb, "GET", "/api/queues/%2F/mq1")
    assert q["messages_ready"] == 3 and q["message_stats"]["deliver_get"] == 0
    method, _, body = ch.basic_get("mq1", auto_ack=True)
    assert body == b"m0" and not method.redelivered
    ch.basic_publish("", "mq1", b"persistent", pika.BasicProperties(delivery_mode=2))
    st, q = call(hb, "GET", "/api/queues/%2F/mq1")
    assert q["disk"]["live_messages"] == 1 and q["disk"]["bytes"] > 0 and q["disk"]["oldest_segment"]
    st, conns = call(hb, "GET", "/api/connections")
    assert st == 200 and any(c["protocol"] == "AMQP 0-9-1" for c in conns)
    assert call(hb, "GET", "/api/channels")[1][0]["number"] == 1
    conn.close()
    assert call(hb, "DELETE", "/api/queues/%2F/mq1/contents")[0] == 204
    assert call(hb, "GET", "/api/queues/%2F/mq1")[1]["messages"] == 0
    assert call(hb, "DELETE", "/api/queues/%2F/mq1")[0] == 204
    assert call(hb, "GET", "/api/queues/%2F/mq1")[0] == 404


def test_exchanges_bindings_overview(hb: HttpBroker) -> None:
    assert call(hb, "PUT", "/api/exchanges/%2F/mx", {"type": "topic"})[0] == 201
    call(hb, "PUT", "/api/queues/%2F/mxq", {})
    assert call(hb, "POST", "/api/bindings/%2F/e/mx/q/mxq", {"routing_key": "a.#"})[0] == 201
    _, binds = call(hb, "GET", "/api/bindings/%2F/e/mx/q/mxq")
    assert [b["routing_key"] for b in binds] == ["a.#"]
    _st, res = call(hb, "POST", "/api/exchanges/%2F/mx/publish", {"routing_key": "a.b", "payload": "hi",
                                                                  "properties": {}})
    assert res == {"routed": True}
    assert call(hb, "GET", "/api/queues/%2F/mxq")[1]["messages_ready"] == 1
    ov = call(hb, "GET", "/api/overview")[1]
    assert ov["object_totals"]["queues"] >= 1 and {x["protocol"] for x in ov["listeners"]} >= {"amqp", "sqs", "http"}
    assert call(hb, "DELETE", "/api/bindings/%2F/e/mx/q/mxq/a.%23")[0] == 204
    assert call(hb, "GET", "/api/bindings/%2F/e/mx/q/mxq")[1] == []
    assert call(hb, "PUT", "/api/exchanges/%2F/bad", {"type": "nope"})[0] == 400
    assert call(hb, "DELETE", "/api/exchanges/%2F/mx")[0] == 204
    for path in ("/api/nodes", "/api/vhosts", "/api/consumers", "/api/users", "/api/permissions", "/api/exchanges"):
        assert call(hb, "GET", path)[0] == 200


def test_users_permissions_and_definitions_round_trip(hb: HttpBroker) -> None:
    assert call(hb, "PUT", "/api/users/alice", {"password": "pw", "tags": "management"})[0] == 201
    assert call(hb, "PUT", "/api/permissions/%2F/alice", {"configure": "^a", "write": ".*", "read": ".*"})[0] == 201
    alice = "Basic " + base64.b64encode(b"alice:pw").decode()
    assert call(hb, "GET", "/api/queues", auth=alice)[0] == 200
    assert call(hb, "PUT", "/api/queues/%2F/x", {}, auth=alice)[0] == 403  # not administrator
    assert call(hb, "PUT", "/api/permissions/%2F/alice", {"configure": "(", "write": "", "read": ""})[0] == 400
    call(hb, "PUT", "/api/queues/%2F/defq", {"durable": True})
    st, defs = call(hb, "GET", "/api/definitions")
    assert st == 200 and any(q["name"] == "defq" for q in defs["queues"])
    # import into a fresh broker
    other = start_http_broker()
    try:
        st, _ = call(other, "POST", "/api/definitions", defs)
        assert st == 204
        st, q = call(other, "GET", "/api/queues/%2F/defq")
        assert st == 200 and q["durable"]
        assert call(other, "GET", "/api/users/alice")[0] == 200
    finally:
        stop_http_broker(other)
    assert call(hb, "DELETE", "/api/users/alice")[0] == 204


def test_metrics(hb: HttpBroker) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    sqs = sqs_client(hb)
    url = sqs.create_queue(QueueName="metricq")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="x")
    with urllib.request.urlopen(hb.management_url + "/metrics/per-object", timeout=10) as res:
        text = res.read().decode()
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    ready = {s.labels["queue"]: s.value for s in fams["haremq_queue_messages_ready"].samples}
    assert ready["metricq"] == 1
    pub = [s for s in fams["haremq_queue_messages_published"].samples if s.labels.get("queue") == "metricq"]
    assert pub[0].value == 1
    for name in ("haremq_queue_messages_unacked", "haremq_queue_consumers", "haremq_queue_messages_delivered",
                 "haremq_queue_messages_acked", "haremq_connections", "haremq_channels", "haremq_bytes_received",
                 "haremq_bytes_sent", "process_resident_memory_bytes"):
        assert name in fams, name
    # the SQS send was persistent: it cost a group commit, and its fsync is counted and timed
    assert fams["haremq_store_fsyncs"].samples[0].value >= 1
    count = [s for s in fams["haremq_store_sync_seconds"].samples if s.name.endswith("_count")]
    assert count and count[0].value >= 1


def test_dashboard_and_openapi(hb: HttpBroker) -> None:
    with urllib.request.urlopen(hb.management_url + "/", timeout=10) as res:
        assert b"<table" in res.read()
    st, doc = call(hb, "GET", "/api/openapi.json", auth=None)
    assert st == 200 and doc["openapi"].startswith("3.") and "/api/queues/{vhost}/{name}" in doc["paths"]


def test_ctl_round_trip(hb: HttpBroker, tmp_path: Any) -> None:
    assert ctl(hb, "declare", "queue", "ctlq").returncode == 0
    assert ctl(hb, "declare", "exchange", "ctlx", "--type", "fanout").returncode == 0
    assert ctl(hb, "bind", "ctlx", "ctlq").returncode == 0
    out = ctl(hb, "list", "queues")
    assert out.returncode == 0 and "ctlq" in out.stdout
    assert "ctlx" in ctl(hb, "list", "bindings").stdout
    assert ctl(hb, "add-user", "bob", "pw", "--tags", "management").returncode == 0
    assert ctl(hb, "set-permissions", "bob", ".*", ".*", ".*").returncode == 0
    assert "bob" in ctl(hb, "list", "permissions").stdout
    f = tmp_path / "defs.json"
    assert ctl(hb, "export", str(f)).returncode == 0
    assert "ctlq" in f.read_text()
    assert ctl(hb, "purge", "queue", "ctlq").returncode == 0
    assert ctl(hb, "delete", "queue", "ctlq").returncode == 0
    assert "ctlq" not in ctl(hb, "list", "queues").stdout
    assert ctl(hb, "import", str(f)).returncode == 0
    assert "ctlq" in ctl(hb, "list", "queues").stdout
    bad = ctl(hb, "delete", "queue", "no-such-queue")
    assert bad.returncode == 1 and "404" in bad.stderr


def test_schemathesis_finds_no_server_errors(hb: HttpBroker) -> None:
    import schemathesis
    from hypothesis import HealthCheck, settings

    schema = schemathesis.openapi.from_url(hb.management_url + "/api/openapi.json")
    failures: list[str] = []

    @settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case: Any) -> None:
        res = case.call(base_url=hb.management_url, headers={"Authorization": AUTH}, timeout=10)
        # a failed health check answers 503 {"status": "failed"} (RabbitMQ): the check's answer, not an error
        failed_check = case.formatted_path.startswith("/api/health/checks/") and res.status_code == 503 and \
            res.json().get("status") == "failed"
        if res.status_code >= 500 and not failed_check:
            failures.append(f"{case.method} {case.formatted_path} -> {res.status_code}")

    for op in schema.get_all_operations():
        operation = op.ok()
        if operation.method.upper() == "DELETE" and operation.path in ("/api/vhosts/{vhost}",):
            continue
        operation.as_strategy()  # validates the schema of each operation
        from hypothesis import given

        given(case=operation.as_strategy())(check)()
    assert not failures, failures
    assert hb.alive()


def raw(hb: HttpBroker, method: str, path: str, body: bytes | None = None,
        headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request with exactly these headers (no defaults): status, headers (lower-case), body."""
    req = urllib.request.Request(hb.management_url + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as res:
            return res.status, {k.lower(): v for k, v in res.headers.items()}, res.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_metrics_default_is_aggregated_and_per_queue_series_are_opt_in(hb: HttpBroker) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    call(hb, "PUT", "/api/queues/%2F/aggq", {})
    st, _, text = raw(hb, "GET", "/metrics")
    assert st == 200
    fams = {f.name: f for f in text_string_to_metric_families(text.decode())}
    assert all("queue" not in s.labels for s in fams["haremq_queue_messages_ready"].samples)
    assert fams["haremq_queues"].samples[0].value >= 1
    assert b'queue="aggq"' not in text
    assert b'queue="aggq"' in raw(hb, "GET", "/metrics/per-object")[2]


def test_metrics_auth_setting_refuses_anonymous_scrapes() -> None:
    b = start_broker(env={"HAREMQ_METRICS_AUTH": "true"}, prefix="haremq-http-")
    try:
        st, headers, _ = raw(b, "GET", "/metrics")
        assert st == 401 and headers["www-authenticate"].startswith("Basic")
        assert raw(b, "GET", "/metrics/per-object")[0] == 401
        assert raw(b, "GET", "/metrics", headers={"Authorization": basic("guest", "nope")})[0] == 401
        st, _, text = raw(b, "GET", "/metrics", headers={"Authorization": AUTH})
        assert st == 200 and b"haremq_queue_messages_ready" in text
    finally:
        stop_http_broker(b)


def test_metrics_scrape_with_many_queues_does_not_stall_publisher_confirms() -> None:
    import threading

    b = start_http_broker()
    try:
        queues = [{"name": f"many-{i:05d}", "vhost": "/", "durable": False, "auto_delete": False,
                   "arguments": {}} for i in range(20000)]
        assert call(b, "POST", "/api/definitions", {"queues": queues})[0] == 204
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.amqp_port))
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare("probe")
        done = threading.Event()
        sizes: list[int] = []

        def scrape() -> None:
            try:
                for _ in range(3):
                    sizes.append(len(raw(b, "GET", "/metrics/per-object")[2]))
            finally:
                done.set()

        t = threading.Thread(target=scrape)
        worst = 0.0
        t.start()
        while not done.is_set():
            t0 = time.monotonic()
            ch.basic_publish("", "probe", b"x")  # returns once confirmed
            worst = max(worst, time.monotonic() - t0)
        t.join()
        conn.close()
        assert len(sizes) == 3 and min(sizes) > 20000 * 7 * 30  # every queue in every family
        assert worst < 0.5, f"a publish waited {worst:.2f}s for its confirm during a scrape"
    finally:
        stop_http_broker(b)


def test_json_body_is_required_for_state_changing_calls(hb: HttpBroker) -> None:
    """A cross-site form can send text/plain (with the browser's cached credentials), never JSON."""
    body = json.dumps({"users": [{"name": "csrf-admin", "password": "x", "tags": "administrator"}]}).encode()
    for ctype in ("text/plain", "application/x-www-form-urlencoded", None):
        # a page's fetch of a Blob sends no Content-Type, but always the browser's Sec-Fetch-* headers
        headers = {"Authorization": AUTH} if ctype else {"Authorization": AUTH, "Sec-Fetch-Site": "cross-site",
                                                          "Sec-Fetch-Mode": "no-cors"}
        if ctype:
            headers["Content-Type"] = ctype
        st, _, res = raw(hb, "POST", "/api/definitions", body, headers)
        assert st == 415 and "application/json" in json.loads(res)["reason"]
    assert call(hb, "GET", "/api/users/csrf-admin")[0] == 404
    st, _, _ = raw(hb, "PUT", "/api/queues/%2F/ctq", b"{}", {"Authorization": AUTH, "Content-Type": "text/plain"})
    assert st == 415 and call(hb, "GET", "/api/queues/%2F/ctq")[0] == 404
    # an empty form post carries no body but still a form content type
    form = {"Authorization": AUTH, "Content-Type": "application/x-www-form-urlencoded"}
    assert raw(hb, "POST", "/api/exchanges/%2F/amq.default/publish", b"", form)[0] == 415
    assert raw(hb, "DELETE", "/api/queues/%2F/ctq", None, {"Authorization": AUTH})[0] == 404  # curl -X DELETE
    ok = {"Authorization": AUTH, "Content-Type": "application/json; charset=utf-8"}
    # a tool (pyrabbit2) posts JSON without a Content-Type and no browser headers: read as JSON, as RabbitMQ does
    import http.client

    tool = http.client.HTTPConnection("127.0.0.1", hb.management_port, timeout=10)  # urllib adds a form type
    tool.request("POST", "/api/exchanges/%2F/amq.default/publish", b'{"routing_key": "nowhere"}',
                 {"Authorization": AUTH})
    res = tool.getresponse()
    assert res.status == 200 and json.loads(res.read()) == {"routed": False}
    tool.close()
    assert raw(hb, "PUT", "/api/queues/%2F/ctq", b"{}", ok)[0] == 201


def test_foreign_origin_is_refused(hb: HttpBroker) -> None:
    host = hb.management_url.split("//")[1]
    evil = {"Authorization": AUTH, "Content-Type": "application/json", "Origin": "http://evil.example"}
    st, _, res = raw(hb, "PUT", "/api/queues/%2F/originq", b"{}", evil)
    assert st == 403 and "cross-origin" in json.loads(res)["reason"]
    assert raw(hb, "GET", "/api/overview", headers=evil)[0] == 403
    assert raw(hb, "PUT", "/api/queues/%2F/originq", b"{}", {**evil, "Origin": "null"})[0] == 403
    assert call(hb, "GET", "/api/queues/%2F/originq")[0] == 404
    same = {**evil, "Origin": f"http://{host}"}
    assert raw(hb, "PUT", "/api/queues/%2F/originq", b"{}", same)[0] == 201


def test_dashboard_login_uses_a_session_cookie_and_csrf_token(hb: HttpBroker) -> None:
    st, headers, page = raw(hb, "GET", "/")
    assert st == 200 and b'type="password"' in page and "www-authenticate" not in headers
    page_fetch = {"Sec-Fetch-Mode": "cors", "Sec-Fetch-Dest": "empty"}
    st, headers, res = raw(hb, "GET", "/api/overview", headers=page_fetch)
    assert st == 401 and "www-authenticate" not in headers and json.loads(res)["error"] == "not_authorized"
    assert "www-authenticate" in raw(hb, "GET", "/api/overview")[1]  # curl, rabbitmqadmin: Basic offered
    js = {**page_fetch, "Content-Type": "application/json"}
    assert raw(hb, "POST", "/api/login", b'{"username": "guest", "password": "bad"}', js)[0] == 401
    st, headers, res = raw(hb, "POST", "/api/login", b'{"username": "guest", "password": "guest"}', js)
    assert st == 200
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    session = {**js, "Cookie": cookie.split(";")[0]}
    csrf = json.loads(res)["csrf_token"]
    st, _, res = raw(hb, "GET", "/api/whoami", headers=session)
    assert st == 200 and json.loads(res)["name"] == "guest" and json.loads(res)["csrf_token"] == csrf
    assert raw(hb, "PUT", "/api/queues/%2F/cookieq", b"{}", session)[0] == 403  # no CSRF token
    assert raw(hb, "PUT", "/api/queues/%2F/cookieq", b"{}", {**session, "X-CSRF-Token": "guess"})[0] == 403
    assert call(hb, "GET", "/api/queues/%2F/cookieq")[0] == 404
    assert raw(hb, "PUT", "/api/queues/%2F/cookieq", b"{}", {**session, "X-CSRF-Token": csrf})[0] == 201
    st, headers, _ = raw(hb, "POST", "/api/logout", headers=session)
    assert st == 204 and "Max-Age=0" in headers["set-cookie"]
    assert raw(hb, "GET", "/api/whoami", headers=session)[0] == 401


def test_refused_management_logins_are_audited(hb: HttpBroker) -> None:
    assert call(hb, "GET", "/api/overview", auth=basic("audit-nobody", "pw"))[0] == 401
    js = {"Content-Type": "application/json"}
    assert raw(hb, "POST", "/api/login", b'{"username": "audit-dash", "password": "pw"}', js)[0] == 401
    time.sleep(0.2)
    log = hb.log()
    assert "login refused: protocol=http" in log and "'audit-nobody'" in log and "'audit-dash'" in log


def test_management_user_sees_only_its_vhosts_and_connections(hb: HttpBroker) -> None:
    assert call(hb, "PUT", "/api/vhosts/hidden-vh", {})[0] in (201, 204)
    assert call(hb, "PUT", "/api/queues/hidden-vh/secretq", {})[0] == 201
    assert call(hb, "PUT", "/api/exchanges/hidden-vh/secretx", {"type": "fanout"})[0] == 201
    assert call(hb, "POST", "/api/bindings/hidden-vh/e/secretx/q/secretq", {})[0] == 201
    for name, tags in (("mgmt-user", "management"), ("mon-user", "monitoring")):
        assert call(hb, "PUT", f"/api/users/{name}", {"password": "pw", "tags": tags})[0] in (201, 204)
        assert call(hb, "PUT", f"/api/permissions/%2F/{name}", {"configure": ".*", "write": ".*",
                                                                 "read": ".*"})[0] in (201, 204)
    guest = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", hb.amqp_port, "hidden-vh"))
    guest.channel().basic_consume("secretq", lambda *a: None)
    mine = pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", hb.amqp_port, credentials=pika.PlainCredentials("mgmt-user", "pw")))
    mch = mine.channel()
    mch.queue_declare("mgmt-user-q")
    mch.basic_consume("mgmt-user-q", lambda *a: None)
    try:
        mu = basic("mgmt-user", "pw")
        lists = {p: call(hb, "GET", p, auth=mu)[1] for p in (
            "/api/queues", "/api/exchanges", "/api/bindings", "/api/vhosts", "/api/consumers")}
        for path, rows in lists.items():
            assert rows and all(r.get("vhost", r.get("name")) == "/" if path == "/api/vhosts"
                                else (r["queue"]["vhost"] if path == "/api/consumers" else r["vhost"]) == "/"
                                for r in rows), path
        assert [v["name"] for v in lists["/api/vhosts"]] == ["/"]
        conns = call(hb, "GET", "/api/connections", auth=mu)[1]
        assert [c["user"] for c in conns] == ["mgmt-user"]
        assert {c["user"] for c in call(hb, "GET", "/api/channels", auth=mu)[1]} == {"mgmt-user"}
        ov = call(hb, "GET", "/api/overview", auth=mu)[1]
        assert ov["object_totals"]["connections"] == 1 and ov["object_totals"]["vhosts"] == 1
        assert call(hb, "GET", "/api/queues/hidden-vh", auth=mu)[0] == 403
        assert call(hb, "GET", "/api/queues/hidden-vh/secretq", auth=mu)[0] == 403
        assert call(hb, "GET", "/api/vhosts/hidden-vh", auth=mu)[0] == 403
        mon = basic("mon-user", "pw")
        assert any(q["name"] == "secretq" for q in call(hb, "GET", "/api/queues", auth=mon)[1])
        assert {c["user"] for c in call(hb, "GET", "/api/connections", auth=mon)[1]} >= {"guest", "mgmt-user"}
        assert call(hb, "GET", "/api/overview", auth=mon)[1]["object_totals"]["connections"] >= 2
    finally:
        guest.close()
        mine.close()


@pytest.mark.parametrize("body", [b"[" * 100000 + b"]" * 100000, b'{"a":' * 5000 + b"1" + b"}" * 5000,
                                  b'{"count": 1e999}', b'{"count": NaN}', b'{"count": -Infinity}',
                                  b'{"x":' * 40 + b"1" + b"}" * 40])
def test_hostile_json_bodies_get_400(hb: HttpBroker, body: bytes) -> None:
    call(hb, "PUT", "/api/queues/%2F/jsonq", {})
    st, _, res = raw(hb, "POST", "/api/queues/%2F/jsonq/get", body,
                     {"Authorization": AUTH, "Content-Type": "application/json"})
    assert st == 400 and json.loads(res)["error"] == "bad_request"
    assert hb.alive()


def test_default_exchange_publish_health_checks_whoami_and_rates(hb: HttpBroker) -> None:
    call(hb, "PUT", "/api/queues/%2F/rateq", {})
    st, res = call(hb, "POST", "/api/exchanges/%2F/amq.default/publish",
                   {"routing_key": "rateq", "payload": "via default", "payload_encoding": "string", "properties": {}})
    assert st == 200 and res == {"routed": True}
    assert call(hb, "GET", "/api/queues/%2F/rateq/get")[1][0]["payload"] == "via default"
    assert call(hb, "GET", "/api/exchanges/%2F/amq.default")[0] == 200
    assert call(hb, "GET", "/api/healthchecks/node") == (200, {"status": "ok"})
    assert call(hb, "GET", "/api/aliveness-test/%2F") == (200, {"status": "ok"})
    assert call(hb, "GET", "/api/aliveness-test/no-such-vhost")[0] == 404
    st, me = call(hb, "GET", "/api/whoami")
    assert st == 200 and me["name"] == "guest" and "administrator" in me["tags"]
    q = call(hb, "GET", "/api/queues/%2F/rateq")[1]
    assert q["node"] and q["node"] == call(hb, "GET", "/api/overview")[1]["node"]
    call(hb, "GET", "/api/overview")
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", hb.amqp_port))
    ch = conn.channel()
    for _ in range(50):
        ch.basic_publish("", "rateq", b"r")
    conn.close()
    time.sleep(1.2)
    q = call(hb, "GET", "/api/queues/%2F/rateq")[1]
    assert q["message_stats"]["publish_details"]["rate"] > 0
    assert {"deliver_get_details", "ack_details"} <= set(q["message_stats"])
    ov = call(hb, "GET", "/api/overview")[1]
    assert ov["message_stats"]["publish_details"]["rate"] > 0


def test_openapi_lists_the_new_endpoints(hb: HttpBroker) -> None:
    paths = call(hb, "GET", "/api/openapi.json", auth=None)[1]["paths"]
    for p in ("/api/whoami", "/api/healthchecks/node", "/api/aliveness-test/{vhost}", "/api/login",
              "/api/logout", "/metrics", "/metrics/per-object"):
        assert p in paths, p


def ctl_bare(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``haremq ctl`` with no --url: the port comes from the arguments or the environment."""
    return subprocess.run([sys.executable, "-m", "haremq.cli", "ctl", *args], capture_output=True, text=True,
                          timeout=30, env={**os.environ, **(env or {})})


def test_ctl_global_options_anywhere_and_port_from_environment(hb: HttpBroker) -> None:
    call(hb, "PUT", "/api/queues/%2F/ctl-anywhere", {})
    port = str(hb.management_port)
    for args in (["list", "queues", "--port", port], ["--port", port, "list", "queues"],
                 ["list", "--port", port, "queues"]):
        out = ctl_bare(*args)
        assert out.returncode == 0 and "ctl-anywhere" in out.stdout, (args, out.stderr)
    out = ctl_bare("list", "queues", "--json", "--port", port)
    assert out.returncode == 0 and any(q["name"] == "ctl-anywhere" for q in json.loads(out.stdout))
    out = ctl_bare("list", "queues", env={"HAREMQ_MANAGEMENT_PORT": port})
    assert out.returncode == 0 and "ctl-anywhere" in out.stdout, out.stderr
    out = ctl_bare("list", "queues", "--user", "guest", "--password", "wrong", "--port", port)
    assert out.returncode == 1 and "401" in out.stderr


def test_ctl_publish_and_get(hb: HttpBroker) -> None:
    assert ctl(hb, "declare", "queue", "ctl-pub").returncode == 0
    out = ctl(hb, "publish", "ctl-pub", "hello from ctl")
    assert out.returncode == 0 and out.stdout.strip() == "message published", out.stderr
    out = subprocess.run([sys.executable, "-m", "haremq.cli", "ctl", "--url", hb.management_url, "publish",
                          "ctl-pub"], input="from stdin", capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "NOT routed" in ctl(hb, "publish", "no-such-queue-anywhere", "x").stdout
    out = ctl(hb, "get", "ctl-pub", "--count", "5", "--json")
    assert out.returncode == 0 and [m["payload"] for m in json.loads(out.stdout)] == ["hello from ctl", "from stdin"]
    assert "hello from ctl" in ctl(hb, "get", "ctl-pub").stdout
    assert ctl(hb, "get", "no-such-queue").returncode == 1


def test_ctl_export_and_import_print_success_lines(hb: HttpBroker, tmp_path: Any) -> None:
    f = tmp_path / "defs.json"
    out = ctl(hb, "export", str(f))
    assert out.returncode == 0 and out.stdout.strip() == f"exported definitions to {f}"
    out = ctl(hb, "import", str(f))
    assert out.returncode == 0 and out.stdout.strip() == f"imported definitions from {f}"
    out = ctl(hb, "export", "-")
    assert out.returncode == 0 and json.loads(out.stdout)["product_name"] == "haremq"
    assert "exported definitions" in out.stderr


def test_ctl_output_into_a_closed_pipe_ends_without_traceback(hb: HttpBroker) -> None:
    """``haremq ctl list queues | head -1``: the reader is gone before ctl writes."""
    proc = subprocess.Popen([sys.executable, "-m", "haremq.cli", "ctl", "--url", hb.management_url, "list",
                             "queues"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read()
    proc.wait(30)
    assert err == "", err  # no traceback, no "Broken pipe" error line


def test_declaring_a_dead_letter_exchange_needs_write_permission_on_it(hb: HttpBroker) -> None:
    """As RabbitMQ: a queue.declare with ``x-dead-letter-exchange`` checks read on the queue and write on
    that exchange; otherwise a user could publish (by rejecting) into an exchange it may not write to."""
    assert call(hb, "PUT", "/api/users/dlxuser", {"password": "pw", "tags": ""})[0] == 201
    assert call(hb, "PUT", "/api/permissions/%2F/dlxuser",
                {"configure": "^dlxu-", "write": "^dlxu-", "read": "^dlxu-"})[0] == 201
    assert call(hb, "PUT", "/api/queues/%2F/dlx-victim", {"durable": True})[0] == 201
    assert call(hb, "POST", "/api/bindings/%2F/e/amq.direct/q/dlx-victim", {"routing_key": "v"})[0] == 201
    creds = pika.PlainCredentials("dlxuser", "pw")
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", hb.amqp_port, credentials=creds))
    try:
        ch = conn.channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
            ch.queue_declare("dlxu-q", arguments={"x-dead-letter-exchange": "amq.direct",
                                                  "x-dead-letter-routing-key": "v"})
        assert info.value.reply_code == 403
        ch = conn.channel()
        ch.queue_declare("dlxu-ok", arguments={"x-dead-letter-exchange": "dlxu-x"})  # its own exchange: fine
    finally:
        conn.close()
    assert call(hb, "GET", "/api/queues/%2F/dlxu-q")[0] == 404
    assert call(hb, "DELETE", "/api/users/dlxuser")[0] == 204


def test_declaring_an_alternate_exchange_needs_write_permission_on_it(hb: HttpBroker) -> None:
    """As RabbitMQ: exchange.declare with ``alternate-exchange`` checks read on the exchange and write on the
    alternate; otherwise unroutable publishes would land in an exchange the user may not write to."""
    assert call(hb, "PUT", "/api/users/aeuser", {"password": "pw", "tags": ""})[0] == 201
    assert call(hb, "PUT", "/api/permissions/%2F/aeuser",
                {"configure": "^aeu-", "write": "^aeu-", "read": "^aeu-"})[0] == 201
    creds = pika.PlainCredentials("aeuser", "pw")
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", hb.amqp_port, credentials=creds))
    try:
        ch = conn.channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
            ch.exchange_declare("aeu-x", "direct", arguments={"alternate-exchange": "amq.fanout"})
        assert info.value.reply_code == 403
        ch = conn.channel()
        ch.exchange_declare("aeu-y", "direct", arguments={"alternate-exchange": "aeu-ae"})  # its own: fine
    finally:
        conn.close()
    assert call(hb, "GET", "/api/exchanges/%2F/aeu-x")[0] == 404
    assert call(hb, "DELETE", "/api/users/aeuser")[0] == 204
