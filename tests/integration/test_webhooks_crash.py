"""The crash test: signed deliveries sent while the gateway is killed with SIGKILL at
random moments and restarted, and the service fails for a while. Every delivery that got
a 2xx reaches the service, each at least once and always under the same delivery id;
duplicates (only possible after a crash) are measured and reported.

Bounded for the suite (1,000 deliveries, 3 kills, well under 60 s on an idle machine);
POTOK_WEBHOOK_CRASH_LONG=1 runs 10,000 deliveries and 10 kills.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.net import free_port, wait_for_port
from tests.support.webhooks import POTOK_SECRET, SW_SECRET, Receiver, standard_headers, wait_until

LONG = os.environ.get("POTOK_WEBHOOK_CRASH_LONG") == "1"
DELIVERIES = 10_000 if LONG else 1_000
KILLS = 10 if LONG else 3
SENDERS = 8


class Gateway:
    """`potok run` on a fixed port and config, killed and started again at will."""

    def __init__(self, folder: Path, receiver: Receiver) -> None:
        self.port = free_port()
        self.config = folder / "potok.yaml"
        self.log = open(folder / "gateway.log", "ab")  # noqa: SIM115
        config = {
            "server": {"host": "127.0.0.1", "port": self.port, "workers": 1},
            "logging": {"level": "warning", "access_log": {"enabled": False}},
            "services": {
                "svc": {"targets": [receiver.url], "circuit_breaker": {"open_for": "500ms"}}
            },
            "webhooks": {
                "outbox": {"url": f"sqlite:///{folder / 'outbox.db'}", "lease": "2s"},
                "delivery": {
                    "signing_secret": POTOK_SECRET,
                    "initial_backoff": "100ms",
                    "max_backoff": "500ms",
                    "poll_interval": "100ms",
                    "timeout": "1s",
                },
                "sources": {"hooks": {"secrets": [SW_SECRET], "service": "svc"}},
            },
        }
        self.config.write_text(yaml.safe_dump(config))
        self.process: subprocess.Popen[bytes] | None = None
        self.kills = 0

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "potok", "run", "--config", str(self.config)],
            stdout=self.log, stderr=self.log,
        )  # fmt: skip
        wait_for_port(self.port, timeout=60)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.kills += 1

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.stop()


def test_nothing_accepted_is_lost_across_sigkill(receiver: Receiver, tmp_path: Path) -> None:
    gateway = Gateway(tmp_path, receiver)
    gateway.start()
    accepted: set[int] = set()
    lock = threading.Lock()
    queue = list(range(DELIVERIES))
    done = threading.Event()

    def sender() -> None:
        """A provider: sends each delivery until it gets a 2xx, like providers retry."""
        connection: http.client.HTTPConnection | None = None
        while True:
            with lock:
                if not queue:
                    return
                n = queue.pop()
            body = json.dumps({"n": n, "pad": "x" * 200}).encode()
            headers = standard_headers(body, delivery=f"crash-{n}")
            while True:
                try:
                    if connection is None:
                        connection = http.client.HTTPConnection(
                            "127.0.0.1", gateway.port, timeout=10
                        )
                    connection.request("POST", "/api/v1/webhooks/hooks", body, headers)
                    response = connection.getresponse()
                    response.read()
                    if 200 <= response.status < 300:
                        with lock:
                            accepted.add(n)
                        break
                except (OSError, http.client.HTTPException):
                    pass
                if connection is not None:
                    connection.close()
                connection = None
                time.sleep(0.05)

    def reached(share: float) -> bool:
        """Wait until `share` of the deliveries are accepted (False: the senders are done).
        Kills are placed by progress, not by the clock: a fast machine accepts all 1,000
        in a few seconds, before a timer-placed kill would come."""
        while not done.is_set():
            with lock:
                if len(accepted) >= share * DELIVERIES:
                    return True
            time.sleep(0.002)
        return False

    def chaos() -> None:
        """The service fails for a while; the gateway is killed at random moments."""
        receiver.fail_with = 503
        reached(0.05)
        receiver.fail_with = None
        for index in range(KILLS):
            # A random moment within this kill's share of the run.
            if not reached(random.uniform(index, index + 0.8) / KILLS * 0.9 + 0.05):
                break
            gateway.kill()
            if index == 1:
                receiver.fail_with = 500  # a second outage across a restart
            time.sleep(random.uniform(0.0, 0.3))
            gateway.start()
            if index == 1:
                time.sleep(0.5)
                receiver.fail_with = None

    started = time.monotonic()
    threads = [threading.Thread(target=sender) for _ in range(SENDERS)]
    killer = threading.Thread(target=chaos)
    for thread in (*threads, killer):
        thread.start()
    for thread in threads:
        thread.join(600)
    done.set()
    killer.join(120)
    receiver.fail_with = None
    try:
        assert len(accepted) == DELIVERIES
        # Every delivery that got a 2xx reaches the service, despite the kills.
        wait_until(lambda: _distinct(receiver) >= DELIVERIES, timeout=120, interval=0.2)
        time.sleep(2.5)  # past a lease: late copies of crashed sends would show up now
        by_provider: dict[int, set[str]] = defaultdict(set)
        copies = 0
        for got in receiver.deliveries:
            by_provider[json.loads(got.body)["n"]].add(got.id)
            copies += 1
        assert set(by_provider) == accepted
        # A stable id: every copy of one provider delivery carries the same delivery id.
        assert all(len(ids) == 1 for ids in by_provider.values())
        duplicates = copies - len(by_provider)
        elapsed = time.monotonic() - started
        print(
            f"\ncrash test: {DELIVERIES} accepted, {gateway.kills} SIGKILLs, "
            f"{len(by_provider)} distinct at the service, {duplicates} duplicates "
            f"({duplicates / DELIVERIES:.2%}), {receiver.attempts} attempts, {elapsed:.1f}s"
        )
        assert gateway.kills >= 1
    finally:
        gateway.stop()


def _distinct(receiver: Receiver) -> int:
    return len(set(receiver.ids()))
