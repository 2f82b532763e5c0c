"""The state service: a key/value store with versions.

GET    /api/v1/state          keys held
GET    /api/v1/state/overview       keys, versions, last change (fresh 30 s: Cache-Control)
GET    /api/v1/state/indicators     derived numbers (fresh 60 s: Cache-Control)
GET    /api/v1/state/{key}    value and version
PUT    /api/v1/state/{key}    set {"value": <any JSON>} (201 when new, 200 when replaced)
DELETE /api/v1/state/{key}    remove
"""

from __future__ import annotations

import re
import time
from typing import Any

from pydantic import BaseModel, ConfigDict
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from potok.demo.services.jsonapi import JsonService, ServiceError, api_key_from_env

NAME = "state"
API_KEY_ENV = "STATE_SERVICE_API_KEY"
MAX_KEYS = 10_000

# The original design's TTLs per kind of data, said the HTTP way: the gateway's cache
# (and any other) honours them.
OVERVIEW_CACHE = {"Cache-Control": "public, max-age=30"}
INDICATORS_CACHE = {"Cache-Control": "public, max-age=60"}

_KEY = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class PutValue(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: Any


def create_app(api_key: str | None = None) -> ASGIApp:
    service = JsonService(NAME)
    store: dict[str, dict[str, Any]] = {}

    def key_of(request: Request) -> str:
        key: str = request.path_params["key"]
        if not _KEY.match(key):
            raise ServiceError(400, "a key is 1-128 of A-Z a-z 0-9 . _ : -")
        return key

    async def list_keys(request: Request) -> Response:
        return service.reply(request, {"keys": sorted(store), "count": len(store)})

    async def overview(request: Request) -> Response:
        latest = max((entry["updated_at"] for entry in store.values()), default=None)
        versions = sum(entry["version"] for entry in store.values())
        document = {"keys": len(store), "versions": versions, "updated_at": latest}
        return service.reply(request, {**document, "computed_at": time.time()}, 200, OVERVIEW_CACHE)

    async def indicators(request: Request) -> Response:
        sizes = [len(str(entry["value"])) for entry in store.values()]
        document = {
            "keys": len(sizes),
            "mean_value_chars": sum(sizes) / len(sizes) if sizes else 0,
            "largest_value_chars": max(sizes, default=0),
            "computed_at": time.time(),
        }
        return service.reply(request, document, 200, INDICATORS_CACHE)

    async def get_value(request: Request) -> Response:
        key = key_of(request)
        entry = store.get(key)
        if entry is None:
            raise ServiceError(404, f"no key {key!r}")
        return service.reply(request, {"key": key, **entry})

    async def put_value(request: Request) -> Response:
        key = key_of(request)
        body = await service.parse(request, PutValue)
        previous = store.get(key)
        if previous is None and len(store) >= MAX_KEYS:
            raise ServiceError(507, "the demo keeps at most 10000 keys")
        entry = {
            "value": body.value,
            "version": 1 if previous is None else previous["version"] + 1,
            "updated_at": time.time(),
        }
        store[key] = entry
        return service.reply(request, {"key": key, **entry}, 201 if previous is None else 200)

    async def delete_value(request: Request) -> Response:
        key = key_of(request)
        if store.pop(key, None) is None:
            raise ServiceError(404, f"no key {key!r}")
        return service.reply(request, {"deleted": key})

    routes = [
        Route("/api/v1/state", list_keys, methods=["GET"]),
        Route("/api/v1/state/overview", overview, methods=["GET"]),
        Route("/api/v1/state/indicators", indicators, methods=["GET"]),
        Route("/api/v1/state/{key}", get_value, methods=["GET"]),
        Route("/api/v1/state/{key}", put_value, methods=["PUT"]),
        Route("/api/v1/state/{key}", delete_value, methods=["DELETE"]),
    ]
    return service.app(routes, api_key)


def app_from_env() -> ASGIApp:
    return create_app(api_key_from_env(API_KEY_ENV))
