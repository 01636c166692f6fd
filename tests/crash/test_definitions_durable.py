"""Management changes (users, passwords, tags, permissions, vhosts, SQS access keys, deletions,
definitions imports, ``haremq ctl``) are on disk before the answer: the broker is killed with
SIGKILL right after the answer and the restarted broker shows exactly the state last answered."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import boto3
import pika
import pika.exceptions
import pytest

from brokerproc import BrokerProcess, start_broker, stop_broker


def api(b: BrokerProcess, method: str, path: str, body: Any = None, user: str = "guest",
        password: str = "guest") -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    req = urllib.request.Request(b.management_url + path, data=data, method=method,
                                 headers={"Authorization": auth, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as res:
            raw = res.read()
            return res.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        raw = e.read()
        return e.code, json.loads(raw) if raw else None


def ok(b: BrokerProcess, method: str, path: str, body: Any = None) -> Any:
    status, doc = api(b, method, path, body)
    assert status in (200, 201, 204), (method, path, status, doc)
    return doc


def kill_and_restart(b: BrokerProcess) -> BrokerProcess:
    """SIGKILL at once (no clean shutdown, no grace time), then start on the same data directory."""
    b.proc.kill()
    b.proc.wait(10)
    return start_broker(data_dir=b.data_dir)


@pytest.fixture
def node() -> Iterator[list[BrokerProcess]]:
    """A fresh broker; tests replace ``node[0]`` when they restart it."""
    holder = [start_broker(data_dir=tempfile.mkdtemp(prefix="haremq-defs-"))]
    yield holder
    stop_broker(holder[0])


def login(b: BrokerProcess, user: str, password: str, vhost: str = "/") -> bool:
    try:
        conn = pika.BlockingConnection(pika.ConnectionParameters(
            "127.0.0.1", b.port, vhost, pika.PlainCredentials(user, password), connection_attempts=1,
            socket_timeout=5))
    except (pika.exceptions.ProbableAuthenticationError, pika.exceptions.ProbableAccessDeniedError):
        return False
    conn.close()
    return True


def test_new_password_and_tags_survive_a_kill_right_after_the_answer(node: list[BrokerProcess]) -> None:
    b = node[0]
    ok(b, "PUT", "/api/users/alice", {"password": "first", "tags": "management"})
    ok(b, "PUT", "/api/permissions/%2F/alice", {"configure": ".*", "write": ".*", "read": ".*"})
    ok(b, "PUT", "/api/users/alice", {"password": "second", "tags": "administrator,monitoring"})
    b = node[0] = kill_and_restart(b)
    assert login(b, "alice", "second")
    assert not login(b, "alice", "first")
    assert ok(b, "GET", "/api/users/alice")["tags"] == "administrator,monitoring"


def test_vhosts_and_permissions_survive_a_kill_exactly_as_answered(node: list[BrokerProcess]) -> None:
    b = node[0]
    ok(b, "PUT", "/api/users/carol", {"password": "pw", "tags": ""})
    for vh in ("keep", "drop"):
        ok(b, "PUT", f"/api/vhosts/{vh}")
    ok(b, "PUT", "/api/permissions/keep/carol", {"configure": "^c-", "write": "^w-", "read": ""})
    ok(b, "PUT", "/api/permissions/drop/carol", {"configure": ".*", "write": ".*", "read": ".*"})
    ok(b, "DELETE", "/api/vhosts/drop")
    b = node[0] = kill_and_restart(b)
    assert {v["name"] for v in ok(b, "GET", "/api/vhosts")} == {"/", "keep"}
    perms = [p for p in ok(b, "GET", "/api/permissions") if p["user"] == "carol"]
    assert perms == [{"user": "carol", "vhost": "keep", "configure": "^c-", "write": "^w-", "read": ""}]
    # the creator of a vhost got full permissions on it, and kept them
    assert ok(b, "GET", "/api/permissions/keep/guest")["configure"] == ".*"
    assert login(b, "carol", "pw", "keep")
    assert not login(b, "carol", "pw", "drop")


def test_deleted_users_and_permissions_stay_deleted_after_a_kill(node: list[BrokerProcess]) -> None:
    b = node[0]
    for name in ("dave", "erin"):
        ok(b, "PUT", f"/api/users/{name}", {"password": "pw", "tags": ""})
        ok(b, "PUT", f"/api/permissions/%2F/{name}", {"configure": ".*", "write": ".*", "read": ".*"})
    ok(b, "DELETE", "/api/users/dave")
    ok(b, "DELETE", "/api/permissions/%2F/erin")
    b = node[0] = kill_and_restart(b)
    assert api(b, "GET", "/api/users/dave")[0] == 404
    assert api(b, "GET", "/api/permissions/%2F/erin")[0] == 404
    assert not login(b, "dave", "pw")
    assert not login(b, "erin", "pw")  # user kept, no access to "/"
    assert ok(b, "GET", "/api/users/erin")["name"] == "erin"


def test_definitions_import_survives_a_kill(node: list[BrokerProcess]) -> None:
    b = node[0]
    ok(b, "POST", "/api/definitions", {
        "vhosts": [{"name": "imported"}],
        "users": [{"name": "frank", "password": "pw", "tags": "monitoring"}],
        "permissions": [{"user": "frank", "vhost": "imported", "configure": "", "write": "x", "read": "y"}],
        "exchanges": [{"name": "imp.x", "vhost": "imported", "type": "topic", "durable": True}],
        "queues": [{"name": "imp.q", "vhost": "imported", "durable": True, "arguments": {"x-max-length": 7}}],
        "bindings": [{"source": "imp.x", "vhost": "imported", "destination": "imp.q",
                      "destination_type": "queue", "routing_key": "k.#"}],
    })
    b = node[0] = kill_and_restart(b)
    defs = ok(b, "GET", "/api/definitions")
    assert {"user": "frank", "vhost": "imported", "configure": "", "write": "x", "read": "y"} in defs["permissions"]
    assert [u["tags"] for u in defs["users"] if u["name"] == "frank"] == ["monitoring"]
    assert [(q["name"], q["arguments"]) for q in defs["queues"] if q["vhost"] == "imported"] == \
        [("imp.q", {"x-max-length": 7})]
    assert [(x["source"], x["destination"], x["routing_key"]) for x in defs["bindings"]
            if x["vhost"] == "imported"] == [("imp.x", "imp.q", "k.#")]


def test_ctl_add_user_and_set_permissions_survive_a_kill(node: list[BrokerProcess]) -> None:
    b = node[0]

    def ctl(*args: str) -> None:
        subprocess.run([sys.executable, "-m", "haremq.cli", "ctl", "--url", b.management_url, *args],
                       check=True, capture_output=True, timeout=30)

    ctl("add-user", "gina", "pw1", "--tags", "management")
    ctl("set-permissions", "gina", ".*", ".*", ".*")
    b = node[0] = kill_and_restart(b)
    assert login(b, "gina", "pw1")


def test_sqs_access_key_survives_a_kill(node: list[BrokerProcess]) -> None:
    b = node[0]
    ok(b, "PUT", "/api/users/hank", {"password": "pw", "tags": "", "access_keys": {"AKIDHANK": "hank-secret"}})
    ok(b, "PUT", "/api/permissions/%2F/hank", {"configure": ".*", "write": ".*", "read": ".*"})
    b = node[0] = kill_and_restart(b)
    sqs = boto3.client("sqs", endpoint_url=b.sqs_url, region_name="us-east-1", aws_access_key_id="AKIDHANK",
                       aws_secret_access_key="hank-secret")
    url = sqs.create_queue(QueueName="hank-q")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="hi")
    assert sqs.receive_message(QueueUrl=url)["Messages"][0]["Body"] == "hi"


def test_amqp_declares_survive_a_kill_right_after_their_ok(node: list[BrokerProcess]) -> None:
    b = node[0]
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port))
    ch = conn.channel()
    names = [f"kq{i}" for i in range(20)]
    ch.exchange_declare("kx", "direct", durable=True)
    for n in names:
        ch.queue_declare(n, durable=True)
        ch.queue_bind(n, "kx", n)
    b = node[0] = kill_and_restart(b)
    bindings = {x["destination"] for x in ok(b, "GET", "/api/bindings/%2F") if x["source"] == "kx"}
    assert bindings == set(names)


def test_management_declares_survive_a_kill(node: list[BrokerProcess]) -> None:
    b = node[0]
    ok(b, "PUT", "/api/exchanges/%2F/mx", {"type": "fanout", "durable": True})
    ok(b, "PUT", "/api/queues/%2F/mq", {"durable": True})
    ok(b, "POST", "/api/bindings/%2F/e/mx/q/mq", {"routing_key": "r"})
    ok(b, "PUT", "/api/queues/%2F/gone", {"durable": True})
    ok(b, "DELETE", "/api/queues/%2F/gone")
    b = node[0] = kill_and_restart(b)
    assert api(b, "GET", "/api/queues/%2F/mq")[0] == 200
    assert api(b, "GET", "/api/queues/%2F/gone")[0] == 404
    assert [x["routing_key"] for x in ok(b, "GET", "/api/bindings/%2F/e/mx/q/mq")] == ["r"]


@pytest.mark.parametrize("missing", ["configure", "write", "read"])
def test_permission_without_configure_write_or_read_is_refused_with_400(
        node: list[BrokerProcess], missing: str) -> None:
    b = node[0]
    ok(b, "PUT", "/api/users/ivan", {"password": "pw", "tags": ""})
    perm = {k: ".*" for k in ("configure", "write", "read") if k != missing}
    status, doc = api(b, "PUT", "/api/permissions/%2F/ivan", perm)
    assert status == 400 and missing in doc["reason"]
    assert api(b, "GET", "/api/permissions/%2F/ivan")[0] == 404


def test_import_with_an_incomplete_permission_is_refused_and_applies_nothing(node: list[BrokerProcess]) -> None:
    b = node[0]
    status, _doc = api(b, "POST", "/api/definitions", {
        "vhosts": [{"name": "half"}],
        "users": [{"name": "judy", "password": "pw", "tags": ""}],
        "permissions": [{"user": "judy", "vhost": "half", "configure": ".*"}],
        "queues": [{"name": "half-q", "vhost": "half", "durable": True}],
    })
    assert status == 400
    assert api(b, "GET", "/api/users/judy")[0] == 404
    assert api(b, "GET", f"/api/vhosts/{quote('half')}")[0] == 404
    b = node[0] = kill_and_restart(b)
    assert api(b, "GET", "/api/users/judy")[0] == 404


def test_stomp_subscribe_receipt_comes_after_the_new_queue_is_durable(node: list[BrokerProcess]) -> None:
    b = node[0]
    sock = socket.create_connection(("127.0.0.1", b.stomp_port), timeout=10)

    def frame(command: str, **headers: str) -> bytes:
        sock.sendall((command + "\n" + "".join(f"{k}:{v}\n" for k, v in headers.items()) + "\n\0").encode())
        got = b""
        while b"\0" not in got:
            got += sock.recv(4096)
        return got

    assert frame("CONNECT", **{"accept-version": "1.2", "host": "/", "login": "guest", "passcode": "guest"}
                 ).startswith(b"CONNECTED")
    names = [f"sq{i}" for i in range(10)]
    for i, n in enumerate(names):
        assert frame("SUBSCRIBE", id=str(i), destination=f"/queue/{n}", receipt=f"r{i}").startswith(b"RECEIPT")
    b = node[0] = kill_and_restart(b)
    sock.close()
    for n in names:
        assert api(b, "GET", f"/api/queues/%2F/{n}")[0] == 200


def test_import_with_a_bad_queue_entry_applies_none_of_its_users(node: list[BrokerProcess]) -> None:
    b = node[0]
    status, _doc = api(b, "POST", "/api/definitions", {
        "users": [{"name": "kim", "password": "pw", "tags": ""}],
        "queues": [{"name": "kim-q", "vhost": "/", "durable": "yes"}],
    })
    assert status == 400
    assert api(b, "GET", "/api/users/kim")[0] == 404


def test_sqs_queue_attributes_survive_a_kill_right_after_the_answer(node: list[BrokerProcess]) -> None:
    b = node[0]

    def client(b: BrokerProcess) -> Any:
        return boto3.client("sqs", endpoint_url=b.sqs_url, region_name="us-east-1", aws_access_key_id="guest",
                            aws_secret_access_key="guest")

    url = client(b).create_queue(QueueName="attrs-q", Attributes={"VisibilityTimeout": "40"})["QueueUrl"]
    client(b).set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "77"})
    b = node[0] = kill_and_restart(b)
    got = client(b).get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout"])["Attributes"]
    assert got == {"VisibilityTimeout": "77"}
