"""Prometheus metrics, collected from live broker state at scrape time (no per-message cost)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from haremq.server.http.listeners import HttpListeners
    from haremq.server.node import Node


class BrokerCollector(Collector):
    def __init__(self, node: Node, listeners: HttpListeners) -> None:
        self.node = node
        self.listeners = listeners

    def collect(self) -> Iterator[Metric]:
        labels = ["vhost", "queue"]
        ready = GaugeMetricFamily("haremq_queue_messages_ready", "Messages ready for delivery", labels=labels)
        unacked = GaugeMetricFamily("haremq_queue_messages_unacked", "Messages delivered, not yet acknowledged",
                                    labels=labels)
        delayed = GaugeMetricFamily("haremq_queue_messages_delayed", "SQS messages waiting for their delay",
                                    labels=labels)
        consumers = GaugeMetricFamily("haremq_queue_consumers", "Consumers", labels=labels)
        published = CounterMetricFamily("haremq_queue_messages_published", "Messages enqueued", labels=labels)
        delivered = CounterMetricFamily("haremq_queue_messages_delivered", "Deliveries (incl. SQS receives)",
                                        labels=labels)
        acked = CounterMetricFamily("haremq_queue_messages_acked", "Acknowledged (SQS: deleted)", labels=labels)
        for vh in list(self.node.broker.vhosts.values()):
            for q in list(vh.queues.values()):
                lv = [vh.name, q.name]
                sq = q.sqs
                ready.add_metric(lv, q.message_count + (sq.backlog_count if sq is not None else 0))
                unacked.add_metric(lv, q.unacked)
                delayed.add_metric(lv, len(sq.delayed) if sq is not None else 0)
                consumers.add_metric(lv, q.consumer_count)
                published.add_metric(lv, q.published)
                delivered.add_metric(lv, q.delivered)
                acked.add_metric(lv, q.acked)
        yield from (ready, unacked, delayed, consumers, published, delivered, acked)
        node = self.node
        conns = GaugeMetricFamily("haremq_connections", "Open client connections", labels=["protocol"])
        conns.add_metric(["amqp"], len(node.connections))
        conns.add_metric(["stomp"], len(node.stomp_connections))
        bytes_in = CounterMetricFamily("haremq_bytes_received", "Bytes received", labels=["protocol"])
        bytes_out = CounterMetricFamily("haremq_bytes_sent", "Bytes sent", labels=["protocol"])
        bytes_in.add_metric(["amqp"], sum(c.bytes_in for c in list(node.connections)))
        bytes_out.add_metric(["amqp"], sum(c.bytes_out for c in list(node.connections)))
        bytes_in.add_metric(["stomp"], sum(c.bytes_in for c in list(node.stomp_connections)))
        bytes_out.add_metric(["stomp"], sum(c.bytes_out for c in list(node.stomp_connections)))
        requests = CounterMetricFamily("haremq_http_requests", "HTTP requests", labels=["listener"])
        for name, st in (("sqs", self.listeners.sqs_stats), ("management", self.listeners.management_stats)):
            conns.add_metric([name], st.connections)
            bytes_in.add_metric([name], st.bytes_in)
            bytes_out.add_metric([name], st.bytes_out)
            requests.add_metric([name], st.requests)
        channels = GaugeMetricFamily("haremq_channels", "Open AMQP channels")
        channels.add_metric([], sum(len(c.channels) for c in list(node.connections)))
        yield from (conns, channels, bytes_in, bytes_out, requests)
        flusher = getattr(node.broker.store, "flusher", None)
        if flusher is not None:
            syncs = CounterMetricFamily("haremq_store_group_commits", "Group commits (one fsync pass each)")
            syncs.add_metric([], flusher.syncs)
            fsyncs = CounterMetricFamily("haremq_store_fsyncs", "fsync calls on segment files")
            fsyncs.add_metric([], flusher.fsyncs)
            lat = node.sync_latency
            hist = HistogramMetricFamily("haremq_store_sync_seconds", "Duration of one group commit (fsync pass)")
            hist.add_metric([], buckets=[("+Inf" if b == float("inf") else str(b), c) for b, c in lat.cumulative()],
                            sum_value=lat.total)
            yield from (syncs, fsyncs, hist)


class Metrics:
    def __init__(self, node: Node, listeners: HttpListeners) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(BrokerCollector(node, listeners))
        self.registry.register(ProcessCollector(registry=None))

    def render(self) -> bytes:
        return generate_latest(self.registry)

    @staticmethod
    def rss() -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return 0
