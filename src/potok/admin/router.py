"""The admin API's endpoints under /api/v1/admin (FastAPI), every one guarded and audited.

Reads ask every worker (cluster.py) and merge; actions reach every worker and answer
with each worker's result. Breaker and drain overrides are kept by the instance
(overrides.py) and, with `scope=cluster`, sent to every other instance (broadcast.py).
Errors are problem+json like the rest of the own API; an action refused by every worker
alike answers that worker's status (404 unknown service, 409 no breaker), one refused
by some only answers 200 with each result.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path as FilePath
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field, StringConstraints
from starlette.exceptions import HTTPException

from potok.admin import audit as admin_audit
from potok.admin import (
    config_apply,
    config_view,
    rate_limits,
    realtime_view,
    reloads,
    routes_view,
    services,
    traffic,
)
from potok.admin import identity as admin_identity
from potok.admin.agent import ActionError
from potok.admin.broadcast import Unpublished
from potok.admin.guard import AdminGuard, Caller, Refusal
from potok.admin.overrides import Change
from potok.api.problems import problem
from potok.identity.api_keys import SCOPE
from potok.identity.passwords import MAX_PASSWORD, MIN_PASSWORD
from potok.identity.users import ROLE, USERNAME, UserError
from potok.routing.endpoints import ADMIN_PATH

if TYPE_CHECKING:
    from potok.admin.broadcast import ClusterBroadcast
    from potok.admin.cluster import Cluster, Reply
    from potok.runtime import Runtime

PREFIX = ADMIN_PATH
CONFIG_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "application/json")
_CALLER = "admin_caller"
# Path parameters as the config and the stores spell them (anything else: 422).
SERVICE = Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="A service's name.")
TARGET = Path(
    pattern=r"^[A-Za-z0-9_.:\[\]-]{1,300}$", description="A target as host:port ([v6]:port)."
)
REACH = Query(
    "instance",
    description="instance: every worker of this gateway instance; cluster: also every "
    "other instance sharing the realtime event bus (Redis or NATS).",
)
ACK_WAIT = Query(
    1.0,
    ge=0,
    le=5,
    description="With scope=cluster: seconds to collect the other instances' "
    "acknowledgements (0: answer once published).",
)
USER = Path(pattern=USERNAME.pattern, description="A username.")
KEY_ID = Path(pattern=r"^[0-9a-f]{16}$", description="An API key's id.")


@dataclass
class AdminHandle:
    """What the admin API needs from the worker it runs in."""

    cluster: Cluster
    supervised: bool = False
    broadcast: ClusterBroadcast | None = None  # with a realtime event bus

    def runtime(self) -> Runtime:
        return self.cluster.agent.runtime()


class _Answer(Exception):
    """A problem to answer from deep inside a handler."""

    def __init__(self, status: int, detail: str, extra: dict[str, object] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.extra = extra


def _json(document: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    all_headers = {"Cache-Control": "no-store", **(headers or {})}
    return Response(
        orjson.dumps(document, default=str), status, all_headers, media_type="application/json"
    )


class AuditedRoute(APIRoute):
    """Every call recorded with its outcome: refused, failed or done."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        action = self.name

        async def audited(request: Request) -> Response:
            try:
                response = await handler(request)
            except _Answer as answer:
                _audit(request, action, answer.status)
                return problem(request, answer.status, answer.detail, extra=answer.extra)
            except HTTPException as exc:
                _audit(request, action, exc.status_code)
                raise
            except RequestValidationError:
                _audit(request, action, 422)
                raise
            except Exception:
                _audit(request, action, 500)
                raise
            _audit(request, action, response.status_code)
            return response

        return audited


def _audit(request: Request, action: str, status: int) -> None:
    caller: Caller | None = getattr(request.state, _CALLER, None)
    handle: AdminHandle | None = getattr(request.state, "admin_handle", None)
    exchange = request.scope.get("state", {}).get("exchange")
    if handle is None:
        return
    admin_audit.record(
        handle.runtime().identity,
        action,
        status,
        actor=caller.actor if caller is not None else None,
        ip=caller.ip if caller is not None else (exchange.client_ip if exchange else ""),
        request_id=request.headers.get("x-request-id"),
        detail={"method": request.method, "path": request.url.path},
    )


# Request bodies ----------------------------------------------------------------------

# The stores' own rules, in the schema: what fits it is accepted (schemathesis checks).
Role = Annotated[str, StringConstraints(pattern=ROLE.pattern)]
Scope = Annotated[str, StringConstraints(pattern=SCOPE.pattern)]
Reach = Literal["instance", "cluster"]  # how far an override goes


class BreakerAction(BaseModel):
    mode: Literal["open", "closed", "auto"] = Field(
        description="open: refuse every request; closed: never trip; auto: release the override."
    )


class UserCreate(BaseModel):
    username: str = Field(pattern=USERNAME.pattern, description="Login name.")
    password: str = Field(
        min_length=MIN_PASSWORD, max_length=MAX_PASSWORD, description="The initial password."
    )
    roles: list[Role] = Field(
        default_factory=list, max_length=32, description="Roles (letters, digits, '_.:-')."
    )
    org: str | None = Field(None, max_length=128, description="Organisation (tenant).")


class KeyCreate(BaseModel):
    name: str = Field(min_length=1, max_length=128, description="What the key is for.")
    scopes: list[Scope] = Field(default_factory=list, max_length=64, description="Scopes.")
    roles: list[Role] = Field(
        default_factory=list, max_length=32, description="Roles (`admin` for the admin API)."
    )
    org: str | None = Field(None, max_length=128, description="Organisation (tenant).")
    expires_in: float | None = Field(
        None, gt=0, le=10 * 365 * 86400, description="Lifetime in seconds (none: never expires)."
    )


class KeyRotate(BaseModel):
    overlap: float = Field(
        86400.0, ge=0, le=365 * 86400, description="Seconds the old key keeps working (0: none)."
    )
    expires_in: float | None = Field(
        None, gt=0, le=10 * 365 * 86400, description="The new key's lifetime (default: the old's)."
    )


# The router ---------------------------------------------------------------------------


def guard_dependency(
    handle: Callable[[], AdminHandle | None],
) -> Callable[[Request], Awaitable[Caller]]:
    """The dependency every admin router puts first (cache purge and webhook replay
    routers too: `APIRouter(prefix=PREFIX + "/cache", route_class=AuditedRoute,
    dependencies=[Depends(guard_dependency(handle))])`)."""

    async def authorize(request: Request) -> Caller:
        admin = handle()
        if admin is None:
            raise HTTPException(404, "the admin API is not available in this process")
        request.state.admin_handle = admin
        try:
            caller = await AdminGuard(admin.runtime()).authorize(request)
        except Refusal as refusal:
            challenge = {"WWW-Authenticate": 'Bearer realm="potok-admin"'}
            headers = challenge if refusal.status == 401 else None
            raise HTTPException(refusal.status, refusal.detail, headers=headers) from None
        setattr(request.state, _CALLER, caller)
        return caller

    return authorize


def create_admin_router(handle: Callable[[], AdminHandle | None]) -> APIRouter:
    """The admin endpoints; `handle()` is None until the worker has wired them (never
    while it serves)."""
    router = APIRouter(
        prefix=PREFIX,
        tags=["admin"],
        route_class=AuditedRoute,
        dependencies=[Depends(guard_dependency(handle))],
    )

    def admin_of(request: Request) -> AdminHandle:
        found: AdminHandle = request.state.admin_handle
        return found

    def caller_of(request: Request) -> Caller:
        found: Caller = getattr(request.state, _CALLER)
        return found

    async def ask_all(
        request: Request, op: str, args: dict[str, Any] | None = None
    ) -> dict[str, Reply]:
        return await admin_of(request).cluster.ask(op, args)

    async def reports(request: Request) -> dict[str, dict[str, Any]]:
        replies = await ask_all(request, "report")
        return {worker: reply["result"] for worker, reply in replies.items() if reply["ok"]}

    def acted(replies: dict[str, Reply]) -> Response:
        """200 with each worker's result, or the common refusal when all refused alike."""
        failed = [reply for reply in replies.values() if not reply["ok"]]
        if failed and len(failed) == len(replies):
            statuses = {reply["status"] for reply in failed}
            if len(statuses) == 1:
                raise _Answer(failed[0]["status"], failed[0]["detail"])
        return _json({"workers": replies})

    # Reads ------------------------------------------------------------------------

    @router.get("/config")
    async def get_config(request: Request) -> Response:
        """The running config (secrets masked), its digest, and the file it came from with
        its ETag (give it as `If-Match` when applying a new document)."""
        runtime = admin_of(request).runtime()
        reloader = admin_of(request).cluster.agent.reloader
        document: dict[str, Any] = {
            "digest": runtime.digest,
            "loaded_at": runtime.loaded_at,
            "config": config_view.masked(runtime.config),
            "file": None,
        }
        headers = {}
        if reloader is not None:
            path = config_apply.target(reloader.source.path)
            etag = await asyncio.to_thread(_file_etag, path)
            writable = await asyncio.to_thread(_writable, path)
            document["file"] = {"path": str(path), "etag": etag, "writable": writable}
            if etag is not None:
                headers["ETag"] = f'"{etag}"'
        return _json(document, headers=headers)

    @router.get("/routes")
    async def get_routes(request: Request) -> Response:
        """The compiled route table, in the config's order, with each route's policies."""
        return _json({"routes": routes_view.report(admin_of(request).runtime())})

    @router.get("/services")
    async def get_services(request: Request) -> Response:
        """Services and targets over every worker: health, drained, ejections, in-flight;
        each worker's breaker."""
        per_worker = await reports(request)
        merged = services.merge({w: r["services"] for w, r in per_worker.items()})
        return _json({"services": merged})

    @router.get("/breakers")
    async def get_breakers(request: Request) -> Response:
        """Every circuit breaker, per worker: state, why it last moved, whether an
        operator holds it, seconds open, seconds to half-open."""
        per_worker = await reports(request)
        merged = services.merge({w: r["services"] for w, r in per_worker.items()})
        breakers = {
            name: {"state": svc["breaker"], "workers": svc["breakers"]}
            for name, svc in merged.items()
            if svc["breaker"] is not None
        }
        return _json({"breakers": breakers})

    @router.get("/rate-limits")
    async def get_rate_limits(request: Request) -> Response:
        """Rate-limit policies and the keys they refused most lately, summed over workers."""
        per_worker = await reports(request)
        merged = rate_limits.merge({w: r["rate_limits"] for w, r in per_worker.items()})
        return _json({"rate_limits": merged})

    @router.get("/realtime")
    async def get_realtime(request: Request) -> Response:
        """WebSocket connections and the busiest channels' subscriber counts."""
        per_worker = await reports(request)
        return _json(realtime_view.merge({w: r["realtime"] for w, r in per_worker.items()}))

    @router.get("/workers")
    async def get_workers(request: Request) -> Response:
        """Each worker process: pid, uptime, config digest, connections, in-flight."""
        replies = await ask_all(request, "report")
        runtime = admin_of(request).runtime()
        workers = [
            reply["result"]["worker"]
            if reply["ok"]
            else {"id": worker, "unreachable": reply["detail"]}
            for worker, reply in sorted(replies.items())
        ]
        return _json({"expected": runtime.config.server.workers, "workers": workers})

    @router.get("/reloads")
    async def get_reloads(request: Request, limit: int = Query(20, ge=1, le=1000)) -> Response:
        """The last reloads of every worker, newest first, with their results."""
        per_worker = await reports(request)
        merged = reloads.merge({w: r["reloads"] for w, r in per_worker.items()}, limit)
        return _json({"reloads": merged})

    @router.get("/traffic")
    async def get_traffic(request: Request) -> Response:
        """Requests answered per route by status class since each worker started (summed)."""
        per_worker = await reports(request)
        return _json(
            {
                "at": asyncio.get_running_loop().time(),
                "routes": traffic.merge({w: r["traffic"] for w, r in per_worker.items()}),
            }
        )

    @router.get("/status")
    async def get_status(request: Request) -> Response:
        """Everything `potok status` shows, in one call."""
        replies = await ask_all(request, "report")
        per_worker = {w: r["result"] for w, r in replies.items() if r["ok"]}
        runtime = admin_of(request).runtime()
        merged = services.merge({w: r["services"] for w, r in per_worker.items()})
        return _json(
            {
                "digest": runtime.digest,
                "expected_workers": runtime.config.server.workers,
                "workers": [
                    r["result"]["worker"] if r["ok"] else {"id": w, "unreachable": r["detail"]}
                    for w, r in sorted(replies.items())
                ],
                "services": merged,
                "rate_limits": rate_limits.merge(
                    {w: r["rate_limits"] for w, r in per_worker.items()}
                ),
                "realtime": realtime_view.merge({w: r["realtime"] for w, r in per_worker.items()}),
                "reloads": reloads.merge({w: r["reloads"] for w, r in per_worker.items()}, 5),
                "traffic": traffic.merge({w: r["traffic"] for w, r in per_worker.items()}),
            }
        )

    # Actions ------------------------------------------------------------------------

    @router.post("/reload")
    async def reload(request: Request) -> Response:
        """Reload the config file on every worker (as SIGHUP does); each worker's result."""
        admin = admin_of(request)
        if admin.cluster.agent.reloader is None:
            raise _Answer(409, "this gateway was not started from a config file")
        replies = await ask_all(request, "reload", {"trigger": "admin"})
        _tell_supervisor(admin)
        return acted(replies)

    @router.put(
        "/config",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {t: {"schema": {"type": "string"}} for t in CONFIG_TYPES},
            }
        },
    )
    async def apply_config(request: Request) -> Response:
        """Replace the config: validated like `potok check` (422 naming each bad field),
        written to the config file atomically (409 if it is not writable; 412 if
        `If-Match` is not the file's ETag), then reloaded by every worker."""
        admin = admin_of(request)
        reloader = admin.cluster.agent.reloader
        if reloader is None:
            raise _Answer(409, "this gateway was not started from a config file")
        try:
            text = (await request.body()).decode("utf-8")
        except UnicodeDecodeError:
            raise _Answer(400, "the document must be UTF-8 text (YAML or JSON)") from None
        path = config_apply.target(reloader.source.path)
        async with _APPLYING:
            etag = await asyncio.to_thread(_file_etag, path)
            wanted = request.headers.get("if-match")
            if wanted is not None and wanted.strip().strip('"') not in (etag, "*"):
                raise _Answer(412, "the config file changed since it was read (If-Match)")
            if not await asyncio.to_thread(_writable, path):
                try:
                    config_apply.check_writable(path)
                except config_apply.NotWritable as exc:
                    raise _Answer(409, f"cannot write the config back: {exc}") from None
            running = admin.runtime().config
            try:
                await asyncio.to_thread(config_apply.validate, text, reloader.source, running)
            except config_apply.Rejected as rejected:
                errors = [{"field": p.field, "message": p.message} for p in rejected.problems]
                raise _Answer(422, "the config does not validate", {"errors": errors}) from None
            try:
                await asyncio.to_thread(config_apply.write_atomically, path, text)
            except (OSError, config_apply.NotWritable) as exc:
                raise _Answer(409, f"cannot write the config back: {exc}") from None
            replies = await ask_all(request, "reload", {"trigger": "admin: config applied"})
            _tell_supervisor(admin)
        new_etag = await asyncio.to_thread(_file_etag, path)
        return _json({"file": {"path": str(path), "etag": new_etag}, "workers": replies})

    async def override(request: Request, change: Change, scope: str, ack_wait: float) -> Response:
        """Check, keep (the instance's file, before any worker is asked: one starting
        meanwhile reads it), apply on every worker, then with scope=cluster publish."""
        admin = admin_of(request)
        agent = admin.cluster.agent
        broadcast = admin.broadcast
        if scope == "cluster" and (broadcast is None or not broadcast.shared):
            raise _Answer(
                409, "scope=cluster needs a realtime event bus other instances share "
                "(realtime.bus: redis or nats)"
            )  # fmt: skip
        try:
            agent.check(change)
        except ActionError as refusal:
            raise _Answer(refusal.status, refusal.detail) from None
        await agent.overrides.persist(change)
        replies = await ask_all(request, "override", {"change": change.to_json()})
        answer: dict[str, Any] = {"scope": scope, "override": change.to_json(), "workers": replies}
        if broadcast is not None and scope == "cluster":
            try:
                answer["cluster"] = await broadcast.publish(change, ack_wait)
            except Unpublished as exc:
                detail = f"applied on this instance only: the event bus refused it ({exc})"
                raise _Answer(503, detail, answer) from None
        return _json(answer)

    def change_of(
        request: Request,
        kind: Literal["breaker", "drain"],
        service: str,
        state: str,
        *,
        scope: str,
        target: str = "",
    ) -> Change:
        return Change(
            kind=kind,
            service=service,
            state=state,
            actor=caller_of(request).actor,
            at=time.time(),
            target=target,
            origin=admin_of(request).cluster.agent.instance,
            scope=scope,
        )

    @router.post("/services/{service}/breaker")
    async def force_breaker(
        request: Request,
        body: BreakerAction,
        service: str = SERVICE,
        scope: Reach = REACH,
        ack_wait: float = ACK_WAIT,
    ) -> Response:
        """Hold a service's breaker open or closed on every worker, or release it; kept
        by the instance (a restarted worker and a reloaded service keep it)."""
        change = change_of(request, "breaker", service, body.mode, scope=scope)
        return await override(request, change, scope, ack_wait)

    @router.post("/services/{service}/targets/{target}/drain")
    async def drain_target(
        request: Request,
        service: str = SERVICE,
        target: str = TARGET,
        scope: Reach = REACH,
        ack_wait: float = ACK_WAIT,
    ) -> Response:
        """No new requests to this target on any worker; those in flight finish. Kept by
        the instance (a restarted worker and a reloaded service keep it)."""
        change = change_of(request, "drain", service, "drained", scope=scope, target=target)
        return await override(request, change, scope, ack_wait)

    @router.post("/services/{service}/targets/{target}/enable")
    async def enable_target(
        request: Request,
        service: str = SERVICE,
        target: str = TARGET,
        scope: Reach = REACH,
        ack_wait: float = ACK_WAIT,
    ) -> Response:
        """Put a drained target back in rotation on every worker."""
        change = change_of(request, "drain", service, "enabled", scope=scope, target=target)
        return await override(request, change, scope, ack_wait)

    # Users, keys, audit ---------------------------------------------------------------

    @router.get("/users")
    async def list_users(request: Request) -> Response:
        """Every user (never a password hash)."""
        users = await _identity(admin_identity.list_users(_idt(request)))
        return _json({"users": [admin_identity.user_row(u) for u in users]})

    @router.post("/users", status_code=201)
    async def create_user(request: Request, body: UserCreate) -> Response:
        """Create a user (409 if the name is taken)."""
        user = await _identity(
            admin_identity.create_user(
                _idt(request),
                username=body.username,
                password=body.password,
                roles=tuple(body.roles),
                org=body.org,
                by=caller_of(request).actor,
            )
        )
        return _json(admin_identity.user_row(user), 201)

    @router.post("/users/{username}/disable")
    async def disable_user(request: Request, username: str = USER) -> Response:
        """Disable a user and end their sessions (refresh and access tokens)."""
        user = await _identity(
            admin_identity.set_disabled(_idt(request), username, True, caller_of(request).actor)
        )
        return _json(admin_identity.user_row(user))

    @router.post("/users/{username}/enable")
    async def enable_user(request: Request, username: str = USER) -> Response:
        """Let a disabled user log in again."""
        user = await _identity(
            admin_identity.set_disabled(_idt(request), username, False, caller_of(request).actor)
        )
        return _json(admin_identity.user_row(user))

    @router.get("/keys")
    async def list_keys(request: Request) -> Response:
        """Every API key's record (never the key)."""
        keys = await _identity(admin_identity.list_keys(_idt(request)))
        return _json({"keys": [admin_identity.key_row(k) for k in keys]})

    @router.post("/keys", status_code=201)
    async def create_key(request: Request, body: KeyCreate) -> Response:
        """Create a key, usable at once on every worker: the answer is the only time the
        key itself is shown."""
        key, plaintext = await _identity(
            admin_identity.create_key(
                _idt(request),
                name=body.name,
                scopes=tuple(body.scopes),
                roles=tuple(body.roles),
                org=body.org,
                expires_in=body.expires_in,
                by=caller_of(request).actor,
            )
        )
        await ask_all(request, "sync_keys")  # usable at once on every worker
        return _json({**admin_identity.key_row(key), "key": plaintext}, 201)

    @router.post("/keys/{key_id}/revoke")
    async def revoke_key(request: Request, key_id: str = KEY_ID) -> Response:
        """Revoke a key now, on every worker."""
        key = await _identity(
            admin_identity.revoke_key(_idt(request), key_id, caller_of(request).actor)
        )
        await ask_all(request, "sync_keys")
        return _json(admin_identity.key_row(key))

    @router.post("/keys/{key_id}/rotate")
    async def rotate_key(request: Request, body: KeyRotate, key_id: str = KEY_ID) -> Response:
        """A new key with the same name, scopes, roles and org; the old one works for
        `overlap` more seconds (0: refused at once, on every worker)."""
        old, new, plaintext = await _identity(
            admin_identity.rotate_key(
                _idt(request), key_id, body.overlap, body.expires_in, caller_of(request).actor
            )
        )
        await ask_all(request, "sync_keys")
        return _json(
            {
                "old": admin_identity.key_row(old),
                "new": {**admin_identity.key_row(new), "key": plaintext},
            }
        )

    @router.get("/audit")
    async def query_audit(
        request: Request,
        *,
        since: float | None = Query(None, description="UNIX time: events at or after it."),
        until: float | None = Query(None, description="UNIX time: events before it."),
        actor: str | None = Query(None, max_length=256, description="Who (username, key:<id>)."),
        action: str | None = Query(
            None, max_length=128, description="Event name; `*` matches any run (`admin.*`)."
        ),
        limit: int = Query(100, ge=1, le=1000),
    ) -> Response:
        """Audit events, newest first (logins, keys, users, every admin call)."""
        events = await _identity(
            admin_identity.query_audit(
                _idt(request), since=since, until=until, actor=actor, action=action, limit=limit
            )
        )
        return _json({"events": [admin_identity.event_row(e) for e in events]})

    return router


_APPLYING = asyncio.Lock()
_T = TypeVar("_T")


def _idt(request: Request) -> Any:
    admin: AdminHandle = request.state.admin_handle
    return admin.runtime().identity


async def _identity(action: Awaitable[_T]) -> _T:
    """The identity layer's refusals as problems: no database 404, a conflict 409."""
    try:
        return await action
    except admin_identity.NoDatabase as exc:
        raise _Answer(404, str(exc)) from None
    except UserError as exc:
        status = 404 if str(exc).startswith("no ") else 409
        raise _Answer(status, str(exc)) from None


def _file_etag(path: FilePath) -> str | None:
    try:
        return config_view.file_digest(path.read_bytes())
    except OSError:
        return None


def _writable(path: FilePath) -> bool:
    try:
        config_apply.check_writable(path)
    except config_apply.NotWritable:
        return False
    return True


def _tell_supervisor(admin: AdminHandle) -> None:
    """Under `--workers N`: the supervisor takes the file's config as the one a restarted
    worker starts from (SIGUSR1: adopt, without reloading the workers again)."""
    if admin.supervised:
        os.kill(os.getppid(), signal.SIGUSR1)


# (method, path) -> the problem answers each operation can give (api/openapi.py).
ANSWERS: dict[tuple[str, str], tuple[int, ...]] = {
    ("get", "/config"): (401, 403),
    ("get", "/routes"): (401, 403),
    ("get", "/services"): (401, 403),
    ("get", "/breakers"): (401, 403),
    ("get", "/rate-limits"): (401, 403),
    ("get", "/realtime"): (401, 403),
    ("get", "/workers"): (401, 403),
    ("get", "/reloads"): (401, 403, 422),
    ("get", "/traffic"): (401, 403),
    ("get", "/status"): (401, 403),
    ("post", "/reload"): (401, 403, 409),
    ("put", "/config"): (400, 401, 403, 409, 412, 413, 422),
    ("post", "/services/{service}/breaker"): (400, 401, 403, 404, 409, 413, 422, 503),
    ("post", "/services/{service}/targets/{target}/drain"): (400, 401, 403, 404, 409, 422, 503),
    ("post", "/services/{service}/targets/{target}/enable"): (400, 401, 403, 404, 409, 422, 503),
    ("get", "/users"): (401, 403, 404),
    ("post", "/users"): (400, 401, 403, 404, 409, 413, 422),
    ("post", "/users/{username}/disable"): (400, 401, 403, 404, 422),
    ("post", "/users/{username}/enable"): (400, 401, 403, 404, 422),
    ("get", "/keys"): (401, 403, 404),
    ("post", "/keys"): (400, 401, 403, 404, 413, 422),
    ("post", "/keys/{key_id}/revoke"): (400, 401, 403, 404, 409, 422),
    ("post", "/keys/{key_id}/rotate"): (400, 401, 403, 404, 409, 413, 422),
    ("get", "/audit"): (401, 403, 404, 422),
}
