"""The admin service: users of the platform (read, list, create).

GET  /api/v1/users              list (filters: ?role=, ?org_id=)
GET  /api/v1/users/{user_id}    one user
POST /api/v1/users              create {"username", "email", "roles"?, "org_id"}
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from potok.demo.services.jsonapi import JsonService, ServiceError, api_key_from_env, path_int

NAME = "admin"
API_KEY_ENV = "ADMIN_SERVICE_API_KEY"
MAX_USERS = 10_000

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
Slug = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.-]*$")]


class NewUser(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: Slug
    email: str = Field(max_length=254)
    roles: list[Slug] = Field(default_factory=lambda: ["user"], max_length=16)
    org_id: Slug

    @field_validator("email")
    @classmethod
    def _email(cls, value: str) -> str:
        if not _EMAIL.match(value):
            raise ValueError("not an e-mail address")
        return value


def _seed() -> dict[int, dict[str, Any]]:
    users = [
        ("alice", "alice@acme.example", ["admin", "user"], "acme"),
        ("bob", "bob@acme.example", ["user"], "acme"),
        ("carol", "carol@globex.example", ["user"], "globex"),
    ]
    return {
        index: {"id": index, "username": name, "email": email, "roles": roles, "org_id": org}
        for index, (name, email, roles, org) in enumerate(users, start=1)
    }


def create_app(api_key: str | None = None) -> ASGIApp:
    service = JsonService(NAME)
    users = _seed()

    async def list_users(request: Request) -> Response:
        role = request.query_params.get("role")
        org = request.query_params.get("org_id")
        found = [
            u
            for u in users.values()
            if (role is None or role in u["roles"]) and (org is None or u["org_id"] == org)
        ]
        return service.reply(request, {"users": found, "count": len(found)})

    async def get_user(request: Request) -> Response:
        user = users.get(path_int(request, "user_id"))
        if user is None:
            raise ServiceError(404, f"no user {request.path_params['user_id']}")
        return service.reply(request, {"user": user})

    async def create_user(request: Request) -> Response:
        new = await service.parse(request, NewUser)
        if any(u["username"] == new.username for u in users.values()):
            raise ServiceError(409, f"username {new.username!r} is taken")
        if len(users) >= MAX_USERS:
            raise ServiceError(507, "the demo keeps at most 10000 users")
        user_id = max(users, default=0) + 1
        user = {"id": user_id, **new.model_dump()}
        users[user_id] = user
        location = f"/api/v1/users/{user_id}"
        return service.reply(request, {"user": user}, 201, {"Location": location})

    routes = [
        Route("/api/v1/users", list_users, methods=["GET"]),
        Route("/api/v1/users", create_user, methods=["POST"]),
        Route("/api/v1/users/{user_id}", get_user, methods=["GET"]),
    ]
    return service.app(routes, api_key)


def app_from_env() -> ASGIApp:
    return create_app(api_key_from_env(API_KEY_ENV))
