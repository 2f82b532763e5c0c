"""The one token extractor: header, then cookie, then query; a query token is taken out."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from potok.identity.errors import Unauthorized
from potok.identity.token_source import TokenSource


@dataclass
class Request:
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    query: bytes = b""
    authorization: bytes | None = None


def test_header_first_then_cookie_then_query():
    source = TokenSource(header="Authorization", cookie="tok", query="t")
    request = Request([(b"Cookie", b"a=1; tok=from-cookie")], b"?t=from-query", b"Bearer h")
    assert source(request) == (b"Bearer h", "h")
    request.authorization = None
    assert source(request) == ("from-cookie", "from-cookie")
    request.headers = []
    assert source(request) == ("from-query", "from-query")
    assert request.query == b""


def test_a_query_token_is_taken_out_and_unquoted():
    request = Request(query=b"?a=1&t=x%2By&b=2")
    assert TokenSource(query="t").token(request) == "x+y"
    assert request.query == b"?a=1&b=2"


def test_another_header_is_searched_case_insensitively():
    source = TokenSource(header="X-Token")
    assert not source.standard_header
    assert source(Request([(b"x-TOKEN", b"bearer abc ")])) == (b"bearer abc ", "abc")
    with pytest.raises(Unauthorized):
        source(Request([(b"X-Token", b"Basic abc")]))


def test_without_a_header_source_the_authorization_header_is_not_read():
    source = TokenSource(cookie="tok")
    assert source.token(Request(authorization=b"Basic nonsense")) is None
    assert source.token(Request([(b"COOKIE", b"tok=c")])) == "c"
