"""Process metrics (CPU, memory, descriptors, GC) of every worker in /api/v1/metrics."""

from __future__ import annotations

import os
import re

import pytest

from tests.support.gateway import GatewayProcess, simple_config
from tests.support.net import request


def samples(text: str, name: str) -> dict[str, float]:
    """`name`'s samples by their `worker` label."""
    found = {}
    for match in re.finditer(rf"^{name}\{{([^}}]*)\}} (\S+)$", text, re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
        if name.startswith("python_gc") and labels.get("generation") != "0":
            continue
        found[labels["worker"]] = float(match.group(2))
    return found


def worker_pids(gateway: GatewayProcess) -> list[int]:
    if gateway.workers == 1:
        return [gateway.process.pid]
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                worker = b"resource_tracker" not in cmdline.read()
        except (OSError, ValueError, IndexError):
            continue
        if parent == gateway.process.pid and worker:
            pids.append(int(entry))
    return pids


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


@pytest.mark.parametrize("workers", [1, 2])
def test_every_worker_reports_its_own_process_metrics(upstream, workers):
    gateway = GatewayProcess(simple_config(upstream.url), workers=workers)
    try:
        expected = {str(i) for i in range(workers)}
        # Any worker may answer a scrape: wait until every worker has started.
        gateway.wait_for(
            lambda: len(worker_pids(gateway)) == workers
            and all(
                set(samples(request(gateway.port, "GET", "/api/v1/metrics").body.decode(),
                            "process_resident_memory_bytes")) == expected
                for _ in range(2)
            ),
            timeout=20,
        )  # fmt: skip
        for _ in range(6):
            text = request(gateway.port, "GET", "/api/v1/metrics").body.decode()
            for name in (
                "process_resident_memory_bytes",
                "process_cpu_seconds_total",
                "process_open_fds",
                "process_max_fds",
                "process_start_time_seconds",
                "python_gc_collections_total",
            ):
                values = samples(text, name)
                assert set(values) == expected, (name, values)
                assert all(v > 0 for v in values.values()), (name, values)
        # Each worker's own numbers, not one process's repeated: the RSS of each worker
        # label is the RSS of one worker process (within 25 %: it moves between reads).
        rss = samples(text, "process_resident_memory_bytes")
        actual = sorted(rss_bytes(pid) for pid in worker_pids(gateway))
        assert len(actual) == workers
        for reported, real in zip(sorted(rss.values()), actual, strict=True):
            assert abs(reported - real) / real < 0.25, (rss, actual)
    finally:
        gateway.stop()
