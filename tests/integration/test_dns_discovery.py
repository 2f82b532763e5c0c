"""DNS discovery through the real gateway and the real system resolver.

The gateway runs in a private mount namespace (`unshare --map-root-user --mount`, no
root needed) whose /etc/hosts is a file of this test, bind-mounted: glibc's getaddrinfo
reads it on every lookup, so rewriting it is a DNS change the gateway must notice on its
own. The machine's /etc/hosts is never touched. Three real upstreams listen on one port
at 127.0.0.1, 127.0.0.2 and ::1, each answering with the address it was reached on.
"""

from __future__ import annotations

import json
import socket
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from tests.support.gateway import GatewayProcess
from tests.support.net import request
from tests.support.upstream import _LoopThread

NAME = "svc.potok.test"
ADDRESSES = ("127.0.0.1", "127.0.0.2", "::1")


def port_free_on_every_address() -> int:
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        try:
            for address in ADDRESSES[1:]:
                family = socket.AF_INET6 if ":" in address else socket.AF_INET
                with socket.socket(family) as other:
                    other.bind((address, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no port free on all three addresses")


class WhereUpstream:
    """One aiohttp app listening on several addresses; the body says which one took it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.host_headers: list[str] = []
        self._thread = _LoopThread()
        self._runner: web.AppRunner | None = None
        self._thread.run(self._start())

    async def _answer(self, request: web.Request) -> web.Response:
        self.host_headers.append(request.headers.get("Host", ""))
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        return web.Response(text=str(sockname[0]) if sockname else "?")

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._answer)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        for address in ADDRESSES:
            await web.TCPSite(self._runner, address, self.port).start()

    def stop(self) -> None:
        async def cleanup() -> None:
            if self._runner is not None:
                await self._runner.cleanup()

        try:
            self._thread.run(cleanup())
        finally:
            self._thread.stop()


@pytest.fixture
def upstream() -> Iterator[WhereUpstream]:
    server = WhereUpstream(port_free_on_every_address())
    yield server
    server.stop()


def write_hosts(path: Path, addresses: tuple[str, ...]) -> None:
    lines = ["127.0.0.1 localhost", *(f"{address} {NAME}" for address in addresses)]
    # In place (one write), not a rename: the bind mount follows this inode.
    with open(path, "r+" if path.exists() else "w") as hosts:
        hosts.write("\n".join(lines) + "\n")
        hosts.truncate()


def answered_by(gateway: GatewayProcess, count: int) -> Counter[str]:
    return Counter(request(gateway.port, "GET", "/where").body.decode() for _ in range(count))


def dns_state(gateway: GatewayProcess) -> dict[str, object]:
    """The name's entry in /api/v1/health: services.svc.dns.names["<name>:<port>"]."""
    health = json.loads(request(gateway.port, "GET", "/api/v1/health").body)
    (state,) = health["services"]["svc"]["dns"]["names"].values()
    return state  # type: ignore[no-any-return]


def dns_metric(gateway: GatewayProcess, metric: str) -> float:
    text = request(gateway.port, "GET", "/api/v1/metrics").body.decode()
    (line,) = [line for line in text.splitlines() if line.startswith(metric + "{") and NAME in line]
    return float(line.rsplit(" ", 1)[1])


def wait_until(check, timeout: float = 10.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.1)


@pytest.fixture
def gateway(upstream: WhereUpstream, tmp_path: Path) -> Iterator[tuple[GatewayProcess, Path]]:
    hosts = tmp_path / "hosts"
    write_hosts(hosts, ADDRESSES)
    config = {
        "services": {
            "svc": {
                "targets": [f"http://{NAME}:{upstream.port}"],
                "dns": {"min_refresh": "100ms", "max_refresh": "400ms"},
                "passive_ejection": None,
            }
        },
        "routes": [{"name": "all", "match": {"prefix": "/where"}, "service": "svc"}],
    }
    private_hosts = [
        "unshare", "--map-root-user", "--mount", "sh", "-c",
        'mount --bind "$1" /etc/hosts && shift && exec "$@"', "sh", str(hosts),
    ]  # fmt: skip
    process = GatewayProcess(config, command_prefix=private_hosts)
    yield process, hosts
    process.stop()


def test_every_address_of_the_name_gets_traffic_with_the_name_as_host(gateway, upstream):
    process, _ = gateway
    seen = wait_until(lambda: set(answered_by(process, 12)) == set(ADDRESSES))
    assert seen, process.stderr()
    assert set(answered_by(process, 30)) == set(ADDRESSES)
    assert set(upstream.host_headers) == {f"{NAME}:{upstream.port}"}
    state = dns_state(process)
    assert sorted(state["addresses"]) == sorted(ADDRESSES)
    assert state["resolves"] is True
    assert dns_metric(process, "upstream_dns_addresses") == 3


def test_a_dns_change_is_followed_without_a_reload_and_a_lost_name_keeps_its_targets(
    gateway, upstream
):
    process, hosts = gateway
    assert wait_until(lambda: set(answered_by(process, 12)) == set(ADDRESSES)), process.stderr()

    write_hosts(hosts, ("127.0.0.2",))  # two instances went away
    assert wait_until(lambda: set(answered_by(process, 10)) == {"127.0.0.2"}), process.stderr()

    write_hosts(hosts, ())  # the name stops resolving: the last good target keeps serving
    state = wait_until(lambda: (s := dns_state(process))["resolves"] is False and s)
    assert state, process.stderr()
    assert state["addresses"] == ["127.0.0.2"]
    assert state["error"]
    assert answered_by(process, 10) == Counter({"127.0.0.2": 10})
    assert "dns name does not resolve" in process.stderr()
    assert dns_metric(process, "upstream_dns_resolving") == 0
    assert dns_metric(process, "upstream_dns_addresses") == 1

    write_hosts(hosts, ("127.0.0.1", "::1"))  # back, elsewhere
    assert wait_until(lambda: set(answered_by(process, 12)) == {"127.0.0.1", "::1"}), (
        process.stderr()
    )
    assert dns_state(process)["resolves"] is True
