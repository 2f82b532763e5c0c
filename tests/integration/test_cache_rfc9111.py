"""The cache policy through a real `potok run` gateway against a real upstream that sets
the caching headers: each RFC 9111 rule as its own case."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from tests.support.gateway import GatewayProcess
from tests.support.net import Response, request
from tests.support.upstream import RawUpstream, read_request_head


@dataclass
class Origin:
    """A table of answers by path; counts and keeps every request it gets."""

    answers: dict[str, list[str]] = field(default_factory=dict)
    bodies: dict[str, bytes] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    seen: dict[str, list[bytes]] = field(default_factory=dict)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await read_request_head(reader)
            line, _, rest = head.partition(b"\r\n")
            method, target, _ = line.split(b" ", 2)
            length = 0
            for header in rest.split(b"\r\n"):
                name, _, value = header.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if length:
                await reader.readexactly(length)
            path = target.decode().split("?", 1)[0]
            self.seen.setdefault(path, []).append(head)
            writer.write(self.answer(path, method, head))
            await writer.drain()

    def answer(self, path: str, method: bytes, head: bytes) -> bytes:
        count = len(self.seen[path])
        status = self.statuses.get(path, 200)
        headers = list(self.answers.get(path, []))
        if b"if-none-match" in head.lower() and any(h.lower().startswith("etag:") for h in headers):
            tag = next(h.split(":", 1)[1].strip() for h in headers if h.lower().startswith("etag:"))
            if tag.encode() in head:
                status = 304
        body = self.bodies.get(path, b"body %d" % count)
        if status == 304 or method == b"HEAD":
            text = f"HTTP/1.1 {status} X\r\n" + "".join(h + "\r\n" for h in headers)
            extra = "" if status == 304 else f"Content-Length: {len(body)}\r\n"
            return (text + extra + "\r\n").encode()
        text = f"HTTP/1.1 {status} X\r\n" + "".join(h + "\r\n" for h in headers)
        return (text + f"Content-Length: {len(body)}\r\n\r\n").encode() + body

    def count(self, path: str) -> int:
        return len(self.seen.get(path, []))


@pytest.fixture(scope="module")
def origin() -> Iterator[tuple[Origin, RawUpstream]]:
    table = Origin()
    raw = RawUpstream(table.handle)
    yield table, raw
    raw.stop()


@pytest.fixture(scope="module")
def gateway(origin: tuple[Origin, RawUpstream]) -> Iterator[GatewayProcess]:
    _, raw = origin
    cache = {"x_cache": True, "heuristic": 0.1}
    config = {
        "services": {"up": {"targets": [raw.url]}},
        "routes": [
            {"name": "c", "match": {"prefix": "/"}, "service": "up", "policies": {"cache": cache}},
        ],
    }
    process = GatewayProcess(config)
    yield process
    process.stop()


def setup(origin: tuple[Origin, RawUpstream], *headers: str, status: int = 200) -> str:
    table, _ = origin
    path = "/" + uuid.uuid4().hex
    table.answers[path] = list(headers)
    table.statuses[path] = status
    return path


def get(gateway: GatewayProcess, path: str, method: str = "GET", **headers: str) -> Response:
    return request(gateway.port, method, path, {k.replace("_", "-"): v for k, v in headers.items()})


def now_date(offset: float = 0) -> str:
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + offset))


# (response headers, status, reused on the second GET?)
REUSE_CASES = [
    pytest.param(["Cache-Control: max-age=100"], 200, True, id="max-age"),
    pytest.param(["Cache-Control: s-maxage=100"], 200, True, id="s-maxage"),
    pytest.param(["Cache-Control: max-age=0, s-maxage=100"], 200, True, id="s-maxage-wins"),
    pytest.param(["Cache-Control: max-age=100, s-maxage=0"], 200, False, id="s-maxage-0"),
    pytest.param(["Cache-Control: max-age=0"], 200, False, id="max-age-0"),
    pytest.param(["Cache-Control: max-age=abc"], 200, False, id="invalid-max-age"),
    pytest.param(["Cache-Control: max-age=100, max-age=200"], 200, False, id="duplicate-max-age"),
    pytest.param(['Cache-Control: max-age="100"'], 200, True, id="quoted-max-age"),
    pytest.param(["Cache-Control: MAX-AGE=100"], 200, True, id="case-insensitive"),
    pytest.param(["Cache-Control: max-age=100, no-store"], 200, False, id="no-store"),
    pytest.param(["Cache-Control: max-age=100, private"], 200, False, id="private"),
    pytest.param(["Cache-Control: max-age=100, no-cache"], 200, False, id="no-cache"),
    pytest.param([f"Expires: {now_date(100)}", f"Date: {now_date()}"], 200, True, id="expires"),
    pytest.param([f"Expires: {now_date(-100)}"], 200, False, id="expires-past"),
    pytest.param(["Expires: 0"], 200, False, id="expires-invalid"),
    pytest.param(
        ["Expires: garbage", "Cache-Control: max-age=100"], 200, True, id="max-age-over-expires"
    ),
    pytest.param(["Cache-Control: max-age=100", "Age: 200"], 200, False, id="age-over-lifetime"),
    pytest.param(["Cache-Control: max-age=100", "Age: 50"], 200, True, id="age-within-lifetime"),
    pytest.param(["Cache-Control: max-age=100"], 404, True, id="404-explicit"),
    pytest.param(["Cache-Control: max-age=100"], 500, True, id="500-explicit"),
    pytest.param([], 200, False, id="no-freshness"),
    pytest.param(
        [f"Last-Modified: {now_date(-100000)}", f"Date: {now_date()}"],
        200,
        True,
        id="heuristic-200",
    ),
    pytest.param(
        [f"Last-Modified: {now_date(-100000)}", f"Date: {now_date()}"],
        201,
        False,
        id="no-heuristic-201",
    ),
    pytest.param(["Cache-Control: max-age=100", "Vary: *"], 200, False, id="vary-star"),
    pytest.param(
        ["CDN-Cache-Control: max-age=100", "Cache-Control: no-store"], 200, True, id="cdn-cc-wins"
    ),
    pytest.param(
        ["CDN-Cache-Control: no-store", "Cache-Control: max-age=100"],
        200,
        False,
        id="cdn-cc-no-store",
    ),
    pytest.param(
        ["Potok-Cache-Control: max-age=0", "CDN-Cache-Control: max-age=100"],
        200,
        False,
        id="potok-cc-first",
    ),
    pytest.param(
        ["Cache-Control: max-age=100, must-understand, no-store"], 200, True, id="must-understand"
    ),
]


@pytest.mark.parametrize(("headers", "status", "reused"), REUSE_CASES)
def test_reuse(
    gateway: GatewayProcess,
    origin: tuple[Origin, RawUpstream],
    headers: list[str],
    status: int,
    reused: bool,
) -> None:
    path = setup(origin, *headers, status=status)
    first = get(gateway, path)
    second = get(gateway, path)
    assert first.status == status and first.body == b"body 1"
    assert (second.body == b"body 1") is reused, (first, second)
    assert origin[0].count(path) == (1 if reused else 2)
    if reused:
        assert second.header("X-Cache") == "HIT"
        assert (second.header("Cache-Status") or "").startswith("potok; hit; ttl=")
        assert second.header("Age") is not None
        assert "stored" in (first.header("Cache-Status") or "")


def test_cache_status_on_miss(gateway: GatewayProcess, origin: tuple[Origin, RawUpstream]) -> None:
    path = setup(origin, "Cache-Control: max-age=100")
    first = get(gateway, path)
    assert first.header("Cache-Status") == "potok; fwd=uri-miss; fwd-status=200; stored"
    assert first.header("X-Cache") == "MISS"


def test_age_generated(gateway: GatewayProcess, origin: tuple[Origin, RawUpstream]) -> None:
    path = setup(origin, "Cache-Control: max-age=1000", "Age: 30")
    get(gateway, path)
    second = get(gateway, path)
    assert 30 <= int(second.header("Age") or "0") <= 40


def test_revalidation_etag_304_updates_headers(
    gateway: GatewayProcess, origin: tuple[Origin, RawUpstream]
) -> None:
    table, _ = origin
    path = setup(origin, "Cache-Control: max-age=0", 'ETag: "v1"', "X-Version: 1")
    assert get(gateway, path).body == b"body 1"
    table.answers[path] = ["Cache-Control: max-age=100", 'ETag: "v1"', "X-Version: 2"]
    second = get(gateway, path)
    assert second.status == 200 and second.body == b"body 1"
    assert second.header("X-Version") == "2"
    assert b'if-none-match: "v1"' in table.seen[path][1].lower()
    assert "fwd=stale; fwd-status=304" in (second.header("Cache-Status") or "")
    third = get(gateway, path)
    assert third.body == b"body 1" and table.count(path) == 2  # fresh now


def test_304_without_date_freshens_for_its_lifetime(
    gateway: GatewayProcess, origin: tuple[Origin, RawUpstream]
) -> None:
    table, _ = origin
    path = setup(origin, f"Date: {now_date(-500)}", "Cache-Control: max-age=0", 'ETag: "d"')
    get(gateway, path)
    table.answers[path] = ["Cache-Control: max-age=100", 'ETag: "d"']
    assert get(gateway, path).status == 200  # revalidated: a 304 without Date
    third = get(gateway, path)
    assert third.header("X-Cache") == "HIT" and table.count(path) == 2


def test_revalidation_last_modified(
    gateway: GatewayProcess, origin: tuple[Origin, RawUpstream]
) -> None:
    table, _ = origin
    stamp = now_date(-1000)
    path = setup(origin, "Cache-Control: no-cache", f"Last-Modified: {stamp}")
    get(gateway, path)
    get(gateway, path)
    assert f"if-modified-since: {stamp}".lower().encode() in table.seen[path][1].lower()


def test_client_conditional_answered_from_cache(
    gateway: GatewayProcess, origin: tuple[Origin, RawUpstream]
) -> None:
    stamp = now_date(-1000)
    path = setup(origin, "Cache-Control: max-age=100", 'ETag: "abc"', f"Last-Modified: {stamp}")
    get(gateway, path)
    tagged = get(gateway, path, If_None_Match='W/"abc"')
    assert tagged.status == 304 and tagged.body == b"" and tagged.header("ETag") == '"abc"'
    other = get(gateway, path, If_None_Match='"zzz"')
    assert other.status == 200
    dated = get(gateway, path, If_Modified_Since=now_date())
    assert dated.status == 304
    assert origin[0].count(path) == 1


def test_head_from_get_entry(gateway: GatewayProcess, origin: tuple[Origin, RawUpstream]) -> None:
    path = setup(origin, "Cache-Control: max-age=100")
    get(gateway, path)
    head = get(gateway, path, method="HEAD")
    assert head.status == 200 and head.body == b"" and head.header("Content-Length") == "6"
    assert origin[0].count(path) == 1


def test_vary(gateway: GatewayProcess, origin: tuple[Origin, RawUpstream]) -> None:
    path = setup(origin, "Cache-Control: max-age=100", "Vary: Accept-Language")
    assert get(gateway, path, Accept_Language="en").body == b"body 1"
    assert get(gateway, path, Accept_Language="fr").body == b"body 2"
    assert get(gateway, path, Accept_Language="en").body == b"body 1"
    assert get(gateway, path, Accept_Language="fr").body == b"body 2"
    assert get(gateway, path).body == b"body 3"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_unsafe_method_invalidates(
    gateway: GatewayProcess, origin: tuple[Origin, RawUpstream], method: str
) -> None:
    path = setup(origin, "Cache-Control: max-age=100")
    get(gateway, path)
    request(gateway.port, method, path, body=b"x")
    assert get(gateway, path).body == b"body 3"


def test_unsafe_invalidates_location_same_origin_only(
    gateway: GatewayProcess, origin: tuple[Origin, RawUpstream]
) -> None:
    target = setup(origin, "Cache-Control: max-age=100")
    foreign = setup(origin, "Cache-Control: max-age=100")
    get(gateway, target)
    get(gateway, foreign)
    poster = setup(
        origin, f"Location: {target}", f"Content-Location: http://elsewhere.test{foreign}"
    )
    request(gateway.port, "POST", poster, body=b"x")
    assert get(gateway, target).body == b"body 2"
    assert get(gateway, foreign).body == b"body 1"


def test_failed_unsafe_method_does_not_invalidate(
    gateway: GatewayProcess, origin: tuple[Origin, RawUpstream]
) -> None:
    table, _ = origin
    path = setup(origin, "Cache-Control: max-age=100")
    get(gateway, path)
    table.statuses[path] = 500
    request(gateway.port, "POST", path, body=b"x")
    table.statuses[path] = 200
    assert get(gateway, path).body == b"body 1"


def test_request_no_cache_and_max_age(
    gateway: GatewayProcess, origin: tuple[Origin, RawUpstream]
) -> None:
    path = setup(origin, "Cache-Control: max-age=100")
    get(gateway, path)
    forced = get(gateway, path, Cache_Control="no-cache")
    assert forced.body == b"body 2"
    assert "fwd=request" in (forced.header("Cache-Status") or "")
    assert get(gateway, path).body == b"body 2"
    time.sleep(1.1)
    assert get(gateway, path, Cache_Control="max-age=0").body == b"body 3"
    assert get(gateway, path, Cache_Control="min-fresh=1000").body == b"body 4"


def test_request_no_store_is_not_stored(
    gateway: GatewayProcess, origin: tuple[Origin, RawUpstream]
) -> None:
    path = setup(origin, "Cache-Control: max-age=100")
    get(gateway, path, Cache_Control="no-store")
    assert get(gateway, path).body == b"body 2"


def test_max_stale_and_must_revalidate(
    gateway: GatewayProcess, origin: tuple[Origin, RawUpstream]
) -> None:
    stale = setup(origin, "Cache-Control: max-age=1")
    get(gateway, stale)
    strict = setup(origin, "Cache-Control: max-age=1, must-revalidate")
    get(gateway, strict)
    time.sleep(2.1)
    served = get(gateway, stale, Cache_Control="max-stale=100")
    assert served.body == b"body 1" and served.header("X-Cache") == "STALE"
    assert get(gateway, strict, Cache_Control="max-stale=100").body == b"body 2"


def test_only_if_cached(gateway: GatewayProcess, origin: tuple[Origin, RawUpstream]) -> None:
    path = setup(origin, "Cache-Control: max-age=100")
    assert get(gateway, path, Cache_Control="only-if-cached").status == 504
    get(gateway, path)
    assert get(gateway, path, Cache_Control="only-if-cached").body == b"body 1"
    stale = setup(origin, "Cache-Control: max-age=0", 'ETag: "o"')
    get(gateway, stale)
    assert get(gateway, stale, Cache_Control="only-if-cached").status == 504
    assert origin[0].count(stale) == 1


def test_authorization_not_stored_unless_public(
    gateway: GatewayProcess, origin: tuple[Origin, RawUpstream]
) -> None:
    plain = setup(origin, "Cache-Control: max-age=100")
    get(gateway, plain, Authorization="Bearer a")
    assert get(gateway, plain).body == b"body 2"
    public = setup(origin, "Cache-Control: max-age=100, public")
    get(gateway, public, Authorization="Bearer a")
    assert get(gateway, public).body == b"body 1"


def test_set_cookie_not_served_from_cache(
    gateway: GatewayProcess, origin: tuple[Origin, RawUpstream]
) -> None:
    path = setup(origin, "Cache-Control: max-age=100", "Set-Cookie: session=alice")
    first = get(gateway, path)
    assert first.header("Set-Cookie") == "session=alice"
    second = get(gateway, path)
    assert second.body == b"body 1" and second.header("Set-Cookie") is None


def test_private_qualified_fields_not_stored(
    gateway: GatewayProcess, origin: tuple[Origin, RawUpstream]
) -> None:
    path = setup(
        origin, 'Cache-Control: max-age=100, private="X-Secret"', "X-Secret: s", "X-Open: o"
    )
    get(gateway, path)
    second = get(gateway, path)
    assert second.body == b"body 1"
    assert second.header("X-Secret") is None and second.header("X-Open") == "o"


def test_range_from_full_entry(gateway: GatewayProcess, origin: tuple[Origin, RawUpstream]) -> None:
    table, _ = origin
    path = setup(origin, "Cache-Control: max-age=100", 'ETag: "r"')
    table.bodies[path] = b"0123456789"
    get(gateway, path)
    part = get(gateway, path, Range="bytes=2-4")
    assert part.status == 206 and part.body == b"234"
    assert part.header("Content-Range") == "bytes 2-4/10"
    assert get(gateway, path, Range="bytes=-3").body == b"789"
    assert get(gateway, path, Range="bytes=20-").status == 416
    assert get(gateway, path, Range="bytes=0-1,4-5").status == 200
    assert get(gateway, path, Range="bytes=0-1", If_Range='"other"').status == 200
    assert table.count(path) == 1


def test_stale_if_error(gateway: GatewayProcess, origin: tuple[Origin, RawUpstream]) -> None:
    table, _ = origin
    path = setup(origin, "Cache-Control: max-age=1, stale-if-error=100", 'ETag: "e"')
    get(gateway, path)
    time.sleep(2.1)
    table.statuses[path] = 503
    table.answers[path] = []
    served = get(gateway, path)
    assert served.status == 200 and served.body == b"body 1"
    assert "fwd=stale; fwd-status=503" in (served.header("Cache-Status") or "")
