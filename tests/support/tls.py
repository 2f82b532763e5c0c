"""TLS upstreams for tests: certificates from a throwaway CA (trustme) written to files the
gateway's config names, and aiohttp upstreams serving https:// that record every handshake
(the SNI name the client sent) and the client certificate they were shown."""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path

import trustme
from aiohttp import web

from tests.support.upstream import Upstream


class Pki:
    """A CA for servers, a CA for clients, and files of their certificates."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ca = trustme.CA(organization_name="Potok test server CA")
        self.client_ca = trustme.CA(organization_name="Potok test client CA")
        self.ca_file = self.write("ca.pem", self.ca.cert_pem.bytes())
        client = self.client_ca.issue_cert("gateway.test", common_name="potok-gateway")
        self.client_cert_file = self.write(
            "client.pem", b"".join(b.bytes() for b in client.cert_chain_pems)
        )
        self.client_key_file = self.write("client.key", client.private_key_pem.bytes())

    def write(self, name: str, data: bytes) -> str:
        path = self.directory / name
        path.write_bytes(data)
        return str(path)

    def server_context(
        self,
        *names: str,
        expired: bool = False,
        require_client_cert: bool = False,
        max_version: ssl.TLSVersion | None = None,
    ) -> ssl.SSLContext:
        now = datetime.datetime.now(datetime.UTC)
        if expired:
            cert = self.ca.issue_cert(
                *names,
                not_before=now - datetime.timedelta(days=30),
                not_after=now - datetime.timedelta(days=1),
            )
        else:
            cert = self.ca.issue_cert(*names)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(context)
        if max_version is not None:
            context.maximum_version = max_version
        if require_client_cert:
            context.verify_mode = ssl.CERT_REQUIRED
            self.client_ca.configure_trust(context)
        return context


class TlsUpstream(Upstream):
    """An https:// Upstream that counts handshakes and records the SNI name of each.

    /peer answers the subject of the client certificate the connection presented.
    """

    def __init__(self, context: ssl.SSLContext) -> None:
        self.handshakes = 0
        self.server_names: list[str | None] = []
        context.sni_callback = self._client_hello
        super().__init__(ssl_context=context)

    def _client_hello(
        self, _connection: ssl.SSLObject, server_name: str | None, _context: ssl.SSLContext
    ) -> None:
        # Called on every ClientHello, with None when the client sent no SNI.
        self.handshakes += 1
        self.server_names.append(server_name)

    async def _h_peer(self, request: web.Request) -> web.StreamResponse:
        transport = request.transport
        peer = transport.get_extra_info("peercert") if transport is not None else None
        subject = {k: v for rdn in (peer or {}).get("subject", ()) for k, v in rdn}
        return web.json_response({"subject": subject})
