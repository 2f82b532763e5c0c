"""The known HTTP/2 attacks, tried through raw sockets against the real gateway.

Each speaks frames crafted with hyperframe and hpack (no client library that would refuse
to misbehave), checks the gateway's answer (GOAWAY with the right code, the connection
closed, upstream work cancelled), and checks that a normal client is served during and
after the attack."""

from __future__ import annotations

import contextlib
import re
import socket
import time
import urllib.request

import pytest
from h2.errors import ErrorCodes
from hpack import Encoder
from hpack.hpack import encode_integer
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
)

from tests.support.gateway import GatewayProcess
from tests.support.h2client import PREFACE, H2Client, read_frames


@pytest.fixture(scope="module")
def gateway(upstream):
    config = {
        "services": {"up": {"targets": [upstream.url]}},
        "routes": [{"name": "all", "match": {"prefix": "/"}, "service": "up"}],
    }
    process = GatewayProcess(config)
    yield process
    process.stop()


def attacker(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(PREFACE + SettingsFrame(0).serialize())
    return sock


def request_block(encoder: Encoder, path: str) -> bytes:
    return encoder.encode(
        [(":method", "GET"), (":scheme", "http"), (":authority", "localhost"), (":path", path)]
    )


def headers(stream_id: int, block: bytes, *, end_headers: bool = True) -> HeadersFrame:
    flags = {"END_STREAM"} | ({"END_HEADERS"} if end_headers else set())
    return HeadersFrame(stream_id, data=block, flags=flags)


def goaway(frames: list[Frame]) -> GoAwayFrame:
    found = [f for f in frames if isinstance(f, GoAwayFrame)]
    assert found, f"no GOAWAY among {[type(f).__name__ for f in frames]}"
    return found[-1]


def served(port: int) -> bool:
    """A normal client, on a connection of its own, gets its answer."""
    client = H2Client(port, timeout=10)
    try:
        return client.get("/echo/normal", timeout=10).status == 200
    finally:
        client.close()


def in_flight(gateway: GatewayProcess) -> float:
    with urllib.request.urlopen(f"{gateway.url}/api/v1/metrics", timeout=10) as response:
        text = response.read().decode()
    match = re.search(r"^http_requests_in_flight(?:\{[^}]*\})? (\S+)$", text, re.MULTILINE)
    assert match is not None
    return float(match.group(1))


def test_settings_announce_the_limits(gateway):
    sock = attacker(gateway.port)
    try:
        frames = read_frames(sock, until_close=False, timeout=5)
        settings = next(f for f in frames if isinstance(f, SettingsFrame) and not f.flags)
        assert settings.settings[SettingsFrame.MAX_CONCURRENT_STREAMS] == 100
        assert settings.settings[SettingsFrame.MAX_HEADER_LIST_SIZE] == 32768
        assert settings.settings[SettingsFrame.ENABLE_PUSH] == 0
    finally:
        sock.close()


def test_rapid_reset_is_cut_off_and_its_upstream_calls_cancelled(gateway, upstream):
    """CVE-2023-44487: open a stream and cancel it at once, thousands of times."""
    encoder = Encoder()
    sock = attacker(gateway.port)
    hits_before = upstream.hits["/hang/rapid"]
    try:
        # First a few that surely reach the upstream before their reset...
        stream_id = 1
        for _ in range(5):
            sock.sendall(headers(stream_id, request_block(encoder, "/hang/rapid")).serialize())
            time.sleep(0.1)
            sock.sendall(RstStreamFrame(stream_id, error_code=ErrorCodes.CANCEL).serialize())
            stream_id += 2
        # ...then the flood, in bursts, a normal client served between them.
        for burst in range(10):
            frames = []
            for _ in range(100):
                frames.append(headers(stream_id, request_block(encoder, "/hang/rapid")))
                frames.append(RstStreamFrame(stream_id, error_code=ErrorCodes.CANCEL))
                stream_id += 2
            try:
                sock.sendall(b"".join(f.serialize() for f in frames))
            except (BrokenPipeError, ConnectionResetError):
                break  # cut off
            if burst % 3 == 0:
                assert served(gateway.port)
        frames = read_frames(sock)
        assert goaway(frames).error_code == ErrorCodes.ENHANCE_YOUR_CALM
    finally:
        sock.close()
    assert upstream.hits["/hang/rapid"] > hits_before  # some did start upstream work...
    # ...and none of it is left running: every call was cancelled with its stream.
    deadline = time.monotonic() + 5
    while in_flight(gateway) > 1 and time.monotonic() < deadline:  # 1: the scrape itself
        time.sleep(0.1)
    assert in_flight(gateway) <= 1
    assert served(gateway.port)


def test_continuation_flood_is_bounded(gateway):
    """CVE-2024-27316: a header block that never ends, in CONTINUATION frames."""
    sock = attacker(gateway.port)
    try:
        sock.sendall(headers(1, b"", end_headers=False).serialize())
        junk = b"\x00" * 16_000
        for _ in range(8):  # 128 kB: past the 32 KiB bound, under h2's 64-frame one
            try:
                sock.sendall(ContinuationFrame(1, data=junk).serialize())
            except (BrokenPipeError, ConnectionResetError):
                break
        assert goaway(read_frames(sock)).error_code == ErrorCodes.ENHANCE_YOUR_CALM
    finally:
        sock.close()
    assert served(gateway.port)


def test_continuation_flood_of_tiny_frames_is_bounded(gateway):
    sock = attacker(gateway.port)
    try:
        sock.sendall(headers(1, b"", end_headers=False).serialize())
        frames = b"".join(ContinuationFrame(1, data=b"\x00").serialize() for _ in range(500))
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(frames)
        assert goaway(read_frames(sock)).error_code != ErrorCodes.NO_ERROR
    finally:
        sock.close()
    assert served(gateway.port)


def test_hpack_bomb_is_refused(gateway):
    """A 4 kB header put into the dynamic table once, then referenced by one byte each."""
    encoder = Encoder()
    sock = attacker(gateway.port)
    try:
        first = encoder.encode(
            [
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/echo/bomb"),
                (":authority", "localhost"),
                ("x-bomb", "a" * 4000),
            ]
        )
        sock.sendall(headers(1, first).serialize())
        # Static :method GET, :scheme http, :path /; dynamic 63 (:authority), 62 (x-bomb) x 1000:
        # 4 MB decoded from a 1 kB block.
        bomb = b"\x82\x86\x84\xbf" + b"\xbe" * 1000
        sock.sendall(headers(3, bomb).serialize())
        assert goaway(read_frames(sock)).error_code == ErrorCodes.ENHANCE_YOUR_CALM
    finally:
        sock.close()
    assert served(gateway.port)


def test_hpack_table_larger_than_announced_is_refused(gateway):
    sock = attacker(gateway.port)
    try:
        update = encode_integer(1024 * 1024, 5)
        update[0] |= 0x20  # a dynamic table size update to 1 MiB (we announced 4 KiB)
        sock.sendall(headers(1, bytes(update) + b"\x82\x86\x84").serialize())
        # RFC 9113 says COMPRESSION_ERROR; h2 reports every HPACK failure as PROTOCOL_ERROR.
        code = goaway(read_frames(sock)).error_code
        assert code in (ErrorCodes.COMPRESSION_ERROR, ErrorCodes.PROTOCOL_ERROR)
    finally:
        sock.close()
    assert served(gateway.port)


@pytest.mark.parametrize(
    ("name", "frame"),
    [
        ("settings", SettingsFrame(0)),
        ("ping", PingFrame(0, opaque_data=b"12345678")),
    ],
)
def test_control_frame_floods_are_cut_off(gateway, name, frame):
    sock = attacker(gateway.port)
    try:
        flood = frame.serialize() * 2000
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(flood)
        assert served(gateway.port)  # while the flood is being dealt with
        assert goaway(read_frames(sock)).error_code == ErrorCodes.ENHANCE_YOUR_CALM, name
    finally:
        sock.close()
    assert served(gateway.port)


def test_empty_data_frame_flood_is_cut_off(gateway):
    encoder = Encoder()
    sock = attacker(gateway.port)
    try:
        block = encoder.encode(
            [
                (":method", "POST"),
                (":scheme", "http"),
                (":authority", "localhost"),
                (":path", "/sink"),
            ]
        )
        sock.sendall(HeadersFrame(1, data=block, flags={"END_HEADERS"}).serialize())
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(DataFrame(1, data=b"").serialize() * 2000)
        assert goaway(read_frames(sock)).error_code == ErrorCodes.ENHANCE_YOUR_CALM
    finally:
        sock.close()
    assert served(gateway.port)


def test_streams_past_the_announced_limit_are_refused(gateway, upstream):
    """More than max_concurrent_streams (100) at once: the connection is refused (h2 makes
    it a connection error), the streams' upstream calls cancelled, others served."""
    encoder = Encoder()
    sock = attacker(gateway.port)
    try:
        frames = [headers(1 + 2 * i, request_block(encoder, "/hang/many")) for i in range(101)]
        sock.sendall(b"".join(f.serialize() for f in frames))
        assert goaway(read_frames(sock)).error_code == ErrorCodes.PROTOCOL_ERROR
    finally:
        sock.close()
    assert served(gateway.port)


def test_provoked_resets_count_like_the_clients_own(gateway):
    """Malformed requests make the server reset the stream (CVE-2025-8671, "MadeYouReset"):
    they are bounded by the same budget as the client's resets."""
    encoder = Encoder()
    sock = attacker(gateway.port)
    try:
        frames = []
        for i in range(400):
            block = encoder.encode(
                [
                    (":method", "GET"),
                    (":scheme", "http"),
                    (":authority", "localhost"),
                    (":path", "/echo/provoked"),
                    ("connection", "keep-alive"),  # malformed on HTTP/2: a stream error
                ]
            )
            frames.append(headers(1 + 2 * i, block))
        try:
            # In bursts under the stream limit (within one read, h2 counts them all open).
            for start in range(0, len(frames), 50):
                sock.sendall(b"".join(f.serialize() for f in frames[start : start + 50]))
                time.sleep(0.02)
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert goaway(read_frames(sock)).error_code == ErrorCodes.ENHANCE_YOUR_CALM
    finally:
        sock.close()
    assert served(gateway.port)


def test_health_and_metrics_over_http2(gateway):
    """The own API (the ASGI bridge) answers on streams too, and counts them."""
    client = H2Client(gateway.port)
    try:
        assert client.get("/api/v1/health").status == 200
        metrics = client.get("/api/v1/metrics")
        assert metrics.status == 200 and b"http_requests_total" in metrics.body
    finally:
        client.close()
