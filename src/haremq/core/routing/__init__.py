"""Routing tables for each exchange type. Destinations are opaque hashable objects."""

from haremq.core.routing.direct import DirectTable
from haremq.core.routing.fanout import FanoutTable
from haremq.core.routing.headers import HeadersTable, headers_match
from haremq.core.routing.table import BindingKey, RoutingTable, binding_key
from haremq.core.routing.topic import TopicTable, topic_matches

__all__ = [
    "BindingKey", "DirectTable", "FanoutTable", "HeadersTable", "RoutingTable", "TopicTable",
    "binding_key", "headers_match", "topic_matches",
]
