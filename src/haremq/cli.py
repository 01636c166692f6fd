"""Command line: ``haremq serve``. Parsing and wiring only; no business logic here."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING

from haremq import __version__
from haremq.config import Settings, load, unknown_env
from haremq.errors import ConfigError, StartupError

if TYPE_CHECKING:
    from haremq.store.crypto import RecordCipher


def _serve_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="run a broker node")
    p.add_argument("--config", help="TOML settings file")
    p.add_argument("--bind", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--amqp-port", help="AMQP port (default 5672; 0 = any free port)")
    p.add_argument("--stomp-port", help="STOMP port (default 61613; 0 = any free port)")
    p.add_argument("--no-stomp", action="store_const", const=False, dest="stomp_enabled",
                   help="do not start the STOMP listener")
    p.add_argument("--sqs-port", help="SQS API port (default 9324; 0 = any free port)")
    p.add_argument("--no-sqs", action="store_const", const=False, dest="sqs_enabled",
                   help="do not start the SQS API listener")
    p.add_argument("--sqs-any-credentials", action="store_const", const=True, dest="sqs_any_credentials",
                   help="SQS API: accept any access key and unsigned requests (act as the default user)")
    p.add_argument("--management-port", help="management API / metrics port (default 15672; 0 = any free port)")
    p.add_argument("--no-management", action="store_const", const=False, dest="management_enabled",
                   help="do not start the management API listener")
    p.add_argument("--data-dir", help="data directory (default ./haremq-data)")
    p.add_argument("--log-level", help="debug, info, warning, error")
    p.add_argument("--heartbeat", help="heartbeat interval offered to clients, seconds (default 60)")
    p.add_argument("--tls-cert", dest="tls_cert_file",
                   help="PEM certificate: with --tls-key, also listen with TLS (AMQPS, STOMPS, HTTPS)")
    p.add_argument("--tls-key", dest="tls_key_file", help="PEM private key of --tls-cert")
    p.add_argument("--tls-ca", dest="tls_ca_file", help="PEM CA bundle to verify client certificates with (mTLS)")
    p.add_argument("--amqps-port", help="AMQP over TLS port (default 5671; 0 = any free port)")
    p.add_argument("--stomps-port", help="STOMP over TLS port (default 61614; 0 = any free port)")
    p.add_argument("--sqs-https-port", help="SQS API over HTTPS port (default 9325; 0 = any free port)")
    p.add_argument("--management-https-port", help="management API over HTTPS port (default 15671; 0 = any free port)")
    p.add_argument("--encryption-key-file",
                   help="encrypt message records at rest with the keys in this file ('ID: BASE64' lines, last active)")


def _offline_cipher(key_file: str | None, required: bool) -> RecordCipher | int | None:
    """The key ring for an offline command: the flag, else HAREMQ_ENCRYPTION_KEY_FILE /
    HAREMQ_ENCRYPTION_KEY, as ``serve`` reads them. Returns None, a RecordCipher, or an exit status."""
    from haremq.store.crypto import EncryptionKeyError, load_key_ring

    try:
        cipher = load_key_ring(key_file or os.environ.get("HAREMQ_ENCRYPTION_KEY_FILE", ""),
                               "" if key_file else os.environ.get("HAREMQ_ENCRYPTION_KEY", ""))
    except EncryptionKeyError as exc:
        print(f"haremq: {exc}", file=sys.stderr)
        return 2
    if cipher is None and required:
        print("haremq: no encryption key: pass --encryption-key-file or set HAREMQ_ENCRYPTION_KEY", file=sys.stderr)
        return 2
    return cipher


async def _serve(settings: Settings) -> None:
    from haremq.server.node import Node

    node = Node(settings)
    await node.start()  # (tunes the GC as every node does)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):  # before "ready": a signal right after it must stop us cleanly
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    with contextlib.suppress(NotImplementedError):  # SIGHUP: reload the TLS certificate (and key, CA)
        loop.add_signal_handler(signal.SIGHUP, node.on_sighup)
    urls = [f"amqp://{settings.bind}:{node.amqp_port}"]
    if node.stomp_port is not None:
        urls.append(f"stomp://{settings.bind}:{node.stomp_port}")
    if node.http is not None and node.http.sqs_port is not None:
        urls.append(f"sqs://{settings.bind}:{node.http.sqs_port}")
    if node.http is not None and node.http.management_port is not None:
        urls.append(f"http://{settings.bind}:{node.http.management_port}")
    if node.amqps_port is not None:
        urls.append(f"amqps://{settings.bind}:{node.amqps_port}")
    if node.stomps_port is not None:
        urls.append(f"stomps://{settings.bind}:{node.stomps_port}")
    if node.http is not None and node.http.sqs_https_port is not None:
        urls.append(f"sqs+https://{settings.bind}:{node.http.sqs_https_port}")
    if node.http is not None and node.http.management_https_port is not None:
        urls.append(f"https://{settings.bind}:{node.http.management_https_port}")
    print(f"haremq {__version__} ready: {' '.join(urls)}", flush=True)
    await stop.wait()
    logging.getLogger("haremq").info("shutting down")
    await node.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="haremq", description="haremq message broker")
    parser.add_argument("--version", action="version", version=f"haremq {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
    from haremq import ctl

    ctl.add_parser(sub)
    check = sub.add_parser("store-check", help="verify a data directory offline (refused while a broker holds it)")
    check.add_argument("data_dir", help="the broker's data directory")
    check.add_argument("--encryption-key-file", help="key file to authenticate encrypted records with")
    rewrap = sub.add_parser("store-rewrap", help="re-encrypt every message record with the active key "
                            "(offline: refused while a broker holds the data dir)")
    rewrap.add_argument("data_dir", help="the broker's data directory")
    rewrap.add_argument("--encryption-key-file", help="key file ('ID: BASE64' lines; the last is the active key)")
    args = parser.parse_args(argv)
    if args.command == "ctl":
        return ctl.run(args)
    if args.command == "store-check":
        from haremq.store.check import run

        if not os.path.isdir(args.data_dir):
            print(f"haremq: {args.data_dir}: no such directory", file=sys.stderr)
            return 2
        from haremq.store.lock import shared_lock

        with shared_lock(args.data_dir) as holder:
            if holder is not None:  # a live broker may be mid-write: its files are no evidence
                print(f"haremq: {args.data_dir} is in use by a running broker ({holder}); stop it before "
                      "store-check", file=sys.stderr)
                return 2
            cipher = _offline_cipher(args.encryption_key_file, required=False)
            if isinstance(cipher, int):
                return cipher
            return run(args.data_dir, sys.stdout, cipher)
    if args.command == "store-rewrap":
        return _rewrap(args.data_dir, args.encryption_key_file)
    if args.command == "serve":
        try:
            settings = load(args.config, overrides={
                "bind": args.bind, "amqp_port": args.amqp_port, "data_dir": args.data_dir,
                "log_level": args.log_level, "heartbeat": args.heartbeat,
                "stomp_port": args.stomp_port, "stomp_enabled": args.stomp_enabled,
                "sqs_port": args.sqs_port, "sqs_enabled": args.sqs_enabled,
                "sqs_any_credentials": args.sqs_any_credentials, "management_port": args.management_port,
                "management_enabled": args.management_enabled,
                "tls_cert_file": args.tls_cert_file, "tls_key_file": args.tls_key_file,
                "tls_ca_file": args.tls_ca_file, "amqps_port": args.amqps_port, "stomps_port": args.stomps_port,
                "sqs_https_port": args.sqs_https_port, "management_https_port": args.management_https_port,
                "encryption_key_file": args.encryption_key_file,
            })
        except ConfigError as exc:
            print(f"haremq: invalid setting: {exc}", file=sys.stderr)
            return 2
        for warning in unknown_env():
            print(f"haremq: warning: {warning}", file=sys.stderr)
        logging.basicConfig(level=settings.log_level.upper(),
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
        try:
            asyncio.run(_serve(settings))
        except StartupError as exc:
            print(f"haremq: cannot start: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:  # anything start-up did not name (the data dir, a listener) itself
            where = f" ({exc.filename})" if exc.filename else ""
            print(f"haremq: cannot start: {exc.strerror or exc}{where}", file=sys.stderr)
            return 2
        return 0
    return 2


def _rewrap(data_dir: str, key_file: str | None) -> int:
    from haremq.store.crypto import EncryptionKeyError, RecordCipher
    from haremq.store.lock import DataDirLock
    from haremq.store.rewrap import run

    if not os.path.isdir(data_dir):
        print(f"haremq: {data_dir}: no such directory", file=sys.stderr)
        return 2
    cipher = _offline_cipher(key_file, required=True)
    if not isinstance(cipher, RecordCipher):
        return 2
    try:
        lock = DataDirLock(data_dir)  # exclusive: no broker may run on it meanwhile
    except StartupError as exc:
        print(f"haremq: {exc}; stop it before store-rewrap", file=sys.stderr)
        return 2
    try:
        return run(data_dir, cipher, sys.stdout)
    except EncryptionKeyError as exc:
        print(f"haremq: store-rewrap stopped: {exc}", file=sys.stderr)
        return 1
    finally:
        lock.release()


if __name__ == "__main__":
    sys.exit(main())
