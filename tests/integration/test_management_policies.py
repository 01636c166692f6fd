"""Policies (``/api/policies``) as RabbitMQ applies them: stored in the metadata store (they survive a
restart), matched by regex, ``apply-to`` and ``priority``, merged with queue arguments by RabbitMQ's
rules, applied at once to matching queues; keys haremq does not implement are refused."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pika
import pytest

from brokerproc import BrokerProcess, start_broker, stop_broker

RABBITMQADMIN = shutil.which("rabbitmqadmin")


@pytest.fixture(scope="module")
def hb() -> Iterator[BrokerProcess]:
    b = start_broker(prefix="haremq-mgmt-policies-")
    yield b
    assert stop_broker(b) == 0, b.log()


def call(hb: BrokerProcess, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    return hb.api(method, path, body)


def publish(hb: BrokerProcess, queue: str, *bodies: bytes) -> None:
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", hb.amqp_port))
    ch = conn.channel()
    ch.confirm_delivery()
    for b in bodies:
        ch.basic_publish("", queue, b)
    conn.close()


def drain(hb: BrokerProcess, queue: str) -> list[bytes]:
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", hb.amqp_port))
    ch = conn.channel()
    out = []
    while (got := ch.basic_get(queue, auto_ack=True))[0] is not None:
        out.append(got[2])
    conn.close()
    return out


def depth(hb: BrokerProcess, queue: str) -> int:
    return int(call(hb, "GET", f"/api/queues/%2F/{queue}")[1]["messages"])


def test_max_length_policy_trims_matching_queues_and_a_lower_queue_argument_wins(hb: BrokerProcess) -> None:
    assert call(hb, "PUT", "/api/queues/%2F/lim.a", {})[0] == 201
    assert call(hb, "PUT", "/api/queues/%2F/lim.b", {"arguments": {"x-max-length": 1}})[0] == 201
    assert call(hb, "PUT", "/api/queues/%2F/other.lim", {})[0] == 201
    for q in ("lim.a", "lim.b", "other.lim"):
        publish(hb, q, b"1", b"2", b"3", b"4")
    assert call(hb, "PUT", "/api/policies/%2F/lim", {"pattern": r"^lim\.", "definition": {"max-length": 2},
                                                     "apply-to": "queues"})[0] == 201
    assert depth(hb, "lim.a") == 2 and depth(hb, "lim.b") == 1 and depth(hb, "other.lim") == 4
    st, q = call(hb, "GET", "/api/queues/%2F/lim.a")
    assert q["policy"] == "lim" and q["effective_policy_definition"] == {"max-length": 2}
    assert q["arguments"] == {}  # the declared arguments are unchanged
    publish(hb, "lim.a", b"5")
    assert drain(hb, "lim.a") == [b"4", b"5"]  # drop-head, as a publish over the limit
    # a queue declared later gets the policy too
    assert call(hb, "PUT", "/api/queues/%2F/lim.new", {})[0] == 201
    publish(hb, "lim.new", b"a", b"b", b"c")
    assert depth(hb, "lim.new") == 2 and call(hb, "GET", "/api/queues/%2F/lim.new")[1]["policy"] == "lim"
    st, pols = call(hb, "GET", "/api/policies")
    assert st == 200 and pols == [{"vhost": "/", "name": "lim", "pattern": r"^lim\.", "apply-to": "queues",
                                   "definition": {"max-length": 2}, "priority": 0}]
    assert call(hb, "GET", "/api/policies/%2F/lim")[1]["definition"] == {"max-length": 2}
    assert call(hb, "PUT", "/api/policies/%2F/lim", {"pattern": r"^lim\.", "definition": {"max-length": 3}})[0] == 204
    publish(hb, "lim.new", b"d", b"e")
    assert depth(hb, "lim.new") == 3
    assert call(hb, "DELETE", "/api/policies/%2F/lim")[0] == 204
    publish(hb, "lim.new", b"f", b"g")
    assert depth(hb, "lim.new") == 5 and call(hb, "GET", "/api/queues/%2F/lim.new")[1]["policy"] is None
    assert call(hb, "DELETE", "/api/policies/%2F/lim")[0] == 404


def test_ttl_and_dead_letter_policy_and_a_queue_argument_wins_for_the_routing_key(hb: BrokerProcess) -> None:
    for q in ("ttl.dlq", "ttl.own"):
        assert call(hb, "PUT", f"/api/queues/%2F/{q}", {})[0] == 201
    assert call(hb, "PUT", "/api/queues/%2F/ttl.q1", {})[0] == 201
    assert call(hb, "PUT", "/api/queues/%2F/ttl.q2", {"arguments": {"x-dead-letter-routing-key": "ttl.own",
                                                                     "x-message-ttl": 60000}})[0] == 201
    assert call(hb, "PUT", "/api/policies/%2F/ttl", {
        "pattern": r"^ttl\.q", "definition": {"message-ttl": 100, "dead-letter-exchange": "",
                                              "dead-letter-routing-key": "ttl.dlq"}})[0] == 201
    publish(hb, "ttl.q1", b"expires-to-dlq")
    publish(hb, "ttl.q2", b"expires-to-own")  # the policy's smaller TTL wins, the queue's routing key wins
    deadline = time.monotonic() + 10
    while depth(hb, "ttl.dlq") + depth(hb, "ttl.own") < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert drain(hb, "ttl.dlq") == [b"expires-to-dlq"] and drain(hb, "ttl.own") == [b"expires-to-own"]
    assert call(hb, "DELETE", "/api/policies/%2F/ttl")[0] == 204


def test_highest_priority_policy_applies_and_apply_to_exchanges_skips_queues(hb: BrokerProcess) -> None:
    assert call(hb, "PUT", "/api/queues/%2F/prio.q", {})[0] == 201
    assert call(hb, "PUT", "/api/policies/%2F/low", {"pattern": "^prio", "definition": {"max-length": 5},
                                                     "priority": 1})[0] == 201
    assert call(hb, "PUT", "/api/policies/%2F/high", {"pattern": "prio", "definition": {"max-length": 2},
                                                      "priority": "7"})[0] == 201
    assert call(hb, "PUT", "/api/policies/%2F/xonly", {"pattern": ".*", "definition": {"max-length": 0},
                                                       "priority": 99, "apply-to": "exchanges"})[0] == 201
    assert call(hb, "GET", "/api/queues/%2F/prio.q")[1]["policy"] == "high"
    assert [p["name"] for p in call(hb, "GET", "/api/policies/%2F")[1]] == ["xonly", "high", "low"]
    assert call(hb, "DELETE", "/api/policies/%2F/high")[0] == 204
    assert call(hb, "GET", "/api/queues/%2F/prio.q")[1]["policy"] == "low"
    for name in ("low", "xonly"):
        assert call(hb, "DELETE", f"/api/policies/%2F/{name}")[0] == 204


def test_overflow_reject_publish_policy_nacks_and_expires_policy_deletes_an_unused_queue(hb: BrokerProcess) -> None:
    assert call(hb, "PUT", "/api/queues/%2F/ovf.q", {})[0] == 201
    assert call(hb, "PUT", "/api/policies/%2F/ovf", {"pattern": "^ovf", "definition": {
        "max-length": 1, "overflow": "reject-publish"}})[0] == 201
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", hb.amqp_port))
    ch = conn.channel()
    ch.confirm_delivery()
    ch.basic_publish("", "ovf.q", b"fits")
    with pytest.raises(pika.exceptions.NackError):
        ch.basic_publish("", "ovf.q", b"refused")
    conn.close()
    assert drain(hb, "ovf.q") == [b"fits"]
    assert call(hb, "PUT", "/api/queues/%2F/exp.q", {})[0] == 201
    assert call(hb, "PUT", "/api/policies/%2F/exp", {"pattern": "^exp", "definition": {"expires": 200}})[0] == 201
    deadline = time.monotonic() + 10
    while call(hb, "GET", "/api/queues/%2F/exp.q")[0] != 404:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    for name in ("ovf", "exp"):
        assert call(hb, "DELETE", f"/api/policies/%2F/{name}")[0] == 204


@pytest.mark.parametrize(("doc", "reason"), [
    ({"pattern": ".*", "definition": {"ha-mode": "all"}}, "not supported by haremq"),
    ({"pattern": ".*", "definition": {"queue-mode": "lazy"}}, "not supported by haremq"),
    ({"pattern": "(", "definition": {"max-length": 1}}, "regular expression"),
    ({"pattern": ".*", "definition": {"max-length": -1}}, "non-negative"),
    ({"pattern": ".*", "definition": {"expires": 0}}, "positive"),
    ({"pattern": ".*", "definition": {"overflow": "nope"}}, "overflow"),
    ({"pattern": ".*", "definition": {"max-length": 1}, "apply-to": "streams"}, "apply-to"),
    ({"pattern": ".*", "definition": {"max-length": 1}, "priority": "high"}, "priority"),
    ({"pattern": ".*", "definition": {}}, "definition"),
    ({"definition": {"max-length": 1}}, "pattern"),
])
def test_bad_or_unsupported_policies_are_refused_and_nothing_is_stored(hb: BrokerProcess, doc: dict[str, Any],
                                                                       reason: str) -> None:
    st, err = call(hb, "PUT", "/api/policies/%2F/bad", doc)
    assert st == 400 and reason in err["reason"], err
    assert call(hb, "GET", "/api/policies/%2F/bad")[0] == 404


def test_policies_survive_a_restart_and_are_applied_again(tmp_path: Any) -> None:
    b = start_broker(data_dir=str(tmp_path), prefix="haremq-mgmt-policies-")
    try:
        assert call(b, "PUT", "/api/queues/%2F/keep.q", {"durable": True})[0] == 201
        assert call(b, "PUT", "/api/policies/%2F/keep", {"pattern": "^keep", "definition": {"max-length": 1},
                                                         "priority": 3})[0] == 201
        _st, defs = call(b, "GET", "/api/definitions")
        assert [p["name"] for p in defs["policies"]] == ["keep"]
    finally:
        assert stop_broker(b) == 0, b.log()
    b = start_broker(data_dir=str(tmp_path), prefix="haremq-mgmt-policies-")
    try:
        assert call(b, "GET", "/api/policies/%2F/keep")[1]["priority"] == 3
        assert call(b, "GET", "/api/queues/%2F/keep.q")[1]["policy"] == "keep"
        publish(b, "keep.q", b"1", b"2")
        assert depth(b, "keep.q") == 1
        # a definitions import carries policies too
        assert call(b, "POST", "/api/definitions", {"policies": [{"vhost": "/", "name": "imp", "pattern": "^imp",
                                                                  "definition": {"max-length": 7}}]})[0] == 204
        assert call(b, "GET", "/api/policies/%2F/imp")[1]["definition"] == {"max-length": 7}
    finally:
        assert stop_broker(b) == 0, b.log()


@pytest.mark.skipif(RABBITMQADMIN is None, reason="rabbitmqadmin is not installed")
def test_rabbitmqadmin_declares_lists_and_deletes_policies(hb: BrokerProcess) -> None:
    assert RABBITMQADMIN is not None
    base = [sys.executable, RABBITMQADMIN, "-H", "127.0.0.1", "-P", str(hb.management_port), "-u", "guest",
            "-p", "guest"]

    def admin(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*base, *args], capture_output=True, text=True, timeout=30)

    r = admin("declare", "policy", "name=adm", "pattern=^adm\\.", 'definition={"max-length": 3}', "priority=2",
              "apply-to=queues")
    assert r.returncode == 0, r.stdout + r.stderr
    r = admin("-f", "raw_json", "list", "policies")
    assert r.returncode == 0 and json.loads(r.stdout)[0]["definition"] == {"max-length": 3}, r.stdout + r.stderr
    r = admin("delete", "policy", "name=adm")
    assert r.returncode == 0 and call(hb, "GET", "/api/policies/%2F/adm")[0] == 404


def test_pyrabbit2_creates_and_deletes_a_policy(hb: BrokerProcess) -> None:
    from pyrabbit2.api import Client

    c = Client(f"127.0.0.1:{hb.management_port}", "guest", "guest", timeout=10)
    c.create_policy("/", "pr", pattern="^pr\\.", definition={"message-ttl": 5000}, priority=1, **{"apply-to": "all"})
    assert c.get_policy("/", "pr")["definition"] == {"message-ttl": 5000}
    c.delete_policy("/", "pr")
    assert call(hb, "GET", "/api/policies/%2F/pr")[0] == 404
