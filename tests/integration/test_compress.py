"""The compress policy through a real `potok run` gateway and a real upstream on loopback."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import os
import socket
import threading
import time
import zlib
from collections.abc import Iterator

import brotli
import pytest
import zstandard

from tests.support.gateway import GatewayProcess, simple_config
from tests.support.net import ResponseReader, build_request, connect, request
from tests.support.upstream import RawUpstream, read_request_head

MB = 1024 * 1024
BODY = b"[" + b",".join(b'{"id":%d,"name":"item %d","ok":true}' % (i, i) for i in range(400)) + b"]"
NOISE = os.urandom(65536)  # repeated: a 64 KiB period gzip's 32 KiB window cannot see
BIG = 96 * MB


class Upstream:
    """Answers by path; records how much of the big body it managed to write."""

    def __init__(self) -> None:
        self.big_sent = 0
        self.release_event = threading.Event()
        self.raw = RawUpstream(self.handle)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await read_request_head(reader)
            path = head.split(b" ", 2)[1]
            handler = ANSWERS.get(path)
            if handler is not None:
                writer.write(handler)
            elif path == b"/events":
                await self.events(writer)
            elif path == b"/big":
                await self.big(writer)
            else:
                writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()

    async def events(self, writer: asyncio.StreamWriter) -> None:
        """An event stream whose second event waits until the test has seen the first."""
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + chunk(b"data: first\n\n")
        )
        await writer.drain()
        await asyncio.to_thread(self.release_event.wait, 10.0)
        writer.write(chunk(b"data: second\n\n") + b"0\r\n\r\n")

    async def big(self, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % BIG
        )
        self.big_sent = 0
        while self.big_sent < BIG:
            writer.write(NOISE)
            self.big_sent += len(NOISE)
            await writer.drain()


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def answer(head: bytes, body: bytes = b"", length: bool = True) -> bytes:
    framing = b"Content-Length: %d\r\n" % len(body) if length else b""
    return b"HTTP/1.1 " + head + b"\r\n" + framing + b"\r\n" + body


JSON = b"Content-Type: application/json"
ANSWERS = {
    b"/json": answer(b"200 OK\r\n" + JSON + b'\r\nETag: "v7"\r\nVary: Origin', BODY),
    b"/small": answer(b"200 OK\r\n" + JSON, b'{"small":true}'),
    b"/png": answer(b"200 OK\r\nContent-Type: image/png", BODY),
    b"/encoded": answer(b"200 OK\r\n" + JSON + b"\r\nContent-Encoding: gzip", gzip.compress(BODY)),
    b"/no-transform": answer(b"200 OK\r\n" + JSON + b"\r\nCache-Control: no-transform", BODY),
    b"/not-modified": answer(b'304 Not Modified\r\nETag: "v7"', length=False),
}


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    yield server
    server.raw.stop()


@pytest.fixture(scope="module")
def gateway(upstream: Upstream) -> Iterator[GatewayProcess]:
    config = simple_config(upstream.raw.url, policies={"compress": {}})
    config["services"]["up"]["timeouts"] = {"response": "60s"}
    config["routes"][0]["timeouts"] = {"request": "120s"}
    process = GatewayProcess(config)
    yield process
    process.stop()


def get(gateway: GatewayProcess, path: str, accept: str | None, method: str = "GET") -> object:
    headers = {"Accept-Encoding": accept} if accept is not None else {}
    return request(gateway.port, method, path, headers)


def decode(encoding: str, data: bytes) -> bytes:
    if encoding == "gzip":
        return gzip.decompress(data)
    if encoding == "br":
        return bytes(brotli.decompress(data))
    return zstandard.ZstdDecompressor().decompressobj().decompress(data)


@pytest.mark.parametrize("encoding", ["gzip", "br", "zstd"])
def test_each_encoding_decodes_to_the_upstreams_bytes(gateway, encoding):
    response = get(gateway, "/json", encoding)
    assert response.status == 200
    assert response.header("content-encoding") == encoding
    assert response.header("content-length") is None
    assert response.header("transfer-encoding") == "chunked"
    assert response.header_all("vary") == ["Origin, Accept-Encoding"]
    assert response.header("etag") == 'W/"v7"'
    assert len(response.body) < len(BODY) / 4
    assert decode(encoding, response.body) == BODY


def test_the_clients_preference_and_the_gateways_order(gateway):
    assert get(gateway, "/json", "gzip, deflate, br, zstd").header("content-encoding") == "zstd"
    assert get(gateway, "/json", "br;q=1, zstd;q=0.5").header("content-encoding") == "br"
    assert get(gateway, "/json", "*;q=0.1, gzip").header("content-encoding") == "gzip"


@pytest.mark.parametrize("accept", [None, "", "identity", "deflate", "gzip;q=0"])
def test_not_accepted_goes_as_it_is(gateway, accept):
    response = get(gateway, "/json", accept)
    assert response.header("content-encoding") is None
    assert response.header("content-length") == str(len(BODY))
    assert response.header("etag") == '"v7"'
    assert response.body == BODY


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("/small", "under min_bytes"),
        ("/png", "a type not listed"),
        ("/no-transform", "Cache-Control: no-transform"),
    ],
)
def test_left_uncompressed(gateway, path, why):
    response = get(gateway, path, "gzip, br, zstd")
    assert response.header("content-encoding") is None, why
    assert response.header("content-length") == str(len(response.body)), why


def test_an_answer_the_upstream_encoded_is_left_alone(gateway):
    response = get(gateway, "/encoded", "br, zstd")
    assert response.header("content-encoding") == "gzip"
    assert gzip.decompress(response.body) == BODY


def test_head_and_304_pass_unchanged(gateway):
    head = get(gateway, "/json", "gzip", method="HEAD")
    assert head.header("content-encoding") is None
    assert head.header("content-length") == str(len(BODY))
    not_modified = get(gateway, "/not-modified", "gzip")
    assert not_modified.status == 304
    assert not_modified.header("content-encoding") is None
    assert not_modified.header("etag") == '"v7"'


def test_a_304_to_a_holder_of_the_compressed_variant_names_it(gateway):
    headers = {"Accept-Encoding": "gzip", "If-None-Match": 'W/"v7"'}
    response = request(gateway.port, "GET", "/not-modified", headers)
    assert response.status == 304
    assert response.header("etag") == 'W/"v7"'
    assert response.header("vary") == "Accept-Encoding"


def test_gateway_answers_are_not_compressed(gateway):
    response = get(gateway, "/nothing-here", "gzip")  # the upstream's 404, empty
    assert response.status == 404 and response.header("content-encoding") is None


def read_chunk(sock_reader: ResponseReader) -> bytes:
    size = int(sock_reader._line().split(b";")[0], 16)
    data = sock_reader._exact(size)
    sock_reader._exact(2)
    return data


def read_head(sock_reader: ResponseReader) -> list[bytes]:
    lines = []
    while line := sock_reader._line():
        lines.append(line)
    return lines


def test_a_stream_is_compressed_as_it_flows(gateway, upstream):
    """The first event arrives, compressed and decodable, while the upstream still holds
    the second: per-read flushing keeps server-sent events live."""
    upstream.release_event.clear()
    with connect(gateway.port, timeout=10) as sock:
        sock.sendall(build_request("GET", "/events", {"Accept-Encoding": "gzip"}))
        reader = ResponseReader(sock)
        head = read_head(reader)
        assert b"Content-Encoding: gzip" in head
        decoder = zlib.decompressobj(31)
        first = b""
        while not first:  # the gzip header may come in a chunk of its own
            first = decoder.decompress(read_chunk(reader))
        assert first == b"data: first\n\n"
        upstream.release_event.set()
        rest = b""
        while data := read_chunk(reader):
            rest += decoder.decompress(data)
        assert rest + decoder.flush() == b"data: second\n\n"
        assert decoder.eof


def test_a_slow_reader_still_holds_back_the_upstream(gateway, upstream):
    """Compression in the way: the client reading nothing still stops the upstream."""
    with connect(gateway.port, timeout=60) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.sendall(build_request("GET", "/big", {"Accept-Encoding": "gzip"}))
        time.sleep(2.0)  # read nothing
        stalled = upstream.big_sent
        time.sleep(0.5)
        assert upstream.big_sent == stalled  # held, not trickling
        assert stalled < BIG / 3, f"the upstream wrote {stalled / MB:.0f} MiB unread"
        reader = ResponseReader(sock)
        head = read_head(reader)
        assert b"Content-Encoding: gzip" in head
        decoder = zlib.decompressobj(31)
        digest = hashlib.sha256()
        total = 0
        while data := read_chunk(reader):
            plain = decoder.decompress(data)
            digest.update(plain)
            total += len(plain)
    assert total == BIG
    assert digest.hexdigest() == hashlib.sha256(NOISE * (BIG // len(NOISE))).hexdigest()
