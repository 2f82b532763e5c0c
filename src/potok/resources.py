"""Shared clients a worker creates once (stores, databases, buses) and closes at shutdown.

Policies and the own API get them through `BuildContext.resources`; each kind of
client is created on first use by whoever needs it and registers its own
`close` here, so the worker does not need to know every kind.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import structlog

log = structlog.get_logger("potok.resources")


class Resources:
    def __init__(self) -> None:
        self._shared: dict[str, Any] = {}
        self._closers: list[Callable[[], Awaitable[None]]] = []

    def get(self, key: str, factory: Callable[[], Any]) -> Any:
        """The shared object under `key`, created by `factory()` the first time."""
        if key not in self._shared:
            self._shared[key] = factory()
        return self._shared[key]

    def find(self, key: str) -> Any:
        """The shared object under `key`, or None if nobody created it."""
        return self._shared.get(key)

    def on_close(self, closer: Callable[[], Awaitable[None]]) -> None:
        self._closers.append(closer)

    async def close(self) -> None:
        """Close in reverse order of creation; one failure does not stop the others."""
        while self._closers:
            closer = self._closers.pop()
            try:
                await closer()
            except Exception as exc:
                log.warning("closing a shared resource failed", error=str(exc))
