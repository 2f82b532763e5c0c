"""The gateway's own API, a FastAPI app behind server/asgi.py's bridge: health probes
(/api/v1/health, /liveness, /readiness), Prometheus metrics (/api/v1/metrics), the token
service (/api/v1/auth/*), event publishing (/api/v1/events), Socket.IO
(/api/v1/socket.io) and Swagger UI (/api/docs). The WebSocket endpoint /api/v1/ws is
realtime's own route. Its policies are `api.policies`, never the global block
(runtime.py); probes and metrics can have a listener of their own (`metrics.listen`).
Every error it answers is problem+json (api/problems.py); Swagger UI is served from the
installed bundle, not a CDN (api/docs.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

from potok import __version__
from potok.admin.router import AdminHandle, create_admin_router
from potok.api import docs, openapi, problems
from potok.api.auth import create_auth_router
from potok.api.cache_admin import create_cache_admin_router
from potok.dashboard.router import create_dashboard_router
from potok.realtime.events_api import create_events_router
from potok.realtime.socketio import PATH as SOCKETIO_PATH
from potok.realtime.socketio import SocketIoGateway
from potok.webhooks.admin import create_webhooks_admin_router

if TYPE_CHECKING:
    from potok.runtime import Runtime


@dataclass
class ApiContext:
    """What the API reads from the running gateway."""

    is_ready: Callable[[], bool]
    runtime: Callable[[], Runtime]
    prometheus: CollectorRegistry
    # The admin API's view of the worker (None until wired, or outside a worker).
    admin: Callable[[], AdminHandle | None] = field(default=lambda: None)


def create_api(context: ApiContext) -> FastAPI:
    app = FastAPI(
        title="Potok gateway API",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/openapi.json",
        swagger_ui_oauth2_redirect_url=None,
    )
    problems.install(app)

    @app.get("/api/v1/health/liveness", tags=["health"])
    async def liveness() -> dict[str, str]:
        """The process is up and its event loop answers."""
        return {"status": "ok"}

    @app.get("/api/v1/health/readiness", tags=["health"])
    async def readiness() -> Response:
        """503 once shutdown has begun, so load balancers stop sending traffic."""
        if context.is_ready():
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "draining"}, status_code=503)

    @app.get("/api/v1/health", tags=["health"])
    async def health() -> Response:
        """Readiness plus every service and target as this worker sees them."""
        ready = context.is_ready()
        runtime = context.runtime()
        body: dict[str, Any] = {
            "status": "ok" if ready else "draining",
            "version": __version__,
            # Which config this worker serves: after a reload, every worker shows the same.
            "config": {
                "digest": runtime.digest,
                "loaded_at": datetime.fromtimestamp(runtime.loaded_at, UTC).isoformat(),
            },
            "services": _services(runtime),
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get(
        "/api/v1/metrics",
        tags=["observability"],
        response_class=Response,
        responses={
            200: {
                "description": "Prometheus text exposition format.",
                "content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}},
            }
        },
    )
    async def metrics(request: Request) -> Response:
        """Prometheus text format, merged over all worker processes."""
        return Response(generate_latest(context.prometheus), media_type=CONTENT_TYPE_LATEST)

    app.include_router(create_auth_router(context.runtime))
    app.include_router(create_events_router(context.runtime))
    app.include_router(create_cache_admin_router(context.runtime))
    app.include_router(create_webhooks_admin_router(context.runtime))
    app.include_router(create_admin_router(context.admin))
    app.include_router(create_dashboard_router(context.admin, context.prometheus, context.is_ready))
    app.mount(SOCKETIO_PATH, SocketIoGateway(context.runtime))
    generate = app.openapi

    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = openapi.complete(generate())
        return app.openapi_schema

    app.openapi = document  # type: ignore[method-assign]

    # The document also at the versioned path of the rest of the API (where clients and
    # fuzzers look for it); `/api/openapi.json` is FastAPI's own route.
    @app.get("/api/v1/openapi.json", include_in_schema=False)
    async def versioned_document() -> JSONResponse:
        return JSONResponse(document())

    docs.install(app, document)
    return app


def _services(runtime: Runtime) -> dict[str, Any]:
    return {name: service.describe() for name, service in runtime.services.items()}
