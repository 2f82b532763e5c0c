"""One session rule for /api/v1/ws and Socket.IO (realtime/session.py), through the real
gateway with real clients: a token's expiry and its revocation end the session on both
endpoints; re-authentication may renew the token but never switch subject or organisation."""

# ruff: noqa: ASYNC109  (timeouts are per call here, on purpose)

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import socketio
from websockets.exceptions import ConnectionClosed

from tests.support.gateway import GatewayProcess
from tests.support.identity_gateway import CHEAP_ARGON2, HS_SECRET, add_user, bearer, call
from tests.support.realtime import Client, publish, realtime_config, token

PASSWORD = "session rule password"
JS = Path(__file__).resolve().parents[1] / "js"


@pytest.fixture(scope="module")
def gateway() -> Iterator[GatewayProcess]:
    auth = {**realtime_config()["realtime"]["auth"], "leeway": "0s"}
    process = GatewayProcess(realtime_config(auth=auth))
    yield process
    process.stop()


class SioClient:
    """python-socketio's AsyncClient over WebSocket or long-polling, recording every event."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=False)
        self.received: list[tuple[str, Any]] = []
        self.disconnected = asyncio.Event()

        @self.sio.on("*")
        async def any_event(event: str, body: Any) -> None:
            self.received.append((event, body))

        @self.sio.event
        async def disconnect(*_: Any) -> None:
            self.disconnected.set()

    @classmethod
    async def open(cls, port: int, jwt: str, transport: str = "websocket") -> SioClient:
        client = cls()
        await client.sio.connect(
            f"http://127.0.0.1:{port}",
            socketio_path="/api/v1/socket.io",
            auth={"token": jwt},
            transports=[transport],
            wait_timeout=5,
        )
        return client

    def events(self) -> list[Any]:
        return [b["data"] for _, b in self.received if isinstance(b, dict) and b["type"] == "event"]

    def errors(self) -> list[dict[str, Any]]:
        return [b for name, b in self.received if name == "error"]


async def _close_code(client: Client, timeout: float) -> tuple[int, list[dict[str, Any]]]:
    seen = []
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            seen.append(await client.recv(timeout))
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, seen


async def test_plain_websocket_closes_at_expiry_not_at_the_next_heartbeat(gateway):
    client = await Client.open(gateway.port)
    ack = await client.authenticate(token(ttl=2))
    assert ack["expires_at"] is not None
    await client.subscribe("org:acme:tasks")
    started = time.monotonic()
    code, seen = await _close_code(client, timeout=10)
    assert code == 4401 and time.monotonic() - started < 5  # the heartbeat is 25 s away
    assert seen[-1]["type"] == "error" and seen[-1]["code"] == "token_expired"


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_socketio_session_ends_at_expiry(gateway, transport):
    client = await SioClient.open(gateway.port, token(sub="sio-exp", ttl=3), transport)
    reply = await client.sio.call("subscribe", {"channel": "org:acme:tasks"}, timeout=5)
    assert reply["type"] == "subscribed"
    publish(gateway.port, {"channel": "org:acme:tasks", "type": "task:created", "data": "before"})
    await asyncio.wait_for(client.disconnected.wait(), 10)
    assert {"type": "error", "code": "token_expired", "message": "token expired"} in (
        client.errors()
    )
    publish(gateway.port, {"channel": "org:acme:tasks", "type": "task:created", "data": "after"})
    await asyncio.sleep(0.3)
    assert client.events() == ["before"]


async def test_socketio_authenticated_reply_says_when_the_token_expires(gateway):
    client = await SioClient.open(gateway.port, token(sub="sio-ack"))
    jwt = token(sub="sio-ack", ttl=900)
    ack = await client.sio.call("authenticate", {"token": jwt}, timeout=5)
    assert ack["type"] == "authenticated"
    assert abs(ack["expires_at"] - (time.time() + 900)) < 5
    await client.sio.disconnect()


async def test_socketio_reauthentication_cannot_switch_organisation(gateway):
    client = await SioClient.open(gateway.port, token(sub="u1", org="acme"))
    await client.sio.call("subscribe", {"channel": "org:acme:tasks"}, timeout=5)
    refused = await client.sio.call("authenticate", {"token": token(sub="u1", org="globex")})
    assert refused["type"] == "error" and refused["code"] == "invalid_token"
    other = await client.sio.call("subscribe", {"channel": "org:globex:tasks"}, timeout=5)
    assert other["code"] == "forbidden"  # still acme's connection
    publish(gateway.port, {"channel": "org:globex:tasks", "type": "task:created", "data": "g"})
    publish(gateway.port, {"channel": "org:acme:tasks", "type": "task:created", "data": "a"})
    await asyncio.sleep(0.5)
    assert client.events() == ["a"]
    switched = await client.sio.call("authenticate", {"token": token(sub="u2", org="acme")})
    assert switched["code"] == "invalid_token"  # nor its subject
    await client.sio.disconnect()


async def test_plain_websocket_reauthentication_cannot_switch_organisation(gateway):
    client = await Client.open(gateway.port)
    await client.authenticate(token(sub="u1", org="acme"))
    await client.send(type="authenticate", token=token(sub="u1", org="globex"), ref=2)
    refused = await client.expect("error")
    assert refused["code"] == "invalid_token" and refused["ref"] == 2
    await client.close()


@pytest.mark.parametrize("endpoint", ["websocket", "socketio"])
async def test_reauthentication_with_fewer_roles_drops_what_they_allowed(gateway, endpoint):
    admin = token(sub="ops-1", roles=("admin",))
    reader = token(sub="ops-1", roles=("reader",))
    if endpoint == "websocket":
        plain = await Client.open(gateway.port)
        await plain.authenticate(admin)
        assert (await plain.subscribe("ops:alerts"))["type"] == "subscribed"
        await plain.send(type="authenticate", token=reader)
        assert (await plain.expect("authenticated"))["roles"] == ["reader"]
        dropped = await plain.expect("error")
        assert dropped["code"] == "forbidden" and dropped["channel"] == "ops:alerts"
        publish(gateway.port, {"channel": "ops:alerts", "type": "alert", "data": 1})
        assert await plain.quiet() == []
        await plain.close()
        return
    client = await SioClient.open(gateway.port, admin)
    await client.sio.call("subscribe", {"channel": "ops:alerts"}, timeout=5)
    assert (await client.sio.call("authenticate", {"token": reader}))["type"] == "authenticated"
    publish(gateway.port, {"channel": "ops:alerts", "type": "alert", "data": 1})
    await asyncio.sleep(0.5)
    assert client.events() == []
    assert any(e.get("channel") == "ops:alerts" for e in client.errors())
    await client.sio.disconnect()


# Revocation: the gateway's own token service, a user in a database, a logout. ---------


@pytest.fixture(scope="module")
def identity_gateway() -> Iterator[GatewayProcess]:
    database_url = f"sqlite:///{tempfile.mkdtemp(prefix='potok-session-')}/identity.db"
    add_user(database_url, "alice", PASSWORD, org="acme")
    config = realtime_config(
        auth={"token_service": True}, limits={"ping_interval": "0.5s", "ping_timeout": "5s"}
    )
    config["database"] = {"url": database_url}
    config["auth"] = {
        "token_service": {
            "enabled": True,
            "access_ttl": "1h",
            "refresh_ttl": "2h",
            "signing": {"algorithm": "HS256", "secret": HS_SECRET},
        },
        "passwords": CHEAP_ARGON2,
        "revocation": {"poll_interval": "100ms"},
    }
    process = GatewayProcess(config)
    yield process
    process.stop()


def _login(port: int) -> str:
    response = call(port, "POST", "/api/v1/auth/login", {"username": "alice", "password": PASSWORD})
    assert response.status == 200, response.body
    access: str = response.json()["access_token"]
    return access


@pytest.mark.parametrize("endpoint", ["websocket", "socketio"])
async def test_logout_ends_the_realtime_session(identity_gateway, endpoint):
    port = identity_gateway.port
    access = _login(port)
    if endpoint == "websocket":
        plain = await Client.open(port)
        await plain.authenticate(access)
        await plain.subscribe("org:acme:tasks")
    else:
        client = await SioClient.open(port, access)
        await client.sio.call("subscribe", {"channel": "org:acme:tasks"}, timeout=5)
    assert call(port, "POST", "/api/v1/auth/logout", **bearer(access)).status == 204
    if endpoint == "websocket":
        code, seen = await _close_code(plain, timeout=10)
        assert code == 4401
        assert seen[-1]["code"] == "invalid_token" and seen[-1]["message"] == "token revoked"
        return
    await asyncio.wait_for(client.disconnected.wait(), 10)
    assert client.errors()[-1]["message"] == "token revoked"


async def test_sigterm_ends_an_idle_long_polling_session_at_once_with_a_notice():
    process = GatewayProcess(realtime_config())
    try:
        client = await SioClient.open(process.port, token(sub="poller"), "polling")
        await client.sio.call("subscribe", {"channel": "org:acme:tasks"}, timeout=5)
        await asyncio.sleep(0.5)  # the client's poll is now waiting in the gateway
        started = time.monotonic()
        process.signal()
        await asyncio.wait_for(client.disconnected.wait(), 10)
        code = await asyncio.to_thread(process.process.wait, 20)
        elapsed = time.monotonic() - started
        assert code == 0
        assert elapsed < 5, f"the gateway took {elapsed:.1f} s to stop"  # was 24.6 s
        assert client.errors()[-1]["code"] == "going_away"
    finally:
        process.stop()


# The npm socket.io-client (tests/js/socketio_client.mjs), as browsers run it. ----------


def _node(port: int, jwt: str, channel: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["node", str(JS / "socketio_client.mjs")],
        env={
            **os.environ,
            "URL": f"http://127.0.0.1:{port}",
            "TOKEN": jwt,
            "CHANNEL": channel,
            "TRANSPORTS": "websocket",
            **env,
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _lines_until(node: subprocess.Popen[str], last: str) -> list[dict[str, Any]]:
    assert node.stdout is not None
    lines: list[dict[str, Any]] = []
    for line in node.stdout:
        lines.append(json.loads(line))
        if lines[-1]["event"] in (last, "connect_error", "timeout"):
            break
    return lines


def test_npm_client_cannot_switch_organisation_by_reauthenticating(gateway):
    node = _node(
        gateway.port,
        token(sub="u1", org="acme"),
        "org:acme:tasks",
        REAUTH_TOKEN=token(sub="u1", org="globex"),
        SECOND_CHANNEL="org:globex:tasks",
        COUNT="1",
    )
    try:
        lines = _lines_until(node, "ready")
        acks = {line["event"]: line["body"] for line in lines}
        assert acks["ack:subscribe"]["type"] == "subscribed"
        assert acks["ack:reauthenticate"]["code"] == "invalid_token"
        assert acks["ack:subscribe2"]["code"] == "forbidden"
        publish(gateway.port, {"channel": "org:globex:tasks", "type": "task:created", "data": "g"})
        publish(gateway.port, {"channel": "org:acme:tasks", "type": "task:created", "data": "a"})
        out, _ = node.communicate(timeout=20)
        events = [json.loads(line) for line in out.splitlines()]
        assert [e["body"]["data"] for e in events if e["event"] == "task:created"] == ["a"]
    finally:
        if node.poll() is None:
            node.kill()
            node.wait()


def test_npm_client_is_disconnected_when_its_token_expires(gateway):
    node = _node(gateway.port, token(sub="node-exp", ttl=3), "org:acme:tasks", COUNT="100")
    try:
        assert _lines_until(node, "ready")[-1]["event"] == "ready"
        started = time.monotonic()
        lines = _lines_until(node, "disconnect")
        assert lines[-1] == {"event": "disconnect", "body": {"reason": "io server disconnect"}}
        assert time.monotonic() - started < 6
        errors = [line["body"] for line in lines if line["event"] == "error"]
        assert errors == [{"type": "error", "code": "token_expired", "message": "token expired"}]
    finally:
        if node.poll() is None:
            node.kill()
        node.wait()
