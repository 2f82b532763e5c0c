"""Admin endpoints for the outbox (role `admin`, a bearer token of the token service):
list, show, replay and purge deliveries, and the outbox depth per source.

Mounted under /api/v1/admin/webhooks by `api/app.py` like the other own-API routers; the
admin API (its own package) is expected to re-home it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from potok.admin.guard import AdminGuard, Refusal
from potok.errors import problem_body
from potok.identity.token_service import AuthFailure
from potok.routing.endpoints import WEBHOOKS_ADMIN_PATH

if TYPE_CHECKING:
    from potok.runtime import Runtime
    from potok.webhooks.outbox.base import Outbox

ADMIN_ROLE = "admin"
_NO_STORE = {"Cache-Control": "no-store"}
_PROBLEM = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
# Every answer besides the 2xx is problem+json (documented, so clients and fuzzers can
# trust the document).
_ANSWERS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No valid bearer token.", "content": _PROBLEM,
          "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}}},
    403: {"description": "The token's user lacks the admin role.", "content": _PROBLEM},
    404: {"description": "No such delivery, or webhooks are not configured.",
          "content": _PROBLEM},
    422: {"description": "A query parameter does not validate.", "content": _PROBLEM},
    503: {"description": "The token service is off: no admin can sign in.", "content": _PROBLEM},
}  # fmt: skip
_SECURED: dict[str, Any] = {"security": [{"bearer": []}]}


def _problem(request: Request, status: int, detail: str) -> Response:
    body = problem_body(
        status, detail=detail, instance=request.url.path,
        request_id=request.headers.get("x-request-id"),
    )  # fmt: skip
    headers = {"WWW-Authenticate": 'Bearer realm="potok"'} if status == 401 else None
    return Response(body, status, headers=headers, media_type="application/problem+json")


def create_webhooks_admin_router(runtime: Callable[[], Runtime]) -> APIRouter:
    router = APIRouter(prefix=WEBHOOKS_ADMIN_PATH, tags=["webhooks"], responses=_ANSWERS)

    def authorized(request: Request) -> Outbox | Response:
        """The outbox, or the refusal (401 no/invalid token, 403 not admin, 404 off)."""
        current = runtime()
        try:
            # allow_from and the cross-site check, as for the rest of the admin API.
            AdminGuard(current).screen(request)
        except Refusal as refusal:
            return _problem(request, refusal.status, refusal.detail)
        tokens = current.identity.token_service
        if tokens is None:
            return _problem(request, 503, "the token service is off: no admin can sign in")
        try:
            principal = tokens.authenticate(request.headers.get("authorization"))
        except AuthFailure as exc:
            return _problem(request, exc.status, exc.message)
        if ADMIN_ROLE not in principal.roles:
            return _problem(request, 403, "the admin role is required")
        if current.webhooks is None:
            return _problem(request, 404, "webhooks are not configured")
        return current.webhooks.outbox

    @router.get("/deliveries", openapi_extra=_SECURED)
    async def deliveries(
        request: Request,
        state: Literal["pending", "delivered", "dead"] | None = None,
        source: str | None = None,
        limit: int = Query(50, ge=1, le=1000),
    ) -> Response:
        """Stored deliveries, newest first (without their bodies)."""
        outbox = authorized(request)
        if isinstance(outbox, Response):
            return outbox
        found = await outbox.recent(state, source, limit)
        return JSONResponse({"deliveries": [d.summary() for d in found]}, headers=_NO_STORE)

    @router.get("/deliveries/{delivery_id}", openapi_extra=_SECURED)
    async def delivery(request: Request, delivery_id: str) -> Response:
        """One delivery with its stored headers and body."""
        outbox = authorized(request)
        if isinstance(outbox, Response):
            return outbox
        found = await outbox.get(delivery_id)
        if found is None:
            return _problem(request, 404, "no such delivery")
        document: dict[str, Any] = found.summary() | {
            "replay_key": found.replay_key,
            "headers": dict(found.headers),
            "body": found.body.decode("utf-8", "replace"),
        }
        return JSONResponse(document, headers=_NO_STORE)

    @router.post("/deliveries/{delivery_id}/replay", status_code=202, openapi_extra=_SECURED)
    async def replay(request: Request, delivery_id: str) -> Response:
        """Deliver again now, whatever its state (attempts start over)."""
        outbox = authorized(request)
        if isinstance(outbox, Response):
            return outbox
        if not await outbox.replay(delivery_id, time.time()):
            return _problem(request, 404, "no such delivery")
        current = runtime()
        if current.webhooks is not None:
            current.webhooks.delivery_stored()
        return JSONResponse({"id": delivery_id, "state": "pending"}, status_code=202)

    # A path of its own (not DELETE /deliveries): Starlette's 405 lists the methods of
    # one route per path, so GET and DELETE there would announce an incomplete Allow.
    @router.post("/purge", openapi_extra=_SECURED)
    async def purge(
        request: Request,
        state: Literal["delivered", "dead"],
        older_than: float = Query(0.0, ge=0, description="Seconds since received."),
    ) -> Response:
        """Delete delivered or dead deliveries received at least `older_than` seconds ago."""
        outbox = authorized(request)
        if isinstance(outbox, Response):
            return outbox
        deleted = await outbox.purge(state, time.time() - older_than)
        return JSONResponse({"purged": deleted})

    @router.get("/outbox", openapi_extra=_SECURED)
    async def depth(request: Request) -> Response:
        """Pending deliveries and the oldest one's age, per source."""
        outbox = authorized(request)
        if isinstance(outbox, Response):
            return outbox
        now = time.time()
        rows = await outbox.depth()
        return JSONResponse(
            {
                "sources": {
                    d.source: {
                        "pending": d.pending,
                        "oldest_age_seconds": now - d.oldest if d.oldest else 0.0,
                    }
                    for d in rows
                }
            },
            headers=_NO_STORE,
        )

    return router
