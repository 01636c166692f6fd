"""Test certificates made with the ``openssl`` CLI: a CA, a server certificate for 127.0.0.1/localhost
signed by it, and client certificates whose subject CN names a user (SASL EXTERNAL)."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


@dataclasses.dataclass
class Pki:
    dir: Path
    ca: Path
    ca_key: Path
    cert: Path  # server
    key: Path

    def client(self, cn: str, *, ca: Path | None = None, ca_key: Path | None = None) -> tuple[Path, Path]:
        """A client certificate with subject CN ``cn`` (signed by this CA unless another is given)."""
        return _signed(self.dir, f"client-{cn}", cn, ca or self.ca, ca_key or self.ca_key, server=False)

    def server(self, name: str) -> tuple[Path, Path]:
        """Another server certificate (a reload) with subject CN ``name``."""
        return _signed(self.dir, f"server-{name}", name, self.ca, self.ca_key, server=True)

    def other_ca(self, name: str = "rogue") -> tuple[Path, Path]:
        """A CA the broker does not trust."""
        return _ca(self.dir, name)


def _ca(d: Path, name: str) -> tuple[Path, Path]:
    ca, key = d / f"{name}-ca.pem", d / f"{name}-ca-key.pem"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name} test CA",
             "-keyout", key, "-out", ca)
    return ca, key


def _signed(d: Path, stem: str, cn: str, ca: Path, ca_key: Path, *, server: bool) -> tuple[Path, Path]:
    cert, key, csr, ext = d / f"{stem}.pem", d / f"{stem}-key.pem", d / f"{stem}.csr", d / f"{stem}.ext"
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/O=haremq tests/CN={cn}", "-keyout", key, "-out", csr)
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n" if server
                   else "extendedKeyUsage=clientAuth\n")
    _openssl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-days", "2",
             "-extfile", ext, "-out", cert)
    return cert, key


def make_pki(d: Path) -> Pki:
    d.mkdir(parents=True, exist_ok=True)
    ca, ca_key = _ca(d, "test")
    cert, key = _signed(d, "server", "localhost", ca, ca_key, server=True)
    return Pki(d, ca, ca_key, cert, key)
