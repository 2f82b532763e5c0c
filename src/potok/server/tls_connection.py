"""A client connection on an https listener: the plain one, plus what its handshake said.

A subclass so the plain listeners' connections do not even look for TLS: asyncio calls
`connection_made` once the handshake is complete, and the session is read there once.
"""

from __future__ import annotations

import asyncio

from potok.server.connection import ClientConnection
from potok.tls.session import tls_info


class TlsClientConnection(ClientConnection):
    __slots__ = ()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            self.tls = tls_info(ssl_object)
        super().connection_made(transport)
