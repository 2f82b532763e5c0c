"""The cache's admin endpoints: statistics per route and purges (role `admin`).

`GET /api/v1/admin/cache/stats` and `POST /api/v1/admin/cache/purge`. The caller
presents a gateway access token (`Authorization: Bearer`, from the token service)
whose roles include `admin`.

A purge acts at once on the worker that answers (its memory stores, and Redis stores)
and goes on the realtime event bus to every other worker of every instance, which purge
their memory stores (`scope: "all"`); without a `realtime:` section, or with the bus
down, only the answering worker and Redis are purged (`scope: "worker"`). Stats are the
answering worker's (`scope: "worker"`, with its pid): `/api/v1/metrics` sums over
workers.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from potok.admin.guard import AdminGuard, Refusal
from potok.errors import problem_body
from potok.identity.token_service import AuthFailure
from potok.policies.cache.bus_purge import RESOURCE_KEY as PURGER_KEY
from potok.policies.cache.bus_purge import BusPurger
from potok.policies.cache.registry import cache_registry

if TYPE_CHECKING:
    from potok.runtime import Runtime

PREFIX = "/api/v1/admin/cache"
ADMIN_ROLE = "admin"
_NO_STORE = {"Cache-Control": "no-store"}


class PurgeRequest(BaseModel):
    """What to forget. Nothing but `route`: all of that route's entries; nothing at all:
    every entry of every route."""

    route: str | None = Field(None, description="Only this route's cache.")
    key: str | None = Field(None, description="An exact key: `host path?query`.")
    prefix: str | None = Field(None, description="Every key starting with this.")
    tag: str | None = Field(None, description="Every entry carrying this tag.")


def _problem(request: Request, status: int, detail: str) -> Response:
    body = problem_body(status, detail=detail, instance=request.url.path)
    headers = {"WWW-Authenticate": 'Bearer realm="potok"'} if status == 401 else None
    return Response(body, status, headers=headers, media_type="application/problem+json")


def create_cache_admin_router(runtime: Callable[[], Runtime]) -> APIRouter:
    router = APIRouter(prefix=PREFIX, tags=["admin"])

    def refused(request: Request) -> Response | None:
        """None if the caller is an admin, else the problem to answer."""
        try:
            # allow_from and the cross-site check hold here as for the rest of the admin API
            # (they were skipped: any address with a token could purge, any page could try).
            AdminGuard(runtime()).screen(request)
        except Refusal as refusal:
            return _problem(request, refusal.status, refusal.detail)
        tokens = runtime().identity.token_service
        if tokens is None:
            return _problem(request, 404, "the admin API needs the token service")
        try:
            principal = tokens.authenticate(request.headers.get("authorization"))
        except AuthFailure as exc:
            return _problem(request, exc.status, exc.message)
        if ADMIN_ROLE not in principal.roles:
            return _problem(request, 403, "the admin role is required")
        return None

    @router.get("/stats")
    async def stats(request: Request) -> Response:
        """Per cached route: requests by result, hit rate, entries, bytes, evictions."""
        problem = refused(request)
        if problem is not None:
            return problem
        routes = cache_registry(runtime().resources).stats()
        # One worker's counts (the Redis store's entries are everyone's): the metrics
        # endpoint is where workers are summed.
        return JSONResponse(
            {"scope": "worker", "pid": os.getpid(), "routes": routes}, headers=_NO_STORE
        )

    @router.post("/purge")
    async def purge(body: PurgeRequest, request: Request) -> Response:
        """Forget entries by route, exact key, key prefix or tag."""
        problem = refused(request)
        if problem is not None:
            return problem
        given = [v for v in (body.key, body.prefix, body.tag) if v is not None]
        if len(given) > 1:
            return _problem(request, 400, "give at most one of key, prefix, tag")
        registry = cache_registry(runtime().resources)
        if body.route is not None and body.route not in registry.caches:
            return _problem(request, 404, f"route {body.route!r} has no cache")
        removed = await registry.purge(
            route=body.route, key=body.key, prefix=body.prefix, tag=body.tag
        )
        purger: BusPurger | None = runtime().resources.find(PURGER_KEY)
        everywhere = purger is not None and await purger.broadcast(
            route=body.route, key=body.key, prefix=body.prefix, tag=body.tag
        )
        # `purged` counts this worker's memory entries and Redis keys; the other workers'
        # are purged as the bus delivers the command.
        answer = {"purged": removed, "scope": "all" if everywhere else "worker"}
        return JSONResponse(answer, headers=_NO_STORE)

    return router
