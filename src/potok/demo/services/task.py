"""The task service: tasks kept per organisation.

GET   /api/v1/orgs/{org_id}/tasks              list (filter: ?status=)
POST  /api/v1/orgs/{org_id}/tasks              create {"title", "description"?, "status"?,
                                               "assignee"?}
GET   /api/v1/orgs/{org_id}/tasks/{task_id}    one task
PATCH /api/v1/orgs/{org_id}/tasks/{task_id}    change any of title, description, status, assignee

With POTOK_EVENTS_URL and POTOK_EVENTS_KEY set (`potok demo` sets them), creating a
task publishes `task:created` and changing one `task:updated` on channel
`org:<org_id>:tasks` through the gateway's POST /api/v1/events.
"""

from __future__ import annotations

import os
import re
import sys
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from potok.demo.services.events import EventPublisher, publisher_from_env
from potok.demo.services.jsonapi import JsonService, ServiceError, api_key_from_env, path_int
from potok.webhooks.verification import Rejected

NAME = "task"
API_KEY_ENV = "TASK_SERVICE_API_KEY"
# Potok's own signing secret for forwarded webhooks (`webhooks.delivery.signing_secret`).
WEBHOOK_SECRET_ENV = "POTOK_DEMO_WEBHOOK_SIGNING_SECRET"
MAX_TASKS = 10_000

_ORG = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
Status = Literal["todo", "in_progress", "done"]


class NewTask(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=200)
    description: str = Field("", max_length=2000)
    status: Status = "todo"
    assignee: str | None = Field(None, max_length=64)


class TaskChanges(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str | None = Field(None, min_length=1, max_length=200)
    description: str | None = Field(None, max_length=2000)
    status: Status | None = None
    assignee: str | None = Field(None, max_length=64)

    @model_validator(mode="after")
    def _something(self) -> TaskChanges:
        if not self.model_fields_set:
            raise ValueError("give at least one of title, description, status, assignee")
        if "title" in self.model_fields_set and self.title is None:
            raise ValueError("title cannot be null")
        if "status" in self.model_fields_set and self.status is None:
            raise ValueError("status cannot be null")
        return self


def _webhook_checker(secret: str | None) -> Any:
    """What checks Potok's signature on a forwarded delivery: a Standard Webhooks verifier
    with the gateway's signing secret (any Standard Webhooks library would do)."""
    if not secret:
        return None
    from potok.webhooks.config import SourceConfig  # noqa: PLC0415  (only with webhooks on)
    from potok.webhooks.presets import build_verifier  # noqa: PLC0415

    return build_verifier(SourceConfig(preset="standard_webhooks", secrets=(secret,), publish=True))


def create_app(
    api_key: str | None = None,
    events: EventPublisher | None = None,
    webhook_secret: str | None = None,
) -> ASGIApp:
    service = JsonService(NAME)
    orgs: dict[str, dict[int, dict[str, Any]]] = {}
    total = 0

    def announce(event_type: str, task: dict[str, Any]) -> None:
        if events is not None:
            event_id = f"{event_type}-{task['org_id']}-{task['id']}-{task['updated_at']:.6f}"
            events.publish(f"org:{task['org_id']}:tasks", event_type, task, event_id)

    def org_of(request: Request) -> str:
        org: str = request.path_params["org_id"]
        if not _ORG.match(org):
            raise ServiceError(400, "an org id is 1-64 of A-Z a-z 0-9 _ . -")
        return org

    def task_of(request: Request) -> tuple[str, dict[str, Any]]:
        org = org_of(request)
        task = orgs.get(org, {}).get(path_int(request, "task_id"))
        if task is None:
            raise ServiceError(404, f"no task {request.path_params['task_id']} in org {org!r}")
        return org, task

    async def list_tasks(request: Request) -> Response:
        org = org_of(request)
        status = request.query_params.get("status")
        found = [t for t in orgs.get(org, {}).values() if status is None or t["status"] == status]
        return service.reply(request, {"org_id": org, "tasks": found, "count": len(found)})

    async def create_task(request: Request) -> Response:
        nonlocal total
        org = org_of(request)
        new = await service.parse(request, NewTask)
        if total >= MAX_TASKS:
            raise ServiceError(507, "the demo keeps at most 10000 tasks")
        tasks = orgs.setdefault(org, {})
        task_id = max(tasks, default=0) + 1
        now = time.time()
        task = {
            "id": task_id,
            "org_id": org,
            **new.model_dump(),
            "created_at": now,
            "updated_at": now,
        }
        tasks[task_id] = task
        total += 1
        announce("task:created", task)
        location = f"/api/v1/orgs/{org}/tasks/{task_id}"
        return service.reply(request, {"task": task}, 201, {"Location": location})

    async def get_task(request: Request) -> Response:
        _, task = task_of(request)
        return service.reply(request, {"task": task})

    async def update_task(request: Request) -> Response:
        _, task = task_of(request)
        changes = await service.parse(request, TaskChanges)
        task.update(changes.model_dump(include=changes.model_fields_set))
        task["updated_at"] = time.time()
        announce("task:updated", task)
        return service.reply(request, {"task": task})

    checker = _webhook_checker(webhook_secret)

    async def webhook(request: Request) -> Response:
        body = await request.body()
        if checker is None:
            raise ServiceError(404, "webhooks are not set up")
        raw = {k.lower().encode(): v.encode() for k, v in request.headers.items()}
        try:
            checker.verify(raw.get, body, time.time())
        except Rejected as exc:
            raise ServiceError(401, f"not signed by the gateway: {exc.detail}") from None
        delivery = request.headers.get("idempotency-key", "?")
        text = body.decode("utf-8", "replace")
        print(
            f"task service: webhook {delivery} from source "
            f"{request.headers.get('potok-webhook-source')!r} arrived (gateway signature "
            f"verified): {text[:200]}",
            file=sys.stderr,
            flush=True,
        )
        return Response(status_code=204)

    routes = [
        Route("/webhooks/demo", webhook, methods=["POST"]),
        Route("/api/v1/orgs/{org_id}/tasks", list_tasks, methods=["GET"]),
        Route("/api/v1/orgs/{org_id}/tasks", create_task, methods=["POST"]),
        Route("/api/v1/orgs/{org_id}/tasks/{task_id}", get_task, methods=["GET"]),
        Route("/api/v1/orgs/{org_id}/tasks/{task_id}", update_task, methods=["PATCH"]),
    ]
    return service.app(routes, api_key)


def app_from_env() -> ASGIApp:
    return create_app(
        api_key_from_env(API_KEY_ENV), publisher_from_env(), os.environ.get(WEBHOOK_SECRET_ENV)
    )
