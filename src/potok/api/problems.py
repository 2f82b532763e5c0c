"""Every error the own API makes is RFC 9457 problem+json with the request id.

FastAPI answers its own errors (unknown path, wrong method, a body that does not
parse or validate) as `{"detail": ...}`; these handlers turn each into the same
problem document the proxy's errors use. A body that is not a JSON object (not
JSON, not UTF-8, or sent as text/plain) is a 400; a JSON object whose fields do
not fit is a 422 listing the fields.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import orjson
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException
from starlette.routing import Match

from potok.errors import problem_body

log = structlog.get_logger("potok.api")

MEDIA_TYPE = "application/problem+json"
# Validation errors of the body as a whole that mean "this is not a JSON object".
_NOT_AN_OBJECT = frozenset({"json_invalid", "model_attributes_type", "dict_type", "model_type"})
NOT_A_JSON_OBJECT = "the body must be a JSON object (application/json, UTF-8)"
# FastAPI's and Starlette's bare phrases, said in the gateway's words.
_REWORDED = {
    "Not Found": "no such endpoint in the gateway's API",
    "Method Not Allowed": "method not allowed here",
    "There was an error parsing the body": NOT_A_JSON_OBJECT,
}


def problem(
    request: Request,
    status: int,
    detail: str,
    headers: dict[str, str] | None = None,
    extra: dict[str, object] | None = None,
) -> Response:
    body = problem_body(
        status,
        detail=detail,
        instance=request.url.path,
        request_id=request.headers.get("x-request-id"),
        extra=extra,
    )
    return Response(body, status, headers=headers, media_type=MEDIA_TYPE)


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(part) for part in loc[1:]] if loc and loc[0] == "body" else [str(p) for p in loc]
    return ".".join(parts) or "body"


def _message(error: dict[str, Any]) -> str:
    """Pydantic's message; where it quotes the client's value, quote it as JSON (null, not None)."""
    message = str(error.get("msg", "invalid"))
    if "input" in error and "None" in message and error["input"] is None:
        message = message.replace("None", "null")
    return message


def _not_an_object(error: dict[str, Any]) -> bool:
    kind = error.get("type")
    return kind == "json_invalid" or (
        kind in _NOT_AN_OBJECT and tuple(error.get("loc", ())) == ("body",)
    )


def validation_problem(request: Request, exc: RequestValidationError) -> Response:
    errors = list(exc.errors())
    if any(_not_an_object(e) for e in errors):
        return problem(request, 400, NOT_A_JSON_OBJECT)
    fields = [{"field": _field(tuple(e.get("loc", ()))), "message": _message(e)} for e in errors]
    return problem(request, 422, "the body does not validate", extra={"errors": fields})


def http_problem(request: Request, exc: HTTPException) -> Response:
    status = exc.status_code
    text = exc.detail if isinstance(exc.detail, str) else orjson.dumps(exc.detail).decode()
    text = _REWORDED.get(text, text)
    headers = dict(exc.headers or {})
    if status == 405:
        headers["Allow"] = _allowed(request) or headers.get("Allow", "")
    return problem(request, status, text, headers=headers)


def _allowed(request: Request) -> str:
    """Every method of every route at this path: Starlette's 405 names only the first
    route's (one route per method, as FastAPI makes them: GET and PUT /config)."""
    return ", ".join(sorted(_methods(request.app.router.routes, request.scope)))


def _methods(routes: list[Any], scope: MutableMapping[str, Any]) -> set[str]:
    methods: set[str] = set()
    for route in routes:
        included = getattr(route, "original_router", None)  # an included router's routes
        if included is not None:
            methods |= _methods(included.routes, scope)
            continue
        match, _ = route.matches(scope)
        if match is not Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return methods


def server_problem(request: Request, exc: Exception) -> Response:
    log.error("own API request failed", path=request.url.path, error=repr(exc))
    return problem(request, 500, "the gateway failed to answer this request")


def install(app: FastAPI) -> None:
    """Register the handlers on the own API's app."""
    app.add_exception_handler(Exception, server_problem)
    app.add_exception_handler(RequestValidationError, validation_problem)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, http_problem)  # type: ignore[arg-type]
