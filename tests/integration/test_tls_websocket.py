"""WebSockets over TLS (wss://): the gateway's /api/v1/ws, Socket.IO (python-socketio and
the npm socket.io-client) and a pass-through route to an upstream WebSocket."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import aiohttp
import pytest
import socketio
from websockets.asyncio.client import connect

from tests.support.gateway import GatewayProcess
from tests.support.net import free_port
from tests.support.realtime import Client, publish, realtime_config, token
from tests.support.tls_listeners import Pki

JS = Path(__file__).resolve().parents[1] / "js"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return Pki(tmp_path_factory.mktemp("wss"))


@pytest.fixture(scope="module")
def gateway(pki, upstream):
    chain, key = pki.issue("localhost", "gateway.test")
    plain, secure = free_port(), free_port()
    config = realtime_config()
    config["services"] = {"up": {"targets": [upstream.url]}}
    config["routes"] = [{"match": {"prefix": "/ws"}, "service": "up"}]
    config["server"] = {
        "listeners": [
            {"host": "127.0.0.1", "port": plain},  # events are published here
            {
                "host": "127.0.0.1",
                "port": secure,
                "protocol": "https",
                "tls": {"certificates": [{"cert": chain, "key": key}]},
            },
        ]
    }
    process = GatewayProcess(config)
    yield process, plain, secure
    process.stop()


async def test_wss_api_v1_ws(pki, gateway):
    _, plain, secure = gateway
    ws = await connect(
        f"wss://localhost:{secure}/api/v1/ws", ssl=pki.client_context(), open_timeout=10
    )
    client = Client(ws)
    await client.authenticate(token())
    assert (await client.subscribe("org:acme:tasks"))["type"] == "subscribed"
    publish(plain, {"channel": "org:acme:tasks", "type": "task:created", "data": {"id": 7}})
    (event,) = await client.events(1)
    assert event["data"] == {"id": 7}
    await client.close()


async def test_wss_pass_through_route(pki, gateway, upstream):
    _, _, secure = gateway
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"wss://localhost:{secure}/ws?room=1", ssl=pki.client_context()) as ws,
    ):
        await ws.send_str("hello")
        assert (await ws.receive(timeout=10)).data == "hello"
        big = os.urandom(1 << 20)  # 1 MiB, many TLS records both ways
        await ws.send_bytes(big)
        assert (await ws.receive(timeout=30)).data == big
    seen = [r for r in upstream.requests if str(r["path"]).startswith("/ws")]
    assert seen[-1]["headers"]["X-Forwarded-Proto"] == "https"


@pytest.mark.parametrize("transports", [["websocket"], ["polling"]])
async def test_socketio_python_client_over_https(pki, gateway, transports):
    _, plain, secure = gateway
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=pki.client_context()))
    sio = socketio.AsyncClient(reconnection=False, http_session=http)
    received: list[object] = []
    sio.on("*", lambda event, body: received.append(body))
    try:
        await sio.connect(
            f"https://localhost:{secure}",
            socketio_path="/api/v1/socket.io",
            auth={"token": token()},
            transports=transports,
            wait_timeout=10,
        )
        reply = await sio.call("subscribe", {"channel": "org:acme:tasks"}, timeout=5)
        assert reply["type"] == "subscribed"
        publish(plain, {"channel": "org:acme:tasks", "type": "task:done", "data": {"ok": 1}})
        for _ in range(100):
            if any(isinstance(b, dict) and b.get("type") == "event" for b in received):
                break
            await sio.sleep(0.05)
        assert any(isinstance(b, dict) and b.get("data") == {"ok": 1} for b in received)
    finally:
        await sio.disconnect()
        await http.close()


def test_npm_socket_io_client_over_https(pki, gateway):
    _, plain, secure = gateway
    node = subprocess.Popen(
        ["node", str(JS / "socketio_client.mjs")],
        env={
            **os.environ,
            "URL": f"https://localhost:{secure}",
            "NODE_EXTRA_CA_CERTS": str(pki.ca_path),
            "TOKEN": token(sub="node"),
            "CHANNEL": "org:acme:tasks",
            "TRANSPORTS": "polling,websocket",
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert node.stdout is not None
        lines = []
        for line in node.stdout:
            lines.append(json.loads(line))
            if lines[-1]["event"] in ("ready", "connect_error", "timeout"):
                break
        assert lines[-1]["event"] == "ready", lines
        publish(plain, {"channel": "org:acme:tasks", "type": "task:updated", "data": {"n": 1}})
        out, err = node.communicate(timeout=20)
        assert node.returncode == 0, (out, err)
        events = [json.loads(line) for line in out.splitlines()]
        assert [e["body"]["data"] for e in events if e["event"] == "task:updated"] == [{"n": 1}]
    finally:
        if node.poll() is None:
            node.kill()
            node.wait()
