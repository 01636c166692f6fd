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


def test_stomp_default_user_is_unset_unless_configured() -> None:
    """No default user means a CONNECT without login is refused; the env sets one (as RabbitMQ's stomp.default_user)."""
    s = load(env={})
    assert s.stomp_default_user == "" and s.stomp_default_pass == ""
    s = load(env={"HAREMQ_STOMP_DEFAULT_USER": "app", "HAREMQ_STOMP_DEFAULT_PASS": "secret"})
    assert (s.stomp_default_user, s.stomp_default_pass) == ("app", "secret")
