"""Management API, /metrics and ``haremq ctl`` against a real broker process; schemathesis finds no 5xx."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pika
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "interop"))
from sqs_helpers import HttpBroker, sqs_client, start_http_broker, stop_http_broker

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
    st, msgs = call(hb, "POST", "/api/queues/%2F/mq1/get", {"count": 2, "ackmode": "ack_requeue_true"})
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
        if res.status_code >= 500:
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
