"""The own API's OpenAPI document, completed with every answer the gateway can give.

FastAPI documents what a route function returns and its own 422. The gateway
answers more: 400 for a body that is not a JSON object, 401 with a challenge,
413 from the body limit, 429 from a lock-out or a rate limit, 503 while
draining or without a bus, all as problem+json (api/problems.py). This module
adds them, the security schemes, and the request body of /api/v1/events (whose
route reads the raw body), so clients and fuzzers can trust the document.
"""

from __future__ import annotations

from typing import Any

from potok.admin.router import ANSWERS as ADMIN_ANSWERS
from potok.admin.router import PREFIX as ADMIN_PREFIX
from potok.realtime.events import CHANNEL, EVENT_ID, EVENT_TYPE, MAX_CHANNEL

PROBLEM = "application/problem+json"
_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}

_PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details, as every error of the gateway is answered.",
    "type": "object",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string", "description": "Always about:blank: the status says it."},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string", "description": "The request path."},
        "request_id": {"type": "string", "description": "As in the X-Request-ID header."},
        "errors": {
            "type": "array",
            "description": "422 only: the fields that do not validate.",
            "items": {
                "type": "object",
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}

_EVENT_SCHEMA: dict[str, Any] = {
    "title": "Event",
    "type": "object",
    "required": ["channel", "type"],
    "properties": {
        "channel": {
            "type": "string",
            "pattern": CHANNEL.pattern,
            "maxLength": MAX_CHANNEL,
            "description": "Channel name ('.'-separated parts).",
        },
        "type": {"type": "string", "pattern": EVENT_TYPE.pattern},
        "data": {"description": "Any JSON value, delivered as is."},
        "id": {
            "anyOf": [{"type": "string", "pattern": EVENT_ID.pattern}, {"type": "null"}],
            "description": "For de-duplication; generated when absent or null.",
        },
    },
}

_WHY = {
    400: "The body is not a JSON object (not JSON, not UTF-8, or not an object).",
    401: "No valid credentials (a `WWW-Authenticate` challenge says which kind).",
    403: "Not allowed: from this address, or without the role the operation needs.",
    404: "The feature is not enabled on this gateway, or no such resource.",
    409: "Conflicts with the gateway's state (not writable, already exists, last target).",
    412: "`If-Match` does not match the current ETag.",
    413: "The body is larger than the gateway accepts.",
    422: "The body is a JSON object whose fields do not validate (`errors` lists them).",
    429: "Too many requests, or too many failed logins: retry after `Retry-After` seconds.",
    503: "Not available now (shutting down, or a dependency is down).",
}

_BEARER: list[dict[str, list[str]]] = [{"bearer": []}]
_SERVICE_KEY: list[dict[str, list[str]]] = [{"serviceKey": []}]

# (method, path) -> (extra answers, security requirement or None)
_OPERATIONS: dict[tuple[str, str], tuple[tuple[int, ...], list[dict[str, list[str]]] | None]] = {
    ("post", "/api/v1/auth/login"): ((400, 401, 404, 413, 422, 429), None),
    ("post", "/api/v1/auth/refresh"): ((400, 401, 404, 413, 422, 429), None),
    ("post", "/api/v1/auth/logout"): ((400, 401, 404, 413, 422, 429), _BEARER),
    ("get", "/api/v1/auth/profile"): ((401, 404, 429), _BEARER),
    ("post", "/api/v1/events"): ((400, 401, 404, 413, 422, 429, 503), _SERVICE_KEY),
    ("get", "/api/v1/admin/cache/stats"): ((401, 403, 404, 429), _BEARER),
    ("post", "/api/v1/admin/cache/purge"): ((400, 401, 403, 404, 413, 422, 429), _BEARER),
}
# Probes answer 503 with their usual JSON body (status 'draining'), not a problem.
_DRAINING = ("/api/v1/health/readiness", "/api/v1/health")


def _problem_response(status: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": _WHY[status],
        "content": {PROBLEM: {"schema": _PROBLEM_REF}},
    }
    if status == 401:
        response["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
    if status in (429, 503):
        response["headers"] = {"Retry-After": {"schema": {"type": "integer"}}}
    return response


def complete(document: dict[str, Any]) -> dict[str, Any]:
    """`document` (FastAPI's) with the gateway's own answers added; changed in place."""
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas["Problem"] = _PROBLEM_SCHEMA
    schemas["Event"] = _EVENT_SCHEMA
    # FastAPI's validation error shape is never sent: 422 is a Problem too.
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    components["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
        "serviceKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    }
    for (method, path), (statuses, security) in _OPERATIONS.items():
        operation = document.get("paths", {}).get(path, {}).get(method)
        if operation is None:
            continue
        responses = operation.setdefault("responses", {})
        for status in statuses:
            responses[str(status)] = _problem_response(status)
        if security is not None:
            operation["security"] = security
    for (method, path), statuses in ADMIN_ANSWERS.items():
        operation = document.get("paths", {}).get(ADMIN_PREFIX + path, {}).get(method)
        if operation is None:
            continue
        responses = operation.setdefault("responses", {})
        for status in statuses:
            responses[str(status)] = _problem_response(status)
        operation["security"] = [*_BEARER, *_SERVICE_KEY]
    for path in _DRAINING:
        probe = document.get("paths", {}).get(path, {}).get("get")
        if probe is not None:
            probe.setdefault("responses", {})["503"] = {
                "description": "Shutting down: load balancers should stop sending traffic.",
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
    events = document.get("paths", {}).get("/api/v1/events", {}).get("post")
    if events is not None:
        events["requestBody"] = _events_body()
        events["responses"]["202"] = _events_accepted()
    return document


def _events_body() -> dict[str, Any]:
    event = {"$ref": "#/components/schemas/Event"}
    batch = {
        "type": "object",
        "required": ["events"],
        "properties": {"events": {"type": "array", "items": event, "minItems": 1}},
    }
    return {
        "required": True,
        "content": {"application/json": {"schema": {"anyOf": [event, batch]}}},
    }


def _events_accepted() -> dict[str, Any]:
    result = {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "channel": {"type": "string"},
            "offset": {"type": ["integer", "null"]},
            "duplicate": {"type": "boolean"},
        },
    }
    batch = {"type": "object", "properties": {"events": {"type": "array", "items": result}}}
    return {
        "description": "Accepted: where each event was stored.",
        "content": {"application/json": {"schema": {"anyOf": [result, batch]}}},
    }
