"""Redis going away under a running gateway: `allow` admits, `deny` answers 503, nothing
waits longer than the store timeout, and the gateway recovers by itself.

The Redis here is a real redis-server of the test's own on a free port, stopped and
started again by the test: stopping the shared one on 6379 would break any other
suite running on the machine at the same time.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest

from tests.support.net import free_port, request, wait_for_port

TIMEOUT = 0.2


class RedisServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="potok-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                shutil.which("redis-server") or "redis-server",
                "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
                "--appendonly", "no", "--dir", self.dir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            self.process.wait(10)
        self.process = None

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.stop()
    shutil.rmtree(server.dir, ignore_errors=True)


def timed(port: int, path: str) -> tuple[int, float, str | None]:
    started = time.monotonic()
    response = request(port, "GET", path, timeout=5)
    return response.status, time.monotonic() - started, response.header("Retry-After")


def wait_until(port: int, path: str, status: int, limit: float = 10.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if request(port, "GET", path).status == status:
            return
        time.sleep(0.1)
    raise AssertionError(f"{path} never answered {status}")


def test_store_down_allow_and_deny_then_recovery(upstream, start_gateway, redis_server):
    def route(name: str, on_error: str) -> dict[str, object]:
        return {
            "name": name,
            "match": {"prefix": f"/{name}"},
            "service": "up",
            "policies": {
                "rate_limit": {
                    "limit": 1000, "window": "60s", "store": "redis", "on_store_error": on_error,
                }
            },
        }  # fmt: skip

    config = {
        "services": {"up": {"targets": [upstream.url]}},
        "routes": [route("open", "allow"), route("closed", "deny")],
        "redis": {
            "url": f"redis://127.0.0.1:{redis_server.port}/0",
            "timeout": f"{int(TIMEOUT * 1000)}ms",
            "retry_interval": "500ms",
        },
    }
    gateway = start_gateway(config)
    assert timed(gateway.port, "/open")[0] == 200
    assert timed(gateway.port, "/closed")[0] == 200

    # Stopped: connections are refused at once.
    redis_server.stop()
    for _ in range(3):
        status, took, _ = timed(gateway.port, "/open")
        assert status == 200 and took < TIMEOUT + 0.5
        status, took, retry_after = timed(gateway.port, "/closed")
        assert status == 503 and retry_after == "1" and took < TIMEOUT + 0.5

    # Restarted on the same port: recovery without touching the gateway.
    redis_server.start()
    wait_until(gateway.port, "/closed", 200)

    # Hung (SIGSTOP: connections open, no answers): every request still ends in time.
    redis_server.pause()
    try:
        for _ in range(3):
            status, took, _ = timed(gateway.port, "/open")
            assert status == 200 and took < TIMEOUT + 0.5
            status, took, _ = timed(gateway.port, "/closed")
            assert status == 503 and took < TIMEOUT + 0.5
    finally:
        redis_server.resume()
    wait_until(gateway.port, "/closed", 200)

    metrics = request(gateway.port, "GET", "/api/v1/metrics").body.decode()
    assert 'result="error_allowed",route="open"' in metrics
    assert 'result="error_denied",route="closed"' in metrics
    assert "rate_limit_store_errors_total" in metrics
    gateway.stop()
    logged = (gateway.dir / "stdout.log").read_text() + gateway.stderr()
    # Two outages within the log interval: one line, not one per failed request.
    assert logged.count("rate limit store unavailable") == 1
