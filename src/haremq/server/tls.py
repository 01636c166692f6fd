"""The node's one server-side TLS context: built from the settings, reloaded in place on SIGHUP.

Every TLS listener (AMQPS, STOMPS, SQS and management over HTTPS) shares one ``ssl.SSLContext``.
Loading a new certificate into that same context affects every handshake after it, so a reload needs
no listener restart. A reload first loads the files into a scratch context: a missing file, a bad PEM
or a key that does not match keeps the old certificate (``load_cert_chain`` on the live context
would otherwise leave it half-replaced).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import ssl
import tempfile
from typing import Any

from haremq.config import Settings
from haremq.errors import StartupError

log = logging.getLogger("haremq.tls")

# listener names (``Node.listen``) that speak TLS; the plain listeners keep their own names
TLS_LISTENERS = frozenset({"AMQPS", "STOMPS", "SQS HTTPS", "management HTTPS"})


def _base(settings: Settings) -> ssl.SSLContext:
    """A server context with our policy: TLS 1.2+, client certificates as the settings say."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    if settings.tls_ca_file and settings.tls_verify_peer:
        ctx.verify_mode = ssl.CERT_REQUIRED if settings.tls_fail_if_no_peer_cert else ssl.CERT_OPTIONAL
    return ctx


def _load(ctx: ssl.SSLContext, cert: str, key: str, ca: str) -> None:
    ctx.load_cert_chain(cert, key)
    if ca:
        ctx.load_verify_locations(cafile=ca)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError | PermissionError | IsADirectoryError):
        return f"{exc.strerror}: {exc.filename}" if exc.filename else str(exc.strerror)
    if isinstance(exc, ssl.SSLError):
        return f"{exc.reason or exc}" + (" (does the key match the certificate?)"
                                         if "KEY_VALUES_MISMATCH" in str(exc) else "")
    return str(exc)


def build_context(settings: Settings) -> ssl.SSLContext:
    """The context of a node whose settings turn TLS on; a file that is missing, unreadable or not
    a matching certificate/key pair is one ``StartupError`` (the CLI exits 2)."""
    ctx = _base(settings)
    for name in ("tls_cert_file", "tls_key_file", "tls_ca_file"):
        path = getattr(settings, name)
        if path and not os.path.isfile(path):
            raise StartupError(f"{name}: {path}: no such file")
    try:
        _load(ctx, settings.tls_cert_file, settings.tls_key_file, "")
    except (OSError, ssl.SSLError) as exc:
        raise StartupError(f"tls_cert_file/tls_key_file: cannot load {settings.tls_cert_file} with "
                           f"{settings.tls_key_file}: {_describe(exc)}") from None
    if settings.tls_ca_file:
        try:
            ctx.load_verify_locations(cafile=settings.tls_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise StartupError(f"tls_ca_file: cannot load {settings.tls_ca_file}: {_describe(exc)}") from None
    return ctx


def _snapshot(settings: Settings) -> str:
    """Off the loop: copy the files into a private directory and prove they load (scratch context).
    The live context then loads these copies, so a file replaced meanwhile cannot half-apply."""
    tmp = tempfile.mkdtemp(prefix="haremq-tls-")
    try:
        for name, path in (("cert.pem", settings.tls_cert_file), ("key.pem", settings.tls_key_file),
                           ("ca.pem", settings.tls_ca_file)):
            if path:
                shutil.copyfile(path, os.path.join(tmp, name))
        _load(_base(settings), *_paths(tmp, settings))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp


def _paths(tmp: str, settings: Settings) -> tuple[str, str, str]:
    return (os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem"),
            os.path.join(tmp, "ca.pem") if settings.tls_ca_file else "")


async def reload_context(ctx: ssl.SSLContext, settings: Settings) -> bool:
    """Load the certificate, key (and CA bundle) files again into the live ``ctx``; True when done.

    The file reads and the proof run in the executor; only the load into the live context runs on
    the loop (it must not race a handshake's use of the context), from the private copies just made.
    A CA bundle is added to: a CA removed from the file stays trusted until restart.
    """
    loop = asyncio.get_running_loop()
    try:
        tmp = await loop.run_in_executor(None, _snapshot, settings)
    except (OSError, ssl.SSLError) as exc:
        log.error("TLS reload failed, keeping the current certificate: %s", _describe(exc))
        return False
    try:
        _load(ctx, *_paths(tmp, settings))
    except (OSError, ssl.SSLError) as exc:  # proven loadable a moment ago: only a vanished tmp dir
        log.error("TLS reload failed: %s", _describe(exc))
        return False
    finally:
        loop.run_in_executor(None, shutil.rmtree, tmp, True)
    log.info("TLS certificate reloaded from %s", settings.tls_cert_file)
    return True


def client_common_name(transport: Any) -> str | None:
    """The subject CN of the verified client certificate of a TLS transport; None without one.

    ``getpeercert()`` returns the certificate's fields only when the handshake verified it against
    the CA (``verify_mode`` OPTIONAL/REQUIRED); an unverified or absent certificate gives ``{}``/None.
    """
    obj = transport.get_extra_info("ssl_object") if transport is not None else None
    if obj is None:
        return None
    cert = obj.getpeercert()
    if not cert:
        return None
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None
