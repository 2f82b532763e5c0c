"""Reaching the admin API around its guard, through the real gateway over real sockets.

Path tricks on the public port (dot segments, doubled or encoded slashes, case, trailing
slash, parameters, and the same over HTTP/2 `:path`), with and without `admin.public`;
the admin endpoints' address allow-list for every admin router; cross-site requests.
An admin answer is recognised by the `digest` of the running config in `/status`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.admin import AdminGateway, from_address
from tests.support.h2client import H2Client
from tests.support.net import request
from tests.support.upstream import Upstream


@pytest.fixture(scope="module")
def target() -> Iterator[Upstream]:
    server = Upstream()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def public(target: Upstream) -> Iterator[AdminGateway]:
    """admin.public: the admin API on the public port, behind credentials."""
    gateway = AdminGateway([target.url])
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def private(target: Upstream) -> Iterator[AdminGateway]:
    """Without admin.public: the admin API only on the metrics listener."""
    gateway = AdminGateway([target.url], admin={"public": False, "allow_from": ["127.0.0.1/32"]})
    yield gateway
    gateway.stop()


TRICKS = [
    "/api/v1/admin/status",
    "//api/v1/admin/status",
    "/api//v1/admin/status",
    "/api/v1/admin//status",
    "/api/v1/admin/./status",
    "/api/v1/admin/x/../status",
    "/api/v1/x/../admin/status",
    "/api/v1/admin/%2e/status",
    "/api/v1/admin/x/%2e%2e/status",
    "/api/v1/%61dmin/status",
    "/api/v1/admin%2fstatus",
    "/api/v1/admin%2Fstatus",
    "/api%2fv1%2fadmin%2fstatus",
    "/API/v1/admin/status",
    "/api/v1/ADMIN/status",
    "/api/v1/admin/status/",
    "/api/v1/admin/status;x",
    "/api/v1/admin;x/status",
    "/api/v1/admin/status%00",
    "/api/v1/admin/cache/../status",
    "/api/v1/admin/cache/..%2fstatus",
    "/api/v1/admin/cache%2f..%2fstatus",
    "/api/v1/admin/webhooks/..%2f..%2fadmin%2fstatus",
    "/api/v1/health/../admin/status",
    "/api/v1/health/..%2fadmin%2fstatus",
    "/api/v1/admin\\status",
    "/api/v1/admin/status?x=/../",
]


def is_admin_answer(status: int, body: bytes) -> bool:
    return status == 200 and b'"digest"' in body and b'"expected_workers"' in body


@pytest.mark.parametrize("path", TRICKS)
def test_no_path_reaches_the_admin_api_without_credentials(public, path):
    answer = request(public.port, "GET", path)
    assert not is_admin_answer(answer.status, answer.body), (path, answer.status)


@pytest.mark.parametrize("path", TRICKS)
def test_without_admin_public_no_path_reaches_it_on_the_public_port(private, path):
    """Even with an admin's token: the admin API is not on the public port at all."""
    answer = request(private.port, "GET", path, private.bearer())
    assert not is_admin_answer(answer.status, answer.body), (path, answer.status)
    # On the listener it is there (the fixture is sound).
    assert private.admin("GET", "/status").status == 200


@pytest.mark.parametrize("path", TRICKS)
def test_no_http2_path_reaches_it_without_admin_public(private, path):
    client = H2Client(private.port)
    try:
        stream_id = client.request(path, headers=[("authorization", f"Bearer {private.token}")])
        result = client.wait(stream_id)
    finally:
        client.close()
    assert not is_admin_answer(result.status, bytes(result.body)), (path, result.status)


@pytest.mark.parametrize(
    "path", ["/api/v1/admin/status", "/api/v1/admin/cache/stats", "/api/v1/admin/webhooks/outbox"]
)
def test_every_admin_router_keeps_allow_from(public, path):
    """allow_from holds for every endpoint under /api/v1/admin, whatever the caller shows:
    127.0.0.2 is loopback but outside 127.0.0.1/32."""
    answer = from_address("127.0.0.2", public.port, path, public.bearer())
    assert answer.status == 403, (path, answer.status, answer.body)
    spoofed = from_address(
        "127.0.0.2", public.port, path, {**public.bearer(), "X-Forwarded-For": "127.0.0.1"}
    )
    assert spoofed.status == 403, (path, spoofed.status)


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ],
)
def test_a_cross_site_cache_purge_is_refused(public, headers):
    """A page elsewhere cannot make an operator's browser purge the cache."""
    answer = request(
        public.listen_port,
        "POST",
        "/api/v1/admin/cache/purge",
        {**public.bearer(), **headers, "Content-Type": "application/json"},
        b"{}",
    )
    assert answer.status == 403, (headers, answer.status, answer.body)
