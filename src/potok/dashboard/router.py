"""/dashboard: the page, its assets and its live stream, on the same ports and behind the
same guard as the admin API (admin/guard.py): the metrics listener (open to
`admin.allow_from` there by default), the public port only with `admin.public`, and
credentials with `admin.role` wherever the admin API needs them.

- GET /dashboard: the page. Refused (403) outside `admin.allow_from`; where credentials
  are needed and none came (a browser's navigation cannot send a header), 401 with the
  page in sign-in mode: it asks for an admin API key or token, keeps it for the tab
  (sessionStorage) and sends it as a header on every call — never a cookie, so another
  site cannot make the browser act with it (no CSRF).
- GET /dashboard/assets/{name}: the page's CSS and JS (code shipped in the package,
  nothing about the gateway): `admin.allow_from` only, so the sign-in page can load them.
- GET /dashboard/stream: Server-Sent Events, one `snapshot` event every `interval`
  seconds (snapshot.py); guarded and audited like an admin read; credentials are checked
  again at every event, so a revoked key stops the stream at once.

Actions (breaker force, target drain/enable) are the admin API's own endpoints, called
by the page: one place for every rule and audit record.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections.abc import AsyncIterator, Callable
from importlib import resources
from typing import TYPE_CHECKING

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response, StreamingResponse
from starlette.exceptions import HTTPException

from potok.admin import audit as admin_audit
from potok.admin.guard import AdminGuard, Caller, Refusal
from potok.admin.router import AdminHandle, AuditedRoute, guard_dependency
from potok.dashboard.snapshot import Snapshots
from potok.routing.endpoints import DASHBOARD_PATH
from potok.upstream.forwarded import TrustedProxies

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

    from potok.exchange import Exchange

# The stream ends after this long and the page reconnects (authorized afresh).
STREAM_LIFETIME = 300.0
SIGNIN_MARK = b'data-mode="dashboard"'
SECURITY_HEADERS = {
    # Only the page's own files; no inline script or style; never framed (the action
    # buttons must not be clickjacked); nothing leaks in a Referer.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class _Asset:
    __slots__ = ("body", "etag", "media_type")

    def __init__(self, name: str, media_type: str) -> None:
        self.body = resources.files("potok.dashboard").joinpath("static", name).read_bytes()
        self.etag = '"' + hashlib.sha256(self.body).hexdigest()[:16] + '"'
        self.media_type = media_type


def _assets() -> dict[str, _Asset]:
    return {
        "dashboard.css": _Asset("dashboard.css", "text/css; charset=utf-8"),
        "dashboard.js": _Asset("dashboard.js", "text/javascript; charset=utf-8"),
    }


def create_dashboard_router(
    handle: Callable[[], AdminHandle | None],
    registry: CollectorRegistry,
    is_ready: Callable[[], bool],
) -> APIRouter:
    router = APIRouter(prefix=DASHBOARD_PATH, include_in_schema=False)
    page = resources.files("potok.dashboard").joinpath("static", "index.html").read_bytes()
    signin_page = page.replace(SIGNIN_MARK, b'data-mode="signin"')
    assets = _assets()

    def admin_of() -> AdminHandle:
        admin = handle()
        if admin is None:
            raise HTTPException(404, "the dashboard is not available in this process")
        return admin

    @router.get("")
    async def dashboard_page(request: Request) -> Response:
        admin = admin_of()
        guard = AdminGuard(admin.runtime())
        try:
            caller = await guard.authorize(request)
        except Refusal as refusal:
            _record(admin, request, None, refusal.status)
            if refusal.status != 401:
                raise HTTPException(refusal.status, refusal.detail) from None
            # Nothing of the gateway in it: the form that asks for credentials.
            headers = {**SECURITY_HEADERS, "Cache-Control": "no-store"}
            headers["WWW-Authenticate"] = 'Bearer realm="potok-admin"'
            return Response(signin_page, 401, headers, media_type="text/html; charset=utf-8")
        _record(admin, request, caller, 200)
        headers = {**SECURITY_HEADERS, "Cache-Control": "no-store"}
        return Response(page, 200, headers, media_type="text/html; charset=utf-8")

    @router.get("/assets/{name}")
    async def dashboard_asset(request: Request, name: str) -> Response:
        admin = admin_of()
        exchange = _exchange(request)
        allowed = TrustedProxies(admin.runtime().config.admin.allow_from)
        if not allowed.contains(exchange.client_ip if exchange is not None else ""):
            raise HTTPException(403, "the dashboard is not open to this client (admin.allow_from)")
        asset = assets.get(name)
        if asset is None:
            raise HTTPException(404, "no such dashboard asset")
        headers = {**SECURITY_HEADERS, "ETag": asset.etag, "Cache-Control": "no-cache"}
        if request.headers.get("if-none-match") == asset.etag:
            return Response(None, 304, headers)
        return Response(asset.body, 200, headers, media_type=asset.media_type)

    async def dashboard_stream(
        request: Request, interval: float = Query(2.0, ge=0.5, le=60.0)
    ) -> Response:
        admin = admin_of()
        exchange = _exchange(request)
        if exchange is not None and exchange.timer is not None:
            # A stream outlives the own API's request deadline; it ends by itself instead.
            exchange.timer.cancel()
            exchange.timer = None
        events = _events(
            request,
            admin,
            registry=registry,
            is_ready=is_ready,
            interval=interval,
        )
        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)

    # Guarded and audited exactly like an admin API read.
    router.add_api_route(
        "/stream",
        dashboard_stream,
        methods=["GET"],
        dependencies=[Depends(guard_dependency(handle))],
        route_class_override=AuditedRoute,
    )
    return router


async def _events(
    request: Request,
    admin: AdminHandle,
    *,
    registry: CollectorRegistry,
    is_ready: Callable[[], bool],
    interval: float,
) -> AsyncIterator[bytes]:
    exchange = _exchange(request)
    snapshots = Snapshots(admin, registry)
    ends = time.monotonic() + STREAM_LIFETIME

    def going_on() -> bool:
        """The page is still there, the gateway is not draining, the lifetime not over."""
        current = exchange is None or exchange.is_current()
        return current and is_ready() and time.monotonic() < ends

    yield b"retry: 3000\n\n"
    while going_on():
        # Authorized again at every update, under the running config: a revoked key, a
        # disabled user or a narrowed `allow_from` ends the stream now, not at its end.
        try:
            await AdminGuard(admin.runtime()).authorize(request)
        except Refusal as refusal:
            detail = orjson.dumps({"status": refusal.status, "detail": refusal.detail})
            yield b"event: refused\ndata: " + detail + b"\n\n"
            return
        document = await snapshots.next()
        yield b"event: snapshot\ndata: " + orjson.dumps(document, default=str) + b"\n\n"
        # Slept in short steps: a closed page or a draining gateway ends the stream
        # within a second, whatever the interval.
        steps = math.ceil(interval)
        for _ in range(steps):
            if not going_on():
                return
            await asyncio.sleep(interval / steps)


def _exchange(request: Request) -> Exchange | None:
    found: Exchange | None = request.scope.get("state", {}).get("exchange")
    return found


def _record(admin: AdminHandle, request: Request, caller: Caller | None, status: int) -> None:
    exchange = _exchange(request)
    admin_audit.record(
        admin.runtime().identity,
        "dashboard_page",
        status,
        actor=caller.actor if caller is not None else None,
        ip=caller.ip if caller is not None else (exchange.client_ip if exchange else ""),
        request_id=request.headers.get("x-request-id"),
        detail={"method": request.method, "path": request.url.path},
    )
