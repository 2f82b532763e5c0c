"""Bodies far larger than any buffer stream through both ways with flat memory."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time

import psutil
import pytest

from tests.support.gateway import GatewayProcess, simple_config
from tests.support.net import ResponseReader, build_request, connect
from tests.support.upstream import RawUpstream, read_request_head

MB = 1024 * 1024
SIZE = 200 * MB


@pytest.fixture(scope="module")
def gateway(upstream):
    config = simple_config(
        upstream.url, policies={"request_size": {"max_bytes": "1GiB"}}, timeouts={"request": "120s"}
    )
    config["services"]["up"]["timeouts"] = {"response": "60s"}
    process = GatewayProcess(config)
    yield process
    process.stop()


def rss(gateway: GatewayProcess) -> int:
    return int(psutil.Process(gateway.process.pid).memory_info().rss)


class PeakRss:
    """Samples the gateway's RSS in the background while a transfer runs."""

    def __init__(self, gateway: GatewayProcess) -> None:
        self.gateway = gateway
        self.peak = rss(gateway)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss(self.gateway))
            time.sleep(0.01)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def warm_up(gateway: GatewayProcess) -> int:
    with connect(gateway.port) as sock:
        sock.sendall(build_request("POST", "/sink", body=b"w" * MB))
        ResponseReader(sock).read()
    return rss(gateway)


def test_200mb_upload_streams_with_flat_memory(gateway):
    baseline = warm_up(gateway)
    block = bytes(range(256)) * 256  # 64 KiB
    digest = hashlib.sha256()
    with PeakRss(gateway) as peak, connect(gateway.port, timeout=60) as sock:
        sock.sendall(f"POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: {SIZE}\r\n\r\n".encode())
        for _ in range(SIZE // len(block)):
            sock.sendall(block)
            digest.update(block)
        response = ResponseReader(sock).read()
    assert response.json() == {"length": SIZE, "sha256": digest.hexdigest()}
    assert peak.peak - baseline < 40 * MB, f"RSS grew by {(peak.peak - baseline) / MB:.1f} MB"


def test_200mb_chunked_upload_streams(gateway):
    baseline = warm_up(gateway)
    block = b"q" * 65536
    with PeakRss(gateway) as peak, connect(gateway.port, timeout=60) as sock:
        sock.sendall(b"POST /sink HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        frame = b"%x\r\n%s\r\n" % (len(block), block)
        for _ in range(SIZE // len(block)):
            sock.sendall(frame)
        sock.sendall(b"0\r\n\r\n")
        response = ResponseReader(sock).read()
    assert response.json()["length"] == SIZE
    assert peak.peak - baseline < 40 * MB


def test_200mb_download_streams_with_flat_memory(gateway):
    baseline = warm_up(gateway)
    with PeakRss(gateway) as peak, connect(gateway.port, timeout=60) as sock:
        sock.sendall(build_request("GET", f"/stream?size={SIZE}&chunk=65536"))
        response = ResponseReader(sock).read()
    assert len(response.body) == SIZE
    assert peak.peak - baseline < 40 * MB


def test_slow_reader_applies_back_pressure_to_upstream(gateway):
    baseline = warm_up(gateway)
    with PeakRss(gateway) as peak, connect(gateway.port, timeout=60) as sock:
        sock.sendall(build_request("GET", f"/stream?size={SIZE}&chunk=65536"))
        time.sleep(2.0)  # read nothing: the gateway must stop reading from the upstream
        stalled_peak = peak.peak
        reader = ResponseReader(sock)
        response = reader.read()
    assert len(response.body) == SIZE
    assert stalled_peak - baseline < 40 * MB
    assert peak.peak - baseline < 40 * MB


def test_upload_to_slow_upstream_applies_back_pressure_to_client(start_gateway):
    """An upstream that reads slowly makes the gateway stop reading the client."""
    import asyncio

    from tests.support.upstream import RawUpstream, read_request_head

    got = {"bytes": 0}

    async def slow_reader(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await read_request_head(reader)
        length = int(
            next(
                line.split(b":")[1]
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            )
        )
        await asyncio.sleep(2.0)  # not reading: TCP buffers fill, then the gateway must pause
        while got["bytes"] < length:
            data = await reader.read(65536)
            if not data:
                break
            got["bytes"] += len(data)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()

    raw = RawUpstream(slow_reader)
    try:
        gateway = start_gateway(
            simple_config(raw.url, policies={"request_size": {"max_bytes": "1GiB"}})
        )
        baseline = warm_up_raw(gateway)
        size = 100 * MB
        with PeakRss(gateway) as peak, connect(gateway.port, timeout=60) as sock:
            sock.sendall(f"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n".encode())
            block = b"u" * 65536
            for _ in range(size // len(block)):
                sock.sendall(block)
            response = ResponseReader(sock).read()
        assert response.status == 200 and got["bytes"] == size
        assert peak.peak - baseline < 40 * MB
    finally:
        raw.stop()


def warm_up_raw(gateway: GatewayProcess) -> int:
    return rss(gateway)


def test_metrics_endpoint_still_answers(gateway):
    with connect(gateway.port) as sock:
        sock.sendall(build_request("GET", "/api/v1/health"))
        assert json.loads(ResponseReader(sock).read().body)["status"] == "ok"


class AnswerBeforeReading:
    """Answers each request at once, then reads (and discards) its body a moment later."""

    def __init__(self) -> None:
        self.lengths: list[int] = []

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await read_request_head(reader)
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
            self.lengths.append(length)
            await asyncio.sleep(0.3)  # the answer is relayed while the body still waits
            await reader.readexactly(length)


@pytest.fixture(scope="module")
def answer_before_reading():
    handler = AnswerBeforeReading()
    raw = RawUpstream(handler)
    yield handler, raw
    raw.stop()


def test_an_upstream_that_answers_before_reading_a_big_body_leaves_the_client_usable(
    answer_before_reading, start_gateway
):
    """The whole body reaches the gateway first (the validate policy holds it), then swamps
    a fresh upstream connection, whose full write buffer pauses reading from the client.
    The upstream answers at once and only then reads the body: the client's next request
    on the same connection must still be read and answered."""
    handler, raw = answer_before_reading
    config = simple_config(
        raw.url,
        policies={"validate": {"body": {"type": "object"}, "max_body_bytes": "16MiB"}},
    )
    config["server"] = {"limits": {"max_body_bytes": "16MiB"}}
    gateway = start_gateway(config)
    body = json.dumps({"pad": "x" * (8 * 1024 * 1024)}).encode()
    with connect(gateway.port, timeout=10) as sock:
        sock.sendall(
            b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body) + body
        )
        reader = ResponseReader(sock)
        assert reader.read().status == 200
        sock.settimeout(5)
        sock.sendall(b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
        assert reader.read().status == 200  # before the fix: never read, the client waited
    assert handler.lengths[0] == len(body)
