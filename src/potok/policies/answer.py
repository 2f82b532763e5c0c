"""A policy answering a request itself with something other than an error (a CORS preflight)."""

from __future__ import annotations

from potok.errors import GatewayError


class EdgeAnswer(GatewayError):
    """Raised from a request hook: the pipeline stops and sends `status` with `headers`
    and no body, instead of a problem+json document."""

    def __init__(self, status: int, headers: tuple[tuple[bytes, bytes], ...]) -> None:
        super().__init__(None, headers=headers)
        self.status = status
