"""A client that stops reading is cut off with 1013; the gateway's memory stays bounded while
100 MB of events go out, and a fast client on the same channel gets every one of them."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct

import psutil

from tests.support.gateway import GatewayProcess
from tests.support.net import request
from tests.support.realtime import Client, publish, realtime_config, token

EVENT_BYTES = 100_000
EVENTS = 1000  # 100 MB in all
BATCH = 10


def _masked_text(payload: bytes) -> bytes:
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    length = len(payload)
    head = (
        bytes([0x81, 0x80 | length])
        if length < 126
        else bytes([0x81, 0xFE]) + struct.pack("!H", length)
    )
    return head + mask + masked


def _read_frames(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Complete server frames in `data` (opcode, payload), and the incomplete rest."""
    frames = []
    while len(data) >= 2:
        opcode, length, at = data[0] & 0x0F, data[1] & 0x7F, 2
        if length == 126:
            if len(data) < 4:
                break
            length, at = struct.unpack("!H", data[2:4])[0], 4
        elif length == 127:
            if len(data) < 10:
                break
            length, at = struct.unpack("!Q", data[2:10])[0], 10
        if len(data) < at + length:
            break
        frames.append((opcode, data[at : at + length]))
        data = data[at + length :]
    return frames, data


def _slow_client(port: int) -> socket.socket:
    """A raw WebSocket client with a small receive buffer that subscribes, then stops reading."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    sock.connect(("127.0.0.1", port))
    sock.sendall(
        b"GET /api/v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101")
    for message in (
        {"type": "authenticate", "token": token(sub="slow")},
        {"type": "subscribe", "channel": "public:flood"},
    ):
        sock.sendall(_masked_text(json.dumps(message).encode()))
    buffered = b""
    kinds: list[str] = []
    while "subscribed" not in kinds:
        buffered += sock.recv(65536)
        frames, buffered = _read_frames(buffered)
        kinds += [json.loads(p)["type"] for op, p in frames if op == 1]
    return sock


async def test_slow_consumer_is_cut_off_with_1013_and_memory_stays_bounded():
    config = realtime_config(limits={"send_buffer": "256KiB", "close_timeout": "30s"})
    gateway = GatewayProcess(config)
    try:
        process = psutil.Process(gateway.process.pid)
        fast = await Client.open(gateway.port, max_size=None)
        await fast.authenticate(token(sub="fast"))
        await fast.subscribe("public:flood")
        slow = _slow_client(gateway.port)
        warm = publish(
            gateway.port, {"channel": "public:warm", "type": "t", "data": "x" * EVENT_BYTES}
        )
        assert warm.status == 202
        rss_before = process.memory_info().rss

        received = 0

        async def consume() -> None:
            nonlocal received
            while received < EVENTS:
                message = await fast.recv(timeout=30)
                if message["type"] == "event":
                    received += 1

        consumer = asyncio.create_task(consume())
        data = "x" * EVENT_BYTES
        peak = rss_before
        for start in range(0, EVENTS, BATCH):
            batch = [
                {"channel": "public:flood", "type": "bulk", "data": data, "id": f"f{start + i}"}
                for i in range(BATCH)
            ]
            response = await asyncio.to_thread(publish, gateway.port, *batch)
            assert response.status == 202
            peak = max(peak, process.memory_info().rss)
        await asyncio.wait_for(consumer, 60)
        rss_after = process.memory_info().rss

        assert received == EVENTS  # the fast client is not held back by the slow one
        # 100 MB went out; the slow client may hold at most its 256 KiB send buffer.
        growth = max(peak, rss_after) - rss_before
        print(
            f"gateway RSS {rss_before / 1e6:.1f} MB -> peak {peak / 1e6:.1f} MB, after {rss_after / 1e6:.1f} MB"
        )
        assert growth < 40 * 1024 * 1024, f"RSS grew by {growth / 1e6:.1f} MB"

        # The slow client, reading again, finds the buffered events and then a 1013 close.
        slow.settimeout(10)
        buffered = b""
        close_code = None
        while close_code is None:
            chunk = slow.recv(1 << 20)
            assert chunk, "connection ended without a close frame"
            frames, buffered = _read_frames(buffered + chunk)
            for opcode, payload in frames:
                if opcode == 8:
                    close_code = struct.unpack("!H", payload[:2])[0]
        assert close_code == 1013
        slow.close()

        metrics = request(gateway.port, "GET", "/api/v1/metrics").body.decode()
        assert 'websocket_slow_consumer_disconnects_total{transport="websocket"} 1.0' in metrics
        await fast.close()
    finally:
        gateway.stop()


def _slow_consumer_count(port: int) -> float:
    metrics = request(port, "GET", "/api/v1/metrics").body.decode()
    for line in metrics.splitlines():
        if line.startswith('websocket_slow_consumer_disconnects_total{transport="websocket"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_a_slow_consumer_that_reads_slowly_hears_1013():
    """The close frame is not stuck behind the megabyte the client did not read: the
    queue is dropped and the close frame goes out first, behind only what the kernel
    holds already; a client that reads slowly (32 KiB every 0.1 s) gets it, though that
    takes longer than the default 5 s close timeout (the connection is dropped only when
    its client stops reading for that long)."""
    gateway = GatewayProcess(realtime_config())  # send_buffer 1 MiB, close_timeout 5 s
    try:
        slow = _slow_client(gateway.port)
        data = "x" * 50_000
        for start in range(0, 200, BATCH):  # 10 MB while the client reads nothing
            batch = [
                {"channel": "public:flood", "type": "bulk", "data": data, "id": f"s{start + i}"}
                for i in range(BATCH)
            ]
            assert (await asyncio.to_thread(publish, gateway.port, *batch)).status == 202
            if _slow_consumer_count(gateway.port):
                break
        await asyncio.to_thread(gateway.wait_for, lambda: _slow_consumer_count(gateway.port), 10)
        cut_off_at = asyncio.get_running_loop().time()
        slow.setblocking(False)
        buffered = b""
        close_code = None
        read = 0
        while close_code is None:
            await asyncio.sleep(0.1)
            try:
                chunk = slow.recv(32768)
            except BlockingIOError:
                continue
            except ConnectionResetError:
                break
            if not chunk:
                break
            read += len(chunk)
            frames, buffered = _read_frames(buffered + chunk)
            close_code = next((struct.unpack("!H", p[:2])[0] for o, p in frames if o == 8), None)
        waited = asyncio.get_running_loop().time() - cut_off_at
        print(f"read {read} bytes in {waited:.1f} s before the close frame")
        assert close_code == 1013, f"no close frame after {read} bytes and {waited:.1f} s"
        slow.close()
    finally:
        gateway.stop()
