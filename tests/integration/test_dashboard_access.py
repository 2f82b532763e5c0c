"""Who gets the dashboard, over real sockets (no browser): the admin API's rule on both
ports, the sign-in page, framing refused, the stream's credentials checked at every event
(a revoked key stops it at once)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import pytest

from tests.support.admin import USER_PASSWORD, AdminGateway, from_address
from tests.support.gateway import GatewayProcess
from tests.support.net import build_request, request
from tests.support.upstream import Upstream


@pytest.fixture(scope="module")
def gateway() -> Iterator[AdminGateway]:
    upstream = Upstream()
    gateway = AdminGateway([upstream.url])
    yield gateway
    gateway.stop()
    upstream.stop()


class Stream:
    """A GET /dashboard/stream read as it arrives: the head, then the chunked body's
    bytes (`data`) and its events one by one."""

    def __init__(self, port: int, headers: dict[str, str] | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=15)
        self.sock.sendall(build_request("GET", "/dashboard/stream?interval=0.5", headers))
        self.raw = b""
        self.head = b""
        self.data = b""  # the body, de-chunked
        self.taken = 0  # how much of `data` next_event has consumed

    def _read(self, deadline: float) -> None:
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing more in time: {self.head + self.data[:2000]!r}")
        chunk = self.sock.recv(65536)
        if not chunk:
            raise AssertionError(f"closed: {self.head + self.data[:2000]!r}")
        self.raw += chunk
        if not self.head:
            if b"\r\n\r\n" not in self.raw:
                return
            self.head, self.raw = self.raw.split(b"\r\n\r\n", 1)
        while b"\r\n" in self.raw:
            size_line, rest = self.raw.split(b"\r\n", 1)
            size = int(size_line, 16)
            if len(rest) < size + 2:
                return
            self.data += rest[:size]
            self.raw = rest[size + 2 :]

    def until(self, marker: bytes, timeout: float = 15.0) -> bytes:
        deadline = time.monotonic() + timeout
        while marker not in self.head + self.data:
            self._read(deadline)
        return self.head + self.data

    def next_event(self, name: str, timeout: float = 15.0) -> bytes:
        """The data of the next event called `name`."""
        deadline = time.monotonic() + timeout
        while True:
            end = self.data.find(b"\n\n", self.taken)
            if end < 0:
                self._read(deadline)
                continue
            block, self.taken = self.data[self.taken : end], end + 2
            lines = block.split(b"\n")
            if f"event: {name}".encode() in lines:
                return b"\n".join(line[6:] for line in lines if line.startswith(b"data: "))

    def close(self) -> None:
        self.sock.close()


def test_the_listener_serves_the_page_with_framing_refused(gateway):
    page = request(gateway.listen_port, "GET", "/dashboard")
    assert page.status == 200
    assert page.header("content-type").startswith("text/html")
    assert b'data-mode="dashboard"' in page.body
    assert "frame-ancestors 'none'" in page.header("content-security-policy")
    assert page.header("x-frame-options") == "DENY"
    assert page.header("cache-control") == "no-store"
    script = request(gateway.listen_port, "GET", "/dashboard/assets/dashboard.js")
    assert script.status == 200
    assert script.header("content-type").startswith("text/javascript")
    etag = script.header("etag")
    again = request(
        gateway.listen_port, "GET", "/dashboard/assets/dashboard.js", {"If-None-Match": etag}
    )
    assert again.status == 304
    traversal = request(gateway.listen_port, "GET", "/dashboard/assets/..%2f__init__.py")
    assert traversal.status in (400, 404)


def test_the_public_port_asks_for_credentials_and_shows_nothing_without_them(gateway):
    page = request(gateway.port, "GET", "/dashboard")
    assert page.status == 401
    assert page.header("www-authenticate").startswith("Bearer")
    assert b'data-mode="signin"' in page.body
    digest = gateway.admin("GET", "/config").json()["digest"]
    assert digest.encode() not in page.body
    stream = request(gateway.port, "GET", "/dashboard/stream")
    assert stream.status == 401
    assert stream.header("content-type") == "application/problem+json"


def test_a_user_without_the_admin_role_is_refused(gateway):
    plain = gateway.login("plain", USER_PASSWORD)
    headers = {"Authorization": f"Bearer {plain}"}
    assert request(gateway.port, "GET", "/dashboard", headers).status == 403
    assert request(gateway.port, "GET", "/dashboard/stream", headers).status == 403


def test_an_admin_token_gets_the_page_and_the_stream(gateway):
    assert request(gateway.port, "GET", "/dashboard", gateway.bearer()).status == 200
    stream = Stream(gateway.port, gateway.bearer())
    try:
        data = stream.until(b"event: snapshot\ndata: ")
        assert b"text/event-stream" in data
        assert b'"services":{"up"' in data
    finally:
        stream.close()


def test_addresses_outside_allow_from_get_nothing(gateway):
    for path in ("/dashboard", "/dashboard/assets/dashboard.js", "/dashboard/stream"):
        assert from_address("127.0.0.2", gateway.listen_port, path).status == 403
        assert from_address("127.0.0.2", gateway.port, path, gateway.bearer()).status == 403


def test_a_revoked_key_stops_the_stream_at_once(gateway):
    created = gateway.admin("POST", "/keys", {"name": "dashboard", "roles": ["admin"]})
    assert created.status == 201
    key = created.json()
    stream = Stream(gateway.port, {"X-API-Key": key["key"]})
    try:
        stream.until(b"event: snapshot")
        assert gateway.admin("POST", f"/keys/{key['id']}/revoke").status == 200
        data = stream.until(b"event: refused")
        assert b"invalid API key" in data.split(b"event: refused")[1]
    finally:
        stream.close()


def test_without_admin_public_the_dashboard_is_not_on_the_public_port():
    upstream = Upstream()
    process = GatewayProcess(
        {
            "services": {"app": {"targets": [upstream.url]}},
            # A user route may have /dashboard when the admin API is not public.
            "routes": [{"match": {"prefix": "/"}, "service": "app"}],
        }
    )
    try:
        answer = request(process.port, "GET", "/dashboard")
        assert answer.status == 200
        assert answer.json()["path"] == "/dashboard"  # the upstream's echo
    finally:
        process.stop()
        upstream.stop()


def in_flight(gateway: AdminGateway) -> int:
    workers = gateway.admin("GET", "/workers").json()["workers"]
    return sum(worker["in_flight"] for worker in workers)


def test_closing_the_page_ends_its_stream_within_a_second(gateway):
    idle = in_flight(gateway)  # this call itself
    stream = Stream(gateway.listen_port)
    stream.until(b"event: snapshot")
    assert in_flight(gateway) == idle + 1
    stream.close()
    deadline = time.monotonic() + 5
    while in_flight(gateway) != idle:
        assert time.monotonic() < deadline, "the stream outlived its page"
        time.sleep(0.1)


def test_with_two_workers_the_stream_shows_both():
    upstream = Upstream()
    gateway = AdminGateway([upstream.url], workers=2)
    stream = None
    try:
        for _ in range(6):
            assert request(gateway.port, "GET", "/counted").status == 200
        stream = Stream(gateway.listen_port)
        snapshot = json.loads(stream.next_event("snapshot", timeout=20))
        assert sorted(w["id"] for w in snapshot["workers"]) == ["0", "1"]
        assert sorted(snapshot["services"]["up"]["breakers"]) == ["0", "1"]
        # Counted on whichever worker answered, summed over both (metric snapshots,
        # written once a second).
        deadline = time.monotonic() + 10
        while {r["route"]: r for r in snapshot["routes"]}.get("all", {}).get(
            "requests_total", 0
        ) < 6:
            assert time.monotonic() < deadline, snapshot["routes"]
            snapshot = json.loads(stream.next_event("snapshot"))
    finally:
        if stream is not None:
            stream.close()
        gateway.stop()
        upstream.stop()
