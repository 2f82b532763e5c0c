"""Upgrade: a WebSocket handshake is forwarded and the bytes tunnelled both ways."""

from __future__ import annotations

import aiohttp
import pytest

from tests.support.gateway import GatewayProcess, simple_config
from tests.support.net import request


@pytest.fixture(scope="module")
def gateway(upstream):
    process = GatewayProcess(simple_config(upstream.url))
    yield process
    process.stop()


async def test_websocket_through_the_gateway(gateway):
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{gateway.url}/ws", max_msg_size=64 * 1024 * 1024) as ws,
    ):
        await ws.send_str("hello")
        assert (await ws.receive()).data == "hello"
        big = bytes(range(256)) * 40_000  # ~10 MB binary, fragmented by TCP
        await ws.send_bytes(big)
        message = await ws.receive(timeout=30)
        assert message.data == big
        await ws.ping()
        await ws.send_str("close-me")
        closing = await ws.receive()
        assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 4000


async def test_client_abort_closes_tunnel(gateway):
    session = aiohttp.ClientSession()
    ws = await session.ws_connect(f"{gateway.url}/ws")
    await ws.send_str("x")
    await ws.receive()
    await session.close()  # abrupt from the client's side
    assert request(gateway.port, "GET", "/api/v1/health/liveness").status == 200


def test_upgrade_refused_by_upstream_is_a_normal_response(gateway):
    response = request(
        gateway.port, "GET", "/echo", headers={"Connection": "Upgrade", "Upgrade": "websocket"}
    )
    assert response.status == 200
    assert response.header("connection") == "close"


async def test_idle_tunnel_is_closed_and_a_busy_one_is_not(upstream):
    import asyncio

    config = simple_config(upstream.url, timeouts={"tunnel_idle": "1s"})
    gateway = GatewayProcess(config)
    try:
        async with aiohttp.ClientSession() as session:
            busy = await session.ws_connect(f"{gateway.url}/ws", autoping=False)
            idle = await session.ws_connect(f"{gateway.url}/ws", autoping=False)
            await idle.send_str("hello")
            assert (await idle.receive()).data == "hello"
            for _ in range(10):  # 3 s of traffic every 0.3 s
                await busy.send_str("tick")
                assert (await busy.receive(timeout=5)).data == "tick"
                await asyncio.sleep(0.3)
            closing = await idle.receive(timeout=5)
            assert closing.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.ERROR,
            )
            await busy.send_str("still here")
            assert (await busy.receive(timeout=5)).data == "still here"
            await busy.close()
    finally:
        gateway.stop()
