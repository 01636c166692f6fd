"""``Node.tls_context`` is the one place a listener's TLS context comes from: a node that returns one
serves AMQP and STOMP over TLS with no other change (the front-door issue builds the contexts)."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from pathlib import Path

from haremq.config import Settings
from haremq.server.node import Node


class TlsNode(Node):
    def __init__(self, settings: Settings, ctx: ssl.SSLContext) -> None:
        super().__init__(settings)
        self.ctx = ctx
        self.asked: list[str] = []

    def tls_context(self, listener: str) -> ssl.SSLContext | None:
        self.asked.append(listener)
        return self.ctx


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=localhost", "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def test_amqp_and_stomp_listeners_speak_tls_with_the_node_context(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    client_ctx.check_hostname = False
    settings = Settings(data_dir=str(tmp_path / "data"), amqp_port=0, stomp_port=0, sqs_enabled=False,
                        management_enabled=False)

    async def main() -> None:
        node = TlsNode(settings, server_ctx)
        await node.start()
        try:
            assert node.asked == ["AMQP", "STOMP"]
            reader, writer = await asyncio.open_connection("127.0.0.1", node.amqp_port, ssl=client_ctx)
            writer.write(b"AMQP\x00\x00\x09\x01")
            head = await asyncio.wait_for(reader.readexactly(11), 5)
            assert head[0] == 1 and head[7:11] == b"\x00\x0a\x00\x0a"  # connection.start on channel 0
            assert len(node.connections) == 1 and next(iter(node.connections)).tls
            writer.close()
            assert node.stomp_port is not None
            reader, writer = await asyncio.open_connection("127.0.0.1", node.stomp_port, ssl=client_ctx)
            writer.write(b"CONNECT\naccept-version:1.2\nhost:/\nlogin:guest\npasscode:guest\n\n\x00")
            answer = await asyncio.wait_for(reader.readuntil(b"\x00"), 5)
            assert answer.startswith(b"CONNECTED\n"), answer
            writer.close()
        finally:
            await node.stop()

    asyncio.run(main())
