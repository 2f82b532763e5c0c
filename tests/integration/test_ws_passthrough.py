"""WebSocket pass-through with authentication at the handshake: the route's auth_jwt reads
the token from the query (browsers cannot set headers), refuses without it, and the token
does not travel upstream."""

from __future__ import annotations

import aiohttp
import pytest

from tests.support.gateway import GatewayProcess, simple_config
from tests.support.realtime import AUDIENCE, ISSUER, SECRET, token


@pytest.fixture(scope="module")
def gateway(upstream):
    issuer = {
        "issuer": ISSUER,
        "audiences": [AUDIENCE],
        "keys": [{"algorithm": "HS256", "secret": SECRET}],
    }
    config = simple_config(
        upstream.url, policies={"auth_jwt": {"issuers": [issuer], "query": "access_token"}}
    )
    process = GatewayProcess(config)
    yield process
    process.stop()


async def test_handshake_without_a_token_is_refused(gateway):
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(f"{gateway.url}/ws")
        assert refused.value.status == 401
        with pytest.raises(aiohttp.WSServerHandshakeError) as expired:
            await session.ws_connect(f"{gateway.url}/ws?access_token={token(ttl=-300)}")
        assert expired.value.status == 401


async def test_handshake_with_a_token_in_the_query_is_tunnelled(gateway, upstream):
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{gateway.url}/ws?access_token={token()}&room=1") as ws,
    ):
        await ws.send_str("hello")
        assert (await ws.receive()).data == "hello"
        big = bytes(range(256)) * 4096  # 1 MiB binary, fragmented by TCP
        await ws.send_bytes(big)
        assert (await ws.receive(timeout=30)).data == big
    seen = [r["path"] for r in upstream.requests if str(r["path"]).startswith("/ws")]
    assert seen[-1] == "/ws?room=1"  # the token was taken out of the query
