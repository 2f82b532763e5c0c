"""What automatic certificates cost: the route lookup of every other request with the
challenge route in the table beside the same table without it (the only per-request
difference), the challenge answer through the real gateway, and a whole order against
Pebble (CA validation through the gateway included). Usage: acme_bench.py WORK_DIR."""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
import uuid
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from potok.acme.config import AcmeConfig  # noqa: E402
from potok.acme.directory_store import DirectoryStore  # noqa: E402
from potok.acme.manager import CertificateManager  # noqa: E402
from potok.config.models import GatewayConfig  # noqa: E402
from potok.runtime import Runtime  # noqa: E402
from tests.support.net import free_port, wait_for_port  # noqa: E402
from tests.support.pebble import Pebble  # noqa: E402

PATHS = (b"/api/orders/123", b"/api/market-data/macro/gdp", b"/")


def _config() -> GatewayConfig:
    return GatewayConfig.model_validate(
        {
            "services": {"up": {"targets": ["http://127.0.0.1:1"]}},
            "routes": [
                {"match": {"path": "/api/orders/{id}"}, "service": "up"},
                {"match": {"prefix": "/api/market-data"}, "service": "up"},
                {"match": {"host": "a.example.com", "prefix": "/"}, "service": "up"},
                {"match": {"prefix": "/"}, "service": "up"},
            ],
        }
    )


def route_lookup_ns() -> tuple[float, float]:
    config = _config()
    tables = {
        "without": Runtime(config).table,
        "with": Runtime(config, acme_terminal=lambda exchange: None).table,
    }
    rounds: dict[str, list[float]] = {"without": [], "with": []}
    number = 20_000
    for _ in range(5):  # interleaved: the machine's drift hits both alike
        for name, table in tables.items():
            match = table.match
            # CPU time of this process: a busy machine's waits do not count.
            seconds = timeit.timeit(
                lambda match=match: [match(b"GET", p, "a.example.com") for p in PATHS],
                number=number,
                timer=time.process_time,
            )
            rounds[name].append(seconds / (number * len(PATHS)) * 1e9)
    return statistics.median(rounds["without"]), statistics.median(rounds["with"])


def _gateway(work: Path, port: int, pebble: Pebble, storage: Path) -> subprocess.Popen[bytes]:
    config: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": port},
        "logging": {"level": "warning", "access_log": {"enabled": False}},
        "acme": {
            "directory_url": pebble.directory_url,
            "ca_bundle": pebble.ca_bundle,
            "storage": "directory",
            "path": str(storage),
        },
    }
    (work / "potok.yaml").write_text(yaml.safe_dump(config))
    log = open(work / "potok.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "potok", "run", "--config", str(work / "potok.yaml")],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    wait_for_port(port, 30)
    return process


async def _orders(pebble: Pebble, storage: Path, count: int) -> list[float]:
    store = DirectoryStore(storage)
    await store.open()
    seconds = []
    for _ in range(count):
        names = (f"{uuid.uuid4().hex[:10]}.potok.test",)
        config = AcmeConfig(
            directory_url=pebble.directory_url,
            ca_bundle=pebble.ca_bundle,
            agree_to_terms=True,
            domains=[names],
            storage="directory",
            path=str(storage),
        )
        manager = CertificateManager(config, store)
        started = time.perf_counter()
        await manager.obtain(names)
        seconds.append(time.perf_counter() - started)
        await manager.stop()
    return seconds


def challenge_answer_ms(port: int, storage: Path) -> float:
    """A challenge answered from the shared storage through the real gateway (a token
    another instance published): one request, median of 200."""
    import http.client  # noqa: PLC0415

    async def publish() -> None:
        store = DirectoryStore(storage)
        await store.open()
        await store.publish_challenge("benchtoken", "benchtoken.thumb", time.time() + 600)

    asyncio.run(publish())
    times = []
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for _ in range(200):
        started = time.perf_counter()
        connection.request("GET", "/.well-known/acme-challenge/benchtoken")
        response = connection.getresponse()
        assert response.status == 200 and response.read() == b"benchtoken.thumb"
        times.append(time.perf_counter() - started)
    connection.close()
    return statistics.median(times) * 1000


def main() -> None:
    work = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())
    work.mkdir(parents=True, exist_ok=True)
    without, with_acme = route_lookup_ns()
    port = free_port()
    pebble = Pebble(http_port=port)
    storage = work / "certs"
    gateway = _gateway(work, port, pebble, storage)
    try:
        orders = asyncio.run(_orders(pebble, storage, 5))
        answer = challenge_answer_ms(port, storage)
    finally:
        gateway.terminate()
        gateway.wait(30)
        pebble.stop()
    print("| measure | without acme | with acme |")
    print("|:---|---:|---:|")
    lookup = "route lookup of other paths, CPU ns per lookup (median of 5 rounds x 60k)"
    print(f"| {lookup} | {without:.0f} | {with_acme:.0f} |")
    answered = "challenge answered from storage via the gateway, ms (median of 200)"
    print(f"| {answered} | - | {answer:.2f} |")
    print(
        f"| whole order against Pebble, s (median of {len(orders)}; min {min(orders):.2f}, "
        f"max {max(orders):.2f}) | - | {statistics.median(orders):.2f} |"
    )


if __name__ == "__main__":
    main()
