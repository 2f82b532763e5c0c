"""The parser boundary: however a valid request is split into TCP segments,
the upstream receives the same request: the same head, byte for byte, and the
same body. (Only the framing of the body may differ: a body that has fully
arrived is sent with Content-Length, one still streaming is re-chunked.)"""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.test_smuggling import Recorder
from tests.support.gateway import GatewayProcess, simple_config
from tests.support.net import ResponseReader, connect
from tests.support.upstream import RawUpstream


@pytest.fixture(scope="module")
def setup():
    record = Recorder()
    raw = RawUpstream(record)
    gateway = GatewayProcess(simple_config(raw.url))
    yield record, gateway
    gateway.stop()
    raw.stop()


token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)
header_value = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789 ,;=/.-_", min_size=0, max_size=40
)


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]))
    path = "/" + "/".join(draw(st.lists(token, min_size=0, max_size=4)))
    query = draw(st.one_of(st.just(""), token.map(lambda t: f"?q={t}")))
    headers = draw(st.lists(st.tuples(token.map(lambda t: f"X-{t}"), header_value), max_size=6))
    body = draw(st.binary(max_size=3000)) if method in ("POST", "PUT", "PATCH") else b""
    chunked = bool(body) and draw(st.booleans())
    lines = [f"{method} {path}{query} HTTP/1.1", "Host: fuzz.test", "X-Request-ID: fuzz-1"]
    lines += [f"{name}: {value.strip()}" for name, value in headers]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
        sizes = draw(st.lists(st.integers(1, 700), min_size=1, max_size=8))  # client's own chunking
        frames, at = [], 0
        for size in sizes:
            piece = body[at : at + size]
            if piece:
                frames.append(b"%x\r\n%s\r\n" % (len(piece), piece))
            at += size
        if at < len(body):
            frames.append(b"%x\r\n%s\r\n" % (len(body) - at, body[at:]))
        payload = b"".join(frames) + b"0\r\n\r\n"
    else:
        if body:
            lines.append(f"Content-Length: {len(body)}")
        payload = body
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


def send_split(port: int, data: bytes, cuts: list[int]) -> int:
    with connect(port) as sock:
        previous = 0
        for cut in sorted({c % (len(data) + 1) for c in cuts}):
            sock.sendall(data[previous:cut])
            previous = cut
            time.sleep(0.002)  # separate segments, separate reads
        sock.sendall(data[previous:])
        return ResponseReader(sock).read().status


def upstream_bytes(
    record: Recorder, port: int, data: bytes, cuts: list[int]
) -> tuple[bytes, bytes]:
    record.data.clear()
    assert send_split(port, data, cuts) == 200
    return decode(bytes(record.data))


def decode(raw: bytes) -> tuple[bytes, bytes]:
    """(head without framing headers, decoded body) of one request as the upstream got it."""
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    framing = [
        line
        for line in lines
        if line.lower().startswith((b"content-length:", b"transfer-encoding:"))
    ]
    kept = b"\r\n".join(line for line in lines if line not in framing)
    if any(b"chunked" in line.lower() for line in framing):
        body = bytearray()
        while True:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line, 16)
            if size == 0:
                assert rest == b"\r\n"
                break
            body += rest[:size]
            assert rest[size : size + 2] == b"\r\n"
            rest = rest[size + 2 :]
        return kept, bytes(body)
    return kept, rest


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=requests(), cuts=st.lists(st.integers(0, 10_000), max_size=12))
def test_random_splits_give_identical_upstream_bytes(setup, data, cuts):
    record, gateway = setup
    whole = upstream_bytes(record, gateway.port, data, [])
    split = upstream_bytes(record, gateway.port, data, cuts)
    assert split == whole
    assert whole[1] == expected_body(data)
    # Also one byte at a time through the head.
    head_end = data.index(b"\r\n\r\n") + 4
    bytewise = upstream_bytes(record, gateway.port, data, list(range(1, min(head_end, 60))))
    assert bytewise == whole


def expected_body(data: bytes) -> bytes:
    head, _, payload = data.partition(b"\r\n\r\n")
    if b"Transfer-Encoding: chunked" in head:
        return decode(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + payload)[1]
    return payload


def test_decoder_sees_rechunking():
    raw = b"POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n"
    assert decode(raw) == (b"POST /a HTTP/1.1\r\nHost: h", b"hello")
