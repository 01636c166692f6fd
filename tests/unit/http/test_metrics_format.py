"""The hand-written exposition of queue series parses back exactly, whatever the queue names hold."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from haremq.server.http.metrics import format_queues


def test_per_queue_series_escape_label_values_and_parse_back() -> None:
    names = ['plain', 'quo"te', "back\\slash", "new\nline", "ünï"]
    samples = [("/", n, i, 0, 0, 1, 10 + i, 0, 0) for i, n in enumerate(names)]
    fams = {f.name: f for f in text_string_to_metric_families(format_queues(samples, True).decode())}
    ready = {s.labels["queue"]: s.value for s in fams["haremq_queue_messages_ready"].samples}
    assert ready == {n: float(i) for i, n in enumerate(names)}
    published = fams["haremq_queue_messages_published"]
    assert published.type == "counter" and {s.labels["queue"] for s in published.samples} == set(names)


def test_aggregated_series_sum_every_queue_without_labels() -> None:
    samples = [("/", f"q{i}", 2, 1, 0, 1, 5, 4, 3) for i in range(1000)]
    fams = {f.name: f for f in text_string_to_metric_families(format_queues(samples, False).decode())}
    assert fams["haremq_queues"].samples[0].value == 1000
    assert [(s.labels, s.value) for s in fams["haremq_queue_messages_ready"].samples] == [({}, 2000.0)]
    assert fams["haremq_queue_messages_acked"].samples[0].value == 3000
