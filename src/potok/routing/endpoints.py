"""Names the route table reserves: the gateway's own endpoints and default route names."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from potok.config.models import RouteConfig

API_ROUTE_NAME = "potok-api"
HEALTH_PATH = "/api/v1/health"
METRICS_PATH = "/api/v1/metrics"
REALTIME_ROUTE_NAME = "potok-realtime"
REALTIME_WS_PATH = "/api/v1/ws"
# HTTP-01 answers (RFC 8555 8.3): routed only when `acme:` is configured, before any
# user route of the same path (an `http` listener that redirects to HTTPS keeps it).
ACME_CHALLENGE_PATH = "/.well-known/acme-challenge"
ACME_ROUTE_NAME = "potok-acme"
WEBHOOKS_ROUTE_NAME = "potok-webhooks"
WEBHOOKS_PATH = "/api/v1/webhooks"
WEBHOOKS_ADMIN_PATH = "/api/v1/admin/webhooks"
ADMIN_PATH = "/api/v1/admin"
# The operator's page (potok.dashboard): served wherever the admin API is.
DASHBOARD_PATH = "/dashboard"
ADMIN_PATHS = frozenset({ADMIN_PATH, DASHBOARD_PATH})
# The own API's route on the metrics listener: the admin guard tells the ports apart by it.
ADMIN_LISTENER_ROUTE_NAME = "potok-admin"

# The gateway's own endpoints: (pattern, exact). User routes may sit beside them,
# never on top of them (config check).
OWN_ENDPOINTS: tuple[tuple[str, bool], ...] = (
    (HEALTH_PATH, False),
    (METRICS_PATH, True),
    ("/api/v1/auth", False),
    ("/api/docs", False),
    ("/api/openapi.json", True),
    ("/api/v1/openapi.json", True),
    (REALTIME_WS_PATH, True),
    ("/api/v1/socket.io", False),
    ("/api/v1/events", True),
    ("/api/v1/admin/cache", False),
    (WEBHOOKS_PATH, False),
    (WEBHOOKS_ADMIN_PATH, False),
    (ADMIN_PATH, False),
    (DASHBOARD_PATH, False),
)


# Own endpoints that take a path on the public port only when `admin.public` puts them
# there (a user route may have /dashboard otherwise).
PUBLIC_ONLY_WITH_ADMIN = frozenset({DASHBOARD_PATH})

# Health probes and metrics: never refused by a policy (see `api.policies`).
PROBE_ENDPOINTS = frozenset({HEALTH_PATH, METRICS_PATH})


def route_name(index: int, config: RouteConfig) -> str:
    """A route's name in logs and metrics: its own, or `<service>-<index>`."""
    return config.name or f"{config.primary_service}-{index}"
