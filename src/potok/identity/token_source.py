"""Where a request's bearer token is found: a header, then a cookie, then a query parameter.

One extractor for every user of JWTs — the `auth_jwt` policy, the realtime
WebSocket endpoint and Socket.IO — so a token a browser can send one way is
found the same way by each. Works on anything with the request's raw header
list and query (`TokenCarrier`): the exchange, or a Socket.IO handshake.
"""

from __future__ import annotations

from typing import Protocol
from urllib.parse import unquote

from potok.http.http11 import first_header
from potok.identity.errors import Unauthorized

CacheKey = bytes | str  # the raw header value, or a token from a cookie or the query


class TokenCarrier(Protocol):
    """The parts of a request a token may be in (an `Exchange` is one)."""

    headers: list[tuple[bytes, bytes]]  # raw names and values, as received
    query: bytes  # b"" or b"?a=1&b=2"; a token found in it is taken out
    authorization: bytes | None  # the first Authorization header, noted while parsing


class TokenSource:
    """Finds the token: the header (if any), then the cookie, then the query parameter.

    A token from the query is taken out of `query`, so it reaches neither the
    upstream nor a log line with the request's target."""

    __slots__ = ("_cookie", "_header", "_query", "standard_header")

    def __init__(
        self, *, header: str | None = None, cookie: str | None = None, query: str | None = None
    ) -> None:
        self._header = header.lower().encode() if header else None
        self._cookie = cookie.encode() + b"=" if cookie else None
        self._query = query.encode() + b"=" if query else None
        # Authorization itself: the connection has noted its value (`authorization`).
        self.standard_header = self._header == b"authorization"

    def header(self, request: TokenCarrier) -> bytes | None:
        """The raw value of the token header (the first one), if the request has it."""
        if self.standard_header:
            return request.authorization
        header = self._header
        return first_header(request.headers, header) if header is not None else None

    def __call__(self, request: TokenCarrier) -> tuple[CacheKey, str] | None:
        """(cache key, token), or None without one; Unauthorized for a header that is not
        `Bearer <token>`."""
        raw = self.header(request)
        if raw is not None:
            if raw[:7].lower() != b"bearer ":
                raise Unauthorized("expected 'Bearer <token>'", error="invalid_request")
            return raw, raw[7:].strip().decode("latin-1")
        token = self._from_cookie(request) if self._cookie is not None else None
        if token is None and self._query is not None and request.query:
            token = self._from_query(request)
        return (token, token) if token is not None else None

    def token(self, request: TokenCarrier) -> str | None:
        """Just the token, or None (Unauthorized for a malformed header, as `__call__`)."""
        found = self(request)
        return found[1] if found is not None else None

    def _from_cookie(self, request: TokenCarrier) -> str | None:
        cookie = self._cookie
        assert cookie is not None
        for name, value in request.headers:
            if len(name) == 6 and name.lower() == b"cookie":
                for raw in value.split(b";"):
                    part = raw.strip()
                    if part.startswith(cookie):
                        return part[len(cookie) :].decode("latin-1")
        return None

    def _from_query(self, request: TokenCarrier) -> str | None:
        parameter = self._query
        assert parameter is not None
        found: str | None = None
        kept = []
        for part in request.query[1:].split(b"&"):
            if found is None and part.startswith(parameter):
                found = unquote(part[len(parameter) :].decode("latin-1"))
            else:
                kept.append(part)
        if found is not None:
            request.query = b"?" + b"&".join(kept) if kept else b""
        return found
