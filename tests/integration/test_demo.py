"""`potok demo` for real: three services and the gateway, driven over sockets, then SIGTERM."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.support.net import free_port, request, wait_for_port

ADMIN_KEY = "it-admin-key"


def distinct_free_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


class Demo:
    """`python -m potok demo` on free ports, output captured to files."""

    def __init__(self, extra_env: dict[str, str] | None = None, args: tuple[str, ...] = ()) -> None:
        ports = distinct_free_ports(6)
        self.port, self.admin_port, self.state_port, self.task_port = ports[:4]
        self.state_v2_port, self.metrics_port = ports[4:]
        self.dir = Path(tempfile.mkdtemp(prefix="potok-demo-test-"))
        self.stdout_path = self.dir / "stdout.log"
        self.stderr_path = self.dir / "stderr.log"
        self._stdout = open(self.stdout_path, "wb")  # noqa: SIM115
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115
        env = {k: v for k, v in os.environ.items() if not k.endswith("_SERVICE_API_KEY")}
        env.update(extra_env or {})
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "potok", "demo",
                "--port", str(self.port),
                "--admin-port", str(self.admin_port),
                "--state-port", str(self.state_port),
                "--state-v2-port", str(self.state_v2_port),
                "--task-port", str(self.task_port),
                "--metrics-port", str(self.metrics_port),
                *args,
            ],
            stdout=self._stdout,
            stderr=self._stderr,
            env=env,
        )  # fmt: skip

    def wait_started(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"demo exited with {self.process.returncode}:\n{self.output()}")
            try:
                wait_for_port(self.port, timeout=0.2)
                return
            except TimeoutError:
                continue
        raise RuntimeError(f"demo gateway not listening after {timeout}s:\n{self.output()}")

    def output(self) -> str:
        out = self.stdout_path.read_text(errors="replace")
        return out + self.stderr_path.read_text(errors="replace")

    def descendants(self) -> list[psutil.Process]:
        return psutil.Process(self.process.pid).children(recursive=True)

    def stop(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._stdout.close()
        self._stderr.close()
        return self.process.returncode

    def kill_leftovers(self, processes: list[psutil.Process]) -> None:
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()


@pytest.fixture(scope="module")
def demo() -> Iterator[Demo]:
    running = Demo({"ADMIN_SERVICE_API_KEY": ADMIN_KEY})
    children: list[psutil.Process] = []
    try:
        running.wait_started()
        children = running.descendants()
        yield running
    finally:
        running.stop()
        running.kill_leftovers(children)


def body(response) -> dict:
    return json.loads(response.body)


def test_banner_lists_curl_commands(demo):
    out = demo.stdout_path.read_text()
    base = f"http://127.0.0.1:{demo.port}"
    curls = [line for line in out.splitlines() if line.strip().startswith("curl ")]
    assert 5 <= len(curls) <= 16
    assert any(f"{base}/api/v1/health" in line for line in curls)
    operations = f"http://127.0.0.1:{demo.metrics_port}"
    assert any(f"{operations}/api/v1/metrics" in line for line in curls)
    assert f"{operations}/dashboard" in out


def test_operations_listener_serves_dashboard_admin_api_and_status(demo):
    """The banner's operations lines work as printed: the dashboard page, the admin API
    and `potok status` on the loopback metrics listener, with no credentials."""
    page = request(demo.metrics_port, "GET", "/dashboard")
    assert page.status == 200, page
    assert b"<html" in page.body.lower()
    services = request(demo.metrics_port, "GET", "/api/v1/admin/services")
    assert services.status == 200, services
    assert set(body(services)["services"]) >= {"admin", "state", "task"}
    status = subprocess.run(
        [sys.executable, "-m", "potok", "status", "--url", f"http://127.0.0.1:{demo.metrics_port}"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert status.returncode == 0, status.stderr
    assert "SERVICES" in status.stdout and "task" in status.stdout
    # The admin API is not on the public port.
    assert request(demo.port, "GET", "/api/v1/admin/services").status == 404


def test_identity_walk_login_call_refresh_logout(demo):
    out = demo.stdout_path.read_text()
    match = re.search(r"Identity: user 'demo', password '([^']+)'", out)
    assert match, out
    login = request(
        demo.port, "POST", "/api/v1/auth/login", {"Content-Type": "application/json"},
        json.dumps({"username": "demo", "password": match.group(1)}).encode(),
    )  # fmt: skip
    assert login.status == 200, login
    tokens = body(login)
    auth = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert request(demo.port, "GET", "/secure/users").status == 401
    users = request(demo.port, "GET", "/secure/users", auth)
    assert users.status == 200 and body(users)["service"] == "admin"
    assert request(demo.port, "GET", "/secure/orgs/acme/tasks", auth).status == 200
    assert request(demo.port, "GET", "/secure/orgs/globex/tasks", auth).status == 403
    refreshed = request(
        demo.port, "POST", "/api/v1/auth/refresh", {"Content-Type": "application/json"},
        json.dumps({"refresh_token": tokens["refresh_token"]}).encode(),
    )  # fmt: skip
    assert refreshed.status == 200
    new_auth = {"Authorization": f"Bearer {body(refreshed)['access_token']}"}
    assert request(demo.port, "POST", "/api/v1/auth/logout", new_auth).status == 204
    assert request(demo.port, "GET", "/secure/users", new_auth).status == 401


def test_the_services_run_as_children(demo):
    commands = [" ".join(p.cmdline()) for p in demo.descendants()]
    for name in ("admin", "state", "state-v2", "task"):
        assert any(f"potok.demo.services {name}" in c for c in commands), commands


def test_health(demo):
    response = request(demo.port, "GET", "/api/v1/health")
    assert response.status == 200
    document = body(response)
    assert document["status"] == "ok"
    assert set(document["services"]) == {"admin", "state", "state-v2", "task"}


def test_create_a_task_and_read_it_back(demo):
    payload = json.dumps({"title": "Write the demo test", "assignee": "alice"}).encode()
    created = request(
        demo.port,
        "POST",
        "/api/v1/orgs/acme/tasks",
        {"Content-Type": "application/json"},
        payload,
    )
    assert created.status == 201, created
    task = body(created)["task"]
    assert body(created)["service"] == "task"
    assert task["title"] == "Write the demo test"
    assert task["status"] == "todo"
    location = created.header("Location")
    assert location == f"/api/v1/orgs/acme/tasks/{task['id']}"
    assert created.header("X-Gateway") == "potok-demo"  # the demo's global headers policy

    read = request(demo.port, "GET", location)
    assert read.status == 200
    assert body(read)["task"] == task

    patched = request(
        demo.port, "PATCH", location, {"Content-Type": "application/json"}, b'{"status": "done"}'
    )
    assert patched.status == 200
    assert body(patched)["task"]["status"] == "done"


def test_validation_errors_come_back_as_json(demo):
    response = request(
        demo.port, "POST", "/api/v1/orgs/acme/tasks", {"Content-Type": "application/json"},
        b'{"title": ""}',
    )  # fmt: skip
    assert response.status == 422
    fields = body(response)["error"]["fields"]
    assert fields[0]["field"] == "title"
    bad_json = request(demo.port, "PUT", "/api/v1/state/k", {}, b"{not json")
    assert bad_json.status == 400


def test_rewrite_route_reaches_the_task_service(demo):
    created = request(
        demo.port, "POST", "/api/v1/orgs/globex/tasks", {"Content-Type": "application/json"},
        b'{"title": "Legacy clients still work"}',
    )  # fmt: skip
    task_id = body(created)["task"]["id"]
    listed = request(demo.port, "GET", "/legacy/tasks/globex")
    assert listed.status == 200
    assert body(listed)["org_id"] == "globex"
    assert [t["id"] for t in body(listed)["tasks"]] == [task_id]
    one = request(demo.port, "GET", f"/legacy/tasks/globex/{task_id}")
    assert one.status == 200
    assert body(one)["task"]["title"] == "Legacy clients still work"


def test_state_round_trip(demo):
    put = request(
        demo.port, "PUT", "/api/v1/state/greeting", {"Content-Type": "application/json"},
        b'{"value": {"text": "hello"}}',
    )  # fmt: skip
    assert put.status == 201
    got = request(demo.port, "GET", "/api/v1/state/greeting")
    assert body(got)["value"] == {"text": "hello"}
    assert body(got)["service"] == "state"
    assert request(demo.port, "DELETE", "/api/v1/state/greeting").status == 200
    assert request(demo.port, "GET", "/api/v1/state/greeting").status == 404


def test_api_key_is_injected(demo):
    # Straight to the service without the key: refused.
    direct = request(demo.admin_port, "GET", "/api/v1/users")
    assert direct.status == 401
    # With the key from the environment: the service takes it (so the gateway was given it too).
    keyed = request(demo.admin_port, "GET", "/api/v1/users", {"X-Service-Key": ADMIN_KEY})
    assert keyed.status == 200
    # Through the gateway without any key: the gateway adds it.
    through = request(demo.port, "GET", "/api/v1/users/1")
    assert through.status == 200
    assert body(through)["user"]["username"] == "alice"
    # A client's own X-Service-Key is dropped, never forwarded or trusted.
    forged = request(demo.port, "GET", "/api/v1/users", {"X-Service-Key": "forged"})
    assert forged.status == 200
    # The other services got their (default) keys the same way.
    assert request(demo.state_port, "GET", "/api/v1/state").status == 401
    assert request(demo.task_port, "GET", "/api/v1/orgs/acme/tasks").status == 401


def test_request_id_is_propagated(demo):
    response = request(demo.port, "GET", "/api/v1/users", {"X-Request-ID": "demo-trace-42"})
    assert response.status == 200
    assert response.header("X-Request-ID") == "demo-trace-42"
    assert body(response)["request_id"] == "demo-trace-42"
    generated = request(demo.port, "GET", "/api/v1/users")
    rid = generated.header("X-Request-ID")
    assert rid and len(rid) == 32
    assert body(generated)["request_id"] == rid


def test_unknown_route_is_a_gateway_404(demo):
    response = request(demo.port, "GET", "/nowhere")
    assert response.status == 404
    assert response.header("Content-Type") == "application/problem+json"


def test_metrics_count_demo_routes(demo):
    request(demo.port, "GET", "/api/v1/users")
    text = request(demo.metrics_port, "GET", "/api/v1/metrics").body.decode()
    assert 'http_requests_total{method="GET",route="users",status="200"}' in text


def test_sigterm_stops_gateway_and_services():
    running = Demo()
    children: list[psutil.Process] = []
    try:
        running.wait_started()
        children = running.descendants()
        assert len(children) == 4
        assert request(running.port, "GET", "/api/v1/orgs/acme/tasks").status == 200
        code = running.stop(timeout=30)
        assert code == 0, running.output()
        _, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, f"left running: {alive}"
        ports = (running.port, running.admin_port, running.state_port, running.task_port)
        for port in (*ports, running.state_v2_port, running.metrics_port):
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    finally:
        running.stop()
        running.kill_leftovers(children)


def test_a_taken_port_is_reported_clearly():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        port, admin_port, state_port, state_v2_port = distinct_free_ports(4)
        result = subprocess.run(
            [sys.executable, "-m", "potok", "demo", "--port", str(port),
             "--admin-port", str(admin_port), "--state-port", str(state_port),
             "--state-v2-port", str(state_v2_port),
             "--task-port", str(taken)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )  # fmt: skip
    assert result.returncode == 1
    assert f"port {taken}" in result.stderr
    assert "--task-port" in result.stderr


def test_every_command_the_banner_prints_works_as_printed(demo):
    """The banner used to print `python -m websockets ...`: outside the venv, `python`
    is another interpreter (or none) without websockets."""
    out = demo.stdout_path.read_text()
    commands = [
        shlex.split(line)
        for line in out.splitlines()
        if line.startswith("  ") and not line.strip().startswith((">", "ACCESS="))
        and not line.strip().startswith(("then", "Socket.IO:", "->", "own signature"))
        # The webhook signing line is a shell pipeline (openssl | base64; curl), run
        # as printed by tests/integration/test_webhooks_demo.py.
        and "openssl dgst" not in line
    ]  # fmt: skip
    programs = {words[0] for words in commands}
    potok = str(Path(sys.executable).with_name("potok"))
    assert programs == {"curl", sys.executable, potok}, programs
    for words in commands:
        if words[0] == sys.executable:
            assert words[1:3] == ["-m", "websockets"]
            check = subprocess.run(
                [*words[:3], "--help"], capture_output=True, timeout=30, check=False
            )
            assert check.returncode == 0, check.stderr
        elif words[0] == potok:
            assert words[1] == "status"
            check = subprocess.run(words, capture_output=True, timeout=30, check=False)
            assert check.returncode == 0, check.stderr


def test_state_overview_and_indicators_are_cached_with_their_ttls(demo):
    for path, ttl in (("/api/v1/state/overview", 30), ("/api/v1/state/indicators", 60)):
        first = request(demo.port, "GET", path)
        second = request(demo.port, "GET", path)
        assert first.status == second.status == 200
        assert first.header("X-Cache") in ("MISS", "HIT")
        assert second.header("X-Cache") == "HIT"
        assert second.body == first.body  # computed_at unchanged: not recomputed
        status = second.header("Cache-Status") or ""
        assert status.startswith("potok; hit; ttl=")
        assert 0 < int(status.rsplit("=", 1)[1]) <= ttl


def test_the_canary_sends_opted_in_requests_to_version_2(demo):
    canary = request(demo.port, "GET", "/api/v1/state", {"X-Canary": "v2"})
    assert canary.status == 200
    assert canary.header("X-Service-Version") == "v2"
    assert body(canary)["service_version"] == "v2"
    versions = [
        request(demo.port, "GET", "/api/v1/state").header("X-Service-Version") for _ in range(20)
    ]
    assert set(versions) <= {"v1", "v2"} and "v1" in versions  # 90/10 by weight


def test_the_state_route_is_mirrored_to_the_v2_shadow(demo):
    put = request(
        demo.port, "PUT", "/api/v1/state/mirrored", {"Content-Type": "application/json"},
        b'{"value": "copied"}',
    )  # fmt: skip
    assert put.status in (200, 201)
    assert put.header("X-Service-Version") == "v1"  # the client's answer is v1's
    key = {"X-Service-Key": "demo-state-key"}  # the shadow, asked directly
    deadline = time.monotonic() + 10
    while True:
        shadow = request(demo.state_v2_port, "GET", "/api/v1/state/mirrored", key)
        if shadow.status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert shadow.status == 200 and body(shadow)["value"] == "copied"
    assert body(shadow)["service_version"] == "v2"


def test_dashboard_data_merges_the_three_services(demo):
    response = request(demo.port, "GET", "/api/v1/dashboard-data")
    assert response.status == 200, response
    document = body(response)
    assert set(document) == {"users", "state", "tasks"}
    assert document["users"]["service"] == "admin"
    assert document["state"]["service"] == "state" and "keys" in document["state"]
    assert document["tasks"]["service"] == "task"
    assert response.header("X-Potok-Partial") is None
    assert response.header("X-Gateway") == "potok-demo"  # the route's response policies
    ids = {document[part]["request_id"] for part in ("users", "state", "tasks")}
    assert ids == {response.header("X-Request-ID")}
