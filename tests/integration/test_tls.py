"""TLS on every listener, with real clients: pika (``SSLOptions``, SASL EXTERNAL), stomp-py
(``set_ssl``), boto3 (``verify=``), urllib for the management API; client certificates (mTLS),
TLS 1.2+ only, certificate reload on SIGHUP, and bad TLS settings as one start-up error."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3
import pika
import pytest
import stomp
from botocore.config import Config

from brokerproc import BrokerProcess, start_broker, stop_broker
from tlscerts import Pki, make_pki

REFUSED = (pika.exceptions.AMQPConnectionError, ssl.SSLError, ConnectionError)  # pika raises either
TLS_PORTS = ["--amqps-port", "0", "--stomps-port", "0", "--sqs-https-port", "0", "--management-https-port", "0"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_broker(pki: Pki) -> Iterator[BrokerProcess]:
    """Server certificate, and client certificates verified against the CA when presented."""
    b = start_broker("--tls-cert", str(pki.cert), "--tls-key", str(pki.key), "--tls-ca", str(pki.ca), *TLS_PORTS)
    yield b
    stop_broker(b)


def client_ctx(pki: Pki, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    if cert is not None:
        ctx.load_cert_chain(*map(str, cert))
    return ctx


def pika_tls(port: int, ctx: ssl.SSLContext, credentials: pika.credentials.VALID_TYPES | None = None
             ) -> pika.BlockingConnection:
    params = pika.ConnectionParameters("127.0.0.1", port, ssl_options=pika.SSLOptions(ctx, "localhost"),
                                       connection_attempts=1)
    if credentials is not None:
        params.credentials = credentials
    return pika.BlockingConnection(params)


def peer_cn(port: int, ctx: ssl.SSLContext) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        cert = tls.getpeercert()
    assert cert
    return next(v for rdn in cert["subject"] for k, v in rdn if k == "commonName")


def test_the_ready_line_lists_a_tls_port_next_to_each_plain_one(tls_broker: BrokerProcess) -> None:
    ports = tls_broker.ports
    assert {"amqp", "amqps", "stomp", "stomps", "sqs", "sqs+https", "http", "https"} <= set(ports)
    assert len(set(ports.values())) == len(ports)


def test_pika_publishes_and_consumes_over_amqps(tls_broker: BrokerProcess, pki: Pki) -> None:
    conn = pika_tls(tls_broker.ports["amqps"], client_ctx(pki))
    ch = conn.channel()
    ch.queue_declare("tls-q", durable=True)
    ch.confirm_delivery()
    ch.basic_publish("", "tls-q", b"secret", pika.BasicProperties(delivery_mode=2))
    _, _, body = ch.basic_get("tls-q", auto_ack=True)
    assert body == b"secret"
    conn.close()
    # the plain listener stays and sees the same broker
    plain = pika.BlockingConnection(pika.URLParameters(tls_broker.url))
    assert plain.channel().queue_declare("tls-q", passive=True).method.message_count == 0
    plain.close()


def test_amqps_refuses_a_client_that_does_not_trust_the_server(tls_broker: BrokerProcess, pki: Pki) -> None:
    rogue_ca, _ = pki.other_ca("untrusted")
    with pytest.raises(REFUSED):
        pika_tls(tls_broker.ports["amqps"], ssl.create_default_context(cafile=str(rogue_ca)))


def test_sasl_external_logs_in_as_the_client_certificate_cn(tls_broker: BrokerProcess, pki: Pki) -> None:
    ctx = client_ctx(pki, pki.client("guest"))
    conn = pika_tls(tls_broker.ports["amqps"], ctx, pika.credentials.ExternalCredentials())
    ch = conn.channel()
    ch.queue_declare("external-q")
    conn.close()
    mgmt = json.load(_get(f"{tls_broker.management_url}/api/queues/%2F/external-q"))
    assert mgmt["name"] == "external-q"


def test_sasl_external_refuses_a_certificate_whose_cn_is_no_user(tls_broker: BrokerProcess, pki: Pki) -> None:
    ctx = client_ctx(pki, pki.client("nobody-here"))
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        pika_tls(tls_broker.ports["amqps"], ctx, pika.credentials.ExternalCredentials())
    deadline = time.monotonic() + 5
    while "CN=nobody-here" not in tls_broker.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "EXTERNAL (client certificate CN=nobody-here): unknown user" in tls_broker.log()


def test_sasl_external_is_not_offered_without_a_client_certificate(tls_broker: BrokerProcess, pki: Pki) -> None:
    # pika refuses to log in when the server does not offer EXTERNAL
    with pytest.raises(REFUSED):
        pika_tls(tls_broker.ports["amqps"], client_ctx(pki), pika.credentials.ExternalCredentials())
    with pytest.raises(REFUSED):
        pika.BlockingConnection(pika.ConnectionParameters(
            "127.0.0.1", tls_broker.port, credentials=pika.credentials.ExternalCredentials(), connection_attempts=1))
    # a password login over TLS with a client certificate still works
    pika_tls(tls_broker.ports["amqps"], client_ctx(pki, pki.client("guest"))).close()


def test_a_client_certificate_from_an_unknown_ca_is_refused(tls_broker: BrokerProcess, pki: Pki) -> None:
    rogue_ca, rogue_key = pki.other_ca("rogue")
    ctx = client_ctx(pki, pki.client("guest", ca=rogue_ca, ca_key=rogue_key))
    with pytest.raises(REFUSED):
        pika_tls(tls_broker.ports["amqps"], ctx, pika.credentials.ExternalCredentials())


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
def test_tls_below_1_2_is_refused(tls_broker: BrokerProcess, pki: Pki) -> None:
    def attempt(version: ssl.TLSVersion) -> str:
        ctx = client_ctx(pki)
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer old versions at all
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = version
        with socket.create_connection(("127.0.0.1", tls_broker.ports["amqps"]), timeout=5) as raw, \
                ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            return str(tls.version())

    assert attempt(ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
    with pytest.raises(ssl.SSLError):
        attempt(ssl.TLSVersion.TLSv1_1)


def test_stomp_py_sends_and_receives_over_stomps(tls_broker: BrokerProcess, pki: Pki) -> None:
    port = tls_broker.ports["stomps"]
    conn = stomp.Connection([("127.0.0.1", port)])
    conn.set_ssl(for_hosts=[("127.0.0.1", port)], ca_certs=str(pki.ca))
    listener = stomp.listener.TestListener()
    conn.set_listener("t", listener)
    conn.connect("guest", "guest", wait=True)
    conn.subscribe("/queue/stomps-q", id="1", ack="auto")
    conn.send("/queue/stomps-q", "over tls")
    listener.wait_for_message()
    assert listener.get_latest_message()[1] == "over tls"
    conn.disconnect()


def test_boto3_uses_the_sqs_api_over_https(tls_broker: BrokerProcess, pki: Pki) -> None:
    sqs = boto3.client("sqs", endpoint_url=f"https://127.0.0.1:{tls_broker.ports['sqs+https']}",
                       region_name="us-east-1", aws_access_key_id="guest", aws_secret_access_key="guest",
                       verify=str(pki.ca), config=Config(retries={"max_attempts": 1}))
    url = sqs.create_queue(QueueName="https-q")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="hello")
    msgs = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)["Messages"]
    assert msgs[0]["Body"] == "hello"


def _get(url: str, ctx: ssl.SSLContext | None = None) -> object:
    req = urllib.request.Request(url, headers={"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()})
    return urllib.request.urlopen(req, timeout=5, context=ctx)


def test_management_api_answers_over_https(tls_broker: BrokerProcess, pki: Pki) -> None:
    body = json.load(_get(f"https://127.0.0.1:{tls_broker.ports['https']}/api/overview", client_ctx(pki)))
    assert "rabbitmq_version" in body or "management_version" in body or "node" in body


def test_a_required_client_certificate_refuses_clients_without_one(pki: Pki) -> None:
    b = start_broker("--tls-cert", str(pki.cert), "--tls-key", str(pki.key), "--tls-ca", str(pki.ca), *TLS_PORTS,
                     env={"HAREMQ_TLS_FAIL_IF_NO_PEER_CERT": "true"})
    try:
        with pytest.raises(REFUSED):
            pika_tls(b.ports["amqps"], client_ctx(pki))
        pika_tls(b.ports["amqps"], client_ctx(pki, pki.client("guest")),
                 pika.credentials.ExternalCredentials()).close()
    finally:
        stop_broker(b)


def test_sighup_reloads_the_certificate_and_a_bad_file_keeps_the_old_one(pki: Pki, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    shutil.copy(pki.cert, cert)
    shutil.copy(pki.key, key)
    b = start_broker("--tls-cert", str(cert), "--tls-key", str(key), *TLS_PORTS)
    try:
        port, ctx = b.ports["amqps"], client_ctx(pki)
        ctx.check_hostname = False  # the new certificate names another host: we check its CN
        assert peer_cn(port, ctx) == "localhost"
        new_cert, new_key = pki.server("reloaded.example")
        shutil.copy(new_cert, cert)
        shutil.copy(new_key, key)
        b.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while peer_cn(port, ctx) != "reloaded.example" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert peer_cn(port, ctx) == "reloaded.example"
        key.write_text("not a key\n")
        b.proc.send_signal(signal.SIGHUP)
        while "TLS reload failed" not in b.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "TLS reload failed, keeping the current certificate" in b.log()
        assert peer_cn(port, ctx) == "reloaded.example"
        assert b.alive()
    finally:
        stop_broker(b)


def _serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "haremq.cli", "serve", "--log-level", "warning", "--amqp-port", "0",
                           "--stomp-port", "0", "--sqs-port", "0", "--management-port", "0", *TLS_PORTS, *args],
                          capture_output=True, text=True, timeout=30, env=dict(os.environ))


@pytest.mark.parametrize("case", ["missing cert", "key of another cert", "cert without key"])
def test_bad_tls_files_are_one_startup_error(pki: Pki, tmp_path: Path, case: str) -> None:
    _, other_key = pki.server("other")
    args = {"missing cert": ["--tls-cert", str(tmp_path / "nope.pem"), "--tls-key", str(pki.key)],
            "key of another cert": ["--tls-cert", str(pki.cert), "--tls-key", str(other_key)],
            "cert without key": ["--tls-cert", str(pki.cert)]}[case]
    proc = _serve("--data-dir", str(tmp_path / "data"), *args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    expected = {"missing cert": "nope.pem: no such file", "key of another cert": "does the key match",
                "cert without key": "needs both a certificate and its key"}[case]
    assert expected in lines[0]


def test_management_lists_the_tls_listeners_and_a_connection_s_tls_details(tls_broker: BrokerProcess,
                                                                            pki: Pki) -> None:
    overview = json.load(_get(f"{tls_broker.management_url}/api/overview"))
    protocols = {x["protocol"]: x["port"] for x in overview["listeners"]}
    assert protocols["amqp/ssl"] == tls_broker.ports["amqps"] and protocols["https"] == tls_broker.ports["https"]
    conn = pika_tls(tls_broker.ports["amqps"], client_ctx(pki, pki.client("guest")),
                    pika.credentials.ExternalCredentials())
    try:
        deadline = time.monotonic() + 5
        while True:
            conns = json.load(_get(f"{tls_broker.management_url}/api/connections"))
            mine = [c for c in conns if c["port"] == tls_broker.ports["amqps"]]
            if mine or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert mine and mine[0]["ssl"] is True and mine[0]["auth_mechanism"] == "EXTERNAL"
        assert mine[0]["peer_cert_subject"] == "CN=guest" and mine[0]["ssl_protocol"] in ("TLSv1.2", "TLSv1.3")
    finally:
        conn.close()


def test_the_testing_broker_thread_exposes_the_tls_listeners(pki: Pki) -> None:
    from haremq.testing import BrokerThread

    with BrokerThread(tls_cert_file=str(pki.cert), tls_key_file=str(pki.key)) as b:
        pika_tls(b.amqps_port, client_ctx(pki)).close()
        assert b.stomps_port and b.sqs_https_endpoint_url.startswith("https://127.0.0.1:")
        assert json.load(_get(f"{b.management_https_url}/api/overview", client_ctx(pki)))


@pytest.mark.parametrize(("settings", "message"), [
    ({"tls_cert_file": "c.pem"}, "needs both a certificate and its key"),
    ({"tls_ca_file": "ca.pem"}, "tls_ca_file: needs tls_cert_file"),
    ({"tls_cert_file": "c", "tls_key_file": "k", "tls_fail_if_no_peer_cert": True}, "needs tls_ca_file"),
    ({"amqps_port": 70000}, "amqps_port: 70000 is not a TCP port"),
])
def test_inconsistent_tls_settings_are_refused(settings: dict[str, object], message: str) -> None:
    from haremq.config import load
    from haremq.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        load(env={}, overrides=settings)


def test_a_client_that_never_finishes_the_tls_handshake_is_dropped_after_handshake_timeout(pki: Pki) -> None:
    b = start_broker("--tls-cert", str(pki.cert), "--tls-key", str(pki.key), *TLS_PORTS,
                     env={"HAREMQ_HANDSHAKE_TIMEOUT": "1"})
    try:
        for name in ("amqps", "https"):
            with socket.create_connection(("127.0.0.1", b.ports[name]), timeout=5) as raw:
                started = time.monotonic()
                raw.sendall(b"\x16\x03\x01")  # the start of a ClientHello, never finished
                try:
                    assert raw.recv(1024) == b""
                except ConnectionResetError:
                    pass
                assert time.monotonic() - started < 4, name
    finally:
        stop_broker(b)
