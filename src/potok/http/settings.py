"""The HTTP server's limits and timeouts as plain numbers: built from the config at load
(runtime.py), read by the connections on every request (no pydantic on the hot path), and
by the policies that default to them (request_size)."""

from __future__ import annotations

from dataclasses import dataclass


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

    @property
    def max_head_total(self) -> int:
        # Raw bytes allowed while a head is incomplete: a single huge header value
        # is otherwise held whole by the parser before any callback sees it.
        return self.max_url_bytes + self.max_header_bytes + 4096
