"""The whole configuration file as pydantic models.

Every field has a description: docs/configuration.md is generated from them
(`potok config-docs`), so the reference cannot drift from the code.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, PrivateAttr, ValidationInfo, field_validator, model_validator

from potok.acme.config import AcmeConfig
from potok.admin.config import AdminConfig
from potok.config.base import ConfigModel
from potok.config.discovery import DnsDiscoveryConfig
from potok.config.listeners import ALL_SERVES, ListenerConfig
from potok.config.paths import ConfigPath
from potok.config.redis import RedisConfig
from potok.config.resilience import (
    BulkheadConfig,
    CircuitBreakerConfig,
    FallbackConfig,
    HealthCheckConfig,
    PassiveEjectionConfig,
    RetryConfig,
)
from potok.config.units import ByteSize, Cidr, Duration, OptionalDuration
from potok.config.upstream_tls import UpstreamTlsConfig, UpstreamTlsContext
from potok.http2.config import Http2Config
from potok.identity.config import AuthConfig, DatabaseConfig, identity_problems
from potok.observability.tracing.config import TracingConfig
from potok.policies.cache.bus_config import CacheSectionConfig, cache_problems
from potok.policies.checks import policy_problems
from potok.policies.config import ApiPoliciesConfig, PoliciesConfig
from potok.realtime.config import RealtimeConfig, realtime_problems
from potok.routing.pattern import pattern_params, validate_pattern, validate_rewrite
from potok.traffic.config import (
    AggregateConfig,
    CanaryRule,
    MirrorConfig,
    Sticky,
    WeightedService,
)
from potok.webhooks.config import WebhooksConfig, webhooks_problems

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_HTTP_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)


class ServerTimeouts(ConfigModel):
    """Timeouts on the client side of the gateway."""

    header_read: Duration = Field(
        10.0, description="Time a client has to send a complete request head (slow-loris guard)."
    )
    keepalive: Duration = Field(
        75.0, description="An idle keep-alive client connection is closed after this long."
    )
    shutdown_grace: Duration = Field(
        30.0, description="On SIGTERM, in-flight requests get this long to finish before exit."
    )
    shutdown_delay: OptionalDuration = Field(
        0.0,
        description=(
            "On SIGTERM, keep accepting for this long while readiness says 503, so a load "
            "balancer can stop sending traffic before the listener closes."
        ),
    )


class ServerLimits(ConfigModel):
    """Sizes the server refuses to exceed."""

    max_header_bytes: ByteSize = Field(
        16384,
        description="Largest request head (request line excluded) accepted; bigger gets 431.",
    )
    max_url_bytes: ByteSize = Field(8192, description="Longest request target; longer gets 414.")
    max_headers: int = Field(
        100, gt=0, description="Most header fields in one request; more gets 431."
    )
    max_body_bytes: ByteSize = Field(
        5 * 1024 * 1024,
        description="Default request body limit (413); a route's request_size policy overrides it.",
    )


class ServerOverload(ConfigModel):
    """Load shedding per worker: past these bounds a request gets 503 with Retry-After at
    once instead of waiting; health probes and metrics are never shed."""

    max_in_flight: int = Field(
        4096,
        ge=0,
        description=(
            "Requests one worker answers at once (WebSocket tunnels excluded); more are shed. "
            "0: no bound."
        ),
    )
    max_loop_lag: OptionalDuration = Field(
        0.5,
        description=(
            "While the worker's event loop runs this late (two samples in a row, 50 ms apart: "
            "it is saturated), new requests are shed. 0: no bound."
        ),
    )
    retry_after: Duration = Field(
        1.0, description="Retry-After sent with a shed request's 503 (rounded up to seconds)."
    )


class AccessLogConfig(ConfigModel):
    """One JSON line per request, written off the event loop in batches."""

    enabled: bool = Field(True, description="Write an access line per request.")
    path: ConfigPath = Field(
        "-",
        description="File to append to (relative to the config file); '-' means standard output.",
    )


class LoggingConfig(ConfigModel):
    """Application logs (structlog); the access log is configured separately."""

    level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Lowest level written."
    )
    format: Literal["json", "console"] = Field(
        "json", description="'json' for machines, 'console' for people at a terminal."
    )
    access_log: AccessLogConfig = Field(
        default_factory=AccessLogConfig, description="The access log."
    )


class MetricsConfig(ConfigModel):
    """Prometheus metrics at /api/v1/metrics."""

    enabled: bool = Field(True, description="Collect and expose metrics.")
    listen: str | None = Field(
        None,
        description=(
            "host:port of a listener of their own for metrics and health probes, e.g. "
            "127.0.0.1:9100 ([::1]:9100 for IPv6). When set, /api/v1/metrics is served only "
            "there; /api/v1/health* on both ports (a load balancer probes the port it sends "
            "traffic to)."
        ),
    )

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str | None) -> str | None:
        if value is not None:
            listen_address(value)
        return value

    def address(self) -> tuple[str, int] | None:
        """The separate listener's (host, port), if one is configured."""
        return listen_address(self.listen) if self.listen is not None else None


def listen_address(text: str) -> tuple[str, int]:
    """'host:port' or '[v6]:port' as (host, port); ValueError naming what is wrong."""
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{text!r}: give host:port, e.g. 127.0.0.1:9100")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{text!r}: write an IPv6 address in brackets, e.g. [::1]:9100")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{text!r}: the port must be 1-65535")
    return host, int(port)


class ApiConfig(ConfigModel):
    """The gateway's own API under /api: its own policies (the global ones never apply)."""

    policies: ApiPoliciesConfig = Field(
        default_factory=ApiPoliciesConfig,
        description=(
            "Policies of the own API only (login limits, CORS for a front end); probes and "
            "metrics take only cors and security_headers from it."
        ),
    )


class ReloadConfig(ConfigModel):
    """Config hot reload: SIGHUP always reloads; this adds watching the file."""

    watch: bool = Field(
        False,
        description=(
            "Reload when the config file changes (polled; a Kubernetes ConfigMap's symlink swap "
            "counts as a change)."
        ),
    )
    interval: Duration = Field(2.0, description="How often the file is polled when watched.")


class ServerConfig(ConfigModel):
    """Where and how the gateway listens."""

    host: str = Field(
        "0.0.0.0", description="Address to bind (shorthand for one plain http listener)."
    )
    port: int = Field(
        8080,
        ge=0,
        le=65535,
        description="Port to bind (0 picks a free one); with host, the one-listener shorthand.",
    )
    listeners: tuple[ListenerConfig, ...] = Field(
        (),
        description=(
            "Several listeners (http and https, each with what it serves); replaces host and "
            "port, which must then be left out."
        ),
    )
    workers: int = Field(
        1, ge=1, le=256, description="Worker processes sharing the port via SO_REUSEPORT."
    )
    trusted_proxies: tuple[Cidr, ...] = Field(
        (),
        description=(
            "CIDRs of proxies in front of the gateway whose X-Forwarded-* headers are believed. "
            "Requests from anywhere else have those headers replaced."
        ),
    )
    timeouts: ServerTimeouts = Field(
        default_factory=ServerTimeouts, description="Client-side timeouts."
    )
    limits: ServerLimits = Field(default_factory=ServerLimits, description="Request size limits.")
    backlog: int = Field(
        2048,
        ge=1,
        le=65535,
        description=(
            "Listen backlog per worker: connections the kernel queues before the worker accepts "
            "them. Capped by net.core.somaxconn (a warning says so)."
        ),
    )
    overload: ServerOverload = Field(
        default_factory=ServerOverload, description="Load shedding under overload."
    )
    http2: Http2Config = Field(
        default_factory=Http2Config, description="HTTP/2 to clients (h2c, and h2 on TLS)."
    )


class TargetConfig(ConfigModel):
    """One upstream instance of a service."""

    url: str = Field(
        description=(
            "Base URL, e.g. http://127.0.0.1:3000 or https://orders.internal (path must be "
            "empty); https:// targets are verified as the service's `tls` says."
        )
    )
    weight: int = Field(
        1, ge=1, le=1000, description="Share of traffic under the weighted balancer."
    )

    @property
    def https(self) -> bool:
        return self.url[:6].lower() == "https:"

    @property
    def port(self) -> int:
        """The URL's port, or the scheme's default (80, 443)."""
        return urlsplit(self.url).port or (443 if self.https else 80)

    @property
    def by_name(self) -> bool:
        """Whether the host is a DNS name rather than an IP address."""
        host = urlsplit(self.url).hostname or ""
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return True
        return False

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"{value!r}: a target is http:// or https://")
        if not parts.hostname:
            raise ValueError(f"{value!r}: no host")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(f"{value!r}: a target is scheme://host:port only; put paths in routes")
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError as exc:
            raise ValueError(f"{value!r}: bad port") from exc
        return value


class ApiKeyConfig(ConfigModel):
    """A key the gateway adds to every request it sends to the service."""

    header: str = Field("X-API-Key", description="Header name the service reads the key from.")
    value: str = Field(
        min_length=1, description="The key; use ${VAR} to read it from the environment."
    )


class UpstreamTimeouts(ConfigModel):
    """Timeouts towards a service."""

    connect: Duration = Field(
        5.0,
        description=(
            "Opening a connection to a target: the TCP connect and, for https:// targets, "
            "the TLS handshake together."
        ),
    )
    response: Duration = Field(
        10.0, description="From the request being sent until the response head arrives (per try)."
    )


class PoolConfig(ConfigModel):
    """Keep-alive connections kept open to each target."""

    max_idle: int = Field(128, ge=0, description="Idle connections kept per target.")
    idle_timeout: Duration = Field(
        60.0, description="An idle pooled connection older than this is closed."
    )


class ServiceConfig(ConfigModel):
    """A backend service: where it runs and how to talk to it."""

    targets: tuple[TargetConfig, ...] = Field(
        description="Instances of the service; a bare URL string is accepted for each.",
    )
    balancer: Literal["round_robin", "least_requests", "weighted"] = Field(
        "round_robin", description="How a target is chosen for each request."
    )
    api_key: ApiKeyConfig | None = Field(
        None, description="Key injected into every upstream request."
    )
    timeouts: UpstreamTimeouts = Field(
        default_factory=UpstreamTimeouts, description="Upstream timeouts."
    )
    pool: PoolConfig = Field(default_factory=PoolConfig, description="Keep-alive pool per target.")
    retry: RetryConfig = Field(
        default_factory=RetryConfig,
        description="Retries of safe requests (attempts: 1 turns them off).",
    )
    circuit_breaker: CircuitBreakerConfig | None = Field(
        default_factory=CircuitBreakerConfig,
        description="The service's circuit breaker (null turns it off).",
    )
    passive_ejection: PassiveEjectionConfig | None = Field(
        default_factory=PassiveEjectionConfig,
        description="Taking a target that fails in a row out of rotation (null turns it off).",
    )
    health_check: HealthCheckConfig | None = Field(
        None, description="Active health checks of every target (off unless given)."
    )
    bulkhead: BulkheadConfig | None = Field(
        None, description="Cap on concurrent upstream requests to this service (off unless given)."
    )
    dns: DnsDiscoveryConfig | None = Field(
        None,
        description=(
            "Re-resolve targets given by a host name while running; every A/AAAA record "
            "becomes a target (a Kubernetes headless Service is followed without a reload). "
            "Off unless given: a host name is then resolved at each new connection."
        ),
    )
    tls: UpstreamTlsConfig | None = Field(
        None,
        description=(
            "TLS to the https:// targets: trusted CAs, the name checked, a client "
            "certificate. Without it they are verified against the system's CAs."
        ),
    )
    # The https:// targets' TLS context: `tls`'s, or the system-CA default (built once).
    _tls_context: UpstreamTlsContext | None = PrivateAttr(None)

    @field_validator("targets", mode="before")
    @classmethod
    def _bare_urls(cls, value: object) -> object:
        if isinstance(value, list | tuple):
            if not value:
                raise ValueError("a service needs at least one target")
            return tuple({"url": item} if isinstance(item, str) else item for item in value)
        return value

    @model_validator(mode="after")
    def _dns_needs_a_name(self) -> ServiceConfig:
        if self.dns is not None and not any(t.by_name for t in self.targets):
            raise ValueError(
                "dns: no target is given by a host name, so there is nothing to resolve"
            )
        return self

    @model_validator(mode="after")
    def _tls_for_https(self) -> ServiceConfig:
        if not any(t.https for t in self.targets):
            if self.tls is not None:
                raise ValueError("tls: no target is https://, so it would never be used")
            return self
        self._tls_context = (self.tls if self.tls is not None else UpstreamTlsConfig()).context
        return self

    @property
    def tls_context(self) -> UpstreamTlsContext | None:
        """The TLS context of the https:// targets; None when every target is http://."""
        return self._tls_context


class MatchConfig(ConfigModel):
    """What requests a route takes. Exactly one of `path` (exact) or `prefix`."""

    path: str | None = Field(
        None, description="Exact path; `{name}` matches one segment, e.g. /orders/{id}."
    )
    prefix: str | None = Field(
        None,
        description="Path prefix on segment boundaries: /api/macro takes /api/macro, /api/macro/x.",
    )
    methods: tuple[str, ...] = Field((), description="Allowed methods; empty means any.")
    host: str | None = Field(
        None,
        description=(
            "Host header to match: exact (api.example.com) or wildcard (*.example.com: exactly "
            "one label, as TLS wildcards - a.example.com, not a.b.example.com or example.com)."
        ),
    )

    @model_validator(mode="after")
    def _one_of(self) -> MatchConfig:
        if (self.path is None) == (self.prefix is None):
            raise ValueError("give exactly one of 'path' (exact) or 'prefix'")
        return self

    @field_validator("path", "prefix")
    @classmethod
    def _pattern(cls, value: str | None) -> str | None:
        if value is None:
            return value
        validate_pattern(value)
        return value

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        upper = tuple(m.upper() for m in value)
        for method in upper:
            if method not in _HTTP_METHODS:
                raise ValueError(f"unknown HTTP method {method!r}")
        if len(set(upper)) != len(upper):
            raise ValueError("a method is listed twice")
        return upper

    @field_validator("host")
    @classmethod
    def _host(cls, value: str | None) -> str | None:
        if value is None:
            return value
        host = value.lower()
        bare = host[2:] if host.startswith("*.") else host
        if not bare or "*" in bare or "/" in bare:
            raise ValueError(f"{value!r}: use an exact host or '*.example.com'")
        return host


class RouteTimeouts(ConfigModel):
    """Per-route timeouts."""

    request: Duration = Field(
        30.0, description="Whole request, from its head arriving to the response end."
    )
    tunnel_idle: OptionalDuration = Field(
        300.0,
        description=(
            "An upgraded (WebSocket) pass-through connection with no byte either way for "
            "this long is closed; 0 turns it off."
        ),
    )


class RouteConfig(ConfigModel):
    """A rule sending matching requests to a service."""

    name: str | None = Field(
        None, description="Name used in logs and metrics; defaults to the service name plus index."
    )
    match: MatchConfig = Field(description="Which requests this route takes.")
    service: str | None = Field(
        None,
        description=(
            "Name of the service (under `services`) that serves the route; a weighted route "
            "gives `services` instead, an aggregated one `aggregate`."
        ),
    )
    services: tuple[WeightedService, ...] = Field(
        (),
        description=(
            "Variants of a weighted (canary) route, e.g. [{name: orders-v1, weight: 90}, "
            "{name: orders-v2, weight: 10}]: each request goes to one, by the `canary` rules "
            "first, then by weight (see docs/traffic.md)."
        ),
    )
    canary: tuple[CanaryRule, ...] = Field(
        (),
        description=(
            "Rules that pick a variant before the weights (a header, cookie or claim value); "
            "the first that matches wins."
        ),
    )
    mirror: MirrorConfig | None = Field(
        None,
        description=(
            "Copy a share of the requests to a shadow service; its answers are discarded "
            "(see docs/traffic.md)."
        ),
    )
    aggregate: AggregateConfig | None = Field(
        None,
        description=(
            "Answer from several upstream calls made in parallel, composed into one JSON "
            "object (back end for front end; GET and HEAD only); instead of `service` or "
            "`services` (see docs/traffic.md)."
        ),
    )
    sticky: Sticky = Field(
        "none",
        description=(
            "How the weights pick: 'none' at random per request; 'user' by a hash of the "
            "authenticated user id, so a user stays on one variant across requests and "
            "instances (anonymous requests: at random); 'client_ip' by a hash of the client "
            "address."
        ),
    )
    rewrite: str | None = Field(
        None,
        description=(
            "Replaces the matched path (the whole path for `path`, the prefix for `prefix`) with "
            "this template; `{name}` takes a parameter. The rest of the path and the query "
            "are kept."
        ),
    )
    strip_prefix: bool = Field(False, description="Drop the matched prefix before forwarding.")
    grpc: bool = Field(
        False,
        description=(
            "A gRPC route: calls go to the service over HTTP/2 (h2c to http:// targets, TLS "
            "with ALPN h2 to https:// ones), trailers are relayed, the gateway's own errors "
            "are answered as gRPC statuses and `grpc-timeout` bounds the call (docs/grpc.md). "
            "Clients must speak HTTP/2; the service serves gRPC routes only."
        ),
    )
    preserve_host: bool = Field(
        False, description="Send the client's Host header upstream instead of the target's."
    )
    escaped_slashes: Literal["reject", "keep", "unescape_and_forward", "unescape_and_redirect"] = (
        Field(
            "reject",
            description=(
                "A path with an encoded '/' or '\\' (%2F, %5C), which many servers decode and "
                "then split on: 'reject' answers 400; 'keep' forwards it as opaque data (only for "
                "upstreams that never decode it); 'unescape_and_forward' decodes both to '/', "
                "resolves the dot segments they hid and routes the result again; "
                "'unescape_and_redirect' answers 307 to that path (as Envoy's "
                "path_with_escaped_slashes_action)."
            ),
        )
    )
    timeouts: RouteTimeouts = Field(default_factory=RouteTimeouts, description="Route timeouts.")
    retry: RetryConfig | None = Field(
        None,
        description="Retry rules for this route, replacing the service's (its budget is shared).",
    )
    fallback: FallbackConfig | None = Field(
        None, description="Answer given while the service's breaker is open, instead of 503."
    )
    policies: PoliciesConfig = Field(
        default_factory=PoliciesConfig,
        description="Policies for this route; each one given replaces the global one of that name.",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and not _NAME.match(value):
            raise ValueError("letters, digits, '_', '-' and '.', at most 64, starting alphanumeric")
        return value

    @model_validator(mode="after")
    def _mirror_apart(self) -> RouteConfig:
        if self.mirror is not None and self.mirror.service in self.service_names:
            raise ValueError(
                f"mirror.service: {self.mirror.service!r} serves the route itself; a shadow "
                "must be another service"
            )
        return self

    @model_validator(mode="after")
    def _grpc_apart(self) -> RouteConfig:
        if self.grpc and self.mirror is not None:
            raise ValueError("mirror: a gRPC route cannot be mirrored (shadows speak HTTP/1.1)")
        if self.grpc and self.fallback is not None:
            raise ValueError("fallback: a gRPC route answers UNAVAILABLE while the breaker is open")
        return self

    @model_validator(mode="after")
    def _variants(self) -> RouteConfig:
        if self.aggregate is not None:
            return self._aggregated()
        if (self.service is None) == (not self.services):
            raise ValueError(
                "give `service`, or `services` for a weighted route (not both)"
                if self.service is not None
                else "give `service` (or `services` for a weighted route)"
            )
        names = [variant.name for variant in self.services]
        if len(set(names)) != len(names):
            raise ValueError("services: a service is listed twice")
        if self.services and not any(variant.weight for variant in self.services):
            raise ValueError("services: at least one weight must be above 0")
        if not self.services and (self.canary or self.sticky != "none"):
            raise ValueError("canary and sticky need a weighted route (`services`)")
        for index, rule in enumerate(self.canary):
            if rule.service not in names:
                raise ValueError(
                    f"canary[{index}].service: {rule.service!r} is not one of the route's "
                    f"services ({', '.join(names)})"
                )
        return self

    def _aggregated(self) -> RouteConfig:
        """An aggregated route answers by itself: nothing that picks, rewrites or copies
        one upstream request applies to it."""
        assert self.aggregate is not None
        given = [
            name
            for name, value in (
                ("service", self.service is not None),
                ("services", bool(self.services)),
                ("mirror", self.mirror is not None),
                ("canary", bool(self.canary)),
                ("sticky", self.sticky != "none"),
                ("rewrite", self.rewrite is not None),
                ("strip_prefix", self.strip_prefix),
                ("fallback", self.fallback is not None),
                ("preserve_host", self.preserve_host),
                ("grpc", self.grpc),  # the calls are HTTP/1.1 JSON requests
            )
            if value
        ]
        if given:
            raise ValueError(f"aggregate: not with {', '.join(given)} (the calls name theirs)")
        # OPTIONS: a cors policy answers browsers' preflights before the calls.
        others = sorted(set(self.match.methods) - {"GET", "HEAD", "OPTIONS"})
        if others:
            raise ValueError(
                f"aggregate: answers GET and HEAD only; match.methods also has {', '.join(others)}"
            )
        pattern = self.match.path or self.match.prefix or "/"
        for index, call in enumerate(self.aggregate.calls):
            try:
                validate_pattern(call.path)
            except ValueError as exc:
                raise ValueError(f"aggregate.calls[{index}].path: {exc}") from None
            missing = pattern_params(call.path) - pattern_params(pattern)
            if missing:
                raise ValueError(
                    f"aggregate.calls[{index}].path: uses {', '.join(sorted(missing))}, which "
                    "the match pattern does not define"
                )
        return self

    @property
    def service_names(self) -> tuple[str, ...]:
        """Every service the route may send to."""
        if self.aggregate is not None:
            return tuple(dict.fromkeys(call.service for call in self.aggregate.calls))
        return (self.service,) if self.service is not None else tuple(s.name for s in self.services)

    @property
    def primary_service(self) -> str:
        """The route's service, or its first variant or call (default names, docs)."""
        if self.aggregate is not None:
            return self.aggregate.calls[0].service
        return self.service if self.service is not None else self.services[0].name

    @field_validator("rewrite")
    @classmethod
    def _rewrite(cls, value: str | None, info: ValidationInfo) -> str | None:
        match = info.data.get("match")
        if value is not None and isinstance(match, MatchConfig):
            validate_rewrite(value, match.path or match.prefix or "")
        return value

    @field_validator("strip_prefix")
    @classmethod
    def _strip_prefix(cls, value: bool, info: ValidationInfo) -> bool:
        if value and info.data.get("rewrite") is not None:
            raise ValueError("give 'rewrite' or 'strip_prefix', not both")
        match = info.data.get("match")
        if value and isinstance(match, MatchConfig) and match.prefix is None:
            raise ValueError("strip_prefix needs a prefix match")
        return value


class GatewayConfig(ConfigModel):
    """The whole gateway: server, logging, metrics, services and routes."""

    server: ServerConfig = Field(default_factory=ServerConfig, description="Listener settings.")
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="Logs.")
    metrics: MetricsConfig = Field(default_factory=MetricsConfig, description="Prometheus metrics.")
    tracing: TracingConfig = Field(
        default_factory=TracingConfig, description="OpenTelemetry tracing (OTLP/HTTP export)."
    )
    services: dict[str, ServiceConfig] = Field(
        default_factory=dict, description="Backend services by name."
    )
    routes: tuple[RouteConfig, ...] = Field((), description="Routes; the most specific match wins.")
    policies: PoliciesConfig = Field(
        default_factory=PoliciesConfig,
        description=(
            "Policies applied to every route by default; never to the gateway's own API "
            "(see `api.policies`)."
        ),
    )
    api: ApiConfig = Field(
        default_factory=ApiConfig, description="The gateway's own API (/api/v1, /api/docs)."
    )
    redis: RedisConfig | None = Field(
        None,
        description=(
            "Shared Redis for every instance (rate-limit counters, revocation events with "
            "auth.revocation.backend redis); none: memory only."
        ),
    )
    database: DatabaseConfig = Field(
        default_factory=DatabaseConfig,
        description="Database of the identity layer (users, API keys, refresh tokens, audit).",
    )
    auth: AuthConfig = Field(
        default_factory=AuthConfig,
        description="Identity and access: token service, passwords, revocation, audit.",
    )
    realtime: RealtimeConfig | None = Field(
        None,
        description=(
            "Real-time delivery: /api/v1/ws, Socket.IO, channels, event bus (off unless given)."
        ),
    )
    webhooks: WebhooksConfig | None = Field(
        None,
        description=(
            "Webhook ingress at /api/v1/webhooks/{source}: verified, de-duplicated, stored "
            "before the 2xx, delivered at least once (off unless given)."
        ),
    )
    cache: CacheSectionConfig = Field(
        default_factory=CacheSectionConfig,
        description="Response caches together: purges on events of the realtime bus.",
    )
    reload: ReloadConfig = Field(
        default_factory=ReloadConfig,
        description="Hot reload of services, routes and policies (SIGHUP, or a watched file).",
    )
    acme: AcmeConfig | None = Field(
        None,
        description=(
            "Automatic certificates over ACME (Let's Encrypt and others): HTTP-01 challenges "
            "answered on the plain HTTP port, certificates stored and renewed (off unless given)."
        ),
    )

    def listeners(self) -> tuple[ListenerConfig, ...]:
        """Every listener: `server.listeners`, or the `server.host`/`port` shorthand (all
        but metrics when `metrics.listen` is set), then the `metrics.listen` one."""
        server = self.server
        address = self.metrics.address()
        listeners = server.listeners or (
            ListenerConfig(
                host=server.host,
                port=server.port,
                serves=ALL_SERVES if address is None else ("proxy", "api"),
            ),
        )
        if address is not None:
            listeners += (
                ListenerConfig(
                    name="metrics", host=address[0], port=address[1], serves=("metrics",)
                ),
            )
        return listeners

    admin: AdminConfig = Field(
        default_factory=AdminConfig,
        description=(
            "The admin API (/api/v1/admin): on the metrics listener, and on the public port "
            "only with `public` (docs/operations.md)."
        ),
    )

    @model_validator(mode="after")
    def _metrics_listener_apart(self) -> GatewayConfig:
        address = self.metrics.address()
        ports = [listener.port for listener in self.server.listeners] or [self.server.port]
        if address is not None and address[1] in ports:
            where = "server.port" if not self.server.listeners else "a server.listeners port"
            raise ValueError(
                f"metrics.listen: port {address[1]} is {where}; the metrics listener needs "
                "a port of its own"
            )
        return self

    @model_validator(mode="after")
    def _listener_checks(self) -> GatewayConfig:
        server = self.server
        if not server.listeners:
            return self
        shorthand = {"host", "port"} & server.model_fields_set
        if shorthand:
            raise ValueError(
                f"server.{sorted(shorthand)[0]}: give either server.listeners or the "
                "host/port shorthand, not both"
            )
        seen: dict[tuple[str, int], int] = {}
        https = [index for index, lst in enumerate(server.listeners) if lst.protocol == "https"]
        for index, listener in enumerate(server.listeners):
            where = f"server.listeners[{index}]"
            if listener.port and (listener.host, listener.port) in seen:
                other = seen[(listener.host, listener.port)]
                raise ValueError(
                    f"{where}.port: {listener.port} is also server.listeners[{other}]'s"
                )
            seen[(listener.host, listener.port)] = index
            if listener.redirect_https and not https and listener.redirect_port is None:
                raise ValueError(
                    f"{where}.redirect_https: there is no https listener to redirect to "
                    "(add one, or set redirect_port)"
                )
        return self

    @model_validator(mode="after")
    def _grpc_services(self) -> GatewayConfig:
        """A service is spoken to over HTTP/2 (gRPC routes) or HTTP/1.1, not both: one
        fact per service, as Envoy's http2_protocol_options on the cluster."""
        grpc: dict[str, int] = {}
        plain: dict[str, int] = {}
        for index, route in enumerate(self.routes):
            for name in route.service_names:
                (grpc if route.grpc else plain).setdefault(name, index)
        for name, index in grpc.items():
            if name in plain:
                raise ValueError(
                    f"routes[{plain[name]}]: service {name!r} serves the gRPC route "
                    f"routes[{index}] (HTTP/2 upstream); give HTTP routes another service"
                )
            service = self.services.get(name)
            if service is not None and service.health_check is not None:
                raise ValueError(
                    f"services.{name}.health_check: the service serves gRPC route "
                    f"routes[{index}], and the health checks speak HTTP/1.1; rely on "
                    "passive_ejection instead"
                )
        return self

    @model_validator(mode="after")
    def _realtime_checks(self) -> GatewayConfig:
        problems = realtime_problems(self)
        if problems:
            raise ValueError("\n  ".join(f"{path}: {message}" for path, message in problems))
        return self

    @model_validator(mode="after")
    def _cache_checks(self) -> GatewayConfig:
        problems = cache_problems(self)
        if problems:
            raise ValueError("\n  ".join(f"{path}: {message}" for path, message in problems))
        return self

    @model_validator(mode="after")
    def _webhooks_checks(self) -> GatewayConfig:
        exact = frozenset(r.match.path for r in self.routes if r.match.path is not None)
        problems = webhooks_problems(
            self.webhooks, set(self.services), self.realtime is not None, exact
        )
        if problems:
            raise ValueError("\n  ".join(f"{path}: {message}" for path, message in problems))
        return self

    @model_validator(mode="after")
    def _identity_checks(self) -> GatewayConfig:
        problems = identity_problems(self)
        if problems:
            raise ValueError("\n  ".join(f"{path}: {message}" for path, message in problems))
        return self

    @model_validator(mode="after")
    def _policy_checks(self) -> GatewayConfig:
        # Also runs for `potok run --workers N`, which re-validates with the override.
        problems = policy_problems(self)
        if problems:
            raise ValueError("\n  ".join(f"{path}: {message}" for path, message in problems))
        return self

    @field_validator("services")
    @classmethod
    def _service_names(cls, value: dict[str, ServiceConfig]) -> dict[str, ServiceConfig]:
        for name in value:
            if not _NAME.match(name):
                raise ValueError(f"service name {name!r}: letters, digits, '_', '-', '.'")
        return value
