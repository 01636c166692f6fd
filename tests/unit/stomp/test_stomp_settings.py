"""STOMP settings: defaults, flags, environment, validation."""

from __future__ import annotations

import pytest

from haremq.config import load
from haremq.errors import ConfigError


def test_defaults() -> None:
    s = load(env={})
    assert s.stomp_enabled and s.stomp_port == 61613 and s.stomp_max_header_size == 65536


def test_env_and_overrides() -> None:
    s = load(env={"HAREMQ_STOMP_ENABLED": "false", "HAREMQ_STOMP_PORT": "0"})
    assert not s.stomp_enabled and s.stomp_port == 0
    assert load(env={}, overrides={"stomp_port": "12345", "stomp_enabled": None}).stomp_port == 12345


@pytest.mark.parametrize(("key", "value"), [("stomp_port", "70000"), ("stomp_port", "-1"),
                                            ("stomp_max_header_size", "10"), ("stomp_enabled", "maybe")])
def test_invalid(key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=key):
        load(env={}, overrides={key: value})
