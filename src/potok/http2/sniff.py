"""Which protocol a client connection speaks, decided once, at its start.

On a TLS connection the handshake's ALPN says it ("h2"). On a plain one a client with
prior knowledge of HTTP/2 opens with the connection preface (RFC 9113 3.4); an HTTP/1.1
request line cannot begin like it. `PrefaceSniffer` sits in the HTTP/1.1 connection's
tunnel slot for its first bytes only — the branch `data_received` already takes for a
tunnel — so an HTTP/1.1 connection pays no check per read: the first bytes that cannot
be the preface go back to the HTTP/1.1 parser and the slot is empty from then on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from potok.http2.connection import Http2Connection

if TYPE_CHECKING:
    import asyncio

    from potok.http.settings import Http2Settings
    from potok.server.state import ServerState
    from potok.tls.session import TlsInfo

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class Switchable(Protocol):
    """What the sniffer needs of the HTTP/1.1 connection (server/connection.py)."""

    state: ServerState
    transport: asyncio.Transport
    peer_ip: str
    tls: TlsInfo | None

    def not_http2(self, data: bytes) -> None:
        """Parse `data` as HTTP/1.1, and every later read."""
        ...

    def hand_over(self, protocol: asyncio.Protocol) -> None:
        """Give the transport to `protocol` for good."""
        ...

    def close_if_idle(self) -> None: ...


class PrefaceSniffer:
    """The first bytes of a plain connection: the HTTP/2 preface, or HTTP/1.1."""

    __slots__ = ("_client", "_seen", "_settings")

    def __init__(self, client: Switchable, settings: Http2Settings) -> None:
        self._client = client
        self._settings = settings
        self._seen = b""

    def write(self, data: bytes) -> None:
        seen = self._seen + data if self._seen else data
        size = min(len(seen), len(PREFACE))
        if seen[:size] != PREFACE[:size]:
            self._client.not_http2(seen)
        elif size < len(PREFACE):
            self._seen = seen  # the preface so far: wait for the rest
        else:
            self.switch(seen)

    def switch(self, data: bytes) -> None:
        """From now on the connection is HTTP/2; `data` its first bytes (preface included)."""
        client = self._client
        connection = Http2Connection(client.state, self._settings, client.peer_ip, client.tls)
        transport = client.transport
        client.hand_over(connection)
        connection.start(transport, data)

    def write_eof(self) -> None:
        self._client.close_if_idle()  # closed before saying anything

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def alpn_chose_h2(transport: asyncio.BaseTransport) -> bool:
    """Whether the TLS handshake agreed on HTTP/2 (False on a plain connection)."""
    ssl_object = transport.get_extra_info("ssl_object")
    return ssl_object is not None and ssl_object.selected_alpn_protocol() == "h2"
