"""The `compress` policy: a response filter that encodes proxied answers on the fly.

Per request the filter is opened only for a request that can get a body (not HEAD);
what the client accepts is decided then, from its Accept-Encoding. At the head the
filter decides whether this answer is compressed (status, Content-Type, Content-Encoding,
Content-Range, no-transform, announced length); if so it rewrites the head (no
Content-Length: chunked; Content-Encoding; Vary; a weak ETag) and encodes each body
chunk as it passes. After each read from the upstream the encoder is flushed (a sync
flush), so a stream of small events (SSE, long polls) reaches the client as it comes
instead of waiting in the compressor's window. The CPU is bounded by what one read
from the upstream brings (at most the transport's read size, 256 KiB on uvloop).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from potok.policies.base import BuildContext, Headers, Policy, Stage
from potok.policies.compress.config import CompressConfig
from potok.policies.compress.encoding import (
    Encoder,
    EncoderFactory,
    Negotiator,
    encoder_factory,
)
from potok.policies.response import ResponseFilter, ResponseSink

if TYPE_CHECKING:
    from potok.exchange import Exchange

# Statuses whose answer is never compressed even with a body: a partial content's
# ranges count bytes of the identity representation.
_NOT_COMPRESSED = frozenset({204, 206, 304})
_ACCEPT_ENCODING = b"accept-encoding"
_IF_NONE_MATCH = b"if-none-match"
_VARY_VALUE = b"Accept-Encoding"
# Distinct Content-Type values judged by one policy (bounded like the Accept-Encoding memo).
_TYPE_MEMO_LIMIT = 256


class ContentTypes:
    """Whether a Content-Type value is one the config compresses (memoised per value)."""

    __slots__ = ("_exact", "_memo", "_suffixes", "_wholes")

    def __init__(self, patterns: tuple[str, ...]) -> None:
        self._exact = frozenset(p.encode() for p in patterns if "/" in p and not p.endswith("/*"))
        self._wholes = frozenset(p[:-2].encode() for p in patterns if p.endswith("/*"))
        self._suffixes = frozenset(p.encode() for p in patterns if p.startswith("+"))
        self._memo: dict[bytes, bool] = {}

    def match(self, value: bytes) -> bool:
        memo = self._memo
        if value in memo:
            return memo[value]
        media = value.partition(b";")[0].strip().lower()
        plus = media.rfind(b"+")
        matched = (
            media in self._exact
            or media.partition(b"/")[0] in self._wholes
            or (plus > 0 and media[plus:] in self._suffixes)
        )
        if len(memo) >= _TYPE_MEMO_LIMIT:
            memo.clear()
        memo[value] = matched
        return matched


class CompressSettings:
    """What one route's policy decided at config load."""

    __slots__ = ("encoders", "min_bytes", "negotiator", "types")

    def __init__(self, config: CompressConfig) -> None:
        levels = {"gzip": config.gzip_level, "br": config.br_level, "zstd": config.zstd_level}
        self.encoders: dict[str, EncoderFactory] = {
            name: encoder_factory(name, levels[name]) for name in config.encodings
        }
        self.negotiator = Negotiator(config.encodings)
        self.types = ContentTypes(config.content_types)
        self.min_bytes = config.min_bytes


class CompressFilter(ResponseFilter):
    """One response's compression (or not): see the module's docstring."""

    __slots__ = ("_encoder", "_encoding", "_request_headers", "_settings", "_unflushed")

    def __init__(
        self,
        downstream: ResponseSink,
        settings: CompressSettings,
        encoding: str | None,
        request_headers: Headers,
    ) -> None:
        super().__init__(downstream)
        self._settings = settings
        self._request_headers = request_headers
        self._encoding = encoding  # None: the client takes none of ours
        self._encoder: Encoder | None = None
        self._unflushed = False  # compressed input the client has not been sent yet

    def send_head(
        self,
        status: int,
        headers: Headers,
        *,
        reason: bytes | None = None,
        length: int | None = None,
        body: bool = True,
    ) -> None:
        if body and status not in _NOT_COMPRESSED:
            headers, length = self._compress_head(headers, length)
        elif status == 304 and self._encoding is not None:
            headers = self._not_modified_head(headers)
        self.downstream.send_head(status, headers, reason=reason, length=length, body=body)

    def _compress_head(self, headers: Headers, length: int | None) -> tuple[Headers, int | None]:
        """The head as sent: rewritten for compression, or with Vary alone where the
        answer would be compressed for another client, or unchanged."""
        vary = etag = identity = -1
        compressible = False
        for index, (name, value) in enumerate(headers):
            lower = name.lower()
            if lower == b"content-type":
                compressible = self._settings.types.match(value)
            elif lower == b"content-encoding":
                if value.strip().lower() != b"identity":
                    return headers, length  # the upstream encoded it already
                identity = index
            elif lower == b"cache-control":
                if b"no-transform" in value.lower():
                    return headers, length
            elif lower == b"content-range":
                return headers, length
            elif lower == b"vary":
                vary = index
            elif lower == b"etag":
                etag = index
        if not compressible:
            return headers, length
        headers = _with_vary(headers, vary)  # its encoding depends on who asks
        encoding = self._encoding
        if encoding is None or (length is not None and length < self._settings.min_bytes):
            return headers, length
        if etag >= 0 and headers[etag][1].startswith(b'"'):
            # The compressed representation differs byte for byte (RFC 9110 §8.8.3):
            # a strong validator of the identity one must not be claimed for it.
            headers[etag] = (headers[etag][0], b"W/" + headers[etag][1])
        if identity >= 0:  # "identity" says nothing; the coding replaces it
            headers[identity] = (headers[identity][0], encoding.encode())
        else:
            headers.append((b"Content-Encoding", encoding.encode()))
        self._encoder = self._settings.encoders[encoding](length)
        return headers, None

    def _not_modified_head(self, headers: Headers) -> Headers:
        """A 304 to a client that holds the compressed variant names it as the 200 did:
        the weak tag made of the upstream's strong one, and Vary (RFC 9110 §15.4.5)."""
        held = _header(self._request_headers, _IF_NONE_MATCH)
        if held is None:
            return headers
        vary = -1
        weakened = False
        for index, (name, value) in enumerate(headers):
            lower = name.lower()
            if lower == b"etag" and value.startswith(b'"') and b"W/" + value in held:
                headers[index] = (name, b"W/" + value)
                weakened = True
            elif lower == b"vary":
                vary = index
        return _with_vary(headers, vary) if weakened else headers

    def send_body(self, data: bytes) -> None:
        encoder = self._encoder
        if encoder is None:
            self.downstream.send_body(data)
            return
        self._unflushed = True
        out = encoder.compress(data)
        if out:
            self.downstream.send_body(out)

    def flush(self) -> None:
        encoder = self._encoder
        if encoder is not None and self._unflushed:
            self._unflushed = False
            out = encoder.flush()
            if out:
                self.downstream.send_body(out)
        self.downstream.flush()

    def end(self) -> None:
        encoder = self._encoder
        if encoder is not None:
            self._encoder = None
            tail = encoder.finish()
            if tail:
                self.downstream.send_body(tail)
        self.downstream.end()


def _with_vary(headers: Headers, index: int) -> Headers:
    """`Vary: Accept-Encoding` added, into the upstream's Vary if it has one."""
    if index < 0:
        headers.append((b"Vary", _VARY_VALUE))
        return headers
    name, value = headers[index]
    tokens = {token.strip().lower() for token in value.split(b",")}
    if b"*" not in tokens and _ACCEPT_ENCODING not in tokens:
        headers[index] = (name, value + b", " + _VARY_VALUE if value.strip() else _VARY_VALUE)
    return headers


def _header(headers: Headers, lower_name: bytes) -> bytes | None:
    """A request header's value, several lines joined into one list (a scan: this runs
    once per request of a route with the policy, or only for a 304)."""
    found: bytes | None = None
    size = len(lower_name)
    for name, value in headers:
        if len(name) == size and name.lower() == lower_name:
            found = value if found is None else found + b"," + value
    return found


def accept_encoding(headers: Headers) -> bytes | None:
    """The request's Accept-Encoding, several header lines joined into one list."""
    return _header(headers, _ACCEPT_ENCODING)


def build(config: CompressConfig | None, context: BuildContext) -> Policy | None:
    if config is None:
        return None
    settings = CompressSettings(config)
    negotiator = settings.negotiator

    def open_filter(exchange: Exchange, downstream: ResponseSink) -> ResponseSink | None:
        if exchange.method == b"HEAD":
            return None  # no body to compress; the head is relayed as it is
        encoding = negotiator.choose(accept_encoding(exchange.headers))
        return CompressFilter(downstream, settings, encoding, exchange.headers)

    # Edge: nearest the client on the way back, so whatever a later filter (a cache)
    # sends — a stored answer included — is compressed for the client that asked.
    return Policy(name="compress", stage=Stage.EDGE, response_filter=open_filter)
