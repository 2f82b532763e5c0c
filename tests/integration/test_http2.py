"""HTTP/2 to clients through the real gateway: h2c with prior knowledge, each stream an
exchange on the route's pipeline (routing, policies, proxy to HTTP/1.1 upstreams), flow
control tied to back-pressure both ways, GOAWAY on shutdown and idleness, per-stream logs.

Clients: the h2 library over a socket (tests/support/h2client.py), curl (nghttp2) and
h2load; upstreams are real HTTP/1.1 servers on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import signal
import subprocess
import time

import pytest
from h2.errors import ErrorCodes

from tests.support.gateway import GatewayProcess
from tests.support.h2client import PREFACE, H2Client
from tests.support.net import send_raw
from tests.support.upstream import RawUpstream, read_request_head

MB = 1024 * 1024


def h2_config(upstream_url: str, **http2: object) -> dict[str, object]:
    return {
        "server": {"http2": {"initial_window_size": "16KiB", "stall_timeout": "2s", **http2}},
        "services": {"up": {"targets": [upstream_url]}},
        "routes": [
            {
                "name": "limited",
                "match": {"prefix": "/limited"},
                "service": "up",
                "policies": {"rate_limit": {"limit": 3, "window": "60s"}},
            },
            {
                "name": "all",
                "match": {"prefix": "/"},
                "service": "up",
                "policies": {"request_size": {"max_bytes": "64MiB"}},
            },
        ],
    }


@pytest.fixture(scope="module")
def gateway(upstream):
    process = GatewayProcess(h2_config(upstream.url))
    yield process
    process.stop()


@pytest.fixture
def client(gateway):
    client = H2Client(gateway.port)
    yield client
    client.close()


def echo(result) -> dict:  # type: ignore[no-untyped-def, type-arg]
    assert result.status == 200, bytes(result.body)
    return json.loads(bytes(result.body))  # type: ignore[no-any-return]


def test_a_stream_reaches_the_upstream_as_an_http11_request(client, upstream):
    result = client.get(
        "/echo/one?x=1",
        headers=[("cookie", "a=1"), ("cookie", "b=2"), ("te", "trailers"), ("x-custom", "v")],
        authority="api.example:8443",
    )
    seen = echo(result)
    assert seen["method"] == "GET" and seen["raw_path"] == "/echo/one?x=1"
    assert seen["version"] == "1.1"
    headers = {name.lower(): value for name, value in seen["headers"]}
    assert headers["x-forwarded-host"] == "api.example:8443"  # :authority is the Host
    assert headers["cookie"] == "a=1; b=2"  # RFC 9113 8.2.3: crumbs joined
    assert headers["x-custom"] == "v"
    assert "te" not in headers and "transfer-encoding" not in headers  # GET: no body framing
    request_id = result.header(b"x-request-id")
    assert request_id is not None and headers["x-request-id"] == request_id.decode()
    assert all(name == name.lower() for name, _ in result.headers)


def test_post_bodies_arrive_whole(client):
    body = b"z" * 100_000
    result = client.wait(client.request("/sink", method="POST", body=body))
    assert echo(result) == {"length": len(body), "sha256": hashlib.sha256(body).hexdigest()}


def test_curl_with_prior_knowledge(gateway):
    out = subprocess.run(
        ["curl", "-sS", "--http2-prior-knowledge", "-i", f"{gateway.url}/echo/curl"],
        capture_output=True,
        timeout=20,
        check=True,
    ).stdout
    assert out.startswith(b"HTTP/2 200")
    out = subprocess.run(
        ["curl", "-sS", "--http2-prior-knowledge", "--data-binary", "hello", f"{gateway.url}/sink"],
        capture_output=True,
        timeout=20,
        check=True,
    ).stdout
    assert json.loads(out)["length"] == 5


def test_h2load_many_streams_on_few_connections(gateway):
    out = subprocess.run(
        ["h2load", "-n", "2000", "-c", "10", "-m", "10", f"{gateway.url}/bytes?size=100"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert "2000 succeeded, 0 failed, 0 errored" in out, out
    assert "status codes: 2000 2xx" in out, out
    assert "Application protocol: h2c" in out


def test_interleaved_streams_each_get_their_own_answer(client):
    ids = {client.request(f"/echo/{i}?i={i}"): i for i in range(60)}
    for stream_id, i in ids.items():
        assert echo(client.wait(stream_id))["raw_path"] == f"/echo/{i}?i={i}"


@pytest.mark.parametrize(
    "headers",
    [
        [("connection", "keep-alive")],
        [("transfer-encoding", "chunked")],
        [("upgrade", "websocket")],
        [("keep-alive", "5")],
        [("proxy-connection", "x")],
        [("te", "gzip")],
        [("X-Upper", "v")],
        [("x-split", "a\r\nInjected: yes")],
        [("host", "other.example")],  # differs from :authority
    ],
)
def test_a_malformed_request_is_a_stream_error_only(client, upstream, headers):
    before = upstream.total
    stream_id = client.request("/echo/malformed", headers=headers)
    assert client.wait(stream_id).reset == ErrorCodes.PROTOCOL_ERROR
    assert upstream.total == before  # never forwarded
    assert client.get("/echo/after").status == 200  # the connection goes on


def test_hop_by_hop_response_headers_are_not_relayed(client):
    result = client.get("/headers?keep-alive=timeout%3D5&proxy-connection=x&x-kept=yes")
    assert result.status == 200
    names = {name for name, _ in result.headers}
    assert b"x-kept" in names
    assert not names & {b"keep-alive", b"proxy-connection", b"connection", b"transfer-encoding"}


def test_gateway_answers_are_per_stream(gateway, client):
    # A route's policies apply to each stream: 3 of 5 concurrent streams pass the limit.
    ids = [client.request("/limited/x") for _ in range(5)]
    statuses = sorted(client.wait(i).status for i in ids)
    assert statuses == [200, 200, 200, 429, 429]
    limited = next(client.wait(i) for i in ids if client.wait(i).status == 429)
    assert limited.header(b"content-type") == b"application/problem+json"
    assert json.loads(bytes(limited.body))["status"] == 429


def test_large_bodies_both_ways_with_small_windows(gateway):
    # The gateway grants 16 KiB per stream; the client grants 16 KiB too.
    client = H2Client(gateway.port, window=16 * 1024)
    try:
        body = bytes(range(256)) * (8 * MB // 256)
        result = client.wait(client.request("/sink", method="POST", body=body), timeout=60)
        assert echo(result) == {"length": len(body), "sha256": hashlib.sha256(body).hexdigest()}
        download = client.get(f"/bytes?size={8 * MB}", timeout=60)
        assert download.status == 200 and len(download.body) == 8 * MB
    finally:
        client.close()


def test_request_body_is_acknowledged_only_as_the_upstream_takes_it(gateway):
    # An upstream that reads the head and never the body: the client's window must close.
    async def never_reads_the_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        await read_request_head(reader)
        await asyncio.sleep(30)

    stuck = RawUpstream(never_reads_the_body)
    process = GatewayProcess(h2_config(stuck.url))
    client = H2Client(process.port)
    try:
        size = 256 * MB
        stream_id = client.request(
            "/upload", method="POST", headers=[("content-length", str(size))], end=False
        )
        sent = 0
        chunk = b"u" * 16384
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < 2.0 and sent < size:
            if client.streams[stream_id].done:
                break  # the gateway gave up on the stalled body (408): nothing more to send
            if client.conn.local_flow_control_window(stream_id) >= len(chunk):
                client.conn.send_data(stream_id, chunk)
                client.flush()
                sent += len(chunk)
                quiet_since = time.monotonic()
            else:
                with contextlib.suppress(TimeoutError):
                    client.read_once(timeout=0.2)
        # Loopback socket buffers take a few MiB; everything else waits at the client.
        assert sent < 32 * MB, f"the gateway acknowledged {sent} bytes nobody read"
        print(f"acknowledged before the window closed: {sent} bytes")
    finally:
        client.close()
        process.stop()
        stuck.stop()


def test_a_client_that_never_opens_its_window_is_reset(gateway):
    stalled = H2Client(gateway.port, window=0, auto_ack=False)
    try:
        stream_id = stalled.request(f"/bytes?size={32 * MB}")
        started = time.monotonic()
        result = stalled.wait(stream_id, timeout=15)
        assert result.reset == ErrorCodes.CANCEL
        assert 1.5 < time.monotonic() - started < 12
        # Meanwhile and after, others are served.
        other = H2Client(gateway.port)
        assert other.get("/echo/other").status == 200
        other.close()
    finally:
        stalled.close()


def test_rst_stream_cancels_the_upstream_call(gateway, upstream):
    client = H2Client(gateway.port)
    try:
        stream_id = client.request("/hang/cancel-me", headers=[("x-request-id", "h2-cancel-1")])
        deadline = time.monotonic() + 5
        while upstream.hits["/hang/cancel-me"] == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        client.conn.reset_stream(stream_id, ErrorCodes.CANCEL)
        client.flush()
        gateway.wait_for(
            lambda: any(e["request_id"] == "h2-cancel-1" for e in gateway.access_log()), 5
        )
        line = next(e for e in gateway.access_log() if e["request_id"] == "h2-cancel-1")
        assert line["status"] == 499 and line["protocol"] == "HTTP/2"
        assert client.get("/echo/after-cancel").status == 200
    finally:
        client.close()


def test_every_stream_is_logged_with_its_protocol_and_id(gateway, client):
    ids = [client.request("/echo/log", headers=[("x-request-id", f"h2-log-{i}")]) for i in range(5)]
    for stream_id in ids:
        assert client.wait(stream_id).status == 200
    wanted = {f"h2-log-{i}" for i in range(5)}
    gateway.wait_for(lambda: wanted <= {e["request_id"] for e in gateway.access_log()}, 5)
    lines = [e for e in gateway.access_log() if e["request_id"] in wanted]
    assert len(lines) == 5 and {e["protocol"] for e in lines} == {"HTTP/2"}


def test_unrouted_paths_get_problem_json_per_stream(upstream):
    config = h2_config(upstream.url)
    config["routes"] = [{"name": "only", "match": {"prefix": "/only"}, "service": "up"}]
    process = GatewayProcess(config)
    client = H2Client(process.port)
    try:
        missing, found = client.request("/nowhere"), client.request("/only/x")
        result = client.wait(missing)
        assert result.status == 404
        assert result.header(b"content-type") == b"application/problem+json"
        assert (
            json.loads(bytes(result.body))["request_id"] == result.header(b"x-request-id").decode()
        )
        assert client.wait(found).status == 200
    finally:
        client.close()
        process.stop()


def test_shutdown_sends_goaway_and_finishes_open_streams(upstream):
    process = GatewayProcess(h2_config(upstream.url))
    client = H2Client(process.port)
    try:
        slow = client.request("/slow?delay=1.5")
        time.sleep(0.3)
        process.signal(signal.SIGTERM)
        result = client.wait(slow, timeout=15)
        assert result.status == 200 and json.loads(bytes(result.body)) == {"slow": True}
        assert client.goaway is not None and client.goaway.error_code == ErrorCodes.NO_ERROR
        assert client.goaway.last_stream_id == slow
        client.wait_closed()
    finally:
        client.close()
        process.stop()


def test_an_idle_connection_is_closed_with_goaway(upstream):
    config = h2_config(upstream.url)
    config["server"]["timeouts"] = {"keepalive": "1s"}  # type: ignore[index]
    process = GatewayProcess(config)
    client = H2Client(process.port)
    try:
        assert client.get("/echo/idle").status == 200
        started = time.monotonic()
        client.wait_closed(timeout=10)
        assert client.goaway is not None and client.goaway.error_code == ErrorCodes.NO_ERROR
        assert 0.5 < time.monotonic() - started < 6
    finally:
        client.close()
        process.stop()


def test_with_http2_off_the_preface_is_not_understood(upstream):
    config = h2_config(upstream.url)
    config["server"] = {"http2": {"enabled": False}}
    process = GatewayProcess(config)
    try:
        answer = send_raw(process.port, PREFACE)
        assert re.match(rb"HTTP/1\.1 (400|505) ", answer), answer[:80]
    finally:
        process.stop()


def test_a_window_opened_a_byte_at_a_time_does_not_keep_a_stream_alive(gateway):
    trickle = H2Client(gateway.port, window=0, auto_ack=False)
    try:
        stream_id = trickle.request(f"/bytes?size={8 * MB}")
        started = time.monotonic()
        result = trickle.streams[stream_id]
        while not result.done and time.monotonic() - started < 15:
            trickle.conn.increment_flow_control_window(1, stream_id=stream_id)
            trickle.conn.increment_flow_control_window(1)
            trickle.flush()
            with contextlib.suppress(TimeoutError):
                trickle.read_once(timeout=0.3)
        assert result.reset == ErrorCodes.CANCEL
        assert time.monotonic() - started < 12
    finally:
        trickle.close()
