"""Edge hygiene through the real gateway: encoded separators, TRACE, transfer codings,
Host, wildcard hosts, and the headers every gateway-made answer carries (issue 13
items 2, 7 and 21; X-Request-ID on every answer)."""

from __future__ import annotations

import pytest

from tests.support.net import ResponseReader, build_request, connect, free_port, request, send_raw

ORIGIN = "https://app.example"
CORS = {"allow_origins": [ORIGIN]}
HEADERS = {"security_headers": {}, "cors": CORS}
NO_RETRY = {"attempts": 1}


@pytest.fixture(scope="module")
def gateway(upstream):
    from tests.support.gateway import GatewayProcess

    dead = f"http://127.0.0.1:{free_port()}"
    config = {
        "services": {
            "up": {"targets": [upstream.url]},
            "keyed": {"targets": [upstream.url], "api_key": {"header": "X-Service-Key",
                                                             "value": "s3cret"}},
            "dead": {"targets": [dead], "retry": NO_RETRY, "circuit_breaker": None,
                     "passive_ejection": None},
            "slow": {"targets": [upstream.url], "retry": NO_RETRY, "circuit_breaker": None,
                     "timeouts": {"response": "300ms"}},
            "tripping": {"targets": [dead], "retry": NO_RETRY, "passive_ejection": None,
                         "circuit_breaker": {"consecutive_failures": 2, "open_for": "60s"}},
        },
        "routes": [
            {"name": "up", "match": {"prefix": "/up"}, "service": "up", "policies": HEADERS},
            {"name": "down", "match": {"prefix": "/down"}, "service": "dead", "policies": HEADERS},
            {"name": "slow", "match": {"prefix": "/slow"}, "service": "slow", "policies": HEADERS},
            {"name": "trip", "match": {"prefix": "/trip"}, "service": "tripping",
             "policies": HEADERS},
            {"name": "getonly", "match": {"prefix": "/getonly", "methods": ["GET"]},
             "service": "up"},
            {"name": "trace", "match": {"prefix": "/trace", "methods": ["GET", "TRACE"]},
             "service": "up"},
            {"name": "keep", "match": {"prefix": "/keep"}, "service": "up",
             "escaped_slashes": "keep"},
            {"name": "unescape", "match": {"prefix": "/unescape"}, "service": "up",
             "escaped_slashes": "unescape_and_forward"},
            {"name": "redirect", "match": {"prefix": "/redirect"}, "service": "up",
             "escaped_slashes": "unescape_and_redirect"},
            {"name": "macro", "match": {"prefix": "/api/macro"}, "service": "up",
             "rewrite": "/macro"},
            {"name": "wild", "match": {"prefix": "/hosted", "host": "*.example.com"},
             "service": "up", "rewrite": "/wildcard"},
            {"name": "hosted", "match": {"prefix": "/hosted"}, "service": "up"},
            {"name": "keyed", "match": {"prefix": "/keyed"}, "service": "keyed"},
        ],
        "policies": {"security_headers": {}},
    }  # fmt: skip
    process = GatewayProcess(config)
    yield process
    process.stop()


def raw_path(response) -> str:
    return str(response.json()["raw_path"])


def is_problem(response, status: int) -> None:
    assert response.status == status, response
    assert response.header("Content-Type") == "application/problem+json"
    assert response.json()["status"] == status


# Item 2: encoded separators ----------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/up/a%2fb",
        "/up/a%2Fb",
        "/up/a%5cb",
        "/up/a%5Cb",
        "/api/macro/..%2f..%2f..%2finternal/admin",
        "/api/macro/..%2F..%2Finternal/admin",
        "/up/x/..%5c..%5cetc/passwd",
    ],
)
def test_encoded_separators_are_refused_by_default(gateway, upstream, path):
    before = upstream.total
    response = request(gateway.port, "GET", path)
    is_problem(response, 400)
    assert "%2F" in response.json()["detail"]
    assert upstream.total == before, "an encoded separator reached the upstream"


def test_a_rewrite_prefix_cannot_be_escaped(gateway, upstream):
    # Resolved before routing: `..;` is a dot segment, so this is /internal/admin (no route).
    before = upstream.total
    assert request(gateway.port, "GET", "/api/macro/..;/..;/internal/admin").status == 404
    assert request(gateway.port, "GET", "/api/macro/..;x/..;y/internal").status == 404
    assert upstream.total == before
    # Inside the prefix the rewrite applies to the resolved path.
    response = request(gateway.port, "GET", "/api/macro/a/..;/b")
    assert response.status == 200
    assert raw_path(response) == "/macro/b"


@pytest.mark.parametrize(
    ("path", "upstream_path"),
    [
        ("/up/a/..;/b", "/up/b"),
        ("/up/a/..;jsessionid=1/b", "/up/b"),
        ("/up/a/%2e%2e;/b", "/up/b"),
        ("/up/a/..%3b/b", "/up/b"),
        ("/up/a/.;/b", "/up/a/b"),
        ("/up/a;v=1/b", "/up/a;v=1/b"),  # parameters on an ordinary segment are data
    ],
)
def test_semicolon_dot_segments_are_resolved(gateway, path, upstream_path):
    response = request(gateway.port, "GET", path)
    assert response.status == 200, response
    assert raw_path(response) == upstream_path


def test_dot_segments_with_parameters_cannot_climb_above_the_root(gateway, upstream):
    before = upstream.total
    is_problem(request(gateway.port, "GET", "/up/..;/..;/etc"), 400)
    is_problem(request(gateway.port, "GET", "/up\\..;\\x"), 400)
    assert upstream.total == before


def test_keep_forwards_encoded_separators_as_opaque_data(gateway):
    response = request(gateway.port, "GET", "/keep/a%2Fb/..%2fc")
    assert response.status == 200
    assert raw_path(response) == "/keep/a%2Fb/..%2fc"


def test_unescape_and_forward_routes_the_decoded_path_again(gateway, upstream):
    response = request(gateway.port, "GET", "/unescape/a%2fb%5Cc")
    assert response.status == 200
    assert raw_path(response) == "/unescape/a/b/c"
    # The decoded path is routed again: here it lands on another route, whose rules apply.
    response = request(gateway.port, "GET", "/unescape/x/..%2f..%2fkeep/y")
    assert response.status == 200
    assert raw_path(response) == "/keep/y"
    before = upstream.total
    is_problem(request(gateway.port, "GET", "/unescape/..%2f..%2f..%2fetc"), 400)
    assert upstream.total == before


def test_unescape_and_redirect_sends_the_client_to_the_decoded_path(gateway, upstream):
    before = upstream.total
    response = request(gateway.port, "GET", "/redirect/a%2Fb/..%2fc?q=1")
    assert response.status == 307
    assert response.header("Location") == "/redirect/a/c?q=1"
    assert response.header("X-Content-Type-Options") == "nosniff"
    assert upstream.total == before


# Item 7: TRACE, transfer codings, Host, wildcard hosts ----------------------------------


def test_trace_is_refused_unless_the_route_lists_it(gateway, upstream):
    before = upstream.total
    response = request(gateway.port, "TRACE", "/up/x", {"Cookie": "session=secret"})
    is_problem(response, 405)
    assert response.header("Allow") == "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
    assert upstream.total == before
    allowed = request(gateway.port, "TRACE", "/trace/x")
    assert allowed.status == 200
    assert allowed.json()["method"] == "TRACE"


def test_trace_to_the_own_api_is_refused(gateway):
    is_problem(request(gateway.port, "TRACE", "/api/v1/health"), 405)


@pytest.mark.parametrize(
    ("codings", "status"),
    [
        (["gzip, chunked"], 501),
        (["gzip", "chunked"], 501),  # the same list over two fields
        (["deflate, gzip, chunked"], 501),
        (["chunked, gzip"], 400),  # chunked not last: the length is unknowable
        (["gzip"], 400),
        (["chunked, chunked"], 400),
    ],
)
def test_transfer_codings_other_than_chunked(gateway, upstream, codings, status):
    before = upstream.total
    head = "POST /up/te HTTP/1.1\r\nHost: gateway.test\r\n"
    head += "".join(f"Transfer-Encoding: {value}\r\n" for value in codings)
    raw = send_raw(gateway.port, head.encode() + b"\r\n5\r\nhello\r\n0\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 %d " % status), raw[:200]
    assert b"application/problem+json" in raw
    assert upstream.total == before


def test_plain_chunked_still_works(gateway):
    head = b"POST /up/te HTTP/1.1\r\nHost: gateway.test\r\nTransfer-Encoding: Chunked\r\n\r\n"
    with connect(gateway.port) as sock:
        sock.sendall(head + b"5\r\nhello\r\n0\r\n\r\n")
        response = ResponseReader(sock).read()
    assert response.status == 200
    assert response.json()["length"] == 5


@pytest.mark.parametrize(
    "host", ["a b", "<script>", "a/b", "x@y", "[zz::1]", "[::1", "a.example:8o", "é.example"]
)
def test_invalid_host_is_refused(gateway, upstream, host):
    before = upstream.total
    data = f"GET /up/host HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    raw = send_raw(gateway.port, data)
    assert raw.startswith(b"HTTP/1.1 400 "), raw[:200]
    assert b"invalid Host header" in raw
    assert upstream.total == before


def test_a_bad_host_later_on_a_kept_alive_connection_is_refused(gateway, upstream):
    # The check is skipped while a connection repeats a Host it passed: not when it changes.
    with connect(gateway.port) as sock:
        reader = ResponseReader(sock)
        sock.sendall(build_request("GET", "/up/host", {"Host": "ok.example"}))
        assert reader.read().status == 200
        sock.sendall(build_request("GET", "/up/host", {"Host": "ok.example"}))
        assert reader.read().status == 200
        before = upstream.total
        sock.sendall(build_request("GET", "/up/host", {"Host": "bad host"}))
        assert reader.read().status == 400
    assert upstream.total == before


@pytest.mark.parametrize(
    "host",
    ["example.com", "example.com:8080", "127.0.0.1:80", "[::1]:8080", "[2001:db8::7]", "a-b.c_d"],
)
def test_valid_hosts_pass(gateway, host):
    response = request(gateway.port, "GET", "/up/host", {"Host": host})
    assert response.status == 200, response
    forwarded = dict((k.lower(), v) for k, v in response.json()["headers"])
    assert forwarded["x-forwarded-host"] == host


@pytest.mark.parametrize(
    ("host", "upstream_path"),
    [
        ("a.example.com", "/wildcard"),
        ("A.Example.com:8080", "/wildcard"),
        ("a.b.example.com", "/hosted"),  # one label only, as TLS wildcards
        ("example.com", "/hosted"),
        ("aexample.com", "/hosted"),
    ],
)
def test_a_wildcard_host_matches_exactly_one_label(gateway, host, upstream_path):
    response = request(gateway.port, "GET", "/hosted", {"Host": host})
    assert response.status == 200
    assert raw_path(response) == upstream_path


def test_an_underscore_twin_cannot_override_the_injected_service_key(gateway):
    response = request(gateway.port, "GET", "/keyed/x", {"X_Service_Key": "forged"})
    seen = [(k.lower(), v) for k, v in response.json()["headers"]]
    assert [v for k, v in seen if k.replace("_", "-") == "x-service-key"] == ["s3cret"]


# Item 21: gateway-made answers carry the route's headers --------------------------------


def assert_route_headers(response) -> None:
    # Plain http: HSTS goes only on https answers (test_tls_listeners checks those).
    assert response.header("Strict-Transport-Security") is None
    assert response.header("X-Content-Type-Options") == "nosniff"
    assert response.header("X-Frame-Options") == "DENY"
    assert response.header("Access-Control-Allow-Origin") == ORIGIN
    assert len(response.header_all("X-Request-ID")) == 1


def test_a_proxied_answer_carries_them(gateway):
    assert_route_headers(request(gateway.port, "GET", "/up/x", {"Origin": ORIGIN}))


def test_502_from_a_dead_target_carries_them(gateway):
    response = request(gateway.port, "GET", "/down/x", {"Origin": ORIGIN})
    is_problem(response, 502)
    assert_route_headers(response)


def test_504_from_a_slow_target_carries_them(gateway):
    response = request(gateway.port, "GET", "/slow?delay=3", {"Origin": ORIGIN})
    is_problem(response, 504)
    assert_route_headers(response)


def test_503_from_an_open_breaker_carries_them(gateway):
    statuses = []
    for _ in range(5):
        response = request(gateway.port, "GET", "/trip/x", {"Origin": ORIGIN})
        statuses.append(response.status)
        if response.status == 503:
            break
    assert statuses[-1] == 503, statuses
    is_problem(response, 503)
    assert response.header("Retry-After") is not None
    assert_route_headers(response)


def test_404_and_405_carry_the_global_security_headers(gateway):
    for response in (
        request(gateway.port, "GET", "/nowhere"),
        request(gateway.port, "POST", "/getonly/x"),
        request(gateway.port, "GET", "/up/a%2fb", {"Origin": ORIGIN}),
    ):
        assert response.status in (400, 404, 405), response
        assert response.header("X-Content-Type-Options") == "nosniff"
        assert response.header("Strict-Transport-Security") is None  # plain http
        assert len(response.header_all("X-Request-ID")) == 1


def test_parser_refusals_carry_the_global_security_headers(gateway):
    raw = send_raw(gateway.port, b"GET /up/x HTTP/1.1\r\nHost: a b\r\n\r\n")
    assert b"\r\nX-Content-Type-Options: nosniff\r\n" in raw
    assert b"\r\nX-Request-ID: " in raw


# X-Request-ID on every answer ------------------------------------------------------------


def test_request_id_is_returned_on_proxied_answers(gateway):
    response = request(gateway.port, "GET", "/up/x", {"X-Request-ID": "client-id-1"})
    assert response.header_all("X-Request-ID") == ["client-id-1"]
    generated = request(gateway.port, "GET", "/up/x")
    (value,) = generated.header_all("X-Request-ID")
    forwarded = dict((k.lower(), v) for k, v in generated.json()["headers"])
    assert forwarded["x-request-id"] == value  # the id the upstream was given


def test_the_upstreams_request_id_is_not_relayed(gateway):
    response = request(
        gateway.port, "GET", "/up/headers?X-Request-ID=upstream-id", {"X-Request-ID": "mine"}
    )
    assert response.status == 200
    assert response.header_all("X-Request-ID") == ["mine"]


def test_request_id_is_returned_on_gateway_answers(gateway):
    for method, path in (("GET", "/nowhere"), ("GET", "/down/x"), ("GET", "/api/v1/health")):
        response = request(gateway.port, method, path, {"X-Request-ID": "req-42"})
        assert response.header_all("X-Request-ID") == ["req-42"], (path, response)
    with connect(gateway.port) as sock:
        sock.sendall(build_request("GET", "/redirect/a%2fb", {"X-Request-ID": "req-43"}))
        response = ResponseReader(sock).read()
    assert response.status == 307
    assert response.header_all("X-Request-ID") == ["req-43"]


def test_an_unsafe_client_request_id_is_never_echoed(gateway):
    raw = send_raw(gateway.port, b"GET /up/x HTTP/1.1\r\nHost: a b\r\nX-Request-ID: <x>\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 400 ")
    assert b"<x>" not in raw
