"""The HTTP server's limits and timeouts as plain numbers: built from the config at load
(runtime.py), read by the connections on every request (no pydantic on the hot path), and
by the policies that default to them (request_size)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Http2Settings:
    """`server.http2` as plain numbers, read by each HTTP/2 connection when it starts."""

    max_concurrent_streams: int = 100
    max_header_list_size: int = 32_768
    max_frame_size: int = 16_384
    initial_window_size: int = 65_535
    header_table_size: int = 4096
    stall_timeout: float = 30.0
    flood_window: float = 10.0
    max_resets: int = 200
    max_settings: int = 100
    max_pings: int = 100
    max_empty_data: int = 100


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """Plain numbers read by the connections (no pydantic on the hot path)."""

    header_read_timeout: float = 10.0
    keepalive_timeout: float = 75.0
    max_url_bytes: int = 8192
    max_header_bytes: int = 16384
    max_headers: int = 100
    max_body_bytes: int = 5 * 1024 * 1024
    # Request headers only the gateway sets (the identity headers), lower-case: dropped
    # while parsing, so no route ever sees a client's copy.
    dropped_headers: frozenset[bytes] = frozenset()
    # HTTP/2 to clients; None when `server.http2.enabled` is off.
    http2: Http2Settings | None = None

    @property
    def max_head_total(self) -> int:
        # Raw bytes allowed while a head is incomplete: a single huge header value
        # is otherwise held whole by the parser before any callback sees it.
        return self.max_url_bytes + self.max_header_bytes + 4096
