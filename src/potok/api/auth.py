"""The token service's endpoints under /api/v1/auth: login, refresh, logout, profile."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from potok.errors import problem_body
from potok.identity.token_service import AuthFailure, TokenService

if TYPE_CHECKING:
    from potok.runtime import Runtime

PREFIX = "/api/v1/auth"
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class LoginRequest(BaseModel):
    username: str = Field(min_length=1, max_length=256, description="The user's name.")
    password: str = Field(min_length=1, max_length=1024, description="The user's password.")


class RefreshRequest(BaseModel):
    refresh_token: str = Field(
        min_length=1, max_length=256, description="The latest refresh token."
    )


class LogoutRequest(BaseModel):
    refresh_token: str | None = Field(
        None, max_length=256, description="Also end this refresh-token family."
    )


class TokenResponse(BaseModel):
    access_token: str = Field(description="JWT for `Authorization: Bearer`.")
    refresh_token: str = Field(description="Single-use token for /auth/refresh.")
    token_type: str = Field(description="Always 'Bearer'.")
    expires_in: int = Field(description="Seconds until the access token expires.")


class ProfileResponse(BaseModel):
    id: str = Field(description="User id (the token's `sub`).")
    username: str = Field(description="Login name.")
    roles: list[str] = Field(description="Roles.")
    org: str | None = Field(description="Organisation (tenant).")
    created_at: float = Field(description="UNIX time the user was created.")


def _problem(request: Request, status: int, detail: str, retry_after: float | None) -> Response:
    headers = dict(_NO_STORE)
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="potok"'
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, int(retry_after + 0.999)))
    body = problem_body(
        status,
        detail=detail,
        instance=request.url.path,
        request_id=request.headers.get("x-request-id"),
    )
    return Response(body, status, headers=headers, media_type="application/problem+json")


def create_auth_router(runtime: Callable[[], Runtime]) -> APIRouter:
    router = APIRouter(prefix=PREFIX, tags=["auth"])

    def service() -> TokenService | None:
        return runtime().identity.token_service

    def unavailable(request: Request) -> Response:
        return _problem(request, 404, "the token service is not enabled (auth.token_service)", None)

    def client(request: Request) -> str:
        return request.client.host if request.client is not None else ""

    def request_id(request: Request) -> str:
        return request.headers.get("x-request-id", "")

    @router.post(
        "/login",
        response_model=TokenResponse,
        responses={401: {"description": "Bad credentials"}, 429: {"description": "Locked"}},
    )
    async def login(body: LoginRequest, request: Request) -> Response:
        """Exchange username and password for an access token and a refresh token."""
        tokens = service()
        if tokens is None:
            return unavailable(request)
        try:
            pair = await tokens.login(
                body.username, body.password, client(request), request_id(request)
            )
        except AuthFailure as exc:
            return _problem(request, exc.status, exc.message, exc.retry_after)
        return JSONResponse(pair.body(), headers=_NO_STORE)

    @router.post("/refresh", response_model=TokenResponse)
    async def refresh(body: RefreshRequest, request: Request) -> Response:
        """Rotate: the refresh token is spent and a new pair returned. Reusing a spent token
        revokes its whole family."""
        tokens = service()
        if tokens is None:
            return unavailable(request)
        try:
            pair = await tokens.refresh(body.refresh_token, client(request), request_id(request))
        except AuthFailure as exc:
            return _problem(request, exc.status, exc.message, exc.retry_after)
        return JSONResponse(pair.body(), headers=_NO_STORE)

    @router.post("/logout", status_code=204)
    async def logout(request: Request, body: LogoutRequest | None = None) -> Response:
        """Revoke the bearer access token (and the refresh family, if its token is given)."""
        tokens = service()
        if tokens is None:
            return unavailable(request)
        try:
            principal = tokens.authenticate(request.headers.get("authorization"))
            refresh_token = body.refresh_token if body is not None else None
            await tokens.logout(principal, refresh_token, client(request), request_id(request))
        except AuthFailure as exc:
            return _problem(request, exc.status, exc.message, exc.retry_after)
        return Response(status_code=204, headers=_NO_STORE)

    @router.get("/profile", response_model=ProfileResponse)
    async def profile(request: Request) -> Response:
        """The user behind the bearer access token."""
        tokens = service()
        if tokens is None:
            return unavailable(request)
        try:
            principal = tokens.authenticate(request.headers.get("authorization"))
        except AuthFailure as exc:
            return _problem(request, exc.status, exc.message, exc.retry_after)
        user = await tokens.users.by_id(principal.subject)
        if user is None or user.disabled:
            return _problem(request, 401, "token revoked", None)
        document: dict[str, Any] = {
            "id": user.id,
            "username": user.username,
            "roles": list(user.roles),
            "org": user.org,
            "created_at": user.created_at,
        }
        return JSONResponse(document, headers=_NO_STORE)

    return router
