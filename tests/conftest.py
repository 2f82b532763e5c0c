"""Shared fixtures: a real upstream and a gateway started with `potok run`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.gateway import GatewayProcess
from tests.support.upstream import Upstream


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    yield server
    server.stop()


@pytest.fixture
def pair() -> Iterator[tuple[Upstream, Upstream]]:
    """Two upstream servers: a service with two targets."""
    servers = (Upstream(), Upstream())
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture
def start_gateway() -> Iterator[Callable[..., GatewayProcess]]:
    started: list[GatewayProcess] = []

    def start(
        config: dict[str, Any], workers: int = 1, env: dict[str, str] | None = None
    ) -> GatewayProcess:
        gateway = GatewayProcess(config, workers=workers, env=env)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()
