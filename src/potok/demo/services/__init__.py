"""The demo's example services: admin (users), state (key/value) and task (tasks per org),
and state-v2: version 2 of the state service, the demo's canary and shadow.

Each is a small Starlette app served by Potok's own HTTP server; run one with
`python -m potok.demo.services <admin|state|state-v2|task> --port N`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import ASGIApp

from potok.demo.services import admin, state, task


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """How to build a demo service and where it listens by default."""

    name: str
    default_port: int
    api_key_env: str
    create_app: Callable[[str | None], ASGIApp]
    app_from_env: Callable[[], ASGIApp]
    version: str = "v1"  # what its answers say (jsonapi.VERSION_ENV)


SERVICES: dict[str, ServiceSpec] = {
    spec.name: spec
    for spec in (
        ServiceSpec(admin.NAME, 3000, admin.API_KEY_ENV, admin.create_app, admin.app_from_env),
        ServiceSpec(state.NAME, 3002, state.API_KEY_ENV, state.create_app, state.app_from_env),
        ServiceSpec(
            "state-v2", 3004, state.API_KEY_ENV, state.create_app, state.app_from_env, "v2"
        ),
        ServiceSpec(task.NAME, 3003, task.API_KEY_ENV, task.create_app, task.app_from_env),
    )
}
