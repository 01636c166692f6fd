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
import resource
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from haremq import __version__
from haremq.core.broker import MESSAGE_SIZE_BUCKETS

RABBITMQ_VERSION = "3.10.8"  # the RabbitMQ version the management API reports (overview)

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
# RabbitMQ's queue gauges (rabbitmq_prometheus), from the same sample: (name, help, value of a sample)
RABBIT_QUEUE_FAMILIES: tuple[tuple[str, str, Callable[[QueueSample], int]], ...] = (
    ("rabbitmq_queue_messages_ready", "Messages ready to be delivered to consumers", lambda s: s[2]),
    ("rabbitmq_queue_messages_unacked", "Messages delivered to consumers but not yet acknowledged", lambda s: s[3]),
    ("rabbitmq_queue_messages", "Sum of ready and unacknowledged messages - total queue depth",
     lambda s: s[2] + s[3]),
    ("rabbitmq_queue_consumers", "Consumers on a queue", lambda s: s[5]),
)


def _go_float(v: float) -> str:
    """A bucket bound as Prometheus clients write it (``100.0``, ``1e+06``, ``+Inf``): dashboards match it."""
    if v == float("inf"):
        return "+Inf"
    text = repr(float(v))
    if "e+" in text:  # 1e+16 style already
        return text
    mantissa, _, exp = f"{v:e}".partition("e")
    return text if v < 1e6 else f"{float(mantissa):g}e+{int(exp):02d}"


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
    for name, help_, value in RABBIT_QUEUE_FAMILIES:
        out.append(f"# HELP {name} {help_}\n# TYPE {name} gauge\n")
        if per_object:
            out.extend(f'{name}{{vhost="{_label(s[0])}",queue="{_label(s[1])}"}} {value(s)}\n' for s in samples)
        else:
            out.append(f"{name} {sum(int(value(s)) for s in samples)}\n")
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


class RabbitCollector(Collector):
    """RabbitMQ's node-wide series (rabbitmq_prometheus names and labels), so dashboards and alerts
    written for RabbitMQ (Grafana's RabbitMQ-Overview) work unchanged. ``endpoint`` labels
    ``rabbitmq_identity_info`` as RabbitMQ does: ``metrics`` or ``per-object``."""

    def __init__(self, node: Node, started: float) -> None:
        self.node = node
        self.started = started
        self.endpoint = "metrics"

    def collect(self) -> Iterator[Metric]:
        node = self.node
        b = node.broker
        st = b.stats
        conns = list(node.connections)
        stomp = list(node.stomp_connections)

        def gauge(name: str, help_: str, value: float, labels: dict[str, str] | None = None) -> Metric:
            g = GaugeMetricFamily(name, help_, labels=list(labels or {}))
            g.add_metric(list((labels or {}).values()), value)
            return g

        def counter(name: str, help_: str, value: float) -> Metric:
            return CounterMetricFamily(name, help_, value=value)

        yield gauge("rabbitmq_identity_info", "RabbitMQ node & cluster identity info", 1,
                    {"rabbitmq_node": node.cluster_name, "rabbitmq_cluster": node.cluster_name,
                     "rabbitmq_cluster_permanent_id": node.cluster_name, "rabbitmq_endpoint": self.endpoint})
        yield gauge("rabbitmq_build_info", "RabbitMQ & Erlang/OTP version info", 1,
                    {"rabbitmq_version": RABBITMQ_VERSION, "prometheus_plugin_version": __version__,
                     "prometheus_client_version": "haremq", "erlang_version": "none (haremq " + __version__ + ")"})
        yield gauge("rabbitmq_erlang_uptime_seconds", "Node uptime", time.time() - self.started)
        channels = sum(len(c.channels) for c in conns)
        queues = [q for vh in list(b.vhosts.values()) for q in vh.queues.values() if not q.deleted]
        consumers = sum(q.consumer_count for q in queues)
        yield gauge("rabbitmq_connections", "Connections currently open", len(conns) + len(stomp))
        yield gauge("rabbitmq_channels", "Channels currently open", channels)
        yield gauge("rabbitmq_queues", "Queues available", len(queues))
        yield gauge("rabbitmq_consumers", "Consumers currently connected", consumers)
        yield gauge("rabbitmq_channel_consumers", "Consumers on a channel", consumers)
        yield gauge("rabbitmq_global_consumers", "Current number of consumers", consumers)
        yield gauge("rabbitmq_global_publishers", "Current number of publishers",
                    sum(1 for c in conns if c.published) + sum(1 for c in stomp if c.published))
        opened = st.connections_opened
        yield counter("rabbitmq_connections_opened", "Total number of connections opened", opened)
        yield counter("rabbitmq_connections_closed", "Total number of connections closed or terminated",
                      max(0, opened - len(conns) - len(stomp)))
        yield counter("rabbitmq_channels_opened", "Total number of channels opened", st.channels_opened)
        yield counter("rabbitmq_channels_closed", "Total number of channels closed",
                      max(0, st.channels_opened - channels))
        yield counter("rabbitmq_queues_declared", "Total number of queues declared", st.queues_declared)
        yield counter("rabbitmq_queues_created", "Total number of queues created", st.queues_created)
        yield counter("rabbitmq_queues_deleted", "Total number of queues deleted", st.queues_deleted)
        try:
            open_fds = len(os.listdir("/proc/self/fd"))
        except OSError:
            open_fds = 0
        max_fds = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        max_fds = max_fds if max_fds != resource.RLIM_INFINITY else 1 << 20
        yield gauge("rabbitmq_process_open_fds", "Open file descriptors", open_fds)
        yield gauge("rabbitmq_process_max_fds", "Open file descriptors limit", max_fds)
        yield gauge("rabbitmq_process_open_tcp_sockets", "Open TCP sockets", len(conns) + len(stomp))
        yield gauge("rabbitmq_process_max_tcp_sockets", "Open TCP sockets limit", max_fds)
        yield gauge("rabbitmq_process_resident_memory_bytes", "Memory used in bytes", Metrics.rss())
        yield gauge("rabbitmq_resident_memory_limit_bytes", "Memory high watermark in bytes", node.memory_limit())
        free = node.disk_free()
        yield gauge("rabbitmq_disk_space_available_bytes", "Disk space available in bytes",
                    free if free is not None else 0)
        yield gauge("rabbitmq_disk_space_available_limit_bytes", "Free disk space low watermark in bytes",
                    node.settings.disk_free_limit)
        delivered = (st.delivered_consume_auto_ack + st.delivered_consume_manual_ack + st.delivered_get_auto_ack
                     + st.delivered_get_manual_ack)
        for name, help_, value in (
                ("received", "Total number of messages received from publishers", st.received),
                ("received_confirm", "Total number of messages received from publishers expecting confirmations",
                 st.received_confirm),
                ("routed", "Total number of messages routed to queues or streams", st.routed),
                ("unroutable_dropped", "Total number of messages published as non-mandatory into an exchange and "
                                       "dropped as unroutable", max(0, st.unroutable - st.returned)),
                ("unroutable_returned", "Total number of messages published as mandatory into an exchange and "
                                        "returned to the publisher as unroutable", st.returned),
                ("confirmed", "Total number of messages confirmed to publishers", st.confirmed),
                ("delivered", "Total number of messages delivered to consumers", delivered),
                ("delivered_consume_manual_ack", "Total number of messages delivered to consumers using "
                                                 "basic.consume with manual acknowledgment",
                 st.delivered_consume_manual_ack),
                ("delivered_consume_auto_ack", "Total number of messages delivered to consumers using "
                                               "basic.consume with automatic acknowledgment",
                 st.delivered_consume_auto_ack),
                ("delivered_get_manual_ack", "Total number of messages delivered to consumers using basic.get "
                                             "with manual acknowledgment", st.delivered_get_manual_ack),
                ("delivered_get_auto_ack", "Total number of messages delivered to consumers using basic.get "
                                           "with automatic acknowledgment", st.delivered_get_auto_ack),
                ("get_empty", "Total number of times basic.get operations fetched no message", st.get_empty),
                ("redelivered", "Total number of messages redelivered to consumers", st.redelivered),
                ("acknowledged", "Total number of messages acknowledged by consumers", st.acknowledged)):
            yield counter(f"rabbitmq_global_messages_{name}", help_, value)
        size = HistogramMetricFamily("rabbitmq_message_size_bytes", "Size of messages received from publishers")
        cumulative, running = [], 0
        for bound, count in zip((*MESSAGE_SIZE_BUCKETS, float("inf")), st.size_counts, strict=True):
            running += count
            cumulative.append((_go_float(bound), running))
        size.add_metric([], buckets=cumulative, sum_value=st.size_sum)
        yield size


class Metrics:
    def __init__(self, node: Node, listeners: HttpListeners) -> None:
        self.node = node
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(BrokerCollector(node, listeners))
        self.rabbit = RabbitCollector(node, time.time())
        self.registry.register(self.rabbit)
        self.registry.register(ProcessCollector(registry=None))

    async def render(self, per_object: bool) -> bytes:
        """The whole exposition; the queue part is copied in slices and formatted off the loop."""
        self.rabbit.endpoint = "per-object" if per_object else "metrics"
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
