"""The compress policy's parts: Accept-Encoding negotiation, content types, config, the
filter driven by hand through a recording sink."""

from __future__ import annotations

import gzip
import zlib

import brotli
import pytest
import zstandard
from pydantic import ValidationError

from potok.policies.compress.config import CompressConfig
from potok.policies.compress.encoding import Negotiator, encoder_factory, parse_accept_encoding
from potok.policies.compress.policy import (
    CompressFilter,
    CompressSettings,
    ContentTypes,
    accept_encoding,
)
from potok.policies.response import ANSWERED, ResponseFilter, open_chain

OURS = ("zstd", "br", "gzip")


@pytest.mark.parametrize(
    ("header", "chosen"),
    [
        (None, None),  # no header: the representation as it is
        (b"", None),  # empty: identity only (RFC 9110 12.5.3)
        (b"gzip", "gzip"),
        (b"GZIP", "gzip"),
        (b"x-gzip", "gzip"),
        (b"gzip, deflate, br, zstd", "zstd"),  # ties: the gateway's order
        (b"gzip, deflate, br", "br"),
        (b"br;q=0.5, gzip", "gzip"),  # the client's q-values first
        (b"br;q=0.5, gzip;q=0.5", "br"),
        (b"gzip;q=0, br;q=0", None),
        (b"*", "zstd"),
        (b"*;q=0.1, gzip;q=0.2", "gzip"),
        (b"*;q=0.3, gzip;q=0.2", "zstd"),
        (b"*;q=0", None),
        (b"identity;q=0", None),  # nothing of ours accepted: sent as it is, never a 406
        (b"deflate, compress", None),
        (b"gzip;q=1.5", None),  # not a q-value: the item is ignored
        (b"gzip;q=abc, br", "br"),
        (b"gzip;q=nan", None),
        (b"  br ; q=0.9 ,gzip;q=0.8", "br"),
        (b"gzip;level=1;q=0.4, br;q=0.3", "gzip"),
        (b",,, gzip ,", "gzip"),
    ],
)
def test_negotiation(header: bytes | None, chosen: str | None) -> None:
    assert Negotiator(OURS).choose(header) == chosen


def test_negotiation_follows_the_configured_preference() -> None:
    assert Negotiator(("gzip", "br")).choose(b"br, gzip, zstd") == "gzip"
    assert Negotiator(("br",)).choose(b"gzip, zstd") is None


def test_negotiation_remembers_each_value_within_a_bound() -> None:
    negotiator = Negotiator(OURS)
    for i in range(600):
        assert negotiator.choose(b"gzip;q=0.%d" % (i % 9 + 1)) == "gzip"
        negotiator.choose(b"x-%d" % i)
    assert len(negotiator._memo) <= 256


def test_parse_keeps_star_apart() -> None:
    assert parse_accept_encoding(b"gzip;q=0.5, *;q=0.1") == ({b"gzip": 0.5}, 0.1)


@pytest.mark.parametrize(
    ("value", "matched"),
    [
        (b"application/json", True),
        (b"Application/JSON; charset=utf-8", True),
        (b"text/html", True),
        (b"text/event-stream", True),
        (b"application/problem+json", True),
        (b"application/atom+xml", True),
        (b"image/svg+xml", True),
        (b"image/png", False),
        (b"application/octet-stream", False),
        (b"application/jsonx", False),
        (b"+json", False),
        (b"", False),
    ],
)
def test_content_types(value: bytes, matched: bool) -> None:
    assert ContentTypes(CompressConfig().content_types).match(value) is matched


@pytest.mark.parametrize(
    "config",
    [
        {"encodings": []},
        {"encodings": ["gzip", "gzip"]},
        {"encodings": ["deflate"]},
        {"gzip_level": 0},
        {"br_level": 12},
        {"zstd_level": 20},
        {"content_types": ["json"]},
        {"content_types": ["*/*"]},
        {"content_types": ["text/html; charset=utf-8"]},
        {"content_types": ["+"]},
        {"min_bytes": -1},
    ],
)
def test_bad_config_is_refused(config: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        CompressConfig.model_validate(config)


def test_min_bytes_takes_units() -> None:
    assert CompressConfig.model_validate({"min_bytes": "2KiB"}).min_bytes == 2048


def test_accept_encoding_joins_several_lines() -> None:
    headers = [(b"Host", b"x"), (b"Accept-Encoding", b"gzip"), (b"accept-encoding", b"br")]
    assert accept_encoding(headers) == b"gzip,br"
    assert accept_encoding([(b"Host", b"x")]) is None


# The filter -----------------------------------------------------------------------------


class Sink:
    """Records what reaches the client's end of a chain."""

    def __init__(self) -> None:
        self.head: tuple[int, list[tuple[bytes, bytes]], int | None, bool] | None = None
        self.chunks: list[bytes] = []
        self.flushes = 0
        self.ended = False
        self.aborted: str | None = None

    def send_head(
        self,
        status: int,
        headers: list[tuple[bytes, bytes]],
        *,
        reason: bytes | None = None,
        length: int | None = None,
        body: bool = True,
    ) -> None:
        self.head = (status, headers, length, body)

    def send_body(self, data: bytes) -> None:
        self.chunks.append(data)

    def flush(self) -> None:
        self.flushes += 1

    def end(self) -> None:
        self.ended = True

    def abort(self, reason: str) -> None:
        self.aborted = reason

    def header(self, name: bytes) -> list[bytes]:
        assert self.head is not None
        return [v for n, v in self.head[1] if n.lower() == name]


def decode(encoding: str, data: bytes) -> bytes:
    if encoding == "gzip":
        return gzip.decompress(data)
    if encoding == "br":
        return bytes(brotli.decompress(data))
    return zstandard.ZstdDecompressor().decompressobj().decompress(data)


BODY = b'{"items": [' + b", ".join(b'{"id": %d, "name": "item"}' % i for i in range(300)) + b"]}"
JSON = [(b"Content-Type", b"application/json")]


def run_filter(
    encoding: str | None,
    headers: list[tuple[bytes, bytes]],
    *,
    status: int = 200,
    length: int | None = None,
    body: bool = True,
    chunks: tuple[bytes, ...] = (BODY,),
    config: CompressConfig | None = None,
) -> Sink:
    sink = Sink()
    settings = CompressSettings(config or CompressConfig())
    flt = CompressFilter(sink, settings, encoding, [])
    flt.send_head(status, list(headers), length=length, body=body)
    for chunk in chunks:
        flt.send_body(chunk)
        flt.flush()
    flt.end()
    return sink


@pytest.mark.parametrize("encoding", OURS)
def test_each_encoding_round_trips(encoding: str) -> None:
    sink = run_filter(encoding, JSON, length=len(BODY))
    assert sink.head is not None
    assert sink.head[2] is None  # the length is gone: chunked
    assert sink.header(b"content-encoding") == [encoding.encode()]
    assert sink.header(b"vary") == [b"Accept-Encoding"]
    assert len(b"".join(sink.chunks)) < len(BODY) / 4
    assert decode(encoding, b"".join(sink.chunks)) == BODY
    assert sink.ended


@pytest.mark.parametrize("encoding", OURS)
def test_each_flush_makes_what_came_so_far_decodable(encoding: str) -> None:
    """An event stream: every upstream read reaches the client decodable at once."""
    sink = Sink()
    flt = CompressFilter(sink, CompressSettings(CompressConfig()), encoding, [])
    flt.send_head(200, [(b"Content-Type", b"text/event-stream")])
    decoder = (
        zlib.decompressobj(31)
        if encoding == "gzip"
        else brotli.Decompressor()
        if encoding == "br"
        else zstandard.ZstdDecompressor().decompressobj()
    )
    for n in range(3):
        event = b"data: event %d\n\n" % n
        flt.send_body(event)
        flt.flush()
        got = b"".join(sink.chunks)
        sink.chunks.clear()
        out = decoder.process(got) if encoding == "br" else decoder.decompress(got)
        assert out == event
    assert sink.flushes == 3


def test_a_flush_without_new_input_emits_nothing() -> None:
    sink = run_filter("gzip", JSON, chunks=(BODY,))
    count = len(sink.chunks)
    sink2 = Sink()
    flt = CompressFilter(sink2, CompressSettings(CompressConfig()), "gzip", [])
    flt.send_head(200, list(JSON))
    flt.send_body(BODY)
    flt.flush()
    flt.flush()
    flt.flush()
    flt.end()
    assert len(sink2.chunks) == count


@pytest.mark.parametrize(
    ("why", "status", "headers", "length", "body"),
    [
        ("HEAD or no body", 200, JSON, None, False),
        ("204", 204, JSON, None, True),
        ("206", 206, [*JSON, (b"Content-Range", b"bytes 0-9/100")], 10, True),
        ("304", 304, JSON, None, True),
        ("a range", 200, [*JSON, (b"Content-Range", b"bytes 0-9/100")], None, True),
        ("encoded", 200, [*JSON, (b"Content-Encoding", b"gzip")], None, True),
        ("no-transform", 200, [*JSON, (b"Cache-Control", b"public, No-Transform")], None, True),
        ("a type not listed", 200, [(b"Content-Type", b"image/png")], None, True),
        ("no type", 200, [], None, True),
    ],
)
def test_left_as_it_is(
    why: str, status: int, headers: list[tuple[bytes, bytes]], length: int | None, body: bool
) -> None:
    sink = run_filter("gzip", headers, status=status, length=length, body=body)
    assert sink.head == (status, headers, length, body), why
    assert b"".join(sink.chunks) == BODY


def test_small_known_length_gets_vary_only() -> None:
    sink = run_filter("gzip", JSON, length=500, chunks=(b"x" * 500,))
    assert sink.head is not None
    assert sink.head[2] == 500
    assert sink.header(b"content-encoding") == []
    assert sink.header(b"vary") == [b"Accept-Encoding"]
    assert b"".join(sink.chunks) == b"x" * 500


def test_client_accepting_none_gets_vary_only() -> None:
    sink = run_filter(None, JSON, length=len(BODY))
    assert sink.header(b"content-encoding") == []
    assert sink.header(b"vary") == [b"Accept-Encoding"]
    assert b"".join(sink.chunks) == BODY


def test_identity_content_encoding_counts_as_none() -> None:
    sink = run_filter("gzip", [*JSON, (b"Content-Encoding", b"identity")])
    assert sink.header(b"content-encoding") == [b"gzip"]


@pytest.mark.parametrize(
    ("vary", "merged"),
    [
        (b"Origin", b"Origin, Accept-Encoding"),
        (b"origin, accept-encoding", b"origin, accept-encoding"),
        (b"*", b"*"),
        (b"", b"Accept-Encoding"),
    ],
)
def test_vary_is_merged(vary: bytes, merged: bytes) -> None:
    sink = run_filter("br", [*JSON, (b"Vary", vary)])
    assert sink.header(b"vary") == [merged]


@pytest.mark.parametrize(
    ("etag", "sent"),
    [(b'"abc"', b'W/"abc"'), (b'W/"abc"', b'W/"abc"')],
)
def test_a_strong_etag_turns_weak(etag: bytes, sent: bytes) -> None:
    assert run_filter("gzip", [*JSON, (b"ETag", etag)]).header(b"etag") == [sent]


def test_an_uncompressed_answer_keeps_its_strong_etag() -> None:
    sink = run_filter(None, [*JSON, (b"ETag", b'"abc"')])
    assert sink.header(b"etag") == [b'"abc"']


def test_abort_passes_through() -> None:
    sink = Sink()
    flt = CompressFilter(sink, CompressSettings(CompressConfig()), "zstd", [])
    flt.send_head(200, list(JSON))
    flt.send_body(BODY[:100])
    flt.abort("upstream closed")
    assert sink.aborted == "upstream closed" and not sink.ended


def test_levels_reach_the_encoders() -> None:
    # The gzip header's XFL byte says which: 4 for the fastest level, 2 for the best.
    fast = encoder_factory("gzip", 1)(None)
    best = encoder_factory("gzip", 9)(None)
    assert (fast.compress(BODY) + fast.finish())[8] == 4
    assert (best.compress(BODY) + best.finish())[8] == 2
    with pytest.raises(ValueError, match="unknown encoding"):
        encoder_factory("deflate", 1)


# The chain ------------------------------------------------------------------------------


class Tag(ResponseFilter):
    """A filter that marks the chunks it passes with its name."""

    __slots__ = ("name",)

    def __init__(self, downstream: Sink | ResponseFilter, name: bytes) -> None:
        super().__init__(downstream)
        self.name = name

    def send_body(self, data: bytes) -> None:
        self.downstream.send_body(self.name + data)


def test_the_first_factory_is_nearest_the_client() -> None:
    sink = Sink()
    chain = open_chain(
        (
            lambda exchange, down: Tag(down, b"edge:"),
            lambda exchange, down: None,  # stays out of this request
            lambda exchange, down: Tag(down, b"cache:"),
        ),
        sink,  # type: ignore[arg-type]  # the exchange's place: the client's end
    )
    assert chain is not None
    chain.send_body(b"x")
    assert sink.chunks == [b"edge:cache:x"]


def test_a_factory_that_answers_stops_the_chain() -> None:
    sink = Sink()
    opened: list[str] = []

    def cache_hit(exchange: object, down: Sink) -> object:
        down.send_head(200, [(b"Content-Type", b"text/plain")], length=6)
        down.send_body(b"stored")
        down.end()
        return ANSWERED

    def later(exchange: object, down: Sink) -> None:
        opened.append("later")

    chain = open_chain((cache_hit, later), sink)  # type: ignore[arg-type]
    assert chain is None and sink.ended and sink.chunks == [b"stored"] and opened == []


@pytest.mark.parametrize(
    ("held", "encoding", "etag", "vary"),
    [
        (b'W/"v7"', "gzip", b'W/"v7"', [b"Accept-Encoding"]),  # holds our compressed variant
        (b'"x", W/"v7"', "br", b'W/"v7"', [b"Accept-Encoding"]),
        (b'"v7"', "gzip", b'"v7"', []),  # holds the identity variant
        (None, "gzip", b'"v7"', []),
        (b'W/"v7"', None, b'"v7"', []),  # accepts none of ours: cannot hold a variant of ours
    ],
)
def test_a_304_names_the_variant_the_client_holds(
    held: bytes | None, encoding: str | None, etag: bytes, vary: list[bytes]
) -> None:
    sink = Sink()
    request = [(b"If-None-Match", held)] if held is not None else []
    flt = CompressFilter(sink, CompressSettings(CompressConfig()), encoding, request)
    flt.send_head(304, [(b"ETag", b'"v7"')], body=False)
    flt.end()
    assert sink.header(b"etag") == [etag]
    assert sink.header(b"vary") == vary


def test_zstd_compressors_are_reused_after_a_finished_stream() -> None:
    make = encoder_factory("zstd", 3)
    first = make(len(BODY))
    out = first.compress(BODY) + first.finish()
    assert decode("zstd", out) == BODY
    second = make(None)  # the same compressor, another stream of unknown size
    assert second._compressor is first._compressor  # type: ignore[attr-defined]
    third = make(None)  # the second has not finished: a compressor of its own
    assert third._compressor is not second._compressor  # type: ignore[attr-defined]
    out = second.compress(BODY) + second.flush() + second.compress(b"") + second.finish()
    assert decode("zstd", out) == BODY


@pytest.mark.parametrize("size", [None, 0, 1, 300, 4055, 70000])
def test_gzip_sized_to_a_known_body_still_decodes(size: int | None) -> None:
    data = (BODY * 3)[: size if size is not None else 5000]
    encoder = encoder_factory("gzip", 5)(size)
    assert gzip.decompress(encoder.compress(data) + encoder.flush() + encoder.finish()) == data
