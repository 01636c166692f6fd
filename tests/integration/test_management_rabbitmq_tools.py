"""The management API as RabbitMQ's own tools use it: rabbitmqadmin (the script RabbitMQ's management
plugin serves; skipped when it is not installed) and pyrabbit2, plus raw requests shaped as they send them."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pika
import pytest

from brokerproc import BrokerProcess, start_broker, stop_broker

RABBITMQADMIN = shutil.which("rabbitmqadmin") or next(
    (p for p in ("/usr/lib/rabbitmq/lib/rabbitmq_server-3.10.8/plugins/rabbitmq_management-3.10.8/priv/www/cli/"
                 "rabbitmqadmin",) if os.path.exists(p)), None)


@pytest.fixture(scope="module")
def hb() -> Iterator[BrokerProcess]:
    b = start_broker(prefix="haremq-mgmt-tools-")
    yield b
    assert stop_broker(b) == 0, b.log()


def call(hb: BrokerProcess, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    return hb.api(method, path, body)


def admin(hb: BrokerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    assert RABBITMQADMIN is not None
    return subprocess.run([sys.executable, RABBITMQADMIN, "-H", "127.0.0.1", "-P", str(hb.management_port),
                           "-u", "guest", "-p", "guest", *args], capture_output=True, text=True, timeout=30)


def amqp(hb: BrokerProcess) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", hb.amqp_port))


needs_admin = pytest.mark.skipif(RABBITMQADMIN is None, reason="rabbitmqadmin is not installed")


def test_string_flags_and_an_empty_argument_list_are_accepted_as_rabbitmq_does(hb: BrokerProcess) -> None:
    # rabbitmqadmin's body for `declare queue` / `declare exchange`, pyrabbit2's for an exchange and a binding
    assert call(hb, "PUT", "/api/queues/%2F/sflags", {"auto_delete": "false", "durable": "true", "arguments": {},
                                                       "vhost": "/"})[0] == 201
    _st, q = call(hb, "GET", "/api/queues/%2F/sflags")
    assert q["durable"] is True and q["auto_delete"] is False
    assert call(hb, "PUT", "/api/exchanges/%2F/sflags.x", {"type": "topic", "auto_delete": "false", "durable": "false",
                                                            "internal": "false", "arguments": []})[0] == 201
    _st, x = call(hb, "GET", "/api/exchanges/%2F/sflags.x")
    assert x["durable"] is False and x["type"] == "topic"
    assert call(hb, "POST", "/api/bindings/%2F/e/sflags.x/q/sflags", {"routing_key": "a.#", "arguments": []})[0] == 201
    # what RabbitMQ refuses stays refused
    assert call(hb, "PUT", "/api/queues/%2F/sflags2", {"durable": "yes"})[0] == 400
    assert call(hb, "PUT", "/api/queues/%2F/sflags2", {"arguments": [1]})[0] == 400
    assert call(hb, "GET", "/api/queues/%2F/sflags2")[0] == 404


def publish(hb: BrokerProcess, queue: str, *bodies: bytes) -> None:
    conn = amqp(hb)
    ch = conn.channel()
    ch.confirm_delivery()
    for b in bodies:
        ch.basic_publish("", queue, b)
    conn.close()


def test_get_ackmode_ack_requeue_false_consumes_the_messages(hb: BrokerProcess) -> None:
    assert call(hb, "PUT", "/api/queues/%2F/getack", {})[0] == 201
    publish(hb, "getack", b"m0", b"m1", b"m2")
    st, msgs = call(hb, "POST", "/api/queues/%2F/getack/get", {"count": 2, "ackmode": "ack_requeue_false",
                                                                "encoding": "auto"})
    assert st == 200 and [m["payload"] for m in msgs] == ["m0", "m1"] and msgs[-1]["message_count"] == 1
    st, q = call(hb, "GET", "/api/queues/%2F/getack")
    assert q["messages"] == 1 and q["messages_unacknowledged"] == 0
    conn = amqp(hb)
    assert conn.channel().basic_get("getack", auto_ack=True)[2] == b"m2"
    conn.close()


def test_get_ackmode_requeue_true_puts_messages_back_flagged_redelivered(hb: BrokerProcess) -> None:
    assert call(hb, "PUT", "/api/queues/%2F/getrq", {})[0] == 201
    publish(hb, "getrq", b"r0", b"r1")
    for mode in ("reject_requeue_true", "ack_requeue_true"):
        st, msgs = call(hb, "POST", "/api/queues/%2F/getrq/get", {"count": 5, "ackmode": mode, "encoding": "auto"})
        assert st == 200 and [m["payload"] for m in msgs] == ["r0", "r1"]
    assert msgs[0]["redelivered"] is True
    st, q = call(hb, "GET", "/api/queues/%2F/getrq")
    assert q["messages_ready"] == 2 and q["messages_unacknowledged"] == 0
    conn = amqp(hb)
    method, _, body = conn.channel().basic_get("getrq", auto_ack=True)
    assert body == b"r0" and method.redelivered
    conn.close()


def test_get_ackmode_reject_requeue_false_dead_letters(hb: BrokerProcess) -> None:
    assert call(hb, "PUT", "/api/queues/%2F/getdlq", {})[0] == 201
    assert call(hb, "PUT", "/api/queues/%2F/getrj", {"arguments": {"x-dead-letter-exchange": "",
                                                                    "x-dead-letter-routing-key": "getdlq"}})[0] == 201
    publish(hb, "getrj", b"dead")
    st, msgs = call(hb, "POST", "/api/queues/%2F/getrj/get", {"count": 1, "ackmode": "reject_requeue_false",
                                                               "encoding": "base64"})
    assert st == 200 and msgs[0]["payload"] == base64.b64encode(b"dead").decode()
    assert msgs[0]["payload_encoding"] == "base64"
    assert call(hb, "GET", "/api/queues/%2F/getrj")[1]["messages"] == 0
    assert call(hb, "GET", "/api/queues/%2F/getdlq")[1]["messages"] == 1


def test_get_without_ackmode_browses_and_a_bad_ackmode_is_refused(hb: BrokerProcess) -> None:
    assert call(hb, "PUT", "/api/queues/%2F/getbr", {})[0] == 201
    publish(hb, "getbr", b"b0")
    for _ in range(2):
        st, msgs = call(hb, "POST", "/api/queues/%2F/getbr/get", {"count": 1})
        assert st == 200 and msgs[0]["payload"] == "b0" and msgs[0]["redelivered"] is False
    assert call(hb, "POST", "/api/queues/%2F/getbr/get", {"count": 1, "ackmode": "nope"})[0] == 400
    st, q = call(hb, "GET", "/api/queues/%2F/getbr")
    assert q["messages_ready"] == 1 and q["message_stats"]["deliver_get"] == 0


@needs_admin
def test_rabbitmqadmin_declares_publishes_gets_and_deletes(hb: BrokerProcess) -> None:
    for args in (["declare", "exchange", "name=adm.x", "type=direct"],
                 ["declare", "queue", "name=adm.q", "durable=true"],
                 ["declare", "binding", "source=adm.x", "destination=adm.q", "routing_key=k"],
                 ["publish", "exchange=adm.x", "routing_key=k", "payload=hello"],
                 ["publish", "exchange=adm.x", "routing_key=k", "payload=world"]):
        r = admin(hb, *args)
        assert r.returncode == 0, (args, r.stdout, r.stderr)
    r = admin(hb, "-f", "raw_json", "get", "queue=adm.q", "ackmode=ack_requeue_false")
    assert r.returncode == 0 and json.loads(r.stdout)[0]["payload"] == "hello", r.stderr
    _st, q = call(hb, "GET", "/api/queues/%2F/adm.q")
    assert q["messages"] == 1 and q["durable"] is True
    r = admin(hb, "-f", "raw_json", "list", "queues", "name", "messages")
    assert r.returncode == 0 and any(x["name"] == "adm.q" and x["messages"] == 1 for x in json.loads(r.stdout))
    for args in (["delete", "binding", "source=adm.x", "destination_type=queue", "destination=adm.q",
                  "properties_key=k"], ["delete", "queue", "name=adm.q"], ["delete", "exchange", "name=adm.x"]):
        r = admin(hb, *args)
        assert r.returncode == 0, (args, r.stdout, r.stderr)
    assert call(hb, "GET", "/api/queues/%2F/adm.q")[0] == 404


def test_pyrabbit2_creates_exchanges_queues_bindings_and_gets_messages(hb: BrokerProcess) -> None:
    from pyrabbit2.api import Client

    c = Client(f"127.0.0.1:{hb.management_port}", "guest", "guest", timeout=10)
    assert c.is_alive()
    c.create_exchange("/", "pr.x", "fanout", durable=True)
    c.create_queue("/", "pr.q", durable=True)
    c.create_binding("/", "pr.x", "pr.q", "")
    assert c.publish("/", "pr.x", "", "hi")
    assert c.get_queue_depth("/", "pr.q") == 1
    msgs = c.get_messages("/", "pr.q", count=1, requeue=False)
    assert msgs[0]["payload"] == "hi"
    assert c.get_queue_depth("/", "pr.q") == 0
    assert [b["source"] for b in c.get_queue_bindings("/", "pr.q")] == ["", "pr.x"]


@needs_admin
def test_rabbitmqadmin_lists_closes_a_connection_and_moves_one_vhosts_definitions(hb: BrokerProcess,
                                                                                   tmp_path: Any) -> None:
    for what in ("connections", "channels", "consumers", "exchanges", "queues", "bindings", "users", "vhosts",
                 "permissions", "nodes", "parameters", "policies", "operator_policies", "vhost_limits"):
        r = admin(hb, "-f", "raw_json", "list", what)
        assert r.returncode == 0 and isinstance(json.loads(r.stdout), list), (what, r.stdout, r.stderr)
    r = admin(hb, "show", "overview")
    assert r.returncode == 0 and "3.10.8" in r.stdout, r.stderr
    conn = amqp(hb)
    client_port = conn._impl._transport._sock.getsockname()[1]
    r = admin(hb, "-f", "raw_json", "list", "connections")
    name = next(c["name"] for c in json.loads(r.stdout) if c["peer_port"] == client_port)
    r = admin(hb, "close", "connection", f"name={name}")
    assert r.returncode == 0, r.stdout + r.stderr
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as exc:
        conn.channel()
        conn.process_data_events(2)
    assert exc.value.reply_code == 320
    assert admin(hb, "declare", "vhost", "name=adm-src").returncode == 0
    assert admin(hb, "declare", "vhost", "name=adm-dst").returncode == 0
    assert admin(hb, "--vhost=adm-src", "declare", "queue", "name=moved", "arguments={\"x-max-length\": 9}"
                 ).returncode == 0
    path = str(tmp_path / "defs.json")
    assert admin(hb, "--vhost=adm-src", "export", path).returncode == 0
    r = admin(hb, "--vhost=adm-dst", "import", path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert call(hb, "GET", "/api/queues/adm-dst/moved")[1]["arguments"] == {"x-max-length": 9}


def test_haremq_ctl_get_still_only_peeks(hb: BrokerProcess) -> None:
    """``haremq ctl get`` shows messages and leaves them as they were (haremq's browse mode), unlike
    rabbitmqadmin's default ``ack_requeue_true``, which takes and requeues (flagged redelivered)."""
    assert call(hb, "PUT", "/api/queues/%2F/ctlpeek", {})[0] == 201
    publish(hb, "ctlpeek", b"peeked")
    out = subprocess.run([sys.executable, "-m", "haremq.cli", "ctl", "--url", f"http://127.0.0.1:{hb.management_port}",
                          "get", "ctlpeek", "--json"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and json.loads(out.stdout)[0]["payload"] == "peeked", out.stderr
    _st, q = call(hb, "GET", "/api/queues/%2F/ctlpeek")
    assert q["message_stats"]["deliver_get"] == 0 and q["message_stats"]["redeliver"] == 0
    conn = amqp(hb)
    method, _, body = conn.channel().basic_get("ctlpeek", auto_ack=True)
    assert body == b"peeked" and not method.redelivered
    conn.close()
