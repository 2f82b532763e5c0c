"""Helpers for realtime tests: a gateway config with /api/v1/ws, tokens, a JSON client."""

# ruff: noqa: ASYNC109  (timeouts are per call here, on purpose)

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import jwt
from websockets.asyncio.client import ClientConnection, connect

from tests.support.net import request

ISSUER = "https://idp.test"
AUDIENCE = "potok-realtime"
SECRET = "realtime-test-secret-0123456789abcdef"
EVENTS_KEY = "test-events-key-0123456789abcdef"


def token(
    sub: str = "user-1",
    org: str | None = "acme",
    roles: tuple[str, ...] = ("reader",),
    ttl: float = 600,
    secret: str = SECRET,
    **extra: Any,
) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": sub,
        "iat": now,
        "exp": now + int(ttl),
        "jti": uuid.uuid4().hex,
        "roles": list(roles),
        **extra,
    }
    if org is not None:
        claims["org"] = org
    return jwt.encode(claims, secret, algorithm="HS256")


def realtime_config(**realtime: Any) -> dict[str, Any]:
    """A gateway with only the realtime section (memory bus unless `bus` is given)."""
    section: dict[str, Any] = {
        "auth": {
            "issuers": [
                {
                    "issuer": ISSUER,
                    "audiences": [AUDIENCE],
                    "keys": [{"algorithm": "HS256", "secret": SECRET}],
                }
            ],
        },
        "channels": [
            {"pattern": "org:{org}:tasks"},
            {"pattern": "user:{sub}:notifications"},
            {"pattern": "public:*", "publish": True},
            {"pattern": "ops:*", "roles": ["admin"]},
            {"pattern": "bench:*", "publish": True},
        ],
        "events": {"keys": [{"name": "tests", "key": EVENTS_KEY}]},
    }
    section.update(realtime)
    return {"realtime": section, "logging": {"level": "warning"}}


def publish(port: int, *events: dict[str, Any], key: str = EVENTS_KEY) -> Any:
    """POST /api/v1/events; one event, or a batch when several are given."""
    body = events[0] if len(events) == 1 else {"events": list(events)}
    return request(
        port,
        "POST",
        "/api/v1/events",
        {"X-API-Key": key, "Content-Type": "application/json"},
        json.dumps(body).encode(),
    )


class Client:
    """A /api/v1/ws client speaking the JSON protocol."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    @classmethod
    async def open(cls, port: int, query: str = "", **kwargs: Any) -> Client:
        ws = await connect(f"ws://127.0.0.1:{port}/api/v1/ws{query}", **kwargs)
        return cls(ws)

    async def send(self, **message: Any) -> None:
        await self.ws.send(json.dumps(message))

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        result: dict[str, Any] = json.loads(raw)
        return result

    async def expect(self, kind: str, timeout: float = 5.0) -> dict[str, Any]:
        message = await self.recv(timeout)
        assert message["type"] == kind, message
        return message

    async def authenticate(self, jwt_token: str) -> dict[str, Any]:
        await self.send(type="authenticate", token=jwt_token)
        return await self.expect("authenticated")

    async def subscribe(self, channel: str, **extra: Any) -> dict[str, Any]:
        await self.send(type="subscribe", channel=channel, **extra)
        return await self.recv()

    async def events(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        received = []
        while len(received) < count:
            message = await self.recv(timeout)
            if message["type"] == "event":
                received.append(message)
        return received

    async def quiet(self, seconds: float = 0.3) -> list[dict[str, Any]]:
        """Whatever arrives within `seconds` (to check that nothing more comes)."""
        extra = []
        try:
            while True:
                extra.append(await self.recv(seconds))
        except TimeoutError:
            return extra

    async def close(self) -> None:
        await self.ws.close()
