"""Config -> Runtime: the compiled route table, each route's pipeline, the services.

A Runtime is immutable once built. A reload (process/reload.py) builds a new one
beside the old and swaps one reference; requests in flight finish on the
Runtime they started with. Services whose config did not change are carried
over as they are (pools, breaker, target health), so a reload that adds a route
does not reset what the gateway knows about its upstreams.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from potok.config.models import GatewayConfig, RouteConfig
from potok.config.resilience import FallbackConfig
from potok.exchange import ResponseHook
from potok.http.settings import ServerSettings
from potok.identity.services import shared_identity
from potok.observability.metrics import MetricsRegistry
from potok.policies.base import BuildContext, Policy
from potok.policies.config import PoliciesBlock
from potok.policies.pipeline import Pipeline, Terminal
from potok.realtime.service import Realtime, shared_realtime
from potok.resources import Resources
from potok.routing.endpoints import (
    ADMIN_LISTENER_ROUTE_NAME,
    ADMIN_PATHS,
    API_ROUTE_NAME,
    METRICS_PATH,
    OWN_ENDPOINTS,
    PROBE_ENDPOINTS,
    REALTIME_ROUTE_NAME,
    REALTIME_WS_PATH,
    route_name,
)
from potok.routing.rewrite import Rewriter, compile_rewrite
from potok.routing.table import RouteEntry, RouteTable
from potok.upstream.forwarded import TrustedProxies
from potok.upstream.metrics import UpstreamMetrics
from potok.upstream.proxy import Fallback
from potok.upstream.request import RequestHeadBuilder
from potok.upstream.retry import RetryPolicy
from potok.upstream.service import Service
from potok.upstream.stage import ProxyStage

if TYPE_CHECKING:
    pass


DEFAULT_ALLOW = b"GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"


@dataclass(frozen=True, slots=True)
class Route:
    """A compiled route: what the gateway does with a request once it matched."""

    name: str
    service: Service | None  # None: the gateway's own API
    pipeline: Pipeline
    rewrite: Rewriter | None
    request_timeout: float
    has_params: bool
    tunnel_idle: float | None = None  # upgraded (WebSocket) pass-through idle timeout
    escaped_slashes: str = "reject"  # what a path with %2F or %5C gets (RouteConfig)
    refuses_trace: bool = True  # TRACE passes only where match.methods lists it
    allow: bytes = DEFAULT_ALLOW  # the Allow header of the 405 for a refused TRACE


def _allow(methods: tuple[str, ...]) -> bytes:
    """The methods a route answers but TRACE, for the Allow header of a refused TRACE."""
    return ", ".join(m for m in methods if m != "TRACE").encode() if methods else DEFAULT_ALLOW


def settings_from(config: GatewayConfig, dropped_headers: frozenset[bytes]) -> ServerSettings:
    server = config.server
    return ServerSettings(
        header_read_timeout=server.timeouts.header_read,
        keepalive_timeout=server.timeouts.keepalive,
        max_url_bytes=server.limits.max_url_bytes,
        max_header_bytes=server.limits.max_header_bytes,
        max_headers=server.limits.max_headers,
        max_body_bytes=server.limits.max_body_bytes,
        dropped_headers=dropped_headers,
    )


class Runtime:
    """Everything a request needs, built once from a validated config."""

    def __init__(
        self,
        config: GatewayConfig,
        api_terminal: Terminal | None = None,
        resources: Resources | None = None,
        metrics: MetricsRegistry | None = None,
        previous: Runtime | None = None,
    ) -> None:
        self.config = config
        self.digest = hashlib.sha256(config.model_dump_json().encode()).hexdigest()[:16]
        self.loaded_at = time.time()
        self.metrics = metrics
        self.resources = resources if resources is not None else Resources()
        self.identity = shared_identity(config, self.resources)
        self.realtime: Realtime | None = shared_realtime(
            config, self.resources, self.identity, metrics
        )
        self.settings = settings_from(config, self.identity.headers.strip)
        self.trusted = TrustedProxies(config.server.trusted_proxies)
        upstream_metrics = UpstreamMetrics(metrics) if metrics is not None else None
        kept = previous.services if previous is not None else {}
        self.services: dict[str, Service] = {
            name: (
                kept[name]
                if name in kept and kept[name].config == svc
                else Service(name, svc, upstream_metrics)
            )
            for name, svc in config.services.items()
        }
        entries: list[RouteEntry[Route]] = []
        # With metrics.listen: probes and metrics on a listener of their own (its table),
        # metrics only there.
        apart = config.metrics.listen is not None
        admin_entries: list[RouteEntry[Route]] = []
        order = 0
        if api_terminal is not None:
            api_route = self._own_api_route(api_terminal)
            probe_route = self._own_api_route(api_terminal, probes=True)
            ws_route = (
                self._own_api_route(self.realtime.endpoint, REALTIME_ROUTE_NAME)
                if self.realtime is not None
                else api_route
            )
            admin = config.admin
            for pattern, exact in OWN_ENDPOINTS:
                if pattern in ADMIN_PATHS:
                    # The admin API and the dashboard: on the metrics listener (its own
                    # route name tells the guard which port a call came in on), on the
                    # public port only if asked.
                    if admin.enabled and apart:
                        listener_route = self._own_api_route(
                            api_terminal, ADMIN_LISTENER_ROUTE_NAME
                        )
                        admin_entries.append(
                            RouteEntry(listener_route, pattern, exact, frozenset(), None, order)
                        )
                    if admin.enabled and admin.public:
                        entries.append(
                            RouteEntry(api_route, pattern, exact, frozenset(), None, order)
                        )
                    order += 1
                    continue
                target = (
                    ws_route
                    if pattern == REALTIME_WS_PATH
                    else probe_route
                    if pattern in PROBE_ENDPOINTS
                    else api_route
                )
                entry = RouteEntry(target, pattern, exact, frozenset(), None, order)
                if pattern in PROBE_ENDPOINTS and apart:
                    admin_entries.append(entry)
                if not (apart and pattern == METRICS_PATH):
                    entries.append(entry)
                order += 1
        self.admin_table: RouteTable[Route] = RouteTable(admin_entries)
        self.routes: list[Route] = []
        for index, route_config in enumerate(config.routes):
            route = self._build_route(index, route_config)
            self.routes.append(route)
            match = route_config.match
            entries.append(
                RouteEntry(
                    route,
                    match.path or match.prefix or "/",
                    match.path is not None,
                    frozenset(m.encode() for m in match.methods),
                    match.host,
                    order,
                )
            )
            order += 1
        self.table: RouteTable[Route] = RouteTable(entries)
        self.host_routing = any(e.host is not None for e in entries)
        self.answer_hooks: tuple[ResponseHook, ...] = self._unrouted_hooks()

    def _context(self, route_name: str, own_api: bool = False) -> BuildContext:
        return BuildContext(
            route_name=route_name,
            settings=self.settings,
            services=self.services,
            resources=self.resources,
            identity=self.identity,
            metrics=self.metrics,
            redis=self.config.redis,
            own_api=own_api,
        )

    def _unrouted_hooks(self) -> tuple[ResponseHook, ...]:
        """What shapes answers given before a route is chosen (404, 405, a refused path):
        the global block's policies whose entry says `unrouted` (security headers; there
        is no route whose CORS rules could apply)."""
        policies = self.config.policies
        context = self._context("")
        hooks: list[ResponseHook] = []
        for entry in policies.policy_entries:
            policy = entry.built(policies.get(entry), context) if entry.unrouted else None
            if policy is not None and policy.on_response is not None:
                hooks.append(policy.on_response)
        return tuple(hooks)

    def _policies(
        self, policies: PoliciesBlock, context: BuildContext, probes: bool = False
    ) -> list[Policy]:
        """The block's policies in run order (stage, rank: `Pipeline` sorts by stage
        only, and its sort is stable). Each entry is built even where the block does not
        configure it: a policy may be on by default (`request_size`)."""
        built = []
        for entry in policies.policy_entries:
            if probes and not entry.probes:
                continue
            policy = entry.built(policies.get(entry), context)
            if policy is None and context.own_api and entry.own_api_default is not None:
                policy = entry.own_api_default(context)
            if policy is not None:
                built.append(policy)
        return built

    def _own_api_route(
        self, terminal: Terminal, name: str = API_ROUTE_NAME, probes: bool = False
    ) -> Route:
        """A route of the gateway's own API: `api.policies`, never the global block (one
        rule, docs/policies.md); probes and metrics take only the entries that say
        `probes` (they never refuse)."""
        context = self._context(name, own_api=True)
        policies = self._policies(self.config.api.policies, context, probes)
        return Route(
            name=name,
            service=None,
            pipeline=Pipeline(policies, terminal),
            rewrite=None,
            request_timeout=30.0,
            has_params=False,
        )

    def _build_route(self, index: int, config: RouteConfig) -> Route:
        name = route_name(index, config)
        service = self.services[config.service]
        context = self._context(name)
        policies_config = config.policies.merged_over(self.config.policies)
        policies = self._policies(policies_config, context)
        static: list[tuple[bytes, bytes]] = []
        drop = _consumed_headers(policies_config)
        if service.api_key_header is not None:
            static.append(service.api_key_header)
            drop.add(service.api_key_header[0].lower())  # a client cannot supply or override it
        stage = ProxyStage(
            service,
            RequestHeadBuilder(static, config.preserve_host),
            frozenset(drop),
            _route_retry(config, service),
            _fallback(config.fallback),
        )
        pipeline = Pipeline(policies, stage)
        stage.bind(pipeline)
        pattern = config.match.path or config.match.prefix or "/"
        return Route(
            name=name,
            service=service,
            pipeline=pipeline,
            rewrite=compile_rewrite(config.rewrite, config.strip_prefix),
            request_timeout=config.timeouts.request,
            has_params="{" in pattern,
            tunnel_idle=config.timeouts.tunnel_idle or None,
            escaped_slashes=config.escaped_slashes,
            refuses_trace="TRACE" not in config.match.methods,
            allow=_allow(config.match.methods),
        )

    def start(self) -> None:
        """Start background work (health checks); needs the running loop."""
        for service in self.services.values():
            service.start()

    def close(self) -> None:
        for service in self.services.values():
            service.close()

    def retire(self, successor: Runtime) -> None:
        """Replaced by `successor`: retire the services it did not carry over."""
        carried = {id(service) for service in successor.services.values()}
        for service in self.services.values():
            if id(service) not in carried:
                service.retire()

    def prune_pools(self) -> None:
        for service in self.services.values():
            service.prune_pools()


def _consumed_headers(policies: PoliciesBlock) -> set[bytes]:
    """The request headers the route's policies consume (a token, a key): not forwarded."""
    return {
        header.lower().encode()
        for entry, config in policies.configured()
        if entry.consumes is not None
        for header in entry.consumes(config)
    }


def _route_retry(config: RouteConfig, service: Service) -> RetryPolicy | None:
    """The route's own retry rules (sharing the service's budget), else the service's."""
    if config.retry is None:
        return service.retry
    if config.retry.attempts <= 1:
        return None
    return RetryPolicy(config.retry, service.retry_budget)


def _fallback(config: FallbackConfig | None) -> Fallback | None:
    if config is None:
        return None
    headers = tuple((k.encode(), v.encode()) for k, v in config.headers.items())
    return Fallback(config.status, config.body.encode(), config.content_type.encode(), headers)
