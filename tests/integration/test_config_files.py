"""What the command line and the files around a config do to it: overrides, relative
paths, `.env` — run as a new user would, as real subprocesses from other directories."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import yaml

from tests.support.gateway import simple_config
from tests.support.net import free_port, request, wait_for_port


def potok(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("POTOK_")}
    return subprocess.run(
        [sys.executable, "-m", "potok", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=base | (env or {}),
        timeout=60,
        check=False,
    )


def write_config(folder: Path, doc: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "potok.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def start(args: list[str], cwd: Path, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POTOK_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "potok", "run", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_port(port, timeout=20)
    except TimeoutError:
        process.kill()
        raise AssertionError(process.communicate()[1].decode()) from None
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    process.wait(30)


def test_port_host_and_workers_overrides_open_no_database(tmp_path, upstream):
    """`--port` re-validated the config and marked `database` as given: potok.db appeared in
    the working directory and migrations ran, for a config with no database or auth."""
    config = write_config(tmp_path / "conf", simple_config(upstream.url))
    port = free_port()
    args = ["-c", str(config), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    process = start(args, tmp_path, port)
    try:
        assert request(port, "GET", "/x").status == 200
    finally:
        stop(process)
    assert sorted(p.name for p in tmp_path.rglob("*.db*")) == []


def test_relative_sqlite_path_is_beside_the_config_file(tmp_path):
    conf = tmp_path / "deploy"
    config = write_config(conf, {"database": {"url": "sqlite:///data/identity.db"}})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "potok", "users", "add", "alice", "--password-stdin", "-c",
         str(config)],
        input="correct horse battery staple\n",
        capture_output=True, text=True, cwd=elsewhere, timeout=60, check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("POTOK_")},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (conf / "data" / "identity.db").exists()
    assert list(elsewhere.iterdir()) == []
    # From a third directory, the same config finds the same database.
    listed = potok("users", "list", "-c", str(config), cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith("alice\tactive")


def test_a_management_command_on_a_missing_database_fails(tmp_path):
    config = write_config(tmp_path / "conf", {"database": {"url": "sqlite:///nothing-here.db"}})
    for command in (["users", "list"], ["keys", "list"], ["audit"]):
        result = potok(*command, "-c", str(config), cwd=tmp_path)
        assert result.returncode == 1, command
        assert "no database at" in result.stderr and "nothing-here.db" in result.stderr
    assert not (tmp_path / "conf" / "nothing-here.db").exists()
    assert not (tmp_path / "nothing-here.db").exists()


def test_env_file_beside_the_config_is_read_and_the_environment_wins(tmp_path):
    doc = {
        "services": {"up": {"targets": ["http://127.0.0.1:9001"]}},
        "routes": [{"name": "${ROUTE_NAME}", "match": {"prefix": "/"}, "service": "up"}],
    }
    config = write_config(tmp_path / "conf", doc)
    missing = potok("check", "-c", str(config), cwd=tmp_path)
    assert missing.returncode == 1 and "ROUTE_NAME" in missing.stderr
    (tmp_path / "conf" / ".env").write_text(
        "# comment\n\nexport ROUTE_NAME=from-dotenv  # why\nOTHER='a b'\n"
    )
    ok = potok("routes", "-c", str(config), cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "from-dotenv" in ok.stdout
    # A variable already set wins over the file.
    real = potok("routes", "-c", str(config), cwd=tmp_path, env={"ROUTE_NAME": "from-env"})
    assert "from-env" in real.stdout and "from-dotenv" not in real.stdout
    # --env-file names another file; one that does not exist is an error.
    other = tmp_path / "other.env"
    other.write_text('ROUTE_NAME="chosen"\n')
    chosen = potok("routes", "-c", str(config), "--env-file", str(other), cwd=tmp_path)
    assert "chosen" in chosen.stdout
    gone = potok("check", "-c", str(config), "--env-file", str(tmp_path / "nope"), cwd=tmp_path)
    assert gone.returncode == 1 and "cannot read" in gone.stderr
    bad = tmp_path / "bad.env"
    bad.write_text("ROUTE_NAME x\n")
    broken = potok("check", "-c", str(config), "--env-file", str(bad), cwd=tmp_path)
    assert broken.returncode == 1 and "bad.env:1: expected KEY=value" in broken.stderr
