"""Cache poisoning and deception, tried through the real gateway with a cache on the route.

The origin reflects what it received (request line, head, body) in a response every cache
may keep for 100 s. An attacker's request goes first with something the cache key does not
hold; a victim's plain request for the same URL follows: it must not get the attacker's
answer (the origin is asked again, or the first answer did not depend on the trick).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest

from tests.support.gateway import GatewayProcess
from tests.support.net import Response, ResponseReader, connect, request
from tests.support.upstream import RawUpstream, read_request_head


class Reflector:
    """Answers each request with its own head and body, cacheable for 100 s."""

    def __init__(self) -> None:
        self.seen: list[bytes] = []

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await read_request_head(reader)
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            body = await reader.readexactly(length) if length else b""
            self.seen.append(head)
            answer = head + b"\r\n--body--\r\n" + body
            line = head.split(b"\r\n", 1)[0]
            # /implicit/...: an answer that says nothing about caching (the route's
            # default_ttl decides); else one any cache may keep.
            extra = b"" if b"/implicit" in line else b"Cache-Control: public, max-age=100\r\n"
            if b"/cookie" in line:
                extra += b"Set-Cookie: session=attacker-session\r\n"
            writer.write(
                b"HTTP/1.1 200 OK\r\n" + extra
                + b"Content-Length: %d\r\n\r\n" % len(answer) + answer
            )  # fmt: skip
            await writer.drain()


@pytest.fixture(scope="module")
def origin() -> Iterator[tuple[Reflector, RawUpstream]]:
    reflector = Reflector()
    raw = RawUpstream(reflector)
    yield reflector, raw
    raw.stop()


@pytest.fixture(scope="module")
def gateway(origin: tuple[Reflector, RawUpstream]) -> Iterator[GatewayProcess]:
    _, raw = origin
    # default_ttl as docs/caching.md shows it: answers without freshness are kept 30 s.
    cache = {"x_cache": True, "default_ttl": "30s"}
    config = {
        "services": {"up": {"targets": [raw.url]}},
        "routes": [
            {"name": "c", "match": {"prefix": "/"}, "service": "up", "policies": {"cache": cache}},
        ],
    }
    process = GatewayProcess(config)
    yield process
    process.stop()


def fresh_path(name: str) -> str:
    return f"/{name}/{uuid.uuid4().hex}"


def get(
    gateway: GatewayProcess, path: str, body: bytes = b"", method: str = "GET", **headers: str
) -> Response:
    fields = {k.replace("_", "-"): v for k, v in headers.items()}
    return request(gateway.port, method, path, fields, body)


def test_a_get_with_a_body_is_not_served_to_others(gateway):
    """A "fat GET": the body is not in the key, yet the origin may answer by it."""
    path = fresh_path("fat")
    attack = get(gateway, path, body=b"poison=1", content_type="application/x-www-form-urlencoded")
    assert attack.status == 200
    victim = get(gateway, path)
    assert b"poison=1" not in victim.body
    assert victim.header("x-cache") != "HIT"


def test_a_get_with_a_chunked_body_is_not_served_to_others(gateway):
    path = fresh_path("fat-chunked")
    raw = (
        f"GET {path} HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n"
        "Connection: close\r\n\r\n8\r\npoison=2\r\n0\r\n\r\n"
    ).encode()
    with connect(gateway.port, 10) as sock:
        sock.sendall(raw)
        assert ResponseReader(sock).read().status == 200
    victim = get(gateway, path)
    assert b"poison=2" not in victim.body
    assert victim.header("x-cache") != "HIT"


@pytest.mark.parametrize(
    "header",
    [
        ("x_forwarded_host", "evil.example"),
        ("x_forwarded_proto", "javascript"),
        ("forwarded", "host=evil.example;proto=https"),
        ("x_real_ip", "6.6.6.6"),
    ],
    ids=lambda h: h[0] if isinstance(h, tuple) else h,
)
def test_forwarding_headers_the_gateway_owns_cannot_poison(gateway, header):
    """The gateway sets these itself for an untrusted peer, so the origin never sees the
    attacker's value and the cached answer cannot hold it."""
    path = fresh_path("xfh")
    name, value = header
    get(gateway, path, **{name: value})
    victim = get(gateway, path)
    assert value.encode() not in victim.body


def test_head_does_not_store_an_empty_answer_for_get(gateway):
    path = fresh_path("head")
    assert get(gateway, path, method="HEAD").status == 200
    victim = get(gateway, path)
    assert b"--body--" in victim.body  # a whole answer, not HEAD's empty one


def test_a_range_request_does_not_store_a_part(gateway):
    path = fresh_path("range")
    get(gateway, path, range="bytes=0-3")
    victim = get(gateway, path)
    assert victim.status == 200 and b"--body--" in victim.body


def test_set_cookie_is_not_replayed_to_others(gateway):
    path = fresh_path("cookie")
    first = get(gateway, path)
    assert first.header("set-cookie") == "session=attacker-session"
    victim = get(gateway, path)
    assert victim.header("x-cache") == "HIT"
    assert victim.header("set-cookie") is None


@pytest.mark.parametrize(
    ("attacker", "victim"),
    [
        ("/a/./b", "/a/b"),
        ("/a/x/../b", "/a/b"),
        ("/a/%2e/b", "/a/b"),
    ],
)
def test_dot_segments_resolve_the_same_for_key_and_upstream(gateway, attacker, victim):
    """Normalised before both the key and the upstream: the cached answer is the one the
    upstream gives for the normalised path."""
    base = fresh_path("dots")
    get(gateway, base + attacker)
    answer = get(gateway, base + victim)
    request_line = answer.body.split(b"\r\n", 1)[0]
    assert request_line == f"GET {base}{victim} HTTP/1.1".encode()


@pytest.mark.parametrize(
    "variant",
    ["/a%2fb", "/a;x=1/b", "/A/b", "/a/b/", "/a//b"],
)
def test_path_variants_the_upstream_may_read_differently_are_keys_of_their_own(
    gateway, origin, variant
):
    """Each is cached under its own key and answered for its own upstream request: never
    the answer of a different upstream path."""
    base = fresh_path("variant")
    get(gateway, base + variant)
    answer = get(gateway, base + "/a/b")
    request_line = answer.body.split(b"\r\n", 1)[0]
    assert request_line == f"GET {base}/a/b HTTP/1.1".encode()


def test_another_host_is_another_key(gateway):
    path = fresh_path("host")
    get(gateway, path, host="Evil.Example")
    victim = get(gateway, path, host="localhost")
    assert b"Host: Evil.Example" not in victim.body and b"evil" not in victim.body.lower()


def test_an_answer_to_a_cookie_is_not_shared_on_implicit_freshness(gateway):
    """Web cache deception: the victim's browser is lured to a unique URL; its answer,
    personal by the session cookie and silent about caching, would be kept by
    default_ttl and handed to the attacker who asks for the same URL next."""
    path = fresh_path("implicit") + "?cb=1"
    victim = get(gateway, path, cookie="session=victim-secret")
    assert b"victim-secret" in victim.body
    attacker = get(gateway, path)
    assert b"victim-secret" not in attacker.body
    assert attacker.header("x-cache") != "HIT"


def test_an_answer_without_cookie_is_kept_on_implicit_freshness(gateway):
    path = fresh_path("implicit")
    assert get(gateway, path).status == 200
    assert get(gateway, path).header("x-cache") == "HIT"


def test_an_answer_to_a_cookie_that_says_public_is_kept(gateway):
    """Explicit freshness from the upstream is its decision to share (as without cookie)."""
    path = fresh_path("explicit")
    get(gateway, path, cookie="session=anyone")
    assert get(gateway, path).header("x-cache") == "HIT"
