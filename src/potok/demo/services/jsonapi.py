"""What every demo service shares: JSON replies, body parsing, errors, the service-key check.

Each reply names the service that answered, its version (`service_version` and the
X-Service-Version header: v1, or what POTOK_DEMO_SERVICE_VERSION says, as for the
demo's canary instance of the state service) and echoes the X-Request-ID it received,
so a caller can see the gateway's routing, canary and correlation id at work.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Sequence
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

SERVICE_KEY_HEADER = "X-Service-Key"
_SERVICE_KEY_HEADER_LOWER = SERVICE_KEY_HEADER.lower().encode()
MAX_BODY_BYTES = 64 * 1024
VERSION_ENV = "POTOK_DEMO_SERVICE_VERSION"

Model = TypeVar("Model", bound=BaseModel)


class ServiceError(Exception):
    """Raised by a handler to answer with an error document."""

    def __init__(
        self, status: int, message: str, fields: list[dict[str, str]] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.fields = fields


def api_key_from_env(variable: str) -> str | None:
    """The key the service demands, or None (no check) when the variable is unset or empty."""
    return os.environ.get(variable) or None


class JsonService:
    """One demo service's identity and the helpers its handlers use."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.version = os.environ.get(VERSION_ENV) or "v1"

    def reply(
        self,
        request: Request,
        payload: dict[str, Any],
        status: int = 200,
        headers: dict[str, str] | None = None,
    ) -> Response:
        document = {
            "service": self.name,
            "service_version": self.version,
            "request_id": request.headers.get("x-request-id"),
            **payload,
        }
        served = {"X-Served-By": self.name, "X-Service-Version": self.version}
        return JSONResponse(document, status_code=status, headers={**served, **(headers or {})})

    def error(
        self,
        request: Request,
        status: int,
        message: str,
        fields: list[dict[str, str]] | None = None,
    ) -> Response:
        error: dict[str, Any] = {"status": status, "message": message}
        if fields:
            error["fields"] = fields
        return self.reply(request, {"error": error}, status)

    async def parse(self, request: Request, model: type[Model]) -> Model:
        """The body validated against `model`: 400 if it is not JSON, 422 if it does not fit."""
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            raise ServiceError(413, f"body larger than {MAX_BODY_BYTES} bytes")
        if not body:
            raise ServiceError(400, "a JSON body is required")
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise ServiceError(400, f"body is not valid JSON: {exc}") from None
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            fields = [
                {
                    "field": ".".join(str(p) for p in err["loc"]) or "(body)",
                    "message": err["msg"].removeprefix("Value error, "),
                }
                for err in exc.errors()
            ]
            raise ServiceError(422, "the body does not validate", fields) from None

    def app(self, routes: Sequence[BaseRoute], api_key: str | None) -> ASGIApp:
        """A Starlette app with JSON errors, behind the service-key check if `api_key` is set."""

        async def service_error(request: Request, exc: Exception) -> Response:
            assert isinstance(exc, ServiceError)
            return self.error(request, exc.status, exc.message, exc.fields)

        async def http_error(request: Request, exc: Exception) -> Response:
            assert isinstance(exc, HTTPException)
            response = self.error(request, exc.status_code, str(exc.detail))
            response.headers.update(exc.headers or {})  # Allow, on a 405
            return response

        async def healthz(request: Request) -> Response:
            return self.reply(request, {"status": "ok"})

        app = Starlette(
            routes=[*routes, Route("/healthz", healthz, methods=["GET"])],
            exception_handlers={ServiceError: service_error, HTTPException: http_error},
        )
        if api_key is None:
            return app
        return ServiceKeyGuard(app, self, api_key)


class ServiceKeyGuard:
    """Plain ASGI middleware: 401 unless X-Service-Key carries the key (/healthz is open)."""

    def __init__(self, app: ASGIApp, service: JsonService, key: str) -> None:
        self.app = app
        self.service = service
        self.key = key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] != "/healthz":
            presented = next(
                (v for n, v in scope["headers"] if n == _SERVICE_KEY_HEADER_LOWER), b""
            )
            if not hmac.compare_digest(presented, self.key):
                request = Request(scope, receive)
                message = f"missing or wrong {SERVICE_KEY_HEADER}"
                response = self.service.error(request, 401, message)
                response.headers["WWW-Authenticate"] = SERVICE_KEY_HEADER
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def path_int(request: Request, name: str) -> int:
    """A numeric path parameter, or 404 (a non-number cannot name anything)."""
    raw = request.path_params[name]
    if not raw.isdigit() or len(raw) > 18:
        raise ServiceError(404, f"no {name.removesuffix('_id')} {raw!r}")
    return int(raw)
