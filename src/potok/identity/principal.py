"""Who is calling: what an authentication policy puts in `exchange.identity`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller. Immutable, so a cached one is safe to share between requests."""

    subject: str
    kind: Literal["user", "api_key", "client_certificate"]
    roles: frozenset[str] = frozenset()
    scopes: frozenset[str] = frozenset()
    org: str | None = None
    token_id: str | None = None  # jti of the access token, for revocation
    issued_at: float = 0.0
    expires_at: float | None = None
    issuer: str | None = None
    # The identity header lines sent upstream (`X-User-Id: ...\r\n...`), rendered once
    # per principal: a cached token adds them to the request head as they are.
    upstream_lines: bytes = b""
