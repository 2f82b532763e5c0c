"""A gateway with the admin API on its metrics listener (and on the public port behind the
admin role), a token service, API keys and two upstream targets."""

from __future__ import annotations

import json
import socket
import tempfile
import time
import uuid
from typing import Any

from tests.support.gateway import GatewayProcess
from tests.support.identity_gateway import CHEAP_ARGON2, HS_SECRET, add_user, call
from tests.support.net import ResponseReader, build_request, free_port, request

REDIS_URL = "redis://127.0.0.1:6379/0"
ADMIN_PASSWORD = "admin password for the admin API"
USER_PASSWORD = "plain user password, no admin role"


def admin_config(targets: list[str], database_url: str, listen_port: int) -> dict[str, Any]:
    return {
        "metrics": {"listen": f"127.0.0.1:{listen_port}"},
        "admin": {"public": True, "allow_from": ["127.0.0.1/32"]},
        "services": {
            "up": {
                "targets": targets,
                "circuit_breaker": {"consecutive_failures": 3, "open_for": "30s"},
            }
        },
        "routes": [
            {
                "name": "limited",
                "match": {"prefix": "/limited"},
                "service": "up",
                "policies": {"rate_limit": {"limit": 1, "window": "60s"}},
            },
            {
                "name": "keyed",
                "match": {"prefix": "/keyed"},
                "service": "up",
                "policies": {"auth_api_key": {}},
            },
            {"name": "all", "match": {"prefix": "/"}, "service": "up"},
        ],
        "database": {"url": database_url},
        "auth": {
            "token_service": {
                "enabled": True,
                "access_ttl": "1h",
                "signing": {"algorithm": "HS256", "secret": HS_SECRET},
            },
            "passwords": CHEAP_ARGON2,
            "revocation": {"poll_interval": "100ms"},
            "api_keys": {"sync_interval": "30s", "last_used_flush": "200ms"},
            "audit": {"flush_interval": "100ms"},
        },
    }


class AdminGateway:
    """The gateway, its listener port, and an admin user's token."""

    def __init__(self, targets: list[str], workers: int = 1, **overrides: Any) -> None:
        self.database_url = f"sqlite:///{tempfile.mkdtemp(prefix='potok-admin-')}/identity.db"
        add_user(self.database_url, "root", ADMIN_PASSWORD, roles=("admin",))
        add_user(self.database_url, "plain", USER_PASSWORD)
        self.listen_port = free_port()
        self.config = admin_config(targets, self.database_url, self.listen_port)
        if workers > 1:  # a memory rate limit would count per worker: the shared Redis
            self.config["redis"] = {"url": REDIS_URL, "key_prefix": f"admin-{uuid.uuid4().hex}:"}
            self.config["routes"][0]["policies"]["rate_limit"]["store"] = "redis"
        self.config.update(overrides)
        self.process = GatewayProcess(self.config, workers=workers)
        self.port = self.process.port
        self.token = self.login("root", ADMIN_PASSWORD)

    def login(self, username: str, password: str) -> str:
        answer = call(
            self.port, "POST", "/api/v1/auth/login", {"username": username, "password": password}
        )
        assert answer.status == 200, answer
        token: str = answer.json()["access_token"]
        return token

    def admin(self, method: str, path: str, body: Any = None, **headers: str) -> Any:
        """A call on the metrics listener (open to loopback)."""
        return call(self.listen_port, method, "/api/v1/admin" + path, body, **headers)

    def public(self, method: str, path: str, body: Any = None, **headers: str) -> Any:
        """A call on the public port (needs the admin role)."""
        return call(self.port, method, "/api/v1/admin" + path, body, **headers)

    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def stop(self) -> None:
        self.process.stop()


def wait_until(predicate: Any, timeout: float = 15.0) -> Any:
    """The predicate's first truthy value; AssertionError once `timeout` has passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def raw(
    port: int, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> Any:
    return request(port, method, path, headers, body)


def from_address(source: str, port: int, path: str, headers: dict[str, str] | None = None) -> Any:
    """One GET whose connection comes from `source` (another loopback address)."""
    with socket.create_connection(
        ("127.0.0.1", port), timeout=10, source_address=(source, 0)
    ) as sock:
        sock.sendall(build_request("GET", path, headers))
        return ResponseReader(sock).read()


def put_config(port: int, text: str, **headers: str) -> Any:
    all_headers = {
        "Content-Type": "application/yaml",
        **{k.replace("_", "-"): v for k, v in headers.items()},
    }
    return request(port, "PUT", "/api/v1/admin/config", all_headers, text.encode())


def dumps(document: Any) -> str:
    return json.dumps(document)
