"""HTTP/2 to HTTP/1.1 downgrade smuggling, tried against the real gateway.

Each attack is a stream a raw h2 client sends with deliberately malformed framing or
fields (RFC 9113 8.1.1, 8.2, 8.3); a raw upstream records every byte it receives, so the
tests check both that the stream is refused and that nothing smuggled reached the upstream.
"""

from __future__ import annotations

import time

import pytest
from h2.errors import ErrorCodes

from tests.integration.test_smuggling import Recorder
from tests.support.gateway import GatewayProcess, simple_config
from tests.support.h2client import H2Client, StreamResult
from tests.support.upstream import RawUpstream


@pytest.fixture(scope="module")
def recorder():
    record = Recorder()
    raw = RawUpstream(record)
    yield record, raw
    raw.stop()


@pytest.fixture(scope="module")
def gateway(recorder):
    _, raw = recorder
    process = GatewayProcess(simple_config(raw.url))
    yield process
    process.stop()


@pytest.fixture
def client(gateway):
    connection = H2Client(gateway.port)
    yield connection
    connection.close()


def refused(result: StreamResult) -> bool:
    """A stream error, or the gateway's own 4xx answer: either way nothing forwarded."""
    return result.reset is not None or 400 <= result.status < 500


def settle(record: Recorder, before: int) -> bytes:
    time.sleep(0.2)
    return bytes(record.data[before:])


def refused_or_cut_off(client: H2Client, stream_id: int) -> bool:
    """h2 makes a body that disagrees with content-length a connection error (GOAWAY)."""
    try:
        return refused(client.wait(stream_id))
    except ConnectionError:
        return client.goaway is not None and client.goaway.error_code == ErrorCodes.PROTOCOL_ERROR


def test_data_longer_than_content_length_never_becomes_a_second_request(gateway, recorder):
    record, _ = recorder
    before = len(record.data)
    smuggled = b"hello" + b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    client = H2Client(gateway.port)
    try:
        stream_id = client.request(
            "/echo/cl", method="POST", headers=[("content-length", "5")], body=smuggled
        )
        assert refused_or_cut_off(client, stream_id)
    finally:
        client.close()
    assert b"/smuggled" not in settle(record, before)
    assert record.data.count(b"/smuggled") == 0


def test_data_shorter_than_content_length_leaves_no_upstream_waiting(gateway, recorder):
    record, _ = recorder
    client = H2Client(gateway.port)
    try:
        stream_id = client.request(
            "/echo/short", method="POST", headers=[("content-length", "50")], body=b"hello"
        )
        assert refused_or_cut_off(client, stream_id)
    finally:
        client.close()
    # The upstream connection the short request may have begun is not reused: the next
    # request is not read as the 45 missing body bytes.
    before = len(record.data)
    requests = record.requests
    client = H2Client(gateway.port)
    try:
        for i in range(3):
            assert client.get(f"/echo/next{i}").status == 200
    finally:
        client.close()
    assert record.requests == requests + 3
    assert b"GET /echo/next2 HTTP/1.1\r\n" in settle(record, before)


@pytest.mark.parametrize(
    ("name", "method", "path"),
    [
        ("space in :method", "GET /smuggled HTTP/1.1\tX:", "/echo/m"),
        ("tab in :method", "GET\t/smuggled", "/echo/m"),
        ("empty :method", "", "/echo/m"),
        ("space in :path", "GET", "/echo/p HTTP/1.1\tX: /smuggled"),
        ("tab in :path", "GET", "/echo/p\t/smuggled"),
        ("DEL in :path", "GET", "/echo/p\x7f/smuggled"),
        ("control char in :path", "GET", "/echo/p\x0b/smuggled"),
        ("fragment in :path", "GET", "/echo/p#/smuggled"),
        (":path without a slash", "GET", "smuggled"),
        (":path absolute-form", "GET", "http://internal.example/smuggled"),
    ],
)
def test_fields_that_would_break_the_request_line_are_refused(client, recorder, name, method, path):
    record, _ = recorder
    before = len(record.data)
    stream_id = client.request(path, method=method)
    assert refused(client.wait(stream_id)), name
    assert b"smuggled" not in settle(record, before), name
    assert client.get("/echo/after").status == 200


@pytest.mark.parametrize(
    "fields",
    [
        [(":method", "GET"), (":method", "POST")],
        [(":path", "/echo/a"), (":path", "/smuggled")],
        [(":authority", "a.example"), (":authority", "b.example")],
        [(":scheme", "http"), (":scheme", "https")],
    ],
    ids=["method", "path", "authority", "scheme"],
)
def test_duplicate_pseudo_headers_are_malformed(gateway, recorder, fields):
    record, _ = recorder
    before = len(record.data)
    client = H2Client(gateway.port)
    try:
        base = {":method": "GET", ":scheme": "http", ":authority": "localhost", ":path": "/p"}
        for name, _ in fields:
            base.pop(name, None)
        pseudo = [*fields, *base.items()]
        stream_id = client.conn.get_next_available_stream_id()
        client.conn.send_headers(
            stream_id, [(n.encode(), v.encode()) for n, v in pseudo], end_stream=True
        )
        client.flush()
        client.streams[stream_id] = StreamResult()
        assert client.wait(stream_id).reset == ErrorCodes.PROTOCOL_ERROR
    finally:
        client.close()
    assert b"smuggled" not in settle(record, before)


@pytest.mark.parametrize(
    "headers",
    [
        [("Content-Length", "5")],
        [("x-a", "b\x00c")],
        [("x-a b", "c")],
        [("x-a:b", "c")],
        [("x-a\r\nx-smuggled", "c")],
        [("content-length", "5"), ("content-length", "5")],
        [("content-length", "+5")],
        [("transfer-encoding", "chunked")],
        [("te", "trailers, chunked")],
    ],
)
def test_malformed_fields_are_a_stream_error_and_never_forwarded(client, recorder, headers):
    record, _ = recorder
    before = len(record.data)
    stream_id = client.request("/echo/smuggled", method="POST", headers=headers, body=b"hello")
    assert refused_or_cut_off(client, stream_id)
    assert b"smuggled" not in settle(record, before)


def test_authority_and_host_that_differ_cannot_pick_another_host(client, recorder):
    record, _ = recorder
    before = len(record.data)
    stream_id = client.request(
        "/echo/h", authority="public.example", headers=[("host", "smuggled.example")]
    )
    assert client.wait(stream_id).reset == ErrorCodes.PROTOCOL_ERROR
    assert b"smuggled" not in settle(record, before)


@pytest.mark.parametrize("method", ["GET", "POST", "HEAD"])
def test_content_length_on_a_stream_without_data_leaves_no_upstream_waiting(
    gateway, recorder, method
):
    """HEADERS with END_STREAM and content-length 40: no body is coming. Forwarded with
    `Content-Length: 40`, the upstream would read the next request on its connection as
    the body (a desync)."""
    record, _ = recorder
    client = H2Client(gateway.port)
    try:
        stream_id = client.request("/echo/empty", method=method, headers=[("content-length", "40")])
        assert client.wait(stream_id, timeout=5).reset == ErrorCodes.PROTOCOL_ERROR
    finally:
        client.close()
    before = len(record.data)
    requests = record.requests
    client = H2Client(gateway.port)
    try:
        for i in range(3):
            assert client.get(f"/echo/after-empty{i}", timeout=5).status == 200
    finally:
        client.close()
    assert record.requests == requests + 3
    assert b"GET /echo/after-empty2 HTTP/1.1\r\n" in settle(record, before)


def test_trailers_that_end_a_body_short_of_content_length_are_malformed(gateway, recorder):
    """h2 checks content-length when DATA ends the stream; trailers can end it instead."""
    record, _ = recorder
    client = H2Client(gateway.port)
    try:
        stream_id = client.request(
            "/echo/trailers", method="POST", headers=[("content-length", "50")], end=False
        )
        client.conn.send_data(stream_id, b"hello")
        client.conn.send_headers(stream_id, [(b"x-trailer", b"1")], end_stream=True)
        client.flush()
        assert client.wait(stream_id, timeout=5).reset == ErrorCodes.PROTOCOL_ERROR
        # The same with the upstream call already under way when the trailers come.
        stream_id = client.request(
            "/echo/trailers-late", method="POST", headers=[("content-length", "50")], end=False
        )
        client.conn.send_data(stream_id, b"hello")
        client.flush()
        time.sleep(0.3)
        client.conn.send_headers(stream_id, [(b"x-trailer", b"1")], end_stream=True)
        client.flush()
        assert client.wait(stream_id, timeout=5).reset == ErrorCodes.PROTOCOL_ERROR
    finally:
        client.close()
    before = len(record.data)
    client = H2Client(gateway.port)
    try:
        for i in range(3):
            assert client.get(f"/echo/after-trailers{i}", timeout=5).status == 200
    finally:
        client.close()
    assert b"GET /echo/after-trailers2 HTTP/1.1\r\n" in settle(record, before)


def test_trailers_after_a_complete_body_are_fine(client):
    stream_id = client.request(
        "/echo/whole", method="POST", headers=[("content-length", "5")], end=False
    )
    client.conn.send_data(stream_id, b"hello")
    client.conn.send_headers(stream_id, [(b"x-trailer", b"1")], end_stream=True)
    client.flush()
    assert client.wait(stream_id).status == 200
