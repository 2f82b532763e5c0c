"""`potok demo` and webhooks: the banner's one-line signing command, run in a shell, is
accepted; the task service prints the delivery's arrival (having checked the gateway's
own signature), and the event arrives on the WebSocket channel webhooks.demo."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from collections.abc import Iterator

import pytest
from websockets.asyncio.client import connect

from tests.integration.test_demo import Demo
from tests.support.net import request
from tests.support.webhooks import wait_until


@pytest.fixture(scope="module")
def demo() -> Iterator[Demo]:
    running = Demo()
    children = []
    try:
        running.wait_started()
        children = running.descendants()
        yield running
    finally:
        running.stop()
        running.kill_leftovers(children)


def test_signed_delivery_reaches_the_task_service_and_the_websocket(demo: Demo) -> None:
    out = demo.stdout_path.read_text()
    command = next(line for line in out.splitlines() if "openssl dgst" in line).strip()
    password = re.search(r"Identity: user 'demo', password '([^']+)'", out)
    assert password is not None
    login = request(
        demo.port, "POST", "/api/v1/auth/login", {"Content-Type": "application/json"},
        json.dumps({"username": "demo", "password": password.group(1)}).encode(),
    )  # fmt: skip
    access = json.loads(login.body)["access_token"]

    async def scenario() -> str:
        url = f"ws://127.0.0.1:{demo.port}/api/v1/ws?token={access}"
        async with connect(url) as ws:
            await ws.send(json.dumps({"type": "subscribe", "channel": "webhooks.demo"}))
            while json.loads(await ws.recv())["type"] != "subscribed":
                pass
            shell = await asyncio.to_thread(
                subprocess.run, ["bash", "-c", command], capture_output=True, text=True,
                timeout=30, check=False,
            )  # fmt: skip
            answer = json.loads(shell.stdout)
            assert answer["status"] == "accepted", shell
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if message["type"] == "event":
                    break
            assert message["channel"] == "webhooks.demo" and message["id"] == answer["id"]
            assert message["data"]["body"] == {"type": "ping", "hello": "webhooks"}
            return str(answer["id"])

    delivery = asyncio.run(scenario())
    wait_until(lambda: f"webhook {delivery} from source 'demo' arrived" in demo.output())
    assert "gateway signature verified" in demo.output()
