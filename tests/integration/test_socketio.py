"""Socket.IO at /api/v1/socket.io: the npm socket.io-client and the Python client connect,
authenticate, subscribe and receive; the channel rules are the same as on /api/v1/ws."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import socketio

from tests.support.gateway import GatewayProcess
from tests.support.net import request
from tests.support.realtime import Client, publish, realtime_config, token

JS = Path(__file__).resolve().parents[1] / "js"


@pytest.fixture(scope="module")
def gateway():
    process = GatewayProcess(realtime_config())
    yield process
    process.stop()


class PythonClient:
    """python-socketio's AsyncClient, recording every server event."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=False)
        self.received: list[tuple[str, Any]] = []
        self._changed = asyncio.Event()

        @self.sio.on("*")
        async def any_event(event: str, body: Any) -> None:
            self.received.append((event, body))
            self._changed.set()

    async def connect(self, port: int, auth: dict[str, str] | None, transports: list[str]) -> None:
        await self.sio.connect(
            f"http://127.0.0.1:{port}",
            socketio_path="/api/v1/socket.io",
            auth=auth,
            transports=transports,
            wait_timeout=5,
        )

    async def events(self, count: int) -> list[dict[str, Any]]:
        async with asyncio.timeout(10):
            while True:
                found = [
                    b for _, b in self.received if isinstance(b, dict) and b.get("type") == "event"
                ]
                if len(found) >= count:
                    return found
                self._changed.clear()
                await self._changed.wait()


@pytest.mark.parametrize("transports", [["websocket"], ["polling"]])
async def test_python_client_connects_authenticates_subscribes_and_receives(gateway, transports):
    client = PythonClient()
    await client.connect(gateway.port, {"token": token()}, transports)
    reply = await client.sio.call("subscribe", {"channel": "org:acme:tasks"}, timeout=5)
    assert reply["type"] == "subscribed" and reply["channel"] == "org:acme:tasks"
    denied = await client.sio.call("subscribe", {"channel": "org:globex:tasks"}, timeout=5)
    assert denied["type"] == "error" and denied["code"] == "forbidden"
    publish(
        gateway.port,
        {
            "channel": "org:acme:tasks",
            "type": "task:created",
            "data": {"id": 3},
            "id": f"py-{transports[0]}",
        },
    )
    (event,) = await client.events(1)
    assert event["event"] == "task:created" and event["data"] == {"id": 3}
    names = [name for name, _ in client.received]
    assert "task:created" in names  # the Socket.IO event is named by the event type
    await client.sio.disconnect()


async def test_python_client_authenticates_with_the_event_and_publishes(gateway):
    client = PythonClient()
    await client.connect(gateway.port, None, ["websocket"])
    early = await client.sio.call("subscribe", {"channel": "public:chat"}, timeout=5)
    assert early["code"] == "not_authenticated"
    ack = await client.sio.call("authenticate", {"token": token(sub="sio")}, timeout=5)
    assert ack["type"] == "authenticated" and ack["sub"] == "sio"
    assert (await client.sio.call("subscribe", "public:chat", timeout=5))["type"] == "subscribed"
    ws_client = await Client.open(gateway.port)
    await ws_client.authenticate(token(sub="plain"))
    await ws_client.subscribe("public:chat")
    published = await client.sio.call(
        "message", {"channel": "public:chat", "event": "chat", "data": "hi"}, timeout=5
    )
    assert published["type"] == "published"
    (event,) = await client.events(1)
    assert event["data"] == "hi"
    (plain,) = await ws_client.events(1)  # one bus, both transports
    assert plain["id"] == event["id"]
    await ws_client.close()
    await client.sio.disconnect()


async def test_bad_token_refuses_the_connection(gateway):
    client = PythonClient()
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect(gateway.port, {"token": token(ttl=-300)}, ["websocket"])


async def test_unauthenticated_socketio_client_is_dropped_after_the_timeout():
    config = realtime_config(auth={**realtime_config()["realtime"]["auth"], "timeout": "1s"})
    process = GatewayProcess(config)
    try:
        client = PythonClient()
        await client.connect(process.port, None, ["websocket"])
        started = time.monotonic()
        async with asyncio.timeout(10):
            while client.sio.connected:  # noqa: ASYNC110  (the client offers no event)
                await asyncio.sleep(0.05)
        assert time.monotonic() - started < 5
        assert (
            "error",
            {"type": "error", "code": "not_authenticated", "message": "authentication timeout"},
        ) in client.received
    finally:
        process.stop()


def _node_client(port: int, channel: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["node", str(JS / "socketio_client.mjs")],
        env={
            **os.environ,
            "URL": f"http://127.0.0.1:{port}",
            "TOKEN": token(sub="node"),
            "CHANNEL": channel,
            **env,
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_ready(node: subprocess.Popen[str]) -> list[dict[str, Any]]:
    assert node.stdout is not None
    lines: list[dict[str, Any]] = []
    for line in node.stdout:
        lines.append(json.loads(line))
        if lines[-1]["event"] in ("ready", "connect_error", "timeout"):
            break
    assert lines[-1]["event"] == "ready", (lines, node.stderr.read() if node.stderr else "")
    return lines


@pytest.mark.parametrize(
    ("transports", "auth_mode"),
    [("polling,websocket", "connect"), ("websocket", "connect"), ("websocket", "event")],
)
def test_npm_socket_io_client_receives(gateway, transports, auth_mode):
    node = _node_client(
        gateway.port, "org:acme:tasks", TRANSPORTS=transports, AUTH_MODE=auth_mode, COUNT="2"
    )
    try:
        lines = _wait_ready(node)
        subscribed = next(line for line in lines if line["event"] == "ack:subscribe")
        assert subscribed["body"]["type"] == "subscribed"
        for n in range(2):
            publish(
                gateway.port,
                {"channel": "org:acme:tasks", "type": "task:updated", "data": {"n": n}},
            )
        out, err = node.communicate(timeout=20)
        assert node.returncode == 0, (out, err)
        events = [json.loads(line) for line in out.splitlines()]
        received = [e for e in events if e["event"] == "task:updated"]
        assert [e["body"]["data"] for e in received] == [{"n": 0}, {"n": 1}]
    finally:
        if node.poll() is None:
            node.kill()
            node.wait()


def test_npm_client_refused_another_orgs_channel(gateway):
    node = _node_client(gateway.port, "org:globex:tasks", TRANSPORTS="websocket")
    try:
        assert node.stdout is not None
        lines = []
        for line in node.stdout:
            lines.append(json.loads(line))
            if lines[-1]["event"] == "ack:subscribe":
                break
        assert lines[-1]["body"]["code"] == "forbidden"
    finally:
        node.kill()
        node.wait()


def test_socketio_connections_are_counted(gateway):
    metrics = request(gateway.port, "GET", "/api/v1/metrics").body.decode()
    assert 'websocket_connections_total{transport="socketio"}' in metrics
