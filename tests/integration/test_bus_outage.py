"""The bus goes down (the real NATS / Redis server is stopped) and comes back: clients stay
connected, publishing fails fast (503) and is counted, delivery resumes after reconnect."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from typing import Any

import nats
import pytest

from tests.support.gateway import GatewayProcess
from tests.support.net import request
from tests.support.realtime import Client, publish, realtime_config, token
from tests.support.services import service_down


def _bus_errors(port: int, backend: str) -> float:
    text = request(port, "GET", "/api/v1/metrics").body.decode()
    pattern = rf'realtime_bus_errors_total\{{bus="{backend}",kind="[a-z]+"\}} ([0-9.e+]+)'
    return sum(float(v) for v in re.findall(pattern, text))


async def _publish_until_accepted(port: int, event: dict[str, Any], timeout: float = 30.0) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while True:
        response = publish(port, event)
        if response.status == 202:
            return
        assert response.status == 503, response.body
        if time.monotonic() > deadline:
            raise TimeoutError("the bus never came back")
        await asyncio.sleep(0.2)


@pytest.mark.parametrize("backend", ["nats", "redis"])
async def test_bus_outage_and_recovery(backend):
    unique = uuid.uuid4().hex[:10]
    bus: dict[str, Any] = {
        "backend": backend,
        "subject_prefix": f"o{unique}.events",
        "reconnect_interval": "0.2s",
    }
    if backend == "nats":
        bus["nats"] = {"stream": f"O{unique}", "storage": "file"}
    config = realtime_config(bus=bus)
    if backend == "redis":
        config["redis"] = {"key_prefix": f"o{unique}:"}
    gateway = GatewayProcess(config)
    try:
        client = await Client.open(gateway.port)
        await client.authenticate(token())
        await client.subscribe("org:acme:tasks")
        event = {"channel": "org:acme:tasks", "type": "task:created"}
        assert publish(gateway.port, {**event, "data": "before"}).status == 202
        assert (await client.events(1))[0]["data"] == "before"

        with service_down(backend):
            refused = publish(gateway.port, {**event, "data": "during"})
            assert refused.status == 503
            await client.send(type="ping")
            await client.expect("pong")  # the client's connection does not depend on the bus
            assert _bus_errors(gateway.port, backend) >= 1

        await _publish_until_accepted(gateway.port, {**event, "data": "after"})
        got = await client.events(1, timeout=15)
        assert got[0]["data"] == "after"
        await client.send(type="ping")
        await client.expect("pong")
        await client.close()
    finally:
        gateway.stop()
        if backend == "nats":
            connection = await nats.connect("nats://127.0.0.1:4222")
            try:
                await connection.jetstream().delete_stream(f"O{unique}")
            finally:
                await connection.close()
