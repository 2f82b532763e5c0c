"""Stop and restart the real NATS and Redis servers (bus-outage tests). Always restarted:
other tests use the same servers, so an outage is kept short and ends in `finally`."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

NATS_START = [
    "start-stop-daemon", "--start", "--oknodo", "--background", "--exec", "/usr/sbin/nats-server",
    "--", "-a", "127.0.0.1", "-p", "4222", "-js", "-sd", "/var/lib/nats-server",
    "-l", "/var/log/nats-server.log",
]  # fmt: skip
NATS_STOP = ["start-stop-daemon", "--stop", "--oknodo", "--retry", "10", "--exec", "/usr/sbin/nats-server"]  # fmt: skip
REDIS_START = [
    "redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", "6379",
    "--save", "", "--appendonly", "no", "--dir", "/var/lib/redis",
    "--logfile", "/var/log/redis/ci.log",
]  # fmt: skip
REDIS_STOP = ["redis-cli", "-p", "6379", "shutdown", "nosave"]


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def _wait(port: int, open_: bool, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while port_open(port) != open_:
        if time.monotonic() > deadline:
            raise TimeoutError(f"port {port} did not {'open' if open_ else 'close'}")
        time.sleep(0.05)


@contextmanager
def service_down(name: str) -> Iterator[None]:
    """`nats` or `redis` is stopped inside the block and running again after it."""
    port, stop, start = (
        (4222, NATS_STOP, NATS_START) if name == "nats" else (6379, REDIS_STOP, REDIS_START)
    )
    try:
        subprocess.run(stop, check=False, capture_output=True, timeout=30)
        _wait(port, open_=False)
        yield
    finally:
        if not port_open(port):
            subprocess.run(start, check=True, capture_output=True, timeout=30)
        _wait(port, open_=True)
