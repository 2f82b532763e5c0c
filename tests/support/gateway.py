"""The real gateway, started with `potok run` in a subprocess on a free port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from tests.support.net import free_port, wait_for_port


class GatewayProcess:
    def __init__(
        self,
        config: dict[str, Any],
        workers: int = 1,
        env: dict[str, str] | None = None,
        wait: bool = True,
        command_prefix: list[str] | None = None,
        port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dir = Path(tempfile.mkdtemp(prefix="potok-test-"))
        self.workers = workers
        self.config_path = self.dir / "potok.yaml"
        self.write_config(config)
        self.stdout_path = self.dir / "stdout.log"
        self.stderr_path = self.dir / "stderr.log"
        self._stdout = open(self.stdout_path, "wb")  # noqa: SIM115
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            # A prefix runs the gateway under another command that ends in `exec "$@"`
            # (e.g. a private /etc/hosts), so the pid stays the gateway's.
            [
                *(command_prefix or []),
                *(sys.executable, "-m", "potok", "run", "--config", str(self.config_path)),
            ],
            stdout=self._stdout,
            stderr=self._stderr,
            env={**os.environ, **(env or {})},
        )
        if wait:
            self.wait_until_listening()

    def wait_until_listening(self) -> None:
        try:
            # Start-up takes about 1 s; a machine busy with the parallel suite (and other
            # work) has taken over 20 s. A gateway that fails to start exits at once.
            wait_for_port(self.port, timeout=60, process=self.process)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"gateway did not start:\n{self.stderr()}") from None

    def handles(self, sig: int) -> bool:
        """Whether the gateway's main process has a handler installed for `sig` yet."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        caught = next(line for line in status.splitlines() if line.startswith("SigCgt:"))
        return bool(int(caught.split()[1], 16) & (1 << (sig - 1)))

    def write_config(self, config: dict[str, Any]) -> None:
        """(Re)write the config file, with this process's port, workers and log path."""
        server = dict(config.get("server", {}))
        if "listeners" in server:  # the first listener's port is the one waited for
            self.port = server["listeners"][0]["port"]
            self.url = f"http://127.0.0.1:{self.port}"
        else:
            server.setdefault("host", "127.0.0.1")
            server["port"] = self.port
        server["workers"] = self.workers
        config = {**config, "server": server}
        logging = dict(config.get("logging", {}))
        logging.setdefault("access_log", {"path": str(self.dir / "access.log")})
        config["logging"] = logging
        # Write beside and rename: a watcher never reads a half-written file.
        partial = self.config_path.with_suffix(".partial")
        partial.write_text(yaml.safe_dump(config))
        partial.replace(self.config_path)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def access_log(self) -> list[dict[str, Any]]:
        import json

        path = self.dir / "access.log"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.process.send_signal(sig)

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

    def wait_for(self, predicate: Any, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.02)
        raise TimeoutError("condition not met")


def simple_config(upstream_url: str, **route: Any) -> dict[str, Any]:
    """One service `up` behind a catch-all route (plus overrides on the route)."""
    return {
        "services": {"up": {"targets": [upstream_url]}},
        "routes": [{"name": "all", "match": {"prefix": "/"}, "service": "up", **route}],
    }
