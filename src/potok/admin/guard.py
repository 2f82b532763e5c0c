"""Who may call the admin API: where from, on which port, with which credentials.

1. The client address must be in `admin.allow_from` (loopback by default), whatever it
   presents: 403 otherwise.
2. On the metrics listener with `admin.open_on_listener` (the default), that is enough:
   the port is private, like a local admin port.
3. Otherwise (the public port with `admin.public`, or the listener with
   `open_on_listener: false`) the call needs credentials that carry `admin.role`: a
   token-service access token (`Authorization: Bearer ...`) or an API key
   (`X-API-Key: pk_...` or `Authorization: Bearer pk_...`), checked against the
   database on every call, so a revoked or rotated-out key stops at once. None: 401;
   valid without the role: 403.
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from potok.identity.api_keys import ApiKeyStore, parse_key, secret_hash
from potok.identity.token_service import AuthFailure
from potok.routing.endpoints import ADMIN_LISTENER_ROUTE_NAME
from potok.upstream.forwarded import TrustedProxies

if TYPE_CHECKING:
    from fastapi import Request

    from potok.exchange import Exchange
    from potok.runtime import Runtime

API_KEY_HEADER = "x-api-key"


@dataclass(frozen=True, slots=True)
class Caller:
    """Who made an admin call (the audit's actor)."""

    actor: str  # a username's id, `key:<id>`, or `listener` (no credentials needed)
    ip: str
    via_listener: bool


class Refusal(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _cross_site(request: Request) -> str | None:
    """Why a state-changing call looks sent by another site's page, or None.

    A page on any site can make the operator's browser POST a form to the loopback admin
    port (a drain needs no body), and the listener needs no credentials. Browsers say
    where a request comes from (`Sec-Fetch-Site`, and `Origin` on a POST); scripts and
    `potok status` send neither, and the dashboard is same-origin.
    """
    if request.method in _SAFE_METHODS:
        return None
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return f"a {site} {request.method} is refused (sent by another site's page)"
    origin = request.headers.get("origin")
    if origin is not None:
        host = request.headers.get("host", "").lower()
        if origin == "null" or urlsplit(origin).netloc.lower() != host:
            return f"a {request.method} from origin {origin} is refused (not this host's)"
    return None


class AdminGuard:
    """Built per Runtime (the `admin:` block reloads with the rest)."""

    def __init__(self, runtime: Runtime) -> None:
        self.config = runtime.config.admin
        self.allowed = TrustedProxies(self.config.allow_from)
        self.identity = runtime.identity

    def screen(self, request: Request) -> str:
        """Steps every call under /api/v1/admin passes whatever its credentials (the cache and
        webhooks routers too): the client address in allow_from, not sent by another
        site's page. The client IP, or Refusal (403)."""
        exchange: Exchange | None = request.scope.get("state", {}).get("exchange")
        ip = exchange.client_ip if exchange is not None else ""
        if not self.allowed.contains(ip):
            raise Refusal(
                403, f"the admin API is not open to {ip or 'this client'} (admin.allow_from)"
            )
        forged = _cross_site(request)
        if forged is not None:
            raise Refusal(403, forged)
        return ip

    async def authorize(self, request: Request) -> Caller:
        """The caller, or Refusal (401, 403)."""
        ip = self.screen(request)
        exchange: Exchange | None = request.scope.get("state", {}).get("exchange")
        route = exchange.route if exchange is not None else None
        via_listener = route is not None and route.name == ADMIN_LISTENER_ROUTE_NAME
        if via_listener and self.config.open_on_listener:
            return Caller("listener", ip, True)
        actor = await self._credentials(request)
        return Caller(actor, ip, via_listener)

    async def _credentials(self, request: Request) -> str:
        authorization = request.headers.get("authorization", "")
        # An X-API-Key that is not a Potok key (another service's, a realtime publishing
        # key) is not an admin credential: the bearer token decides then.
        presented = request.headers.get(API_KEY_HEADER)
        if presented is not None and parse_key(presented) is None:
            presented = None
        if presented is None and authorization[:10].lower() == "bearer pk_":
            presented = authorization[7:].strip()
        if presented is not None:
            return await self._api_key(presented)
        tokens = self.identity.token_service
        if not authorization or tokens is None:
            raise Refusal(401, "admin credentials are required (a bearer token or an API key)")
        try:
            principal = tokens.authenticate(authorization)
        except AuthFailure as exc:
            raise Refusal(401, exc.message) from None
        if self.config.role not in principal.roles:
            raise Refusal(403, f"the admin API needs the role {self.config.role!r}")
        return principal.subject

    async def _api_key(self, presented: str) -> str:
        parsed = parse_key(presented)
        database = self.identity.database
        if parsed is None or database is None:
            raise Refusal(401, "invalid API key")
        key_id, secret = parsed
        key = await ApiKeyStore(database).get(key_id)
        if (
            key is None
            or not hmac.compare_digest(secret_hash(secret), key.secret_hash)
            or not key.usable_at(time.time())
        ):
            raise Refusal(401, "invalid API key")
        if self.config.role not in key.roles:
            raise Refusal(403, f"the admin API needs the role {self.config.role!r}")
        return f"key:{key.id}"
