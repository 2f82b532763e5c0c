"""One token extractor (`potok.identity.token_source`) for `auth_jwt`, /api/v1/ws and
Socket.IO: a token in the same cookie or query parameter is found by each of them, over
real sockets, and a bad one there is refused by each."""

from __future__ import annotations

from typing import Any

import pytest
import socketio
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.support.gateway import GatewayProcess
from tests.support.net import request
from tests.support.realtime import Client, realtime_config, token

COOKIE = "potok_token"
QUERY = "access_token"


@pytest.fixture(scope="module")
def gateway(upstream):
    trust = realtime_config()["realtime"]["auth"]
    config = realtime_config(auth={**trust, "cookie": COOKIE, "query": QUERY})
    config["services"] = {"up": {"targets": [upstream.url]}}
    config["routes"] = [
        {
            "name": "app",
            "match": {"prefix": "/app/"},
            "service": "up",
            "policies": {"auth_jwt": {**trust, "cookie": COOKIE, "query": QUERY}},
        }
    ]
    process = GatewayProcess(config)
    yield process
    process.stop()


def carried(source: str, jwt_token: str) -> tuple[str, dict[str, str]]:
    """(query string, headers) putting `jwt_token` where `source` says."""
    if source == "cookie":
        return "?x=1", {"Cookie": f"theme=dark; {COOKIE}={jwt_token}"}
    return f"?x=1&{QUERY}={jwt_token}", {}


SOURCES = ["cookie", "query"]


@pytest.mark.parametrize("source", SOURCES)
def test_auth_jwt_finds_the_token(gateway, source):
    query, headers = carried(source, token(sub=f"http-{source}"))
    response = request(gateway.port, "GET", f"/app/echo{query}", headers)
    assert response.status == 200, response
    echoed = {name.lower(): value for name, value in response.json()["headers"]}
    assert echoed["x-user-id"] == f"http-{source}"
    assert response.json()["query"] == "x=1"  # a query token does not travel upstream
    query, headers = carried(source, "not-a-jwt")
    assert request(gateway.port, "GET", f"/app/echo{query}", headers).status == 401


@pytest.mark.parametrize("source", SOURCES)
async def test_websocket_endpoint_finds_the_token(gateway, source):
    query, headers = carried(source, token(sub=f"ws-{source}"))
    client = await Client.open(gateway.port, query, additional_headers=headers)
    assert (await client.expect("authenticated"))["sub"] == f"ws-{source}"
    await client.close()
    query, headers = carried(source, "not-a-jwt")
    with pytest.raises(InvalidStatus) as refused:
        await connect(f"ws://127.0.0.1:{gateway.port}/api/v1/ws{query}", additional_headers=headers)
    assert refused.value.response.status_code == 401


async def _socketio_connect(port: int, query: str, headers: dict[str, str]) -> Any:
    client = socketio.AsyncClient(reconnection=False)
    await client.connect(
        f"http://127.0.0.1:{port}{query}",
        socketio_path="/api/v1/socket.io",
        headers=headers,
        transports=["websocket"],
        wait_timeout=5,
    )
    return client


@pytest.mark.parametrize("source", SOURCES)
async def test_socketio_finds_the_token(gateway, source):
    query, headers = carried(source, token(sub=f"sio-{source}"))
    client = await _socketio_connect(gateway.port, query, headers)
    # Only the token's subject may subscribe to its notifications: the token was read.
    channel = f"user:sio-{source}:notifications"
    reply = await client.call("subscribe", {"channel": channel}, timeout=5)
    assert reply["type"] == "subscribed", reply
    await client.disconnect()
    query, headers = carried(source, "not-a-jwt")
    with pytest.raises(socketio.exceptions.ConnectionError):
        await _socketio_connect(gateway.port, query, headers)
