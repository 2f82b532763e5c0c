"""The process side of the gateway through real sockets: the listen backlog and connection
storms, replacing a killed worker, one gateway per port, shedding load under overload."""

from __future__ import annotations

import asyncio
import resource
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import uvloop
import yaml

from tests.integration.test_lifecycle import metric, workers_of
from tests.support.gateway import GatewayProcess, simple_config
from tests.support.net import ResponseReader, build_request, connect, request

SOMAXCONN = int(Path("/proc/sys/net/core/somaxconn").read_text())


def listen_queues(port: int) -> list[int]:
    """Send-Q of each socket listening on `port`: for a listener, its backlog."""
    out = subprocess.run(
        ["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout
    return sorted(int(line.split()[2]) for line in out.splitlines() if line.strip())


def raise_open_files(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < wanted:
        pytest.fail(f"this test needs {wanted} open files; the hard limit is {hard}")


def _retransmissions(sock: socket.socket) -> int:
    """tcpi_total_retrans from TCP_INFO: segments this connection sent again, SYNs too."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    return int(struct.unpack_from("I", info, 100)[0])


async def _exchange(port: int, path: str, rounds: int) -> tuple[list[int], int]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    statuses = []
    try:
        for _ in range(rounds):
            writer.write(build_request("GET", path))
            head = await reader.readuntil(b"\r\n\r\n")
            statuses.append(int(head.split(b" ", 2)[1]))
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
        return statuses, _retransmissions(writer.get_extra_info("socket"))
    finally:
        writer.close()


def storm(port: int, connections: int, path: str, rounds: int = 1) -> tuple[float, list[int], int]:
    """Open `connections` at once, each asking `rounds` requests: seconds until all were
    answered, the statuses, and how many connections had to retransmit anything."""

    async def run() -> tuple[float, list[int], int]:
        started = time.monotonic()
        results = await asyncio.wait_for(
            asyncio.gather(*(_exchange(port, path, rounds) for _ in range(connections))), 60
        )
        elapsed = time.monotonic() - started
        statuses = [status for answered, _ in results for status in answered]
        return elapsed, statuses, sum(1 for _, retransmitted in results if retransmitted)

    # uvloop: the client must not be the bottleneck of what is measured.
    return uvloop.run(run())


def only_route(upstream_url: str) -> dict[str, Any]:
    """A route on /only: anything else is a 404 the gateway answers itself (cheap)."""
    return {
        "services": {"up": {"targets": [upstream_url]}},
        "routes": [{"name": "only", "match": {"prefix": "/only"}, "service": "up"}],
    }


# Item 26: the listen backlog ------------------------------------------------------------


def test_the_listen_backlog_is_the_configured_one(upstream):
    gateway = GatewayProcess(simple_config(upstream.url))
    try:
        assert listen_queues(gateway.port) == [2048]  # the default, not the event loop's 100
    finally:
        gateway.stop()
    config = simple_config(upstream.url)
    config["server"] = {"backlog": 3000}
    gateway = GatewayProcess(config, workers=2)
    try:
        assert listen_queues(gateway.port) == [3000, 3000]  # one queue per worker
    finally:
        gateway.stop()


def test_a_backlog_over_somaxconn_is_capped_with_a_warning(upstream):
    config = simple_config(upstream.url)
    config["server"] = {"backlog": SOMAXCONN + 1}
    gateway = GatewayProcess(config)
    try:
        assert listen_queues(gateway.port) == [SOMAXCONN]
        output = gateway.stderr() + gateway.stdout_path.read_text()
        assert "listen backlog capped by the kernel" in output
        assert str(SOMAXCONN + 1) in output
    finally:
        gateway.stop()


def test_five_thousand_connections_opened_at_once_are_all_answered_within_seconds(upstream):
    connections = 5000
    raise_open_files(connections + 500)
    gateway = GatewayProcess(only_route(upstream.url))  # the default backlog
    try:
        elapsed, statuses, retransmitted = storm(gateway.port, connections, "/storm")
        print(f"\n{connections} connections answered in {elapsed:.2f} s, {retransmitted} retried")
        assert statuses == [404] * connections
        # A SYN dropped because the accept queue was full is sent again by the client's
        # kernel 1 s later (then 3 s, 7 s...): none may have been needed.
        assert retransmitted == 0
        assert elapsed < 5.0
    finally:
        gateway.stop()


# Item 11: a killed worker is replaced within 1.5 s ---------------------------------------


def _served_by(sock: socket.socket, candidates: list[psutil.Process]) -> int | None:
    """Which process holds the gateway's end of this client connection."""
    client_port = sock.getsockname()[1]
    for process in candidates:
        try:
            for conn in process.net_connections(kind="tcp"):
                if conn.raddr and conn.raddr.port == client_port:
                    return process.pid
        except psutil.NoSuchProcess:
            continue
    return None


def test_a_killed_worker_is_serving_again_within_one_and_a_half_seconds(upstream):
    gateway = GatewayProcess(simple_config(upstream.url), workers=2)
    try:
        gateway.wait_for(lambda: len(workers_of(gateway)) == 2, timeout=10)
        for _ in range(20):  # both workers are up and serving
            assert request(gateway.port, "GET", "/api/v1/health/liveness").status == 200
        victim, survivor = workers_of(gateway)
        killed_at = time.monotonic()
        victim.kill()
        served_after = None
        while time.monotonic() - killed_at < 10 and served_after is None:
            fresh = [c for c in workers_of(gateway) if c.pid not in (victim.pid, survivor.pid)]
            if not fresh:
                time.sleep(0.005)
                continue
            with connect(gateway.port, timeout=10) as sock:
                sock.sendall(build_request("GET", "/api/v1/health/liveness"))
                assert ResponseReader(sock).read().status == 200
                if _served_by(sock, [*fresh, survivor]) == fresh[0].pid:
                    served_after = time.monotonic() - killed_at
        assert served_after is not None, "no new worker answered within 10 s"
        print(f"\na new worker answered {served_after:.3f} s after the kill")
        assert served_after <= 1.5
    finally:
        gateway.stop()


# Issue 14: one gateway per port -----------------------------------------------------------


def _run_second(port: int, tmp_path: Path, workers: int) -> subprocess.CompletedProcess[str]:
    config_path = tmp_path / "second.yaml"
    # No routes: had it shared the port, its share of the requests would be 404s.
    config_path.write_text(
        yaml.safe_dump({"server": {"host": "127.0.0.1", "port": port, "workers": workers}})
    )
    return subprocess.run(
        [sys.executable, "-m", "potok", "run", "--config", str(config_path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(("first_workers", "second_workers"), [(1, 1), (2, 2), (2, 1)])
def test_a_second_gateway_on_a_port_in_use_refuses_to_start(
    upstream, tmp_path, first_workers, second_workers
):
    first = GatewayProcess(simple_config(upstream.url), workers=first_workers)
    try:
        second = _run_second(first.port, tmp_path, second_workers)
        output = second.stdout + second.stderr
        assert second.returncode != 0
        assert f"port {first.port}" in output and "already in use" in output
        assert "Traceback" not in output
        for _ in range(100):  # fresh connections: every one reaches the first gateway
            assert request(first.port, "GET", "/echo").status == 200
        assert first.process.poll() is None
    finally:
        assert first.stop() == 0


def test_a_port_held_by_another_program_is_refused_even_with_so_reuseport(tmp_path):
    other = socket.socket()
    other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    other.bind(("127.0.0.1", 0))
    other.listen()
    try:
        port = other.getsockname()[1]
        result = _run_second(port, tmp_path, 1)
        output = result.stdout + result.stderr
        assert result.returncode != 0
        assert f"port {port}" in output and "already in use" in output
        assert "Traceback" not in output
    finally:
        other.close()


# Item 10: overload -----------------------------------------------------------------------


def _timed(port: int, path: str) -> tuple[float, Any]:
    started = time.monotonic()
    response = request(port, "GET", path, timeout=10)
    return time.monotonic() - started, response


def test_overload_is_shed_with_503_and_retry_after_while_probes_stay_fast(upstream):
    config = simple_config(upstream.url)
    config["server"] = {"overload": {"max_in_flight": 4}}
    gateway = GatewayProcess(config)
    slow: list[int] = []
    holders = [
        threading.Thread(
            target=lambda: slow.append(request(gateway.port, "GET", "/slow?delay=3").status)
        )
        for _ in range(4)
    ]
    try:
        for holder in holders:
            holder.start()
        gateway.wait_for(lambda: upstream.hits["/slow"] >= 4, timeout=5)
        for _ in range(10):
            seconds, response = _timed(gateway.port, "/echo")
            assert response.status == 503
            assert response.header("retry-after") == "1"
            assert response.header("content-type") == "application/problem+json"
            assert seconds < 0.5
        for probe in ("/api/v1/health", "/api/v1/health/liveness", "/api/v1/health/readiness"):
            seconds, response = _timed(gateway.port, probe)
            assert response.status == 200, probe
            assert seconds < 0.5, f"{probe} took {seconds:.2f} s"
        text = request(gateway.port, "GET", "/api/v1/metrics").body.decode()
        assert metric(text, "http_requests_shed_total", reason="in_flight") == 10
        for holder in holders:
            holder.join(10)
        assert slow == [200] * 4  # the admitted ones were not disturbed
        assert request(gateway.port, "GET", "/echo").status == 200  # admitted again
    finally:
        gateway.stop()


def _client_connections(worker: psutil.Process, port: int) -> list[Any]:
    return [
        c
        for c in worker.net_connections(kind="tcp")
        if c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED
    ]


def test_a_second_identical_connection_run_does_not_grow_worker_memory(upstream):
    connections = 1000
    raise_open_files(connections + 500)
    gateway = GatewayProcess(simple_config(upstream.url))
    try:
        worker = psutil.Process(gateway.process.pid)
        rss = [worker.memory_info().rss]
        for _ in range(4):
            _, statuses, _ = storm(gateway.port, connections, "/echo", rounds=3)
            assert statuses == [200] * (3 * connections)
            gateway.wait_for(lambda: not _client_connections(worker, gateway.port), timeout=10)
            time.sleep(0.5)
            rss.append(worker.memory_info().rss)
        mib = [round(value / 2**20, 1) for value in rss]
        print(f"\nworker RSS before and after each run (MiB): {mib}")
        # Closed connections are freed at once, not left as cyclic garbage: later runs
        # reuse the memory the first ones took. The allocator's arenas may still settle
        # by a few MiB over the second run (seen: +3.1 MiB, then +0.3), so the claim is
        # on the last two runs: a leak of even 1 KiB per connection would add 2 MiB there.
        assert rss[4] - rss[2] < 2 * 2**20, mib
    finally:
        gateway.stop()
