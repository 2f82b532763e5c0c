"""POST /api/v1/events: back-end services publish events over HTTP with a service key."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from potok.errors import problem_body
from potok.realtime.bus.base import BusUnavailable, EventTooLarge
from potok.realtime.events import BadEvent, Event, make_event

if TYPE_CHECKING:
    from potok.realtime.service import Realtime
    from potok.runtime import Runtime

PATH = "/api/v1/events"

_DESCRIPTION = """Publish one event (`{"channel", "type", "data", "id"?}`) or a batch
(`{"events": [...]}`). The caller presents a service key in `X-API-Key` (a key from
`realtime.events.keys`, or a `potok keys create` key with scope `events:publish`).
Every gateway instance delivers the event to its subscribers of `channel`; an `id`
published again within the de-duplication window is dropped (`duplicate: true`).
Answers 202 with the offset each event was stored at."""


def _problem(request: Request, status: int, detail: str, **extra: Any) -> Response:
    body = problem_body(
        status,
        detail=detail,
        instance=request.url.path,
        request_id=request.headers.get("x-request-id"),
        extra=extra or None,
    )
    headers = {"WWW-Authenticate": 'ApiKey realm="potok"'} if status == 401 else None
    return Response(body, status, headers=headers, media_type="application/problem+json")


def _events(body: Any) -> list[Event]:
    items = body.get("events") if isinstance(body, dict) and "events" in body else [body]
    if not isinstance(items, list) or not items:
        raise BadEvent("'events' is a non-empty list")
    events = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise BadEvent(f"events[{index}]: an event is a JSON object")
        try:
            events.append(
                make_event(item.get("channel"), item.get("type"), item.get("data"), item.get("id"))
            )
        except BadEvent as exc:
            where = f"events[{index}]." if len(items) > 1 or "events" in body else ""
            raise BadEvent(f"{where}{exc}") from None
    return events


def create_events_router(runtime: Callable[[], Runtime]) -> APIRouter:
    router = APIRouter(tags=["realtime"])

    @router.post(PATH, status_code=202, description=_DESCRIPTION)
    async def publish(request: Request) -> Response:
        """Publish events to realtime channels."""
        realtime: Realtime | None = runtime().realtime
        if realtime is None or not realtime.config.events.enabled:
            return _problem(request, 404, "realtime events are not enabled")
        presented = request.headers.get(realtime.config.events.header)
        if presented is None:
            return _problem(request, 401, "a service API key is required")
        publisher = realtime.publisher(presented.strip())
        if publisher is None:
            return _problem(request, 401, "invalid service API key")
        try:
            body = orjson.loads(await request.body())
            events = _events(body)
        except orjson.JSONDecodeError:
            return _problem(request, 400, "the body is not JSON")
        except BadEvent as exc:
            return _problem(request, 422, str(exc))
        if len(events) > realtime.config.events.max_batch:
            return _problem(
                request, 413, f"at most {realtime.config.events.max_batch} events per request"
            )
        results = []
        try:
            for event in events:
                published = await realtime.publish(event, "http")
                results.append(
                    {
                        "id": event.id,
                        "channel": event.channel,
                        "offset": published.offset,
                        "duplicate": published.duplicate,
                    }
                )
        except EventTooLarge as exc:
            return _problem(
                request, 413, str(exc), max_event_bytes=exc.limit, published=len(results)
            )
        except BusUnavailable:
            return _problem(request, 503, "the event bus is unavailable", published=len(results))
        document: Any = (
            {"events": results} if isinstance(body, dict) and "events" in body else (results[0])
        )
        return Response(orjson.dumps(document), 202, media_type="application/json")

    return router
