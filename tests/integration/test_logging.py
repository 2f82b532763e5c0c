"""Logs as an operator reads them: one JSON shape on every line, one record per line
with several workers, the supervisor's lines too, refusals rate-limited per client."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections import Counter
from typing import Any

import jwt

from tests.support.gateway import GatewayProcess, simple_config
from tests.support.identity_gateway import (
    add_user,
    auth_config,
    bearer,
    call,
    public_pem,
    rsa_private,
)
from tests.support.net import request

SHAPE = ["timestamp", "level", "event", "worker", "request_id"]


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of `text` as JSON; fails naming the first line that is not one record."""
    records = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise AssertionError(f"not one JSON record: {line[:300]!r}") from exc
        assert isinstance(record, dict), line
        assert list(record)[:5] == SHAPE, line
        records.append(record)
    return records


def garbage_from(address: str, port: int) -> None:
    """One malformed request from `address` (any of 127.0.0.0/8 on Linux)."""
    with socket.socket() as sock:
        sock.bind((address, 0))
        sock.connect(("127.0.0.1", port))
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        sock.settimeout(5)
        try:
            while sock.recv(4096):
                pass
        except OSError:
            pass


def test_two_workers_and_the_supervisor_write_one_json_record_per_line(upstream):
    config = simple_config(upstream.url)
    config["logging"] = {"level": "info", "format": "json"}
    gateway = GatewayProcess(config, workers=2)
    try:
        # Lines from both workers at once: refusals from 60 clients, 5 each.
        for round_ in range(5):
            for client in range(60):
                garbage_from(f"127.0.{round_ + 1}.{client + 2}", gateway.port)
        # The supervisor's own line: a worker killed is restarted, and it says so.
        workers = [
            int(pid)
            for pid in os.listdir("/proc")
            if pid.isdigit() and _parent(int(pid)) == gateway.process.pid and _is_worker(pid)
        ]
        os.kill(workers[0], signal.SIGKILL)
        gateway.wait_for(lambda: "worker died" in gateway.stderr(), timeout=10)
        time.sleep(1.5)
    finally:
        gateway.stop()
    records = json_lines(gateway.stderr())
    refused = [r for r in records if r["event"] == "request refused"]
    assert len(refused) == 300
    assert {r["worker"] for r in records if r["event"] == "listening"} == {"0", "1"}
    died = [r for r in records if r["event"] == "worker died; restarting"]
    assert len(died) == 1 and died[0]["worker"] == "supervisor" and died[0]["level"] == "error"
    assert died[0]["child"] in ("0", "1")


def _is_worker(pid: str) -> bool:
    """A worker, not multiprocessing's resource tracker."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return b"resource_tracker" not in cmdline.read()
    except OSError:
        return False


def _parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def test_refusals_from_one_client_are_rate_limited_with_a_count(upstream):
    config = simple_config(upstream.url)
    config["logging"] = {"level": "info"}
    gateway = GatewayProcess(config)
    sent = 200

    def accounted() -> tuple[list[dict[str, Any]], int]:
        mine = [r for r in json_lines(gateway.stderr()) if r.get("client_ip") == "127.0.0.9"]
        written = [r for r in mine if r["event"] == "request refused"]
        suppressed = sum(r["suppressed"] for r in mine if r["event"].endswith("suppressed"))
        return written, suppressed

    try:
        for _ in range(sent):
            garbage_from("127.0.0.9", gateway.port)
        garbage_from("127.0.0.10", gateway.port)  # another client still gets its line
        # Every refusal is accounted for: written, or counted in a summary line once
        # its second is over.
        gateway.wait_for(lambda: len(accounted()[0]) + accounted()[1] == sent, 10)
    finally:
        gateway.stop()
    written, suppressed = accounted()
    assert suppressed > 0
    per_second = Counter(r["timestamp"][:19] for r in written)
    assert max(per_second.values()) <= 5
    others = [r for r in json_lines(gateway.stderr()) if r.get("client_ip") == "127.0.0.10"]
    assert [r["event"] for r in others] == ["request refused"]


def test_access_lines_have_the_same_shape_with_user_agent_and_upstream(upstream, tmp_path):
    database = f"sqlite:///{tmp_path}/identity.db"
    add_user(database, "alice", "correct horse battery")
    config = auth_config(upstream.url, database, public_pem(rsa_private()))
    gateway = GatewayProcess(config)
    try:
        body = {"username": "alice", "password": "correct horse battery"}
        token = call(gateway.port, "POST", "/api/v1/auth/login", body).json()["access_token"]
        answer = request(
            gateway.port,
            "GET",
            "/sealed/x",
            {**bearer(token), "User-Agent": "shape-test/1.0", "X-Request-ID": "req-shape-1"},
        )
        assert answer.status == 200
        gateway.wait_for(lambda: any(r["request_id"] == "req-shape-1" for r in _access(gateway)))
    finally:
        gateway.stop()
    line = next(r for r in _access(gateway) if r["request_id"] == "req-shape-1")
    assert line["level"] == "info" and line["event"] == "request" and line["worker"] == "0"
    assert line["user_id"] == jwt.decode(token, options={"verify_signature": False})["sub"]
    assert line["user_agent"] == "shape-test/1.0"
    assert upstream.url.rsplit(":", 1)[1] in line["target"]
    assert isinstance(line["upstream_ms"], float) and line["upstream_ms"] >= 0
    assert line["timestamp"].endswith("Z")
    # The application log has the same first fields.
    json_lines(gateway.stderr())


def _access(gateway: GatewayProcess) -> list[dict[str, Any]]:
    path = gateway.dir / "access.log"
    return json_lines(path.read_text()) if path.exists() else []


def test_a_client_gone_mid_upload_is_one_info_line_without_a_traceback(upstream):
    config = simple_config(upstream.url)
    config["logging"] = {"level": "info"}
    gateway = GatewayProcess(config)
    try:
        with socket.create_connection(("127.0.0.1", gateway.port)) as sock:
            sock.sendall(
                b"POST /upload HTTP/1.1\r\nHost: x\r\nX-Request-ID: gone-1\r\n"
                b"Content-Length: 1000000\r\n\r\n" + b"x" * 100_000
            )
            time.sleep(0.3)
        gateway.wait_for(lambda: "mid-upload" in gateway.stderr())
    finally:
        gateway.stop()
    stderr = gateway.stderr()
    assert "Traceback" not in stderr
    gone = [r for r in json_lines(stderr) if r["event"] == "client disconnected mid-upload"]
    assert len(gone) == 1
    assert gone[0]["level"] == "info" and gone[0]["request_id"] == "gone-1"
    assert gone[0]["path"] == "/upload" and gone[0]["bytes_in"] > 0
