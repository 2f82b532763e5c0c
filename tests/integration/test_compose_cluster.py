"""deploy/compose.yaml's cluster, run without Docker: its three Potok instances agree.

No Docker engine here, so the compose file's own pieces run as processes: the demo services
with their compose command and environment, the `potok-init` one-shot with its compose
command, and three gateways with deploy/compose/potok.yaml and potok-1's environment. The
compose names (redis, nats, postgres, admin, state, task) resolve through a private
/etc/hosts in a mount namespace (`unshare --map-root-user --mount`; the machine's file is
never touched) to the real Redis, NATS and PostgreSQL on 127.0.0.1 and to the demo services
on 127.0.0.3-5. Only the port of each gateway, the database (a fresh one per run), and the
Redis prefix / NATS stream (per run, so other tests' state is never seen) differ from what
compose would give. Then: a rate limit counts across the three, a logout on one holds on
the others, and a task event reaches WebSocket clients on every instance.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import nats
import nats.js.errors
import pytest
import redis.asyncio as aioredis
import yaml

from tests.support.compose import DEPLOY, environment, services
from tests.support.gateway import GatewayProcess
from tests.support.identity_db import postgres_database
from tests.support.identity_gateway import bearer, call
from tests.support.net import request
from tests.support.realtime import Client

ADDRESSES = {"admin": "127.0.0.3", "state": "127.0.0.4", "task": "127.0.0.5"}


@dataclass
class Cluster:
    gateways: list[GatewayProcess]
    password: str

    @property
    def ports(self) -> list[int]:
        return [g.port for g in self.gateways]


def private_hosts(path: Path) -> list[str]:
    lines = ["127.0.0.1 localhost redis nats postgres"]
    lines += [f"{address} {name}" for name, address in ADDRESSES.items()]
    path.write_text("\n".join(lines) + "\n")
    return [
        "unshare", "--map-root-user", "--mount", "sh", "-c",
        'mount --bind "$1" /etc/hosts && shift && exec "$@"', "sh", str(path),
    ]  # fmt: skip


def demo_service(name: str, gateway_port: int) -> subprocess.Popen[bytes]:
    """The compose service's entrypoint + command, bound to its private address."""
    spec = services()[name]
    entrypoint = [part for part in spec["entrypoint"] if part not in ("tini", "--")]
    assert entrypoint[0] == "python"
    command = list(spec["command"])
    command[command.index("--host") + 1] = ADDRESSES[name]
    env = environment(spec)
    if "POTOK_EVENTS_URL" in env:  # compose: http://lb:8080/... (HAProxy); here: gateway 1
        assert urlsplit(env["POTOK_EVENTS_URL"]).hostname == "lb"
        env["POTOK_EVENTS_URL"] = f"http://127.0.0.1:{gateway_port}/api/v1/events"
    return subprocess.Popen(
        [sys.executable, *entrypoint[1:], *command],
        env={"PATH": "/usr/bin:/bin", **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    folder = tmp_path_factory.mktemp("compose")
    prefix = private_hosts(folder / "hosts")
    config_path = DEPLOY / "compose" / "potok.yaml"
    unique = secrets.token_hex(4)
    with postgres_database() as database_url:
        database = urlsplit(database_url)
        per_run = {
            "POSTGRES_USER": database.username or "postgres",
            "POSTGRES_PASSWORD": "",
            "POSTGRES_DB": database.path.lstrip("/"),
            "POTOK_REDIS_PREFIX": f"compose{unique}:",
            "POTOK_NATS_STREAM": f"COMPOSE{unique}",
            "POTOK_BUS_SUBJECTS": f"compose{unique}",
        }
        # potok-init's command, as compose runs it (entrypoint sh -c).
        init = services()["potok-init"]
        init_env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
        init_env |= environment(init) | per_run | {"POTOK_CONFIG": str(config_path)}
        subprocess.run(
            [*prefix, *init["entrypoint"], *init["command"]],
            env=init_env,
            check=True,
            capture_output=True,
            timeout=120,
        )
        config: dict[str, Any] = yaml.safe_load(config_path.read_text())
        gateway_env = environment(services()["potok-1"]) | per_run
        gateways: list[GatewayProcess] = []
        processes: list[subprocess.Popen[bytes]] = []
        try:
            for _ in range(3):
                gateways.append(
                    GatewayProcess(config, env=gateway_env, command_prefix=prefix, wait=False)
                )
            processes = [demo_service(name, gateways[0].port) for name in ADDRESSES]
            for gateway in gateways:
                gateway.wait_until_listening()
            for name, address in ADDRESSES.items():
                command = services()[name]["command"]
                wait_for_address(address, int(command[command.index("--port") + 1]))
            yield Cluster(gateways, init_env["POTOK_DEMO_PASSWORD"])
        finally:
            for process in processes:
                process.terminate()
                process.wait(10)
            for gateway in gateways:
                gateway.stop()
            asyncio.run(forget(per_run))


async def forget(per_run: dict[str, str]) -> None:
    """Drop this run's NATS stream and Redis keys from the shared servers."""
    connection = await nats.connect("nats://127.0.0.1:4222")
    try:
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await connection.jetstream().delete_stream(per_run["POTOK_NATS_STREAM"])
    finally:
        await connection.close()
    client = aioredis.Redis.from_url("redis://127.0.0.1:6379/0")
    try:
        async for key in client.scan_iter(match=per_run["POTOK_REDIS_PREFIX"] + "*"):
            await client.delete(key)
    finally:
        await client.aclose()


def wait_for_address(address: str, port: int) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            with socket.create_connection((address, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def login(cluster: Cluster, port: int) -> dict[str, Any]:
    answer = call(
        port, "POST", "/api/v1/auth/login", {"username": "demo", "password": cluster.password}
    )
    assert answer.status == 200, answer.body
    return json.loads(answer.body)  # type: ignore[no-any-return]


def test_the_demo_services_answer_through_every_instance(cluster):
    for port in cluster.ports:
        assert request(port, "GET", "/api/v1/users").status == 200
        assert request(port, "GET", "/api/v1/orgs/acme/tasks").status == 200
    health = json.loads(request(cluster.ports[0], "GET", "/api/v1/health").body)
    names = health["services"]["task"]["dns"]["names"]
    assert names["task:3003"]["addresses"] == [ADDRESSES["task"]]


def test_the_rate_limit_counts_across_the_three_instances(cluster):
    # policies.rate_limit: 100 per 60 s per client IP, on each route, in Redis.
    statuses = [request(cluster.ports[i % 3], "GET", "/api/v1/state").status for i in range(100)]
    assert statuses == [200] * 100
    for port in cluster.ports:
        refused = request(port, "GET", "/api/v1/state")
        assert refused.status == 429
        assert refused.header("Retry-After")


def test_a_session_from_one_instance_works_on_the_others_and_a_logout_ends_it_everywhere(
    cluster,
):
    first, second, third = cluster.ports
    tokens = login(cluster, first)
    access = tokens["access_token"]
    for port in (second, third):
        assert request(port, "GET", "/secure/users", bearer(access)).status == 200
    refreshed = call(
        second, "POST", "/api/v1/auth/refresh", {"refresh_token": tokens["refresh_token"]}
    )
    assert refreshed.status == 200, refreshed.body  # issued on one, rotated on another
    assert call(first, "POST", "/api/v1/auth/logout", **bearer(access)).status in (200, 204)
    deadline = time.monotonic() + 3
    while True:
        statuses = [
            request(p, "GET", "/secure/users", bearer(access)).status for p in (second, third)
        ]
        if statuses == [401, 401] or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert statuses == [401, 401]


async def test_a_task_event_reaches_websocket_clients_on_every_instance(cluster):
    access = login(cluster, cluster.ports[0])["access_token"]
    clients = [await Client.open(port, f"?token={access}") for port in cluster.ports]
    try:
        for client in clients:
            await client.expect("authenticated")
            assert (await client.subscribe("org:acme:tasks"))["type"] == "subscribed"
        # Created through instance 2; the task service reports it to instance 1; NATS
        # carries it to the subscribers of all three.
        created = call(cluster.ports[1], "POST", "/api/v1/orgs/acme/tasks", {"title": "fan out"})
        assert created.status == 201, created.body
        task_id = json.loads(created.body)["task"]["id"]
        for client in clients:
            (event,) = await client.events(1, timeout=10)
            assert event["event"] == "task:created" and event["data"]["id"] == task_id
            assert await client.quiet(0.3) == []  # once each, not once per instance
    finally:
        for client in clients:
            await client.close()
