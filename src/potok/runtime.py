"""Config -> Runtime: the compiled route table, each route's pipeline, the services.

A Runtime is immutable once built. A reload (process/reload.py) builds a new one
beside the old and swaps one reference; requests in flight finish on the
Runtime they started with. Services whose config did not change are carried
over as they are (pools, breaker, target health), so a reload that adds a route
does not reset what the gateway knows about its upstreams.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from potok.config.listeners import ALL_SERVES
from potok.config.models import GatewayConfig, RouteConfig
from potok.config.resilience import FallbackConfig
from potok.exchange import ResponseHook
from potok.grpc.stage import GrpcStage
from potok.http.settings import ServerSettings
from potok.http2.config import http2_settings
from potok.identity.services import shared_identity
from potok.observability.metrics import MetricsRegistry
from potok.observability.tracing.build import build_tracer
from potok.policies.base import BuildContext, Policy
from potok.policies.cache.bus_purge import bus_purger
from potok.policies.cache.registry import cache_registry
from potok.policies.config import PoliciesBlock
from potok.policies.pipeline import Pipeline, Terminal
from potok.realtime.service import Realtime, shared_realtime
from potok.resources import Resources
from potok.routing.endpoints import (
    ACME_CHALLENGE_PATH,
    ACME_ROUTE_NAME,
    ADMIN_LISTENER_ROUTE_NAME,
    ADMIN_PATHS,
    API_ROUTE_NAME,
    METRICS_PATH,
    OWN_ENDPOINTS,
    PROBE_ENDPOINTS,
    REALTIME_ROUTE_NAME,
    REALTIME_WS_PATH,
    WEBHOOKS_PATH,
    WEBHOOKS_ROUTE_NAME,
    route_name,
)
from potok.routing.rewrite import Rewriter, compile_rewrite
from potok.routing.table import RouteEntry, RouteTable
from potok.traffic.aggregate import AggregateStage, Call
from potok.traffic.mirror import Mirror
from potok.traffic.split import Variant, VariantStage, compile_rule
from potok.upstream.forwarded import TrustedProxies
from potok.upstream.metrics import UpstreamMetrics
from potok.upstream.proxy import Fallback
from potok.upstream.request import RequestHeadBuilder
from potok.upstream.retry import RetryPolicy
from potok.upstream.service import Service
from potok.upstream.stage import ProxyStage
from potok.webhooks.endpoint import WebhookEndpoint
from potok.webhooks.service import Webhooks, shared_webhooks
from potok.webhooks.sources import Source

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
        http2=http2_settings(server.http2),
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
        *,
        acme_terminal: Terminal | None = None,
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
        self.webhooks: Webhooks | None = shared_webhooks(
            config.webhooks, self.resources, metrics, self.realtime
        )
        self.settings = settings_from(config, self.identity.headers.strip)
        self.trusted = TrustedProxies(config.server.trusted_proxies)
        self.tracer = build_tracer(config.tracing, self.resources, self.trusted, metrics)
        # What every request calls when tracing is on, held here: `runtime.tracer.begin`
        # is two lookups more, and `begin` is a slot of the tracer's instance, which
        # CPython's method lookup reaches through the class (BENCHMARKS.md "Tracing").
        self.begin_trace = self.tracer.begin if self.tracer is not None else None
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
        self.webhook_sources: dict[str, Source] = (
            self.webhooks.configure(config.webhooks, self.services)
            if self.webhooks is not None and config.webhooks is not None
            else {}
        )
        # The own endpoints by kind and the routes; each listener's table takes the kinds
        # it serves (`server.listeners[].serves`); health probes are on every listener.
        self._probe_entries: list[RouteEntry[Route]] = []
        self._metrics_entries: list[RouteEntry[Route]] = []
        self._api_entries: list[RouteEntry[Route]] = []
        self._route_entries: list[RouteEntry[Route]] = []
        # Webhook ingress: wherever proxy routes or the own API are served (a provider
        # posts to the front door).
        self._webhook_entries: list[RouteEntry[Route]] = []
        self._admin_listener_entries: list[RouteEntry[Route]] = []
        self._admin_public_entries: list[RouteEntry[Route]] = []
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
                    # The admin API and the dashboard: on a listener of metrics (not proxy),
                    # under a route name of its own (the guard tells the ports apart by it);
                    # on the public listeners only with admin.public.
                    if admin.enabled:
                        listener_route = self._own_api_route(
                            api_terminal, ADMIN_LISTENER_ROUTE_NAME
                        )
                        self._admin_listener_entries.append(
                            RouteEntry(listener_route, pattern, exact, frozenset(), None, order)
                        )
                    if admin.enabled and admin.public:
                        self._admin_public_entries.append(
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
                if pattern == METRICS_PATH:
                    self._metrics_entries.append(entry)
                elif pattern in PROBE_ENDPOINTS:
                    self._probe_entries.append(entry)
                else:
                    self._api_entries.append(entry)
                order += 1
            for entry in self._webhook_routes(order):
                self._webhook_entries.append(entry)
                order += 1
        if acme_terminal is not None:
            # Above every user route, host-bound too, on every listener (like the probes):
            # a CA's validation meets no policy.
            self._probe_entries.append(self._acme_entry(acme_terminal, order))
            order += 1
        self.routes: list[Route] = []
        for index, route_config in enumerate(config.routes):
            route = self._build_route(index, route_config)
            self.routes.append(route)
            match = route_config.match
            self._route_entries.append(
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
        self.tables: dict[frozenset[str], RouteTable[Route]] = {}
        for listener in config.listeners():
            self.table_for(listener.serves_key)
        # Every route and own endpoint (`potok routes`, tests).
        self.table: RouteTable[Route] = self.table_for(frozenset(ALL_SERVES))
        entries = self._route_entries
        if self.realtime is not None and cache_registry(self.resources).caches:
            # Purges on bus events, and admin purges that reach every worker and instance.
            bus_purger(self.resources, metrics).attach(self.realtime, config.cache.invalidate)
        self.host_routing = any(e.host is not None for e in entries)
        self.answer_hooks: tuple[ResponseHook, ...] = self._unrouted_hooks()

    def table_for(self, serves: frozenset[str]) -> RouteTable[Route]:
        """The route table of a listener serving `serves` (built once per set)."""
        table = self.tables.get(serves)
        if table is None:
            entries = list(self._probe_entries)
            if "metrics" in serves:
                entries += self._metrics_entries
            if "api" in serves:
                entries += self._api_entries
            if "api" in serves or "proxy" in serves:
                entries += self._webhook_entries
            if "metrics" in serves and "proxy" not in serves:
                entries += self._admin_listener_entries
            elif "api" in serves:
                entries += self._admin_public_entries
            if "proxy" in serves:
                entries += self._route_entries
            table = self.tables[serves] = RouteTable(entries)
        return table

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

    @staticmethod
    def _acme_entry(terminal: Terminal, order: int) -> RouteEntry[Route]:
        """HTTP-01 answers (acme/responder.py): GET and HEAD, no policy, any host."""
        route = Route(
            name=ACME_ROUTE_NAME,
            service=None,
            pipeline=Pipeline([], terminal),
            rewrite=None,
            request_timeout=10.0,
            has_params=False,
        )
        methods = frozenset({b"GET", b"HEAD"})
        return RouteEntry(route, ACME_CHALLENGE_PATH, False, methods, None, order, reserved=True)

    def _webhook_routes(self, order: int) -> list[RouteEntry[Route]]:
        """POST /api/v1/webhooks/{source} and each source's `path` aliases. No policies:
        a delivery is authenticated by its signature, and refusals are the endpoint's."""
        webhooks = self.webhooks
        if webhooks is None:
            return []
        sources = self.webhook_sources
        audit = self.identity.audit

        def route(endpoint: WebhookEndpoint, has_params: bool) -> Route:
            return Route(
                name=WEBHOOKS_ROUTE_NAME,
                service=None,
                pipeline=Pipeline([], endpoint),
                rewrite=None,
                request_timeout=30.0,
                has_params=has_params,
            )

        templated = route(WebhookEndpoint(webhooks, sources, audit), True)
        entries = [
            RouteEntry(templated, WEBHOOKS_PATH + "/{source}", True, frozenset(), None, order)
        ]
        for source in sources.values():
            alias = route(WebhookEndpoint(webhooks, sources, audit, bound=source), False)
            for path in source.config.path:
                entries.append(RouteEntry(alias, path, True, frozenset(), None, order))
        return entries

    def _build_route(self, index: int, config: RouteConfig) -> Route:
        name = route_name(index, config)
        service = self.services[config.primary_service]
        context = self._context(name)
        policies_config = config.policies.merged_over(self.config.policies)
        policies = self._policies(policies_config, context)
        drop = _consumed_headers(policies_config)
        for each in config.service_names:
            key_header = self.services[each].api_key_header
            if key_header is not None:
                drop.add(key_header[0].lower())  # a client cannot supply or override it
        stage: ProxyStage | VariantStage | GrpcStage | AggregateStage
        if config.aggregate is not None:
            stage = self._aggregate_stage(name, config, frozenset(drop))
        elif config.service is not None and config.grpc:
            stage = self._grpc_stage(config, service, frozenset(drop))
        elif config.service is not None:
            stage = self._proxy_stage(config, service, frozenset(drop), name)
        else:
            stage = self._variant_stage(name, config, frozenset(drop))
        pipeline = Pipeline(policies, stage)
        stage.bind(pipeline)
        pattern = config.match.path or config.match.prefix or "/"
        return Route(
            name=name,
            service=None if config.aggregate is not None else service,
            pipeline=pipeline,
            rewrite=compile_rewrite(config.rewrite, config.strip_prefix),
            request_timeout=config.timeouts.request,
            has_params="{" in pattern,
            tunnel_idle=config.timeouts.tunnel_idle or None,
            escaped_slashes=config.escaped_slashes,
            refuses_trace="TRACE" not in config.match.methods,
            allow=_allow(config.match.methods),
        )

    @staticmethod
    def _grpc_stage(config: RouteConfig, service: Service, drop: frozenset[bytes]) -> GrpcStage:
        extra = [service.api_key_header] if service.api_key_header is not None else []
        return GrpcStage(
            service,
            drop,
            [(name.lower(), value) for name, value in extra],
            _route_retry(config, service),
            config.preserve_host,
        )

    def _proxy_stage(
        self, config: RouteConfig, service: Service, drop: frozenset[bytes], route: str = ""
    ) -> ProxyStage:
        static = [service.api_key_header] if service.api_key_header is not None else []
        return ProxyStage(
            service,
            RequestHeadBuilder(static, config.preserve_host),
            drop,
            _route_retry(config, service),
            _fallback(config.fallback),
            mirror=self._mirror(config, route),
        )

    def _mirror(self, config: RouteConfig, route: str) -> Mirror | None:
        if config.mirror is None:
            return None
        shadow = self.services[config.mirror.service]
        static = [(b"X-Potok-Mirror", route.encode())]
        if shadow.api_key_header is not None:
            static.append(shadow.api_key_header)
        head = RequestHeadBuilder(static, config.preserve_host)
        return Mirror(config.mirror, shadow, head, route, self.metrics)

    def _variant_stage(
        self, name: str, config: RouteConfig, drop: frozenset[bytes]
    ) -> VariantStage:
        variants = {
            each.name: Variant(
                each.name,
                each.weight,
                self._grpc_stage(config, self.services[each.name], drop)
                if config.grpc
                else self._proxy_stage(config, self.services[each.name], drop, name),
            )
            for each in config.services
        }
        rules = [(compile_rule(rule), variants[rule.service]) for rule in config.canary]
        stage = VariantStage(name, list(variants.values()), rules, config.sticky)
        if self.metrics is not None:
            stage.count_in(self.metrics)
        return stage

    def _aggregate_stage(
        self, name: str, config: RouteConfig, drop: frozenset[bytes]
    ) -> AggregateStage:
        assert config.aggregate is not None
        calls = []
        for each in config.aggregate.calls:
            service = self.services[each.service]
            calls.append(Call(each, service, _route_retry(config, service), name, self.metrics))
        return AggregateStage(calls, drop, name, self.metrics)

    def start(self) -> None:
        """Start background work (health checks); needs the running loop."""
        for service in self.services.values():
            service.start()
        webhooks = self.webhooks
        if webhooks is not None and not webhooks.started:
            # A reload that added the webhooks section: the worker started the first
            # config's before listening; until this finishes, deliveries get 503.
            task = asyncio.get_running_loop().create_task(webhooks.start())
            webhooks.starting = task

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
