"""Proxy behaviour over real sockets: routing, rewrites, headers, framing, keep-alive."""

from __future__ import annotations

import json
import socket

import pytest

from tests.support.net import ResponseReader, build_request, connect, request, send_raw
from tests.support.upstream import Upstream


@pytest.fixture(scope="module")
def other() -> Upstream:
    server = Upstream()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(upstream, other, request):
    from tests.support.gateway import GatewayProcess

    config = {
        "server": {"trusted_proxies": ["10.0.0.0/8"]},
        "services": {
            "main": {
                "targets": [upstream.url],
                "api_key": {"header": "X-Service-Key", "value": "s3cret"},
            },
            "other": {"targets": [other.url]},
        },
        "routes": [
            {
                "name": "macro",
                "match": {"prefix": "/api/macro"},
                "service": "main",
                "rewrite": "/api/market-data/macro",
            },
            {
                "name": "item",
                "match": {"path": "/items/{id}", "methods": ["GET"]},
                "service": "main",
                "rewrite": "/v2/items/{id}",
            },
            {"name": "item-me", "match": {"path": "/items/me"}, "service": "other"},
            {
                "name": "strip",
                "match": {"prefix": "/strip"},
                "service": "main",
                "strip_prefix": True,
            },
            {
                "name": "hosted",
                "match": {"prefix": "/", "host": "*.other.test"},
                "service": "other",
            },
            {
                "name": "headers",
                "match": {"prefix": "/hdr"},
                "service": "main",
                "strip_prefix": True,
                "policies": {
                    "headers": {
                        "request": {"set": {"X-Added": "yes"}, "remove": ["X-Secret"]},
                        "response": {"set": {"X-Resp": "1"}, "remove": ["X-Drop-Me"]},
                    }
                },
            },
            {
                "name": "preserve",
                "match": {"prefix": "/preserve"},
                "service": "main",
                "preserve_host": True,
            },
            {"name": "all", "match": {"prefix": "/"}, "service": "main"},
        ],
    }
    process = GatewayProcess(config)
    yield process
    process.stop()


def echoed_headers(response) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in response.json()["headers"]:
        out.setdefault(name.lower(), []).append(value)
    return out


def test_prefix_rewrite_keeps_rest_and_query(gateway):
    response = request(gateway.port, "GET", "/api/macro/gdp/2024?x=1&y=2")
    body = response.json()
    assert response.status == 200
    assert body["path"] == "/api/market-data/macro/gdp/2024"
    assert body["query"] == "x=1&y=2"


def test_template_rewrite_with_param(gateway):
    assert request(gateway.port, "GET", "/items/42").json()["path"] == "/v2/items/42"


def test_literal_segment_beats_param(gateway, other):
    before = other.hits["/items/me"]
    assert request(gateway.port, "GET", "/items/me").status == 200
    assert other.hits["/items/me"] == before + 1


def test_method_not_on_specific_route_falls_to_general_route(gateway):
    # POST /items/42 is not allowed by 'item' (GET only); the catch-all takes it.
    assert request(gateway.port, "POST", "/items/42", body=b"{}").json()["path"] == "/items/42"


def test_strip_prefix(gateway):
    assert request(gateway.port, "GET", "/strip/a/b").json()["path"] == "/a/b"
    assert request(gateway.port, "GET", "/strip").json()["path"] == "/"


def test_host_route_wins_for_its_host(gateway, other):
    before = other.hits["/anything"]
    request(gateway.port, "GET", "/anything", headers={"Host": "api.other.test:8080"})
    assert other.hits["/anything"] == before + 1


def test_dot_segments_resolved_before_routing(gateway):
    # /api/macro/../../items/7 is /items/7: the 'item' route, not an escape from 'macro'.
    assert request(gateway.port, "GET", "/api/macro/../../items/7").json()["path"] == "/v2/items/7"
    assert (
        request(gateway.port, "GET", "/api/macro/%2e%2e/%2E%2E/items/7").json()["path"]
        == "/v2/items/7"
    )


def test_path_above_root_refused(gateway):
    response = request(gateway.port, "GET", "/../../etc/passwd")
    assert response.status == 400
    assert response.header("content-type") == "application/problem+json"


def test_forwarded_headers_from_untrusted_peer_are_replaced(gateway):
    response = request(
        gateway.port,
        "GET",
        "/echo",
        headers={
            "X-Forwarded-For": "6.6.6.6",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "evil",
        },
    )
    headers = echoed_headers(response)
    assert headers["x-forwarded-for"] == ["127.0.0.1"]
    assert headers["x-forwarded-proto"] == ["http"]
    assert headers["x-forwarded-host"] == ["gateway.test"]


def test_request_id_created_and_forwarded(gateway):
    headers = echoed_headers(request(gateway.port, "GET", "/echo"))
    (rid,) = headers["x-request-id"]
    assert len(rid) == 32


def test_request_id_accepted_when_well_formed(gateway):
    headers = echoed_headers(
        request(gateway.port, "GET", "/echo", headers={"X-Request-ID": "abc-123"})
    )
    assert headers["x-request-id"] == ["abc-123"]
    bad = echoed_headers(
        request(gateway.port, "GET", "/echo", headers={"X-Request-ID": 'a b"<script>'})
    )
    assert bad["x-request-id"] != ['a b"<script>']


def test_api_key_injected_and_client_copy_dropped(gateway):
    headers = echoed_headers(
        request(gateway.port, "GET", "/echo", headers={"X-Service-Key": "forged"})
    )
    assert headers["x-service-key"] == ["s3cret"]


def test_upstream_host_header_is_target_unless_preserved(gateway, upstream):
    assert echoed_headers(request(gateway.port, "GET", "/echo"))["host"] == [
        f"127.0.0.1:{upstream.port}"
    ]
    assert echoed_headers(request(gateway.port, "GET", "/preserve"))["host"] == ["gateway.test"]


def test_header_policy_request_and_response(gateway, upstream):
    response = request(
        gateway.port,
        "GET",
        "/hdr/headers?X-Drop-Me=1&X-Keep=2",
        headers={"X-Secret": "x", "X-Added": "client"},
    )
    assert response.header("x-resp") == "1"
    assert response.header("x-drop-me") is None
    assert response.header("x-keep") == "2"
    last = upstream.requests[-1]["headers"]
    assert "X-Secret" not in last
    assert last["X-Added"] == "yes"


def test_hop_by_hop_and_connection_named_headers_removed(gateway):
    response = request(
        gateway.port,
        "GET",
        "/echo",
        headers={
            "Connection": "keep-alive, X-Private",
            "X-Private": "1",
            "Keep-Alive": "timeout=5",
            "TE": "trailers",
            "Proxy-Authorization": "Basic x",
            "X-Public": "ok",
        },
    )
    headers = echoed_headers(response)
    for name in ("x-private", "keep-alive", "te", "proxy-authorization"):
        assert name not in headers
    assert headers["x-public"] == ["ok"]


def test_hop_by_hop_removed_from_responses(gateway):
    response = request(
        gateway.port, "GET", "/headers?Keep-Alive=timeout%3D1&Proxy-Authenticate=x&X-Fine=1"
    )
    assert response.header("keep-alive") is None
    assert response.header("proxy-authenticate") is None
    assert response.header("x-fine") == "1"


def test_not_found_is_problem_json(upstream):
    from tests.support.gateway import GatewayProcess

    process = GatewayProcess(
        {
            "services": {"s": {"targets": [upstream.url]}},
            "routes": [{"match": {"path": "/only", "methods": ["GET"]}, "service": "s"}],
        }
    )
    try:
        response = request(process.port, "GET", "/nope", headers={"X-Request-ID": "rid-1"})
        assert response.status == 404
        assert response.header("content-type") == "application/problem+json"
        doc = response.json()
        assert doc["status"] == 404 and doc["request_id"] == "rid-1" and doc["instance"] == "/nope"
        assert {"type", "title"} <= doc.keys()
        assert response.header("x-request-id") == "rid-1"
        refused = request(process.port, "DELETE", "/only")
        assert refused.status == 405 and refused.header("allow") == "GET"
        assert refused.json()["status"] == 405
    finally:
        process.stop()


def test_keep_alive_reuses_client_and_upstream_connections(gateway, upstream):
    with connect(gateway.port) as sock:
        reader = ResponseReader(sock)
        for index in range(20):
            sock.sendall(build_request("GET", f"/echo?n={index}"))
            assert reader.read().json()["query"] == f"n={index}"
    health = request(gateway.port, "GET", "/api/v1/health").json()
    idle = sum(t["idle_connections"] for t in health["services"]["main"]["targets"])
    assert 1 <= idle <= 3  # one pooled connection served them all (a few at most)


def test_pipelined_requests_answered_in_order(gateway):
    with connect(gateway.port) as sock:
        sock.sendall(
            b"".join(
                build_request("GET", f"/slow?delay={0.05 if i % 2 else 0}&i={i}")
                if i % 3 == 0
                else build_request("GET", f"/echo?i={i}")
                for i in range(12)
            )
        )
        reader = ResponseReader(sock)
        for i in range(12):
            response = reader.read()
            assert response.status == 200
            if i % 3 != 0:
                assert response.json()["query"] == f"i={i}"


def test_chunked_request_body_is_forwarded(gateway):
    chunks = [b"hello ", b"chunked ", b"world" * 1000]
    body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    raw = (
        b"POST /sink HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        + body
    )
    response = ResponseReader(_open_and_send(gateway.port, raw)).read()
    import hashlib

    assert response.json() == {
        "length": len(b"".join(chunks)),
        "sha256": hashlib.sha256(b"".join(chunks)).hexdigest(),
    }


def _open_and_send(port: int, raw: bytes) -> socket.socket:
    sock = connect(port)
    sock.sendall(raw)
    return sock


def test_chunked_response_rechunked_for_http11_and_close_delimited_for_http10(gateway):
    response = request(gateway.port, "GET", "/stream?size=100000&chunk=777")
    assert response.header("transfer-encoding") == "chunked"
    assert response.body == b"y" * 100000
    raw = send_raw(gateway.port, b"GET /stream?size=5000&chunk=100 HTTP/1.0\r\nHost: x\r\n\r\n")
    head, body = raw.split(b"\r\n\r\n", 1)
    assert b"chunked" not in head.lower()
    assert body == b"y" * 5000


def test_http10_keep_alive(gateway):
    with connect(gateway.port) as sock:
        reader = ResponseReader(sock)
        for _ in range(3):
            sock.sendall(b"GET /echo HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
            response = reader.read()
            assert response.status == 200
            assert response.header("connection").lower() == "keep-alive"


def test_head_has_no_body_and_connection_stays_usable(gateway):
    with connect(gateway.port) as sock:
        reader = ResponseReader(sock)
        sock.sendall(build_request("HEAD", "/bytes?size=5000"))
        head = reader.read(head_request=True)
        assert head.status == 200 and head.header("content-length") == "5000"
        sock.sendall(build_request("GET", "/echo?after=head"))
        assert reader.read().json()["query"] == "after=head"


@pytest.mark.parametrize("code", [204, 304])
def test_no_body_statuses(gateway, code):
    with connect(gateway.port) as sock:
        reader = ResponseReader(sock)
        sock.sendall(build_request("GET", f"/nobody/{code}"))
        response = reader.read()
        assert response.status == code and response.body == b""
        assert response.header("transfer-encoding") is None
        sock.sendall(build_request("GET", "/echo?after=nobody"))
        assert reader.read().json()["query"] == "after=nobody"


def test_expect_100_continue(gateway):
    with connect(gateway.port) as sock:
        sock.sendall(
            b"POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        interim = sock.recv(1024)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(b"hello")
        response = ResponseReader(sock)
        if len(interim) > len(b"HTTP/1.1 100 Continue\r\n\r\n"):
            response.buffer = interim[len(b"HTTP/1.1 100 Continue\r\n\r\n") :]
        assert response.read().json()["length"] == 5


def test_expect_100_continue_refused_by_size_gets_413_without_100(upstream):
    from tests.support.gateway import GatewayProcess

    process = GatewayProcess(
        {
            "services": {"s": {"targets": [upstream.url]}},
            "routes": [
                {
                    "match": {"prefix": "/"},
                    "service": "s",
                    "policies": {"request_size": {"max_bytes": 100}},
                }
            ],
        }
    )
    try:
        with connect(process.port) as sock:
            sock.sendall(
                b"POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\nExpect: 100-continue\r\n\r\n"
            )
            response = ResponseReader(sock).read()
            assert response.status == 413
            assert response.header("connection") == "close"
    finally:
        process.stop()


def test_large_header_count_and_values_pass(gateway):
    headers = {f"X-H{i}": "v" * 100 for i in range(50)}
    echoed = echoed_headers(request(gateway.port, "GET", "/echo", headers=headers))
    assert echoed["x-h49"] == ["v" * 100]


def test_access_log_line_fields(gateway):
    request(gateway.port, "GET", "/api/macro/log-me", headers={"X-Request-ID": "log-me-1"})
    gateway.wait_for(lambda: any(e["request_id"] == "log-me-1" for e in gateway.access_log()))
    entry = next(e for e in gateway.access_log() if e["request_id"] == "log-me-1")
    assert entry["route"] == "macro" and entry["service"] == "main" and entry["status"] == 200
    assert entry["method"] == "GET" and entry["path"] == "/api/macro/log-me"
    assert entry["client_ip"] == "127.0.0.1" and entry["bytes_out"] > 0
    assert entry["duration_ms"] >= entry["upstream_ms"] > 0
    assert entry["target"].startswith("127.0.0.1:")
    json.dumps(entry)


def test_thousands_of_pipelined_requests_in_one_write(upstream):
    """Answered synchronously one after another (404s): no recursion, all in order."""
    from tests.support.gateway import GatewayProcess

    gateway = GatewayProcess(
        {
            "services": {"s": {"targets": [upstream.url]}},
            "routes": [{"match": {"path": "/only"}, "service": "s"}],
        }
    )
    count = 3000
    with connect(gateway.port) as sock:
        sock.sendall(b"".join(build_request("GET", f"/api/v1/nope{i}") for i in range(count)))
        reader = ResponseReader(sock)
        for i in range(count):
            response = reader.read()
            assert response.status == 404
            assert response.json()["instance"] == f"/api/v1/nope{i}"
    assert gateway.stop() == 0
