"""The cluster coordinator: membership, definitions KV and per-queue election (see ``api``).

``local`` is the embedded single-node default; ``etcd`` needs the ``cluster`` extra (aetcd)."""

from __future__ import annotations

from haremq.cluster.coordinator.api import Coordinator
from haremq.config import Settings


def from_settings(settings: Settings, namespace: str = "haremq/") -> Coordinator:
    """The coordinator the settings ask for (not started). etcd is imported only when chosen, so a
    single node needs no gRPC."""
    if settings.coordinator == "etcd":
        from haremq.cluster.coordinator.etcd import EtcdCoordinator

        endpoints = [e.strip() for e in settings.etcd_endpoints.split(",") if e.strip()]
        return EtcdCoordinator(endpoints, namespace=namespace, lease_ttl=settings.cluster_lease_ttl,
                               lease_margin=settings.cluster_lease_margin)
    from haremq.cluster.coordinator.local import LocalCoordinator

    return LocalCoordinator(lease_ttl=settings.cluster_lease_ttl, lease_margin=settings.cluster_lease_margin)
