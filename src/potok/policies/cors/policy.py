"""The `cors` policy: preflights answered at the edge, CORS headers on every answer.

The gateway owns CORS on a route with this policy: Access-Control-* headers from
the upstream are replaced, so a service that answers `*` cannot widen the
allow-list. Requests from origins not on the list are still proxied (CORS is the
browser's check; the answer just carries no permission), and counted.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from potok.errors import GatewayError
from potok.observability.metrics import MetricsRegistry
from potok.policies.answer import EdgeAnswer
from potok.policies.base import BuildContext, Headers, Policy, Stage
from potok.policies.cors.config import CorsConfig

if TYPE_CHECKING:
    from potok.exchange import Exchange

_CONTEXT_KEY = "cors_origin"
_VARY_ORIGIN = (b"Vary", b"Origin")
_PREFLIGHT_VARY = (
    b"Vary",
    b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
)
_SAFELISTED_METHODS = frozenset({"GET", "HEAD", "POST"})
_OWNED = b"access-control-"


class CorsForbidden(GatewayError):
    status = 403
    title = "CORS request not allowed"


class OriginMatcher:
    """Exact origins in a set, `https://*.example.com` patterns as one regex; results
    memoised per origin (bounded: browsers send few distinct origins)."""

    _CACHE_LIMIT = 1024

    def __init__(self, origins: tuple[str, ...]) -> None:
        self.any = "*" in origins
        self.exact = frozenset(o for o in origins if "*" not in o)
        patterns = [_pattern(o) for o in origins if "*" in o and o != "*"]
        self.pattern = re.compile("|".join(patterns)) if patterns else None
        self._cache: dict[str, bool] = {}

    def allows(self, origin: str) -> bool:
        if self.any:
            return True
        result = self._cache.get(origin)
        if result is None:
            lower = origin.lower()
            result = lower in self.exact or (
                self.pattern is not None and self.pattern.fullmatch(lower) is not None
            )
            if len(self._cache) >= self._CACHE_LIMIT:
                self._cache.clear()
            self._cache[origin] = result
        return result


def _pattern(origin: str) -> str:
    scheme, rest = origin.split("://", 1)
    host_port = rest[2:]  # after "*."
    return re.escape(scheme + "://") + r"(?:[a-z0-9-]+\.)+" + re.escape(host_port)


class Cors:
    def __init__(self, config: CorsConfig, route: str, registry: MetricsRegistry) -> None:
        self.origins = OriginMatcher(config.allow_origins)
        self.credentials = config.allow_credentials
        self.wildcard_answer = self.origins.any and not config.allow_credentials
        self.methods = frozenset(config.allow_methods) | _SAFELISTED_METHODS
        self.any_method = "*" in config.allow_methods
        self.headers = frozenset(h.lower() for h in config.allow_headers)
        self.any_header = "*" in config.allow_headers
        self.allow_methods_value = ", ".join(config.allow_methods).encode()
        self.allow_headers_value = ", ".join(config.allow_headers).encode()
        self.expose_value = ", ".join(config.expose_headers).encode()
        self.max_age = int(config.max_age)
        self.rejections = registry.counter(
            "cors_rejections_total",
            "Cross-origin requests refused (preflight) or answered without permission.",
            ("route", "reason"),
        )
        self.labels = {
            reason: (route, reason) for reason in ("origin", "method", "headers", "request_origin")
        }

    def allow_origin_value(self, origin: bytes) -> bytes:
        return b"*" if self.wildcard_answer else origin

    def on_request(self, exchange: Exchange) -> None:
        origin = exchange.header(b"origin")  # one scan on every request of the route
        if origin is None:
            return
        allowed = self.origins.allows(origin.decode("latin-1"))
        if exchange.method == b"OPTIONS":
            requested = exchange.header(b"access-control-request-method")
            if requested is not None:
                self.preflight(exchange, origin, allowed, requested)
        if not allowed:
            self.rejections.inc(self.labels["request_origin"])
            return
        context = exchange.context
        if context is None:
            exchange.context = {_CONTEXT_KEY: origin}
        else:
            context[_CONTEXT_KEY] = origin

    def preflight(self, exchange: Exchange, origin: bytes, allowed: bool, method: bytes) -> None:
        """Always raises: the answer to a preflight, allowed or not."""
        if not allowed:
            self.refuse("origin", f"origin {origin.decode('latin-1')!r} is not allowed")
        name = method.decode("latin-1").strip()
        if not self.any_method and name not in self.methods:
            self.refuse("method", f"method {name!r} is not allowed")
        requested = exchange.header(b"access-control-request-headers")
        allow_headers = self.allow_headers_value
        if requested is not None and requested.strip():
            if self.any_header:
                allow_headers = requested
            else:
                for header in requested.decode("latin-1").split(","):
                    if header.strip().lower() not in self.headers:
                        self.refuse("headers", f"header {header.strip()!r} is not allowed")
        answer = [
            (b"Access-Control-Allow-Origin", self.allow_origin_value(origin)),
            (b"Access-Control-Allow-Methods", self.allow_methods_value),
            (b"Access-Control-Allow-Headers", allow_headers),
            _PREFLIGHT_VARY,
        ]
        if self.credentials:
            answer.append((b"Access-Control-Allow-Credentials", b"true"))
        if self.max_age:
            answer.append((b"Access-Control-Max-Age", b"%d" % self.max_age))
        raise EdgeAnswer(204, tuple(answer))

    def refuse(self, reason: str, detail: str) -> None:
        self.rejections.inc(self.labels[reason])
        raise CorsForbidden(f"CORS preflight refused: {detail}")

    def on_response(self, exchange: Exchange, headers: Headers) -> Headers:
        context = exchange.context
        origin = context.get(_CONTEXT_KEY) if context is not None else None
        if any(name[:15].lower() == _OWNED for name, _ in headers):
            headers = [pair for pair in headers if pair[0][:15].lower() != _OWNED]
        headers.append(_VARY_ORIGIN)
        if origin is not None:
            headers.append((b"Access-Control-Allow-Origin", self.allow_origin_value(origin)))
            if self.credentials:
                headers.append((b"Access-Control-Allow-Credentials", b"true"))
            if self.expose_value:
                headers.append((b"Access-Control-Expose-Headers", self.expose_value))
        return headers


def build(config: CorsConfig | None, context: BuildContext) -> Policy | None:
    if config is None:
        return None
    registry = context.metrics if context.metrics is not None else MetricsRegistry()
    cors = Cors(config, context.route_name, registry)
    return Policy(
        name="cors", stage=Stage.EDGE, on_request=cors.on_request, on_response=cors.on_response
    )
