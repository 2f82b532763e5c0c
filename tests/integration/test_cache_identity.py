"""Attack: a cached answer for one caller must never reach another.

User A's `/me` is asked first; user B then asks the same URI. The upstream answers with
the caller's id and headers that would make a careless shared cache keep it (max-age,
with and without `Vary: Authorization`, `private`)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.support.gateway import GatewayProcess
from tests.support.identity_gateway import (
    EXTERNAL_AUDIENCE,
    EXTERNAL_ISSUER,
    claims,
    public_pem,
    rsa_private,
    sign,
)
from tests.support.net import request
from tests.support.upstream import RawUpstream, read_request_head

KEY = rsa_private()
ANSWERS = {
    "/shared/me": "Cache-Control: max-age=100",
    "/shared/me-vary": "Cache-Control: max-age=100\r\nVary: Authorization",
    "/shared/me-private": "Cache-Control: max-age=100, private",
    "/cookie/me": "Cache-Control: max-age=100",
    "/shared/public": "Cache-Control: max-age=100, public",
    # Public, varying by a header only the gateway sets: the cache cannot see its value in
    # the client's request (the client's copy is dropped), so it may not store the answer.
    "/shared/me-vary-identity": "Cache-Control: max-age=100, public\r\nVary: X-User-ID",
    "/own/me": "Cache-Control: max-age=100, private",
    "/own/me-public": "Cache-Control: max-age=100, public",
}


async def answer_with_user(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        head = await read_request_head(reader)
        user = b"anonymous"
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"x-user-id":
                user = value.strip()
        path = head.split(b" ", 2)[1].decode()
        body = b'{"user":"%s"}' % user
        extra = ANSWERS.get(path, "")
        writer.write(
            b"HTTP/1.1 200 OK\r\n%s\r\nContent-Length: %d\r\n\r\n%s"
            % (extra.encode(), len(body), body)
        )
        await writer.drain()


@pytest.fixture(scope="module")
def gateway() -> Iterator[GatewayProcess]:
    upstream = RawUpstream(answer_with_user)
    issuer = {
        "issuer": EXTERNAL_ISSUER,
        "audiences": [EXTERNAL_AUDIENCE],
        "keys": [{"kid": "rsa-1", "algorithm": "RS256", "public_key": public_pem(KEY)}],
    }
    jwt_policy = {"issuers": [issuer]}
    config = {
        "services": {"up": {"targets": [upstream.url]}},
        "routes": [
            {
                "name": "shared",
                "match": {"prefix": "/shared"},
                "service": "up",
                "policies": {"auth_jwt": jwt_policy, "cache": {}},
            },
            {
                # The token from a cookie (or an API key, mTLS): no Authorization header, the
                # request authenticated all the same.
                "name": "cookie",
                "match": {"prefix": "/cookie"},
                "service": "up",
                "policies": {"auth_jwt": {**jwt_policy, "cookie": "token"}, "cache": {}},
            },
            {
                "name": "own",
                "match": {"prefix": "/own"},
                "service": "up",
                "policies": {"auth_jwt": jwt_policy, "cache": {"per_identity": True}},
            },
        ],
    }
    process = GatewayProcess(config)
    yield process
    process.stop()
    upstream.stop()


def token(user: str) -> str:
    return sign(claims(sub=user), KEY, "RS256", kid="rsa-1")


def me(gateway: GatewayProcess, path: str, user: str) -> bytes:
    response = request(gateway.port, "GET", path, {"Authorization": f"Bearer {token(user)}"})
    assert response.status == 200, response
    return response.body


@pytest.mark.parametrize(
    "path",
    [
        "/shared/me",
        "/shared/me-vary",
        "/shared/me-private",
        "/shared/me-vary-identity",
    ],
)
def test_shared_route_never_serves_a_to_b(gateway: GatewayProcess, path: str) -> None:
    assert me(gateway, path, "alice") == b'{"user":"alice"}'
    assert me(gateway, path, "bob") == b'{"user":"bob"}'
    assert me(gateway, path, "alice") == b'{"user":"alice"}'


@pytest.mark.parametrize("path", ["/own/me", "/own/me-public"])
def test_per_identity_route_keys_by_caller(gateway: GatewayProcess, path: str) -> None:
    first = request(gateway.port, "GET", path, {"Authorization": f"Bearer {token('carol')}"})
    assert first.body == b'{"user":"carol"}'
    assert "stored" in (first.header("Cache-Status") or "")
    assert me(gateway, path, "dave") == b'{"user":"dave"}'
    again = request(gateway.port, "GET", path, {"Authorization": f"Bearer {token('carol')}"})
    assert again.body == b'{"user":"carol"}'
    assert (again.header("Cache-Status") or "").startswith("potok; hit")
    assert me(gateway, path, "dave") == b'{"user":"dave"}'


def test_a_request_authenticated_without_authorization_is_treated_alike(
    gateway: GatewayProcess,
) -> None:
    """RFC 9111 3.5 names Authorization; a token in a cookie authenticates just as well,
    so its answer is not shared unless it says public (or the route keys by caller)."""

    def cookie_me(user: str) -> bytes:
        answer = request(gateway.port, "GET", "/cookie/me", {"Cookie": f"token={token(user)}"})
        assert answer.status == 200, answer
        return answer.body

    assert cookie_me("alice") == b'{"user":"alice"}'
    assert cookie_me("bob") == b'{"user":"bob"}'


def test_a_stored_answer_is_never_served_before_authentication(gateway: GatewayProcess) -> None:
    """The cache answers a hit in the request stage: after the route's authentication."""
    assert me(gateway, "/shared/public", "alice") == b'{"user":"alice"}'
    again = request(
        gateway.port, "GET", "/shared/public", {"Authorization": f"Bearer {token('x')}"}
    )
    assert (again.header("Cache-Status") or "").startswith("potok; hit")  # it is stored
    assert request(gateway.port, "GET", "/shared/public").status == 401
    forged = request(gateway.port, "GET", "/shared/public", {"Authorization": "Bearer forged"})
    assert forged.status == 401
