"""Request smuggling and malformed input: refused at the edge, never reaching the upstream.

Each attack goes to a raw upstream that records every byte it receives, so the
tests can assert both the client's answer and what the upstream saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from tests.support.gateway import GatewayProcess, simple_config
from tests.support.net import ResponseReader, connect, recv_until_close
from tests.support.upstream import RawUpstream


class Recorder:
    """Answers every request with 200 'ok' and records the bytes received."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.requests = 0

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            self.data += head
            self.requests += 1
            length = 0
            chunked = False
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
                if name.lower() == b"transfer-encoding":
                    chunked = True
            if chunked:
                while True:
                    size_line = await reader.readuntil(b"\r\n")
                    self.data += size_line
                    size = int(size_line.split(b";")[0], 16)
                    chunk = await reader.readexactly(size + 2)
                    self.data += chunk
                    if size == 0:
                        break
            elif length:
                self.data += await reader.readexactly(length)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()


@pytest.fixture(scope="module")
def recorder():
    record = Recorder()
    raw = RawUpstream(record)
    yield record, raw
    raw.stop()


@pytest.fixture(scope="module")
def gateway(recorder):
    _, raw = recorder
    config = simple_config(raw.url)
    config["server"] = {
        "limits": {
            "max_header_bytes": "4KiB",
            "max_url_bytes": 1024,
            "max_headers": 20,
            "max_body_bytes": "64KiB",
        }
    }
    process = GatewayProcess(config)
    yield process
    process.stop()


def exchange(port: int, raw: bytes) -> bytes:
    with connect(port, timeout=5) as sock:
        sock.sendall(raw)
        return recv_until_close(sock)


def status_of(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1])


ATTACKS = {
    "CL and TE together (CL.TE)": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
    "TE and CL together (TE.CL)": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
    b"Content-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n",
    "duplicate Content-Length, different": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
    b"Content-Length: 6\r\n\r\nhello!",
    "duplicate Content-Length, same": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    "Content-Length list": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\nhello",
    "negative Content-Length": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    "invalid chunk size": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    "chunk size overflow": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"10000000000000000000\r\nhello\r\n0\r\n\r\n",
    "chunk size with bare LF": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n",
    "obfuscated TE (xchunked)": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    "TE chunked, identity": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    "TE twice": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "TE in HTTP/1.0": b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "space before colon": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\nhello",
    "bare LF line endings": b"GET / HTTP/1.1\nHost: x\n\n",
    "bare LF inside headers": b"GET / HTTP/1.1\r\nHost: x\nX-A: y\r\n\r\n",
    "obsolete line folding": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n",
    "NUL in header value": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
    "two Host headers": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "no Host in HTTP/1.1": b"GET / HTTP/1.1\r\nX-A: b\r\n\r\n",
    "absolute-form target": b"GET http://internal.example/admin HTTP/1.1\r\nHost: x\r\n\r\n",
    "HTTP/2.0 request line": b"GET / HTTP/2.0\r\nHost: x\r\n\r\n",
    "space in target": b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
    "garbage": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
}


@pytest.mark.parametrize("name", list(ATTACKS))
def test_attack_refused_and_upstream_untouched(gateway, recorder, name):
    record, _ = recorder
    before = bytes(record.data)
    reply = exchange(gateway.port, ATTACKS[name])
    assert reply, "the gateway must answer (not just drop) malformed requests"
    status = status_of(reply)
    assert 400 <= status < 600 and status != 502, reply
    assert b"application/problem+json" in reply
    assert b"connection: close" in reply.lower()
    time.sleep(0.05)
    assert bytes(record.data) == before, "nothing of a refused request may reach the upstream"


def test_valid_request_before_an_attack_is_served_then_connection_closed(gateway, recorder):
    record, _ = recorder
    good = b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n"
    reply = exchange(gateway.port, good + ATTACKS["CL and TE together (CL.TE)"])
    assert reply.startswith(b"HTTP/1.1 200 OK")
    assert b"HTTP/1.1 400" in reply
    assert b"/first" in bytes(record.data)
    # The 200 does not say the connection ends: the 400 after it is the last response
    # (after `Connection: close` a client reads nothing more, RFC 9112 9.6).
    first = reply.split(b"HTTP/1.1 400")[0]
    assert b"connection: close" not in first.lower()


@pytest.mark.parametrize(
    "first",
    [
        b"GET /first HTTP/1.0\r\n\r\n",
        b"GET /first HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ],
)
def test_nothing_follows_a_response_that_closes_the_connection(gateway, recorder, first):
    """Bytes after a request that ends the connection are not answered: its response
    says `Connection: close`, so a second response (here the parser's 400 for the extra
    bytes) would be unread at best, and after a close-delimited body, part of the body."""
    reply = exchange(gateway.port, first + b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200 OK")
    assert b"connection: close" in reply.lower()
    assert reply.count(b"HTTP/1.1 ") == 1, reply


def test_smuggled_body_bytes_are_never_a_second_request(gateway, recorder):
    """A body that looks like a request is just a body: the upstream sees one framed request."""
    record, _ = recorder
    hidden = b"GET /admin HTTP/1.1\r\nHost: x\r\n\r\n"
    body = b"x=1&" + hidden
    raw = (
        b"POST /form HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
        % len(body)
    ) + body
    start = record.requests
    reply = exchange(gateway.port, raw)
    assert reply.startswith(b"HTTP/1.1 200")
    time.sleep(0.05)
    assert record.requests == start + 1


def test_header_section_too_large_is_431(gateway, recorder):
    record, _ = recorder
    before = record.requests
    reply = exchange(
        gateway.port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8000 + b"\r\n\r\n"
    )
    assert status_of(reply) == 431
    assert record.requests == before


def test_one_enormous_header_value_is_431_without_buffering_it(gateway):
    with connect(gateway.port, timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ")
        sent = 0
        reply = b""
        try:
            while sent < 50_000_000:
                sock.sendall(b"a" * 65536)
                sent += 65536
        except (BrokenPipeError, ConnectionResetError):
            pass
        with contextlib.suppress(OSError):
            reply = recv_until_close(sock)
        assert sent < 50_000_000, "the gateway kept reading an unbounded header"
        if reply:
            assert status_of(reply) == 431


def test_too_many_headers_is_431(gateway):
    headers = b"".join(b"X-%d: v\r\n" % i for i in range(30))
    assert (
        status_of(exchange(gateway.port, b"GET / HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n"))
        == 431
    )


def test_target_too_long_is_414(gateway):
    assert (
        status_of(exchange(gateway.port, b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"))
        == 414
    )


def test_body_over_limit_by_content_length_is_413_before_upload(gateway, recorder):
    record, _ = recorder
    before = record.requests
    with connect(gateway.port) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
        response = ResponseReader(sock).read()
    assert response.status == 413
    assert record.requests == before


def test_chunked_body_over_limit_is_413_while_streaming(gateway):
    chunk = b"%x\r\n%s\r\n" % (16384, b"z" * 16384)
    with connect(gateway.port) as sock:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        try:
            for _ in range(10):  # 160 KiB against a 64 KiB limit
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        reply = recv_until_close(sock)
    assert status_of(reply) == 413


def test_gateway_still_serves_after_attacks(gateway):
    reply = exchange(gateway.port, b"GET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200")


def test_upstream_sees_normalized_framing(recorder, gateway):
    """A chunked request with extensions and trailers reaches the upstream re-framed, trailers dropped."""
    record, _ = recorder
    record.data.clear()
    raw = (
        b"POST /re HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        b"5;ext=1\r\nhello\r\n0\r\nX-Trailer: evil\r\n\r\n"
    )
    reply = exchange(gateway.port, raw)
    assert reply.startswith(b"HTTP/1.1 200")
    seen = bytes(record.data)
    assert b"ext=1" not in seen and b"X-Trailer" not in seen
    assert b"hello" in seen
