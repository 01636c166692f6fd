"""The coordinator is chosen and tuned by settings; bad combinations are refused at startup."""

from __future__ import annotations

import pytest

from haremq import config
from haremq.cluster.coordinator import from_settings
from haremq.cluster.coordinator.etcd import EtcdCoordinator
from haremq.cluster.coordinator.local import LocalCoordinator
from haremq.errors import ConfigError


def test_default_coordinator_is_local_with_a_3s_lease() -> None:
    s = config.load(env={})
    c = from_settings(s)
    assert isinstance(c, LocalCoordinator) and (c.lease_ttl, c.lease_margin) == (3, 0.5)


def test_etcd_coordinator_from_environment() -> None:
    s = config.load(env={"HAREMQ_COORDINATOR": "etcd", "HAREMQ_ETCD_ENDPOINTS": "10.0.0.1:2379, http://10.0.0.2:2379",
                         "HAREMQ_CLUSTER_LEASE_TTL": "5"})
    c = from_settings(s)
    assert isinstance(c, EtcdCoordinator)
    assert [e.address for e in c.endpoints] == ["10.0.0.1:2379", "10.0.0.2:2379"] and c.lease_ttl == 5


@pytest.mark.parametrize(("env", "setting"), [
    ({"HAREMQ_COORDINATOR": "zookeeper"}, "coordinator"),
    ({"HAREMQ_COORDINATOR": "etcd"}, "etcd_endpoints"),
    ({"HAREMQ_CLUSTER_LEASE_TTL": "1"}, "cluster_lease_ttl"),
    ({"HAREMQ_CLUSTER_LEASE_MARGIN": "2"}, "cluster_lease_margin"),
])
def test_bad_coordinator_settings_are_refused(env: dict[str, str], setting: str) -> None:
    with pytest.raises(ConfigError, match=setting):
        config.load(env=env)
