"""A target: one instance of a service, with its pool and live counters."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from potok.upstream.pool import ConnectionPool

if TYPE_CHECKING:
    from potok.upstream.health import TargetHealth


class Target:
    """Where requests go: host, port, the Host header to send, and the keep-alive pool."""

    __slots__ = (
        "drained",
        "failing",
        "health",
        "host",
        "host_header",
        "inflight",
        "name",
        "pool",
        "port",
        "weight",
    )

    def __init__(self, url: str, weight: int, pool: ConnectionPool) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.name = f"{self.host}:{self.port}"
        self.host_header = (self.host if self.port == 80 else self.name).encode()
        if ":" in self.host:  # IPv6 literal
            self.name = f"[{self.host}]:{self.port}"
            self.host_header = self.name.encode()
        self.weight = weight
        self.pool = pool
        self.inflight = 0
        # Whether its last judged attempt failed: the breaker asks, before blaming the
        # whole service for a failed call, whether some other target is serving well.
        self.failing = False
        self.health: TargetHealth | None = None  # set by the service when health is tracked
        # Taken out of the balancer by an operator (admin API): no new requests, the ones
        # in flight finish. Read only off the hot path (the balancer never holds it).
        self.drained = False

    def in_rotation(self) -> int:
        """1 while it gets traffic (not ejected, checks passing): read when scraped, since
        an ejection ends with the clock alone."""
        health = self.health
        return 1 if health is None or health.available() else 0

    def describe(self) -> dict[str, object]:
        """Its state for /api/v1/health and the admin API (JSON-ready)."""
        health = self.health
        return {
            "target": self.name,
            "healthy": bool(self.in_rotation()),
            "drained": self.drained,
            "ejections": health.ejections if health is not None else 0,
            "in_flight": self.inflight,
            "idle_connections": len(self.pool),
        }

    def __repr__(self) -> str:
        return f"Target({self.name})"
