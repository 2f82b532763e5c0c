"""The cache's parsers and RFC 9111 §4.2 arithmetic, table-driven."""

from __future__ import annotations

import pytest

from potok.policies.cache import cache_control
from potok.policies.cache.cache_control import INVALID, parse, seconds
from potok.policies.cache.freshness import (
    current_age,
    forbids_stale,
    http_date,
    initial_age,
    lifetime,
)
from potok.policies.cache.stored import vary_key, vary_names

DATE = 784111777.0  # Sun, 06 Nov 1994 08:49:37 GMT


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"max-age=60", {b"max-age": b"60"}),
        (b"MAX-AGE=60, Public", {b"max-age": b"60", b"public": None}),
        (b'max-age="60"', {b"max-age": b"60"}),
        (
            b'private="set-cookie, x-a", no-cache',
            {b"private": b"set-cookie, x-a", b"no-cache": None},
        ),
        (b"max-age=1, max-age=2", {b"max-age": INVALID}),
        (b"max-age=1, max-age=1", {b"max-age": b"1"}),
        (b" , ,no-store", {b"no-store": None}),
        (b"", {}),
    ],
)
def test_parse(value: bytes, expected: dict[bytes, bytes | None]) -> None:
    assert parse(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"max-age=60", 60),
        (b"max-age=abc", -1),
        (b"max-age=-1", -1),
        (b"max-age", -1),
        (b"max-age=1, max-age=2", -1),
        (b"max-age=99999999999999", 2147483648),
        (b"public", None),
    ],
)
def test_seconds(value: bytes, expected: int | None) -> None:
    assert seconds(parse(value), b"max-age") == expected


@pytest.mark.parametrize(
    "value",
    [
        b"Sun, 06 Nov 1994 08:49:37 GMT",
        b"Sunday, 06-Nov-94 08:49:37 GMT",
        b"Sun Nov  6 08:49:37 1994",
    ],
)
def test_http_date_formats(value: bytes) -> None:
    assert http_date(value) == DATE


@pytest.mark.parametrize("value", [b"0", b"-1", b"garbage", b"", None])
def test_http_date_invalid(value: bytes | None) -> None:
    assert http_date(value) is None


def life(directives: bytes, expires: bytes | None = None, **kw: object) -> float:
    options: dict[str, object] = {
        "has_expires": expires is not None,
        "date_value": DATE,
        "last_modified": None,
        "heuristic": 0.0,
        "heuristic_max": 86400.0,
        "default_ttl": None,
    }
    options.update(kw)
    return lifetime(200, parse(directives), expires=expires, **options).seconds  # type: ignore[arg-type]


def test_lifetime_order() -> None:
    assert life(b"max-age=10, s-maxage=20") == 20
    assert life(b"max-age=10", b"Sun, 06 Nov 1994 09:49:37 GMT") == 10
    assert life(b"", b"Sun, 06 Nov 1994 09:49:37 GMT") == 3600
    assert life(b"", b"0") == 0
    assert life(b"max-age=x") == 0
    assert life(b"") == 0
    assert life(b"", default_ttl=30.0) == 30


def test_heuristic_only_when_allowed() -> None:
    modified = b"Sun, 06 Nov 1994 07:49:37 GMT"  # an hour before Date
    assert life(b"", last_modified=modified, heuristic=0.1) == pytest.approx(360)
    assert life(b"", last_modified=modified) == 0  # off unless configured
    assert life(b"max-age=5", last_modified=modified, heuristic=0.1) == 5
    assert (
        lifetime(
            201,
            {},
            expires=None,
            has_expires=False,
            date_value=DATE,
            last_modified=modified,
            heuristic=0.1,
            heuristic_max=86400.0,
            default_ttl=None,
        ).seconds
        == 0
    )


def test_age_calculation() -> None:
    # Arrived 2 s after the request, Date 5 s before arrival, Age: 10 from upstream.
    initial = initial_age(b"10", DATE, DATE + 3, DATE + 5)
    assert initial == 12  # max(apparent 5, 10 + delay 2)
    assert current_age(initial, DATE + 5, DATE + 15) == 22
    assert initial_age(b"garbage", DATE, DATE, DATE) == 0


def test_forbids_stale() -> None:
    for value in (b"must-revalidate", b"proxy-revalidate", b"s-maxage=1", b"no-cache"):
        assert forbids_stale(parse(value))
    assert not forbids_stale(parse(b"max-age=1, stale-while-revalidate=5"))


def test_vary() -> None:
    assert vary_names(b"Accept-Language, accept-encoding") == (
        b"accept-encoding",
        b"accept-language",
    )
    assert vary_names(b"Accept, *") is None
    headers = [(b"Accept-Language", b"en, fr"), (b"accept-language", b"de")]
    assert vary_key((b"accept-language", b"x-none"), headers) == (
        (b"accept-language", b"en,fr,de"),
        (b"x-none", None),
    )


def test_targeted_field_first_present() -> None:
    headers = [(b"CDN-Cache-Control", b"max-age=5"), (b"Potok-Cache-Control", b"max-age=9")]
    found = cache_control.targeted(headers, (b"potok-cache-control", b"cdn-cache-control"))
    assert found == {b"max-age": b"9"}
    assert cache_control.targeted(headers[:1], (b"potok-cache-control",)) is None
