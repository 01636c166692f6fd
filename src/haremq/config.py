"""Settings: defaults < TOML file < ``HAREMQ_*`` environment < command-line flags.

The result is frozen and validated; an invalid value raises ``ConfigError`` naming the setting,
which the CLI prints as one line before exiting with status 2.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from haremq.errors import ConfigError

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    bind: str = "127.0.0.1"
    amqp_port: int = 5672
    stomp_enabled: bool = True
    stomp_port: int = 61613  # 0 = any free port
    sqs_enabled: bool = True
    sqs_port: int = 9324  # SQS-compatible HTTP API; 0 = any free port
    sqs_any_credentials: bool = False  # accept any access key and unsigned requests (as the default user)
    management_enabled: bool = True
    management_port: int = 15672  # management REST API, /metrics and the dashboard; 0 = any free port
    stomp_max_header_size: int = 65536  # command + headers of one STOMP frame, bytes
    data_dir: str = "haremq-data"
    fsync: str = "always"  # always | interval | off: when publisher confirms for persistent messages go out
    fsync_interval: float = 0.005  # seconds between group commits with fsync = interval
    segment_size: int = 64 * 1024 * 1024  # bytes per log segment file
    queue_memory_limit: int = 64 * 1024 * 1024  # ready bytes per queue kept in RAM; beyond, bodies page out
    memory_high_watermark: float = 0.4  # fraction of RAM (<= 1) or bytes (> 1): above it, publishers block
    disk_free_limit: int = 50 * 1000 * 1000  # below this many free bytes, publishers get connection.blocked
    log_level: str = "info"
    heartbeat: int = 60
    frame_max: int = 131072
    channel_max: int = 2047
    max_message_size: int = 128 * 1024 * 1024
    handshake_timeout: float = 10.0  # also: an HTTP request's head must arrive within it from its first byte
    http_idle_timeout: float = 60.0  # an HTTP connection with no request in progress (or a body stalled) closes
    close_timeout: float = 3.0
    default_user: str = "guest"
    default_pass: str = "guest"
    # STOMP CONNECT without ``login`` authenticates as this user (RabbitMQ's ``stomp.default_user``);
    # empty: such a CONNECT is refused
    stomp_default_user: str = ""
    stomp_default_pass: str = ""
    node_name: str = "haremq@localhost"
    metrics_auth: bool = False  # /metrics needs a management user (HTTP Basic), as the API does
    metrics_per_object: bool = False  # per-queue series on /metrics too (always on /metrics/per-object)
    coordinator: str = "local"  # local (single node, no external service) | etcd (a cluster)
    etcd_endpoints: str = ""  # comma-separated host:port of the etcd members (coordinator = etcd)
    cluster_lease_ttl: int = 3  # seconds a dead node holds its membership and queue leaderships
    cluster_lease_margin: float = 0.5  # a node drops its leaderships this long before its lease may expire
    # TLS (docs/tls.md): a certificate and key turn on a TLS listener next to each plain one
    tls_cert_file: str = ""  # PEM certificate chain of the server
    tls_key_file: str = ""  # PEM private key of that certificate
    tls_ca_file: str = ""  # PEM CA bundle that client certificates (mTLS, SASL EXTERNAL) are verified against
    tls_verify_peer: bool = True  # with tls_ca_file: ask for and verify client certificates (verify_peer)
    tls_fail_if_no_peer_cert: bool = False  # with tls_verify_peer: refuse clients without a certificate
    amqps_port: int = 5671  # AMQP over TLS; 0 = any free port
    stomps_port: int = 61614  # STOMP over TLS; 0 = any free port
    sqs_https_port: int = 9325  # SQS API over HTTPS; 0 = any free port
    management_https_port: int = 15671  # management API over HTTPS; 0 = any free port
    # encryption at rest (store/crypto.py): a key file of ``ID: BASE64`` lines (the last is active),
    # or the same entries in ``encryption_key`` (env HAREMQ_ENCRYPTION_KEY; kept out of repr)
    encryption_key_file: str = ""
    encryption_key: str = dataclasses.field(default="", repr=False)

    def validate(self) -> Settings:
        try:
            ipaddress.ip_address(self.bind)
        except ValueError:
            if self.bind not in ("localhost", "") and not self.bind.replace("-", "").replace(".", "").isalnum():
                raise ConfigError(f"bind: {self.bind!r} is not an IP address or host name") from None
        _port("amqp_port", self.amqp_port)
        _port("stomp_port", self.stomp_port)
        _port("sqs_port", self.sqs_port)
        _port("management_port", self.management_port)
        for name in ("amqps_port", "stomps_port", "sqs_https_port", "management_https_port"):
            _port(name, getattr(self, name))
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ConfigError("tls_cert_file and tls_key_file: TLS needs both a certificate and its key")
        if self.tls_ca_file and not self.tls_cert_file:
            raise ConfigError("tls_ca_file: needs tls_cert_file and tls_key_file (the server's own certificate)")
        if self.tls_fail_if_no_peer_cert and not (self.tls_ca_file and self.tls_verify_peer):
            raise ConfigError("tls_fail_if_no_peer_cert: needs tls_ca_file and tls_verify_peer (client "
                              "certificates are verified against that CA)")
        if not 256 <= self.stomp_max_header_size <= 16 * 1024 * 1024:
            raise ConfigError(f"stomp_max_header_size: {self.stomp_max_header_size} is not between 256 and 16777216")
        if self.memory_high_watermark <= 0:
            raise ConfigError(f"memory_high_watermark: {self.memory_high_watermark} must be positive")
        if self.fsync not in ("always", "interval", "off"):
            raise ConfigError(f"fsync: {self.fsync!r} is not one of always, interval, off")
        if not 0 < self.fsync_interval <= 10:
            raise ConfigError(f"fsync_interval: {self.fsync_interval} is not between 0 and 10 seconds")
        if not 1024 * 1024 <= self.segment_size <= 1 << 31:
            raise ConfigError(f"segment_size: {self.segment_size} is not between 1 MiB and 2 GiB")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"log_level: {self.log_level!r} is not one of {', '.join(LOG_LEVELS)}")
        if not 0 <= self.heartbeat <= 65535:
            raise ConfigError(f"heartbeat: {self.heartbeat} is not between 0 and 65535 seconds")
        if not 4096 <= self.frame_max <= 1 << 24:
            raise ConfigError(f"frame_max: {self.frame_max} is not between 4096 and 16777216")
        if not 1 <= self.channel_max <= 65535:
            raise ConfigError(f"channel_max: {self.channel_max} is not between 1 and 65535")
        if not 1 <= self.max_message_size <= 512 * 1024 * 1024:
            raise ConfigError(f"max_message_size: {self.max_message_size} is not between 1 and 536870912")
        if not self.data_dir:
            raise ConfigError("data_dir: must not be empty")
        if self.coordinator not in ("local", "etcd"):
            raise ConfigError(f"coordinator: {self.coordinator!r} is not one of local, etcd")
        if self.coordinator == "etcd" and not self.etcd_endpoints.strip(","):
            raise ConfigError("etcd_endpoints: coordinator = etcd needs at least one host:port")
        if not 2 <= self.cluster_lease_ttl <= 60:
            raise ConfigError(f"cluster_lease_ttl: {self.cluster_lease_ttl} is not between 2 and 60 seconds")
        if not 0 < self.cluster_lease_margin < self.cluster_lease_ttl / 2:
            raise ConfigError(f"cluster_lease_margin: {self.cluster_lease_margin} is not between 0 and half "
                              f"of cluster_lease_ttl")
        if self.encryption_key_file and self.encryption_key:
            raise ConfigError("encryption_key_file and encryption_key (HAREMQ_ENCRYPTION_KEY) are both set: use one")
        return self

    @property
    def tls_enabled(self) -> bool:
        """A certificate and key are configured: the TLS listeners start."""
        return bool(self.tls_cert_file)


def _port(name: str, value: int) -> None:
    if not 0 <= value <= 65535:
        raise ConfigError(f"{name}: {value} is not a TCP port (0-65535)")


def _coerce(name: str, raw: Any, target: Any) -> Any:
    """Convert a TOML/env/flag value to the field's type, or say which setting is wrong."""
    if isinstance(target, bool):
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return raw.lower() in ("1", "true", "yes", "on")
        raise ConfigError(f"{name}: {raw!r} is not a boolean")
    if isinstance(target, int):
        if isinstance(raw, bool):
            raise ConfigError(f"{name}: {raw!r} is not an integer")
        try:
            return int(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: {raw!r} is not an integer") from None
    if isinstance(target, float):
        try:
            return float(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: {raw!r} is not a number") from None
    if not isinstance(raw, str):
        raise ConfigError(f"{name}: {raw!r} is not a string")
    return raw


def unknown_env(env: Mapping[str, str] | None = None) -> list[str]:
    """One warning per ``HAREMQ_*`` variable that names no setting (a typo is otherwise silently
    ignored), with the closest valid name."""
    env = os.environ if env is None else env
    names = [f"HAREMQ_{f.name.upper()}" for f in dataclasses.fields(Settings)]
    out = []
    for k in sorted(env):
        if k.startswith("HAREMQ_") and k not in names:
            close = difflib.get_close_matches(k, names, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]}?" if close else ""
            out.append(f"unknown environment variable {k} ignored{hint}")
    return out


def load(config_file: str | None = None, env: Mapping[str, str] | None = None,
         overrides: Mapping[str, Any] | None = None) -> Settings:
    defaults = Settings()
    fields = {f.name for f in dataclasses.fields(Settings)}
    values: dict[str, Any] = {}
    if config_file:
        try:
            data = tomllib.loads(Path(config_file).read_text())
        except OSError as exc:
            raise ConfigError(f"config: cannot read {config_file}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config: {config_file} is not valid TOML: {exc}") from None
        section = data.get("haremq", data)
        for k, v in section.items():
            key = k.replace("-", "_")
            if key not in fields:
                close = difflib.get_close_matches(key, sorted(fields), n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]}?" if close else ""
                raise ConfigError(f"{k}: unknown setting in {config_file}{hint}")
            values[key] = v
    env = os.environ if env is None else env
    for k, v in env.items():
        if k.startswith("HAREMQ_"):
            key = k[len("HAREMQ_"):].lower()
            if key in fields:  # anything else: see ``unknown_env``
                values[key] = v
    for k, v in (overrides or {}).items():
        if v is not None:
            values[k] = v
    coerced = {k: _coerce(k, v, getattr(defaults, k)) for k, v in values.items()}
    return dataclasses.replace(defaults, **coerced).validate()
