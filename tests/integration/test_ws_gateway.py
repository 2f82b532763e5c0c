"""/api/v1/ws over real sockets: authentication, channel rules, delivery, recovery, shutdown."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.support.gateway import GatewayProcess
from tests.support.net import request
from tests.support.realtime import EVENTS_KEY, Client, publish, realtime_config, token


@pytest.fixture(scope="module")
def gateway():
    process = GatewayProcess(
        realtime_config(
            auth={
                **realtime_config()["realtime"]["auth"],
                "timeout": "1s",
                "cookie": "potok_token",
            },
            history={"size": 50, "ttl": "5m"},
        )
    )
    yield process
    process.stop()


async def _closed_code(client: Client, timeout: float = 5.0) -> int:  # noqa: ASYNC109
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await client.recv(timeout)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code


async def test_unauthenticated_connection_closed_with_4401_after_the_timeout(gateway):
    client = await Client.open(gateway.port)
    started = time.monotonic()
    assert await _closed_code(client) == 4401
    assert 0.8 < time.monotonic() - started < 4


async def test_bad_token_in_authenticate_is_refused_and_closed(gateway):
    client = await Client.open(gateway.port)
    await client.send(type="authenticate", token=token(secret="another-secret-0123456789abcdefgh"))
    error = await client.expect("error")
    assert error["code"] == "invalid_token"
    assert await _closed_code(client) == 4401


async def test_expired_token_is_refused(gateway):
    client = await Client.open(gateway.port)
    await client.send(type="authenticate", token=token(ttl=-120), ref=7)
    error = await client.expect("error")
    assert error["code"] == "token_expired" and error["ref"] == 7
    assert await _closed_code(client) == 4401


async def test_bad_token_at_connect_refuses_the_handshake(gateway):
    with pytest.raises(InvalidStatus) as refused:
        await connect(f"ws://127.0.0.1:{gateway.port}/api/v1/ws?token=not-a-jwt")
    assert refused.value.response.status_code == 401
    with pytest.raises(InvalidStatus) as expired:
        await connect(f"ws://127.0.0.1:{gateway.port}/api/v1/ws?token={token(ttl=-120)}")
    assert expired.value.response.status_code == 401


async def test_token_at_connect_in_query_or_cookie(gateway):
    client = await Client.open(gateway.port, f"?token={token(sub='q-user')}")
    assert (await client.expect("authenticated"))["sub"] == "q-user"
    await client.close()
    ws = await connect(
        f"ws://127.0.0.1:{gateway.port}/api/v1/ws",
        additional_headers={"Cookie": f"other=1; potok_token={token(sub='c-user')}"},
    )
    cookie_client = Client(ws)
    assert (await cookie_client.expect("authenticated"))["sub"] == "c-user"
    await cookie_client.close()


async def test_commands_before_authentication_are_refused(gateway):
    client = await Client.open(gateway.port)
    await client.send(type="subscribe", channel="public:news")
    assert (await client.expect("error"))["code"] == "not_authenticated"
    await client.send(type="ping", ref="p")
    assert await client.expect("pong") == {"type": "pong", "ref": "p"}
    await client.close()


async def test_org_a_cannot_subscribe_to_org_b(gateway):
    client = await Client.open(gateway.port)
    await client.authenticate(token(org="acme"))
    assert (await client.subscribe("org:acme:tasks"))["type"] == "subscribed"
    denied = await client.subscribe("org:globex:tasks")
    assert denied["type"] == "error" and denied["code"] == "forbidden"
    assert denied["channel"] == "org:globex:tasks"
    # Nothing published to the other org reaches this client.
    publish(gateway.port, {"channel": "org:globex:tasks", "type": "task:created", "data": 1})
    assert await client.quiet() == []
    await client.close()


async def test_user_cannot_subscribe_to_another_users_notifications(gateway):
    client = await Client.open(gateway.port)
    await client.authenticate(token(sub="alice"))
    assert (await client.subscribe("user:alice:notifications"))["type"] == "subscribed"
    denied = await client.subscribe("user:bob:notifications")
    assert denied["code"] == "forbidden"
    await client.close()


async def test_roles_and_unknown_channels(gateway):
    client = await Client.open(gateway.port)
    await client.authenticate(token(roles=("reader",)))
    assert (await client.subscribe("ops:alerts"))["code"] == "forbidden"
    assert (await client.subscribe("nobody:rules:this"))["code"] == "forbidden"
    assert (await client.subscribe("bad channel!"))["code"] == "forbidden"
    admin = await Client.open(gateway.port)
    await admin.authenticate(token(sub="root", roles=("admin",)))
    assert (await admin.subscribe("ops:alerts"))["type"] == "subscribed"
    await client.close()
    await admin.close()


async def test_event_delivered_once_with_its_fields(gateway):
    client = await Client.open(gateway.port)
    await client.authenticate(token())
    await client.subscribe("org:acme:tasks")
    response = publish(
        gateway.port,
        {"channel": "org:acme:tasks", "type": "task:created", "data": {"id": 7}, "id": "ev-1"},
    )
    assert response.status == 202
    stored = response.json()
    (event,) = await client.events(1)
    assert event == {
        "type": "event",
        "channel": "org:acme:tasks",
        "id": "ev-1",
        "event": "task:created",
        "data": {"id": 7},
        "offset": stored["offset"],
    }
    again = publish(
        gateway.port, {"channel": "org:acme:tasks", "type": "task:created", "id": "ev-1"}
    )
    assert again.status == 202 and again.json()["duplicate"] is True
    assert await client.quiet() == []
    await client.close()


async def test_client_publishes_where_the_channel_allows(gateway):
    sender = await Client.open(gateway.port)
    receiver = await Client.open(gateway.port)
    await sender.authenticate(token(sub="s"))
    await receiver.authenticate(token(sub="r"))
    await receiver.subscribe("public:chat")
    await sender.send(type="message", channel="public:chat", event="chat", data={"t": "hi"}, ref=1)
    ack = await sender.expect("published")
    assert ack["ref"] == 1 and ack["offset"] is not None
    (event,) = await receiver.events(1)
    assert event["event"] == "chat" and event["data"] == {"t": "hi"}
    await sender.send(type="message", channel="org:acme:tasks", data={})
    assert (await sender.expect("error"))["code"] == "forbidden"
    await sender.close()
    await receiver.close()


async def test_recovery_after_reconnect_gets_exactly_the_missed_events_in_order(gateway):
    client = await Client.open(gateway.port)
    await client.authenticate(token())
    await client.subscribe("org:acme:tasks")
    publish(gateway.port, {"channel": "org:acme:tasks", "type": "task:updated", "data": 0})
    (seen,) = await client.events(1)
    await client.close()
    published = [
        publish(gateway.port, {"channel": "org:acme:tasks", "type": "task:updated", "data": i})
        for i in range(1, 11)
    ]
    assert all(p.status == 202 for p in published)
    again = await Client.open(gateway.port)
    await again.authenticate(token())
    reply = await again.subscribe("org:acme:tasks", since=seen["offset"])
    assert reply["type"] == "subscribed" and reply["recovered"] is True
    missed = await again.events(10)
    assert [e["data"] for e in missed] == list(range(1, 11))
    assert [e["offset"] for e in missed] == sorted(e["offset"] for e in missed)
    assert await again.quiet() == []
    # A position the history no longer holds is flagged, not silently accepted.
    stale = await again.subscribe("org:acme:tasks", since=1_000_000)
    assert stale["recovered"] is False
    await again.close()


async def test_unsubscribe_stops_delivery(gateway):
    client = await Client.open(gateway.port)
    await client.authenticate(token())
    await client.subscribe("public:ticker")
    await client.send(type="unsubscribe", channel="public:ticker")
    assert (await client.expect("unsubscribed"))["channel"] == "public:ticker"
    publish(gateway.port, {"channel": "public:ticker", "type": "tick", "data": 1})
    assert await client.quiet() == []
    await client.send(type="unsubscribe", channel="public:ticker")
    assert (await client.expect("error"))["code"] == "not_subscribed"
    await client.close()


async def test_malformed_messages_get_error_frames(gateway):
    client = await Client.open(gateway.port)
    await client.ws.send("not json")
    assert (await client.expect("error"))["code"] == "bad_request"
    await client.send(type="dance")
    assert (await client.expect("error"))["code"] == "bad_request"
    await client.send(type="subscribe")
    assert (await client.expect("error"))["code"] == "bad_request"
    await client.close()


def test_events_endpoint_needs_a_service_key(gateway):
    event = {"channel": "public:x", "type": "t", "data": 1}
    assert publish(gateway.port, event, key="wrong-key-0123456789abcdefgh").status == 401
    no_key = request(
        gateway.port, "POST", "/api/v1/events", {"Content-Type": "application/json"},
        json.dumps(event).encode(),
    )  # fmt: skip
    assert no_key.status == 401
    bad = publish(gateway.port, {"channel": "bad channel", "type": "t"})
    assert bad.status == 422
    batch = publish(gateway.port, event, {**event, "id": "b-2"})
    assert batch.status == 202 and len(batch.json()["events"]) == 2
    assert publish(gateway.port, event, key=EVENTS_KEY).status == 202


def test_plain_http_to_the_websocket_endpoint_gets_426(gateway):
    response = request(gateway.port, "GET", "/api/v1/ws")
    assert response.status == 426


async def test_metrics_count_connections_and_messages(gateway):
    client = await Client.open(gateway.port)
    await client.authenticate(token())
    await client.subscribe("public:metrics")
    publish(gateway.port, {"channel": "public:metrics", "type": "t", "data": 1})
    await client.events(1)
    text = request(gateway.port, "GET", "/api/v1/metrics").body.decode()
    assert 'websocket_connections_active{transport="websocket"}' in text
    assert 'websocket_connections_total{transport="websocket"}' in text
    assert 'websocket_messages_out_total{transport="websocket"}' in text
    assert "realtime_fanout_latency_seconds_bucket" in text
    await client.close()


async def test_shutdown_closes_sockets_with_1001():
    process = GatewayProcess(realtime_config())
    try:
        client = await Client.open(process.port)
        await client.authenticate(token())
        await client.subscribe("public:shutdown")
        process.signal()
        assert await _closed_code(client, timeout=10) == 1001
    finally:
        process.stop()


async def test_dead_peer_is_dropped_and_pings_are_sent():
    config = realtime_config(limits={"ping_interval": "0.3s", "ping_timeout": "0.3s"})
    process = GatewayProcess(config)
    try:
        # A responsive client answers pings (the client library does) and stays.
        alive = await Client.open(process.port)
        await alive.authenticate(token())
        await asyncio.sleep(1.5)
        await alive.send(type="ping")
        await alive.expect("pong")
        # A peer that never answers (raw socket, no pongs) is dropped.
        reader, writer = await asyncio.open_connection("127.0.0.1", process.port)
        writer.write(
            b"GET /api/v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        await reader.readuntil(b"\r\n\r\n")
        data = b""
        started = time.monotonic()
        with pytest.raises(ConnectionResetError):  # pings, then dropped without a close
            while chunk := await asyncio.wait_for(reader.read(1024), 10):
                data += chunk
            raise ConnectionResetError  # EOF counts as dropped too
        assert data.startswith(b"\x89\x00")
        assert time.monotonic() - started < 5  # long before the 10 s auth timeout
        writer.close()
        await alive.close()
    finally:
        process.stop()


async def test_invalid_utf8_in_a_text_frame_closes_with_1007(gateway):
    client = await Client.open(gateway.port)
    await client.authenticate(token())
    await client.ws.send(b'{"type": "ping", "ref": "\xff\xfe"}', text=True)  # not UTF-8
    assert await _closed_code(client) == 1007
    # Also when the bad byte is split across fragments of one message.
    fragmented = await Client.open(gateway.port)
    await fragmented.ws.send(iter([b'{"type": "ping", "ref": "\xe2', b'\x82"}']), text=True)
    assert await _closed_code(fragmented) == 1007
    # Valid UTF-8 beyond ASCII is fine.
    fine = await Client.open(gateway.port)
    await fine.send(type="ping", ref="Grüße ✓")
    assert (await fine.expect("pong"))["ref"] == "Grüße ✓"
    await fine.close()
