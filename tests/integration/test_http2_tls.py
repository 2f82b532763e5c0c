"""ALPN "h2" on a TLS connection switches it to HTTP/2 at the handshake; "http/1.1" keeps
HTTP/1.1. The server's own connection protocol behind a real TLS listener (an ssl context
given to the event loop, with a trustme certificate), real sockets on both sides."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator

import pytest
import trustme
import uvloop

from potok.exchange import Exchange, ResponseHook
from potok.http.settings import Http2Settings, ServerSettings
from potok.server.connection import ClientConnection
from potok.server.state import ServerState
from tests.support.h2client import H2Client


class Answering:
    """A RequestHandler that answers each request with its protocol version and path."""

    def __init__(self) -> None:
        self.finished_count = 0

    def handle(self, exchange: Exchange) -> None:
        body = b"HTTP/%s %s" % (exchange.version.encode(), exchange.path)
        exchange.respond(200, body, b"text/plain")

    def finished(self, exchange: Exchange) -> None:
        self.finished_count += 1

    @property
    def answer_hooks(self) -> tuple[ResponseHook, ...]:
        return ()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def tls_server(ca: trustme.CA) -> AsyncIterator[int]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(context)
    context.set_alpn_protocols(["h2", "http/1.1"])
    state = ServerState(Answering(), ServerSettings(http2=Http2Settings()))
    server = await asyncio.get_running_loop().create_server(
        lambda: ClientConnection(state), "127.0.0.1", 0, ssl=context
    )
    yield server.sockets[0].getsockname()[1]
    server.close()


def client_context(ca: trustme.CA, protocols: list[str]) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    context.set_alpn_protocols(protocols)
    return context


def http2_get(port: int, context: ssl.SSLContext) -> tuple[int, bytes, str | None]:
    client = H2Client(port, tls=context)
    try:
        result = client.get("/over/tls")
        alpn = client.sock.selected_alpn_protocol()  # type: ignore[attr-defined]
        return result.status, bytes(result.body), alpn
    finally:
        client.close()


def http1_get(port: int, context: ssl.SSLContext) -> tuple[bytes, str | None]:
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    with context.wrap_socket(raw, server_hostname="localhost") as sock:
        sock.sendall(b"GET /plain HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        return data, sock.selected_alpn_protocol()


async def test_alpn_h2_speaks_http2(tls_server: int, ca: trustme.CA) -> None:
    status, body, alpn = await asyncio.to_thread(http2_get, tls_server, client_context(ca, ["h2"]))
    assert alpn == "h2"
    assert (status, body) == (200, b"HTTP/2 /over/tls")


async def test_alpn_http11_stays_http11(tls_server: int, ca: trustme.CA) -> None:
    data, alpn = await asyncio.to_thread(http1_get, tls_server, client_context(ca, ["http/1.1"]))
    assert alpn == "http/1.1"
    assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"HTTP/1.1 /plain")


def test_alpn_h2_on_uvloop(ca: trustme.CA) -> None:
    """The gateway's loop is uvloop: its TLS transport hands over to HTTP/2 the same way."""

    async def scenario() -> tuple[int, bytes, str | None]:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("localhost").configure_cert(context)
        context.set_alpn_protocols(["h2", "http/1.1"])
        state = ServerState(Answering(), ServerSettings(http2=Http2Settings()))
        server = await asyncio.get_running_loop().create_server(
            lambda: ClientConnection(state), "127.0.0.1", 0, ssl=context
        )
        port = server.sockets[0].getsockname()[1]
        try:
            return await asyncio.to_thread(http2_get, port, client_context(ca, ["h2"]))
        finally:
            server.close()

    status, body, alpn = uvloop.run(scenario())
    assert alpn == "h2" and (status, body) == (200, b"HTTP/2 /over/tls")
