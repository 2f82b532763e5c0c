"""Per request: route lookup -> the route's pipeline; per finished request: logs and metrics."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import structlog

from potok.listening import ACME_CHALLENGE_PREFIX
from potok.observability.client_log import ThrottledClientLog
from potok.observability.metrics import GatewayMetrics
from potok.routing.https_redirect import redirect_to_https
from potok.routing.rewrite import (
    UnsafePath,
    has_escaped_separator,
    may_need_normalizing,
    normalize_path,
    unescape_separators,
)
from potok.routing.table import MethodNotAllowed, RouteMatch
from potok.upstream.forwarded import apply_forwarding

if TYPE_CHECKING:
    from potok.exchange import Exchange, ResponseHook
    from potok.observability.access_log import AccessLog
    from potok.runtime import Route, Runtime

log = structlog.get_logger("potok.gateway")

_METHOD_NAMES: dict[bytes, str] = {}


def _method_name(method: bytes) -> str:
    # llhttp accepts a fixed set of methods, so this stays small.
    name = _METHOD_NAMES.get(method)
    if name is None:
        name = _METHOD_NAMES[method] = method.decode("latin-1")
    return name


def _host_name(host: bytes) -> str:
    """Host header without the port, lower-case (for host routing)."""
    text = host.decode("latin-1").lower()
    if text.startswith("["):
        return text.split("]", 1)[0] + "]"
    return text.rsplit(":", 1)[0] if ":" in text else text


class Gateway:
    """The server's request handler."""

    def __init__(
        self,
        runtime: Runtime,
        metrics: GatewayMetrics,
        access_log: AccessLog | None,
    ) -> None:
        self.runtime = runtime
        self.metrics = metrics
        self.access_log = access_log
        self.record_metrics = runtime.config.metrics.enabled
        self._loop = asyncio.get_running_loop()
        # An ordinary event, not an error: info, no traceback, a few lines per client.
        self._gone = ThrottledClientLog(log, "client disconnected mid-upload")

    @property
    def answer_hooks(self) -> tuple[ResponseHook, ...]:
        """Response headers for answers given before a route is chosen (404, 405, 400)."""
        return self.runtime.answer_hooks

    def handle(self, exchange: Exchange) -> None:
        runtime = self.runtime
        self.metrics.inflight_count += 1
        listener = exchange.connection.listener
        apply_forwarding(exchange, runtime.trusted, listener.scheme)
        begin_trace = runtime.begin_trace
        if begin_trace is not None:
            begin_trace(exchange)
        path = exchange.path
        if listener.redirect_port is not None and not path.startswith(ACME_CHALLENGE_PREFIX):
            redirect_to_https(exchange, listener.redirect_port)
            return
        escaped = False
        if may_need_normalizing(path) is not None:
            # Policies, the own API and the upstream all see the resolved path.
            try:
                path = exchange.path = normalize_path(path)
            except UnsafePath as exc:
                exchange.problem(400, f"unsafe path: {exc}")
                return
            escaped = has_escaped_separator(path)
        host = _host_name(exchange.host) if runtime.host_routing else ""
        table = runtime.tables.get(listener.serves) or runtime.table_for(listener.serves)
        match = table.match(exchange.method, path, host)
        if not isinstance(match, RouteMatch):
            self._unrouted(exchange, match)
            return
        route = match.entry.target
        if escaped and route.escaped_slashes != "keep":
            exchange.route = route  # the refusal or redirect carries the route's headers
            unescaped = self._unescape(exchange, route, path)
            if unescaped is None:
                return
            path = exchange.path = unescaped
            match = table.match(exchange.method, path, host)
            if not isinstance(match, RouteMatch):
                self._unrouted(exchange, match)
                return
            route = match.entry.target
        exchange.route = route
        if exchange.method == b"TRACE" and route.refuses_trace:
            # TRACE echoes the request, credentials included (cross-site tracing): only a
            # route that lists it in match.methods passes it on.
            exchange.problem(
                405, "TRACE is not allowed on this route", headers=((b"Allow", route.allow),)
            )
            return
        exchange.route_name = route.name
        if route.service is not None:
            exchange.service_name = route.service.name
        if route.has_params:
            exchange.params = match.params()
        if route.rewrite is not None:
            try:
                exchange.upstream_path = route.rewrite(path, match)  # type: ignore[arg-type]
            except UnsafePath as exc:
                exchange.problem(400, f"unsafe path: {exc}")
                return
        else:
            exchange.upstream_path = path
        exchange.deadline = exchange.started + route.request_timeout
        exchange.timer = self._loop.call_later(route.request_timeout, self._timed_out, exchange)
        route.pipeline.run(exchange)

    def _unrouted(self, exchange: Exchange, match: MethodNotAllowed | None) -> None:
        """404, or 405 with `Allow` for a path routed only for other methods."""
        if match is None:
            exchange.problem(404, "no route matches this request", title="Not Found")
            return
        allow = ", ".join(match.allow).encode()
        exchange.problem(405, "method not allowed on this route", headers=((b"Allow", allow),))

    def _unescape(self, exchange: Exchange, route: Route, path: bytes) -> bytes | None:
        """The route's rule for a path with %2F or %5C: the decoded path to route again,
        or None once the request has been refused (400) or redirected (307)."""
        if route.escaped_slashes == "reject":
            exchange.problem(
                400,
                "the path has an encoded '/' or '\\' (%2F, %5C), which this route refuses",
            )
            return None
        try:
            unescaped = unescape_separators(path)
        except UnsafePath as exc:
            exchange.problem(400, f"unsafe path: {exc}")
            return None
        if route.escaped_slashes == "unescape_and_redirect":
            location = unescaped + exchange.query
            exchange.respond(307, b"", b"text/plain", ((b"Location", location),))
            return None
        return unescaped

    def _timed_out(self, exchange: Exchange) -> None:
        exchange.timer = None
        if not exchange.is_current():
            return
        if exchange.on_cancel is not None:
            exchange.on_cancel()
            exchange.on_cancel = None
        if exchange.response_started:
            exchange.status = 504
            exchange.abort("request deadline passed")
        elif not exchange.body.complete:
            # Still sending its body (a trickle that keeps the upstream's wait alive): the
            # client's slowness, not a gateway timeout; the breaker saw nothing (cancelled).
            exchange.body.detach()
            exchange.problem(408, "the request body did not arrive within the route's deadline")
        else:
            exchange.body.detach()
            exchange.problem(504, "the request did not complete within the route's deadline")

    def finished(self, exchange: Exchange) -> None:
        if exchange.timer is not None:
            exchange.timer.cancel()
            exchange.timer = None
        metrics = self.metrics
        metrics.inflight_count -= 1
        duration = time.perf_counter() - exchange.started
        if self.record_metrics:
            metrics.observe(exchange, duration)
            context = exchange.context
            if context is not None and "grpc_status" in context:
                metrics.observe_grpc(exchange.route_name, context["grpc_status"])
        body = exchange.body
        if exchange.status == 499 and body is not None and not body.complete:
            self._gone.info(
                exchange.client_ip,
                request_id=exchange.request_id,
                method=_method_name(exchange.method),
                path=exchange.path.decode("latin-1"),
                route=exchange.route_name,
                bytes_in=exchange.bytes_in,
            )
        trace = exchange.trace
        tracer = self.runtime.tracer
        if trace is not None and tracer is not None:
            tracer.finish(exchange, trace, duration)
        if self.access_log is not None:
            self.access_log.write(exchange, duration)
