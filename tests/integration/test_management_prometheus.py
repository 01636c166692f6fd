"""RabbitMQ-compatible Prometheus series beside haremq's own: every series the Grafana "RabbitMQ-Overview"
dashboard (rabbitmq_prometheus) queries, with RabbitMQ's names and labels, driven by real AMQP traffic;
``promtool check metrics`` finds nothing (skipped when promtool is not installed)."""

from __future__ import annotations

import shutil
import subprocess
import urllib.request
from collections.abc import Iterator

import pika
import pytest
from prometheus_client.parser import text_string_to_metric_families

from brokerproc import BrokerProcess, start_broker, stop_broker

# every metric name the RabbitMQ-Overview dashboard queries (rabbitmq-server, 3.10 and 4.x versions)
DASHBOARD_SERIES = (
    "rabbitmq_identity_info", "rabbitmq_build_info", "rabbitmq_erlang_uptime_seconds",
    "rabbitmq_queue_messages_ready", "rabbitmq_queue_messages_unacked", "rabbitmq_queues", "rabbitmq_connections",
    "rabbitmq_channels", "rabbitmq_consumers", "rabbitmq_channel_consumers", "rabbitmq_global_consumers",
    "rabbitmq_global_publishers", "rabbitmq_connections_opened_total", "rabbitmq_connections_closed_total",
    "rabbitmq_channels_opened_total", "rabbitmq_channels_closed_total", "rabbitmq_queues_declared_total",
    "rabbitmq_queues_created_total", "rabbitmq_queues_deleted_total", "rabbitmq_process_open_fds",
    "rabbitmq_process_max_fds", "rabbitmq_process_open_tcp_sockets", "rabbitmq_process_max_tcp_sockets",
    "rabbitmq_process_resident_memory_bytes", "rabbitmq_resident_memory_limit_bytes",
    "rabbitmq_disk_space_available_bytes", "rabbitmq_disk_space_available_limit_bytes",
    "rabbitmq_global_messages_received_total", "rabbitmq_global_messages_received_confirm_total",
    "rabbitmq_global_messages_routed_total", "rabbitmq_global_messages_unroutable_dropped_total",
    "rabbitmq_global_messages_unroutable_returned_total", "rabbitmq_global_messages_confirmed_total",
    "rabbitmq_global_messages_delivered_total", "rabbitmq_global_messages_delivered_consume_manual_ack_total",
    "rabbitmq_global_messages_delivered_consume_auto_ack_total",
    "rabbitmq_global_messages_delivered_get_manual_ack_total",
    "rabbitmq_global_messages_delivered_get_auto_ack_total", "rabbitmq_global_messages_get_empty_total",
    "rabbitmq_global_messages_redelivered_total", "rabbitmq_global_messages_acknowledged_total",
    "rabbitmq_message_size_bytes_bucket", "rabbitmq_message_size_bytes_count", "rabbitmq_message_size_bytes_sum",
)


@pytest.fixture(scope="module")
def hb() -> Iterator[BrokerProcess]:
    b = start_broker(prefix="haremq-mgmt-prom-")
    yield b
    assert stop_broker(b) == 0, b.log()


def scrape(hb: BrokerProcess, path: str = "/metrics") -> tuple[str, dict[str, list[tuple[dict[str, str], float]]]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{hb.management_port}{path}", timeout=10) as res:
        text = res.read().decode()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            samples.setdefault(s.name, []).append((s.labels, s.value))
    return text, samples


def value(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    return sum(v for lab, v in samples[name] if all(lab.get(k) == x for k, x in labels.items()))


def traffic(hb: BrokerProcess) -> None:
    """Publishes (confirmed, unroutable dropped and returned), consumes (manual and auto ack), gets
    (manual, auto, empty), a redelivery, an opened-and-closed connection and channel, a deleted queue."""
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", hb.amqp_port))
    ch = conn.channel()
    ch.queue_declare("prom.q")
    ch.queue_declare("prom.gone")
    ch.queue_delete("prom.gone")
    ch.confirm_delivery()
    for body in (b"a" * 50, b"b" * 500, b"c" * 5000):
        ch.basic_publish("", "prom.q", body)
    ch.basic_publish("amq.direct", "nowhere", b"dropped")
    with pytest.raises(pika.exceptions.UnroutableError):
        ch.basic_publish("amq.direct", "nowhere", b"returned", mandatory=True)
    m, _, _ = ch.basic_get("prom.q")
    ch.basic_nack(m.delivery_tag, requeue=True)
    m, _, _ = ch.basic_get("prom.q")  # the redelivery
    ch.basic_ack(m.delivery_tag)
    ch.basic_get("prom.q", auto_ack=True)
    ch2 = conn.channel()
    got = []
    ch2.basic_consume("prom.q", lambda c, m, p, b: got.append(m.delivery_tag), auto_ack=True)
    conn.process_data_events(0.5)
    ch2.close()
    ch.basic_get("prom.q", auto_ack=True)  # empty
    conn.close()


def test_rabbitmq_overview_dashboard_series_are_served_with_rabbitmq_labels(hb: BrokerProcess) -> None:
    traffic(hb)
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", hb.amqp_port))
    ch = conn.channel()
    ch.basic_publish("", "prom.q", b"ready")
    ch.basic_consume("prom.q", lambda *a: None)  # holds the message unacked
    conn.process_data_events(0.3)
    ch.queue_declare("prom.ready")
    ch.basic_publish("", "prom.ready", b"r1")
    ch.basic_publish("", "prom.ready", b"r2")
    conn.process_data_events(0.3)
    _text, s = scrape(hb)
    missing = [n for n in DASHBOARD_SERIES if n not in s]
    assert not missing, missing
    ident = s["rabbitmq_identity_info"][0][0]
    assert ident["rabbitmq_endpoint"] == "metrics" and ident["rabbitmq_node"] and ident["rabbitmq_cluster"]
    assert s["rabbitmq_build_info"][0][0]["rabbitmq_version"]
    # aggregated by default: one sample per queue family, no queue label
    assert s["rabbitmq_queue_messages_ready"] == [({}, 2.0)] and s["rabbitmq_queue_messages_unacked"] == [({}, 1.0)]
    assert value(s, "rabbitmq_queues") == 2 and value(s, "rabbitmq_connections") == 1
    assert value(s, "rabbitmq_channels") == 1 and value(s, "rabbitmq_consumers") == 1
    assert value(s, "rabbitmq_global_publishers") == 1
    assert value(s, "rabbitmq_connections_opened_total") == 2 and value(s, "rabbitmq_connections_closed_total") == 1
    assert value(s, "rabbitmq_channels_opened_total") == 3 and value(s, "rabbitmq_channels_closed_total") == 2
    assert value(s, "rabbitmq_queues_created_total") == 3 and value(s, "rabbitmq_queues_deleted_total") == 1
    assert value(s, "rabbitmq_queues_declared_total") == 3
    g = "rabbitmq_global_messages_"
    assert value(s, g + "received_total") == 8 and value(s, g + "received_confirm_total") == 5
    assert value(s, g + "routed_total") == 6 and value(s, g + "confirmed_total") == 5
    assert value(s, g + "unroutable_dropped_total") == 1 and value(s, g + "unroutable_returned_total") == 1
    assert value(s, g + "delivered_get_manual_ack_total") == 2 and value(s, g + "delivered_get_auto_ack_total") == 1
    assert value(s, g + "delivered_consume_auto_ack_total") == 1
    assert value(s, g + "delivered_consume_manual_ack_total") == 1
    assert value(s, g + "delivered_total") == 5 and value(s, g + "get_empty_total") == 1
    assert value(s, g + "redelivered_total") == 1 and value(s, g + "acknowledged_total") == 1
    # up to 100 bytes: a*50, "dropped", "returned", "ready", "r1", "r2"; then b*500; then c*5000
    assert value(s, "rabbitmq_message_size_bytes_bucket", le="100.0") == 6
    assert value(s, "rabbitmq_message_size_bytes_bucket", le="1000.0") == 7
    assert value(s, "rabbitmq_message_size_bytes_bucket", le="1e+06") == 8
    assert value(s, "rabbitmq_message_size_bytes_count") == 8
    assert value(s, "rabbitmq_process_open_fds") > 0 and value(s, "rabbitmq_disk_space_available_bytes") > 0
    assert value(s, "rabbitmq_resident_memory_limit_bytes") > value(s, "rabbitmq_process_resident_memory_bytes") > 0
    # haremq's own series stay
    assert "haremq_queue_messages_ready" in s and "haremq_connections" in s
    # per-object: one sample per queue, labelled as RabbitMQ labels them
    _, po = scrape(hb, "/metrics/per-object")
    assert po["rabbitmq_identity_info"][0][0]["rabbitmq_endpoint"] == "per-object"
    ready = {lab["queue"]: v for lab, v in po["rabbitmq_queue_messages_ready"]}
    assert ready == {"prom.q": 0.0, "prom.ready": 2.0}
    assert {lab["vhost"] for lab, _ in po["rabbitmq_queue_messages_unacked"]} == {"/"}
    conn.close()


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed (Debian: prometheus)")
@pytest.mark.parametrize("path", ["/metrics", "/metrics/per-object"])
def test_promtool_check_metrics_finds_no_problems(hb: BrokerProcess, path: str) -> None:
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", hb.amqp_port))
    conn.channel().queue_declare('prom "quoted" \\ name')
    text, _ = scrape(hb, path)
    conn.close()
    promtool = shutil.which("promtool")
    assert promtool is not None
    r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), r.stdout + r.stderr
