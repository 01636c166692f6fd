"""RabbitMQ management endpoints and fields that tools read (KEDA, rabbitmqadmin, monitoring checks),
against a real broker process and real AMQP clients."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pika
import pytest

from brokerproc import BrokerProcess, start_broker, stop_broker


@pytest.fixture(scope="module")
def hb() -> Iterator[BrokerProcess]:
    b = start_broker(prefix="haremq-mgmt-endpoints-")
    yield b
    assert stop_broker(b) == 0, b.log()


def call(hb: BrokerProcess, method: str, path: str, body: Any = None,
         headers: dict[str, str] | None = None) -> tuple[int, Any]:
    return hb.api(method, path, body, headers)


def amqp(hb: BrokerProcess) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", hb.amqp_port))


def test_health_checks_answer_ok_or_503_as_rabbitmq(hb: BrokerProcess) -> None:
    for path in ("alarms", "local-alarms", "virtual-hosts", f"port-listener/{hb.amqp_port}",
                 f"port-listener/{hb.management_port}", "protocol-listener/amqp091", "protocol-listener/http"):
        st, body = call(hb, "GET", f"/api/health/checks/{path}")
        assert (st, body["status"]) == (200, "ok"), path
    st, body = call(hb, "GET", "/api/health/checks/port-listener/1")
    assert st == 503 and body["status"] == "failed" and body["missing"] == 1 and hb.amqp_port in body["ports"]
    assert call(hb, "GET", "/api/health/checks/port-listener/x")[0] == 400
    assert call(hb, "GET", "/api/health/checks/protocol-listener/mqtt")[0] == 503


def test_cluster_name_extensions_feature_flags_parameters_and_limits(hb: BrokerProcess) -> None:
    st, ov = call(hb, "GET", "/api/overview")
    assert call(hb, "GET", "/api/cluster-name") == (200, {"name": ov["cluster_name"]})
    assert call(hb, "GET", "/api/extensions") == (200, [])
    st, flags = call(hb, "GET", "/api/feature-flags")
    assert st == 200 and {f["state"] for f in flags} == {"enabled"} and "quorum_queue" in {f["name"] for f in flags}
    assert call(hb, "GET", "/api/parameters") == (200, [])
    assert call(hb, "GET", "/api/parameters/shovel/%2F") == (200, [])
    assert call(hb, "GET", "/api/parameters/shovel/%2F/s1")[0] == 404
    # no shovel or federation: a parameter is refused, never answered as kept
    st, err = call(hb, "PUT", "/api/parameters/shovel/%2F/s1", {"value": {"src-uri": "amqp://"}})
    assert st == 400 and "shovel" in err["reason"]
    assert call(hb, "GET", "/api/global-parameters")[1] == [{"name": "cluster_name", "value": ov["cluster_name"]}]
    assert call(hb, "GET", "/api/global-parameters/cluster_name")[0] == 200
    assert call(hb, "GET", "/api/vhost-limits") == (200, [])
    assert call(hb, "GET", "/api/vhost-limits/%2F") == (200, [])
    assert call(hb, "GET", "/api/vhost-limits/nope")[0] == 404
    assert call(hb, "GET", "/api/operator-policies") == (200, [])


def test_user_and_vhost_permission_listings(hb: BrokerProcess) -> None:
    st, perms = call(hb, "GET", "/api/users/guest/permissions")
    assert st == 200 and [(p["user"], p["vhost"]) for p in perms] == [("guest", "/")]
    st, perms = call(hb, "GET", "/api/vhosts/%2F/permissions")
    assert st == 200 and ("guest", "/") in [(p["user"], p["vhost"]) for p in perms]
    assert call(hb, "GET", "/api/users/nobody/permissions")[0] == 404
    assert call(hb, "GET", "/api/vhosts/nope/permissions")[0] == 404


def test_exchange_to_exchange_bindings_and_bindings_by_source(hb: BrokerProcess) -> None:
    for x in ("e2e.src", "e2e.dst"):
        assert call(hb, "PUT", f"/api/exchanges/%2F/{x}", {"type": "topic"})[0] == 201
    assert call(hb, "PUT", "/api/queues/%2F/e2e.q", {})[0] == 201
    assert call(hb, "POST", "/api/bindings/%2F/e/e2e.src/e/e2e.dst", {"routing_key": "a.*"})[0] == 201
    assert call(hb, "POST", "/api/bindings/%2F/e/e2e.dst/q/e2e.q", {"routing_key": "#"})[0] == 201
    st, src = call(hb, "GET", "/api/exchanges/%2F/e2e.src/bindings/source")
    assert st == 200 and [(b["destination"], b["destination_type"]) for b in src] == [("e2e.dst", "exchange")]
    assert [b["source"] for b in call(hb, "GET", "/api/exchanges/%2F/e2e.dst/bindings/destination")[1]] == \
        ["e2e.src"]
    assert len(call(hb, "GET", "/api/bindings/%2F/e/e2e.src/e/e2e.dst")[1]) == 1
    conn = amqp(hb)
    ch = conn.channel()
    ch.basic_publish("e2e.src", "a.b", b"through two exchanges")
    assert ch.basic_get("e2e.q", auto_ack=True)[2] == b"through two exchanges"
    conn.close()
    assert call(hb, "DELETE", "/api/bindings/%2F/e/e2e.src/e/e2e.dst/a.*")[0] == 204
    assert call(hb, "GET", "/api/exchanges/%2F/e2e.src/bindings/source")[1] == []
    assert call(hb, "GET", "/api/exchanges/%2F/nope/bindings/source")[0] == 404


def test_node_shows_descriptors_memory_and_disk(hb: BrokerProcess) -> None:
    st, nodes = call(hb, "GET", "/api/nodes")
    n = nodes[0]
    assert st == 200 and n["fd_used"] > 0 and n["fd_total"] >= n["fd_used"] and n["disk_free"] > 0
    assert n["mem_limit"] > 0 and n["mem_used"] > 0 and n["mem_alarm"] is False and n["disk_free_alarm"] is False
    assert n["running"] is True and n["uptime"] >= 0 and n["disk_free_limit"] > 0
    st, one = call(hb, "GET", f"/api/nodes/{quote(n['name'], safe='')}")
    assert st == 200 and one["name"] == n["name"] and set(one) == set(n)
    assert call(hb, "GET", "/api/nodes/rabbit@elsewhere")[0] == 404


def test_definitions_of_one_vhost_export_and_import(hb: BrokerProcess) -> None:
    assert call(hb, "PUT", "/api/vhosts/defs-vh", {})[0] == 201
    assert call(hb, "PUT", "/api/queues/defs-vh/dq", {"arguments": {"x-max-length": 5}})[0] == 201
    st, defs = call(hb, "GET", "/api/definitions/defs-vh")
    assert st == 200 and [q["name"] for q in defs["queues"]] == ["dq"] and "users" not in defs
    assert call(hb, "PUT", "/api/vhosts/defs-vh2", {})[0] == 201
    assert call(hb, "POST", "/api/definitions/defs-vh2", defs)[0] == 204
    st, q = call(hb, "GET", "/api/queues/defs-vh2/dq")
    assert st == 200 and q["arguments"] == {"x-max-length": 5}
    assert call(hb, "POST", "/api/definitions/defs-vh2", {"users": [{"name": "x", "password": "y"}]})[0] == 400
    assert call(hb, "GET", "/api/definitions/nope")[0] == 404


def test_delete_connection_closes_it_with_connection_forced_and_the_reason(hb: BrokerProcess) -> None:
    conn = amqp(hb)
    client_port = conn._impl._transport._sock.getsockname()[1]  # the client's port names the connection
    st, conns = call(hb, "GET", "/api/connections")
    names = [c["name"] for c in conns if c["peer_port"] == client_port]
    assert st == 200 and len(names) == 1
    name = names[0]
    assert call(hb, "GET", f"/api/connections/{quote(name, safe='')}")[1]["name"] == name
    st, _ = call(hb, "DELETE", f"/api/connections/{quote(name, safe='')}", headers={"X-Reason": "go away"})
    assert st == 204
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as exc:
        conn.channel().basic_publish("", "x", b"")
        conn.process_data_events(2)
    assert exc.value.reply_code == 320 and "go away" in exc.value.reply_text
    deadline = time.monotonic() + 10
    while name in [c["name"] for c in call(hb, "GET", "/api/connections")[1]]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert call(hb, "DELETE", f"/api/connections/{quote(name, safe='')}")[0] == 404


def test_queue_listing_pages_and_filters_by_regex_as_keda_asks(hb: BrokerProcess) -> None:
    for n in ("pg-a-1", "pg-a-2", "pg-a-3", "pg-a-4", "pg-a-5", "pg-b-1"):
        assert call(hb, "PUT", f"/api/queues/%2F/{n}", {})[0] == 201
    # KEDA's regex mode
    st, page = call(hb, "GET", "/api/queues/%2F?page=1&use_regex=true&pagination=false&name=%5Epg-a&page_size=2")
    assert st == 200 and [q["name"] for q in page["items"]] == ["pg-a-1", "pg-a-2"]
    assert (page["filtered_count"], page["page_count"], page["page"], page["page_size"]) == (5, 3, 1, 2)
    assert page["total_count"] >= 6 and page["item_count"] == 2
    st, page = call(hb, "GET", "/api/queues/%2F?page=3&use_regex=true&name=%5Epg-a&page_size=2")
    assert [q["name"] for q in page["items"]] == ["pg-a-5"]
    assert call(hb, "GET", "/api/queues/%2F?page=4&use_regex=true&name=%5Epg-a&page_size=2")[0] == 400
    assert call(hb, "GET", "/api/queues?page=1&page_size=501")[0] == 400
    assert call(hb, "GET", "/api/queues?page=1&use_regex=true&name=%28")[0] == 400
    # substring filter, sort and columns (rabbitmqadmin's list)
    st, qs = call(hb, "GET", "/api/queues/%2F?name=PG-&sort=name&sort_reverse=true&columns=name,messages")
    assert st == 200 and qs[0] == {"name": "pg-b-1", "messages": 0} and len(qs) == 6
    # without sort: RabbitMQ's order, by vhost then name (not creation order)
    assert call(hb, "PUT", "/api/queues/%2F/pg-0", {})[0] == 201
    assert [q["name"] for q in call(hb, "GET", "/api/queues/%2F?name=pg-&columns=name")[1]][:2] == ["pg-0", "pg-a-1"]


def test_rates_on_queues_overview_exchanges_vhosts_and_channels(hb: BrokerProcess) -> None:
    assert call(hb, "PUT", "/api/exchanges/%2F/rate.x", {"type": "fanout"})[0] == 201
    assert call(hb, "PUT", "/api/queues/%2F/rate.q", {})[0] == 201
    assert call(hb, "POST", "/api/bindings/%2F/e/rate.x/q/rate.q", {})[0] == 201
    conn = amqp(hb)
    ch = conn.channel()
    ch.confirm_delivery()

    def snapshot() -> tuple[Any, ...]:
        return (call(hb, "GET", "/api/queues/%2F/rate.q")[1], call(hb, "GET", "/api/overview")[1],
                call(hb, "GET", "/api/exchanges/%2F/rate.x")[1], call(hb, "GET", "/api/vhosts/%2F")[1],
                call(hb, "GET", "/api/channels")[1])

    snapshot()
    for _ in range(40):
        ch.basic_publish("rate.x", "", b"x")
    ch.basic_get("rate.q", auto_ack=True)
    time.sleep(1.3)
    q, ov, x, vh, chans = snapshot()
    assert q["message_stats"]["publish_details"]["rate"] > 0 and q["messages_details"]["rate"] > 0
    assert q["messages_ready_details"]["rate"] > 0 and "rate" in q["messages_unacknowledged_details"]
    assert ov["message_stats"]["publish_details"]["rate"] > 0 and ov["queue_totals"]["messages_details"]["rate"] > 0
    assert x["message_stats"]["publish_in"] == 40 and x["message_stats"]["publish_in_details"]["rate"] > 0
    assert x["message_stats"]["publish_out_details"]["rate"] > 0
    assert vh["message_stats"]["publish_details"]["rate"] > 0 and vh["messages_details"]["rate"] > 0
    assert vh["recv_oct_details"]["rate"] > 0
    mine = [c for c in chans if c["message_stats"]["deliver_get"] >= 1]
    assert mine and "rate" in mine[0]["message_stats"]["deliver_get_details"]
    assert mine[0]["message_stats"]["publish"] == 40 and mine[0]["message_stats"]["publish_details"]["rate"] > 0
    assert mine[0]["message_stats"]["ack"] == 0
    conn.close()


def test_queue_fields_consumers_idle_head_timestamp_persistent(hb: BrokerProcess) -> None:
    assert call(hb, "PUT", "/api/queues/%2F/fields.q", {"durable": True})[0] == 201
    _st, q = call(hb, "GET", "/api/queues/%2F/fields.q")
    assert q["idle_since"] and q["policy"] is None and q["consumer_utilisation"] is None and q["node"]
    assert q["head_message_timestamp"] is None and q["consumer_details"] == [] and q["memory"] >= 0
    conn = amqp(hb)
    ch = conn.channel()
    ch.confirm_delivery()
    ch.basic_publish("", "fields.q", b"p" * 10, pika.BasicProperties(delivery_mode=2, timestamp=1700000000))
    ch.basic_publish("", "fields.q", b"t" * 10, pika.BasicProperties(delivery_mode=1))
    _st, q = call(hb, "GET", "/api/queues/%2F/fields.q")
    assert q["head_message_timestamp"] == 1700000000 and q["message_bytes"] == 20
    assert q["messages_persistent"] == 1
    ch.basic_qos(prefetch_count=5)
    ch.basic_consume("fields.q", lambda *a: None, consumer_tag="fields-consumer")
    conn.process_data_events(0.5)
    _st, q = call(hb, "GET", "/api/queues/%2F/fields.q")
    assert "idle_since" not in q and q["consumer_utilisation"] == 1.0
    d = q["consumer_details"][0]
    assert d["consumer_tag"] == "fields-consumer" and d["prefetch_count"] == 5 and d["channel_details"]["number"] == 1
    assert call(hb, "GET", "/api/consumers")[1][0]["channel_details"]["connection_name"]
    conn.close()


def test_connection_fields_as_rabbitmq(hb: BrokerProcess) -> None:
    before = time.time()
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", hb.amqp_port, heartbeat=30,
                                                             channel_max=100))
    conn.channel()
    c = [c for c in call(hb, "GET", "/api/connections")[1] if c["connected_at"] / 1000 >= before - 1][-1]
    assert c["host"] == "127.0.0.1" and c["port"] == hb.amqp_port and c["ssl"] is False
    assert c["peer_host"] == "127.0.0.1" and c["name"] == f"127.0.0.1:{c['peer_port']} -> 127.0.0.1:{hb.amqp_port}"
    assert c["timeout"] == 30 and c["channel_max"] == 100 and c["frame_max"] > 0 and c["channels"] == 1
    assert c["auth_mechanism"] == "PLAIN" and c["connected_at"] / 1000 <= time.time()
    assert c["recv_oct"] > 0 and "rate" in c["recv_oct_details"] and c["node"] and c["type"] == "network"
    st, chans = call(hb, "GET", f"/api/connections/{quote(c['name'], safe='')}/channels")
    assert st == 200 and [x["number"] for x in chans] == [1]
    assert [x["name"] for x in call(hb, "GET", "/api/vhosts/%2F/connections")[1]].count(c["name"]) == 1
    conn.close()


def test_openapi_documents_the_rabbitmq_endpoints(hb: BrokerProcess) -> None:
    paths = call(hb, "GET", "/api/openapi.json")[1]["paths"]
    for p in ("/api/health/checks/alarms", "/api/health/checks/port-listener/{port}", "/api/cluster-name",
              "/api/extensions", "/api/feature-flags", "/api/policies/{vhost}/{name}", "/api/parameters",
              "/api/global-parameters", "/api/vhost-limits", "/api/users/{username}/permissions",
              "/api/vhosts/{vhost}/permissions", "/api/exchanges/{vhost}/{name}/bindings/source",
              "/api/nodes/{node}", "/api/definitions/{vhost}", "/api/connections/{name}"):
        assert p in paths, p
    assert {"get", "delete"} <= set(paths["/api/connections/{name}"])
    assert {"get", "put", "delete"} <= set(paths["/api/policies/{vhost}/{name}"])


def test_listing_refuses_a_catastrophic_name_regex_and_the_broker_keeps_answering(hb: BrokerProcess) -> None:
    """``use_regex`` runs on the event loop: a backtracking pattern over a long queue name would freeze
    every connection of the node. Patterns that can backtrack exponentially (or polynomially of high
    degree) get a 400; ordinary filters still work."""
    assert call(hb, "PUT", f"/api/queues/%2F/{'a' * 40}!", {})[0] == 201
    for rx in ("(a+)+$", "(a|aa)*$", "(a*)*!b", "a*a*a*a*a*b", "(.{1,100}){1,100}$"):
        t0 = time.monotonic()
        st, body = call(hb, "GET", f"/api/queues?use_regex=true&name={quote(rx, safe='')}")
        assert st == 400 and time.monotonic() - t0 < 2, (rx, st, body)
    st, qs = call(hb, "GET", f"/api/queues?use_regex=true&name={quote('^a+!$', safe='')}&columns=name")
    assert st == 200 and qs == [{"name": "a" * 40 + "!"}]
    st, qs = call(hb, "GET", f"/api/queues?use_regex=true&name={quote('^a.*a.*!$', safe='')}&columns=name")
    assert st == 200 and qs == [{"name": "a" * 40 + "!"}]
