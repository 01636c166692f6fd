"""Prometheus metrics, collected from live broker state at scrape time (no per-message cost).

Queue series are aggregated by default (one sample per family, as RabbitMQ's Prometheus plugin
does): with 100k queues a per-queue exposition is megabytes and must not be built in one go on
the event loop. Per-queue series are served on ``/metrics/per-object`` (or on ``/metrics`` with
``metrics_per_object``): the queue counters are copied on the loop in slices that yield between
them, and the text is formatted in a worker thread.
"""

from __future__ import annotations

import asyncio
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

SLICE = 2000  # queues copied per event-loop turn
# (name, type, help) of the queue families, in the order of the sampled tuple's counters
QUEUE_FAMILIES = (
    ("haremq_queue_messages_ready", "gauge", "Messages ready for delivery"),
    ("haremq_queue_messages_unacked", "gauge", "Messages delivered, not yet acknowledged"),
    ("haremq_queue_messages_delayed", "gauge", "SQS messages waiting for their delay"),
    ("haremq_queue_consumers", "gauge", "Consumers"),
    ("haremq_queue_messages_published", "counter", "Messages enqueued"),
    ("haremq_queue_messages_delivered", "counter", "Deliveries (incl. SQS receives)"),
    ("haremq_queue_messages_acked", "counter", "Acknowledged (SQS: deleted)"),
)
QueueSample = tuple[str, str, int, int, int, int, int, int, int]


def _label(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def format_queues(samples: list[QueueSample], per_object: bool) -> bytes:
    """Exposition text of the queue families (runs in a worker thread: pure function of a copy)."""
    out: list[str] = []
    if not per_object:
        out.append("# HELP haremq_queues Queues\n# TYPE haremq_queues gauge\n")
        out.append(f"haremq_queues {len(samples)}\n")
    for i, (name, kind, help_) in enumerate(QUEUE_FAMILIES):
        sample = f"{name}_total" if kind == "counter" else name  # as prometheus_client writes counters
        out.append(f"# HELP {sample} {help_}\n# TYPE {sample} {kind}\n")
        if per_object:
            idx = i + 2
            out.extend(f'{sample}{{vhost="{_label(s[0])}",queue="{_label(s[1])}"}} {s[idx]}\n' for s in samples)
        else:
            out.append(f"{sample} {sum(int(s[i + 2]) for s in samples)}\n")
    return "".join(out).encode()


async def sample_queues(node: Node) -> list[QueueSample]:
    """Copy every queue's counters, ``SLICE`` queues per loop turn so other work runs in between."""
    out: list[QueueSample] = []
    for vh in list(node.broker.vhosts.values()):
        queues = list(vh.queues.values())
        for start in range(0, len(queues), SLICE):
            for q in queues[start:start + SLICE]:
                if q.deleted:
                    continue
                r = q.receiver  # a polled queue: its group backlogs are ready too, and it may delay
                out.append((vh.name, q.name, q.message_count + (r.backlog_count if r is not None else 0),
                            q.unacked, len(q.delayed) if r is not None else 0, q.consumer_count, q.published,
                            q.delivered, q.acked))
            await asyncio.sleep(0)
    return out


class BrokerCollector(Collector):
    """Node-wide series (connections, bytes, store); the queue families are rendered separately."""

    def __init__(self, node: Node, listeners: HttpListeners) -> None:
        self.node = node
        self.listeners = listeners

    def collect(self) -> Iterator[Metric]:
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
        self.node = node
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(BrokerCollector(node, listeners))
        self.registry.register(ProcessCollector(registry=None))

    async def render(self, per_object: bool) -> bytes:
        """The whole exposition; the queue part is copied in slices and formatted off the loop."""
        node_part = generate_latest(self.registry)
        samples = await sample_queues(self.node)
        queue_part = await asyncio.to_thread(format_queues, samples, per_object)
        return queue_part + node_part

    @staticmethod
    def rss() -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return 0
