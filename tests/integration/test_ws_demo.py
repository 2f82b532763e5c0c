"""`potok demo`: creating and changing a task through the gateway reaches a WebSocket client
subscribed to its org's task channel, live, as the banner says."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import psutil
import pytest

from tests.integration.test_demo import Demo
from tests.support.identity_gateway import call
from tests.support.realtime import Client


@pytest.fixture(scope="module")
def demo() -> Iterator[Demo]:
    running = Demo()
    children: list[psutil.Process] = []
    try:
        running.wait_started()
        children = running.descendants()
        yield running
    finally:
        running.stop()
        running.kill_leftovers(children)


def _access_token(demo: Demo) -> str:
    out = demo.stdout_path.read_text()
    password = re.search(r"Identity: user 'demo', password '([^']+)'", out).group(1)  # type: ignore[union-attr]
    login = call(
        demo.port, "POST", "/api/v1/auth/login", {"username": "demo", "password": password}
    )
    assert login.status == 200, login.body
    return json.loads(login.body)["access_token"]


def test_banner_explains_the_websocket(demo):
    out = demo.stdout_path.read_text()
    assert f"ws://127.0.0.1:{demo.port}/api/v1/ws?token=$ACCESS" in out
    assert '"channel": "org:acme:tasks"' in out


async def test_task_events_arrive_live(demo):
    client = await Client.open(demo.port, f"?token={_access_token(demo)}")
    assert (await client.expect("authenticated"))["org"] == "acme"
    assert (await client.subscribe("org:acme:tasks"))["type"] == "subscribed"
    created = call(demo.port, "POST", "/api/v1/orgs/acme/tasks", {"title": "Watch it live"})
    assert created.status == 201
    task_id = json.loads(created.body)["task"]["id"]
    (event,) = await client.events(1)
    assert event["event"] == "task:created" and event["channel"] == "org:acme:tasks"
    assert event["data"]["id"] == task_id and event["data"]["title"] == "Watch it live"
    changed = call(demo.port, "PATCH", f"/api/v1/orgs/acme/tasks/{task_id}", {"status": "done"})
    assert changed.status == 200
    (update,) = await client.events(1)
    assert update["event"] == "task:updated" and update["data"]["status"] == "done"
    # Another org's tasks do not reach this client, and it may not subscribe to them.
    call(demo.port, "POST", "/api/v1/orgs/globex/tasks", {"title": "not yours"})
    assert await client.quiet(0.5) == []
    assert (await client.subscribe("org:globex:tasks"))["code"] == "forbidden"
    await client.close()
