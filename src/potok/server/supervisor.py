"""`--workers N`: N worker processes on one SO_REUSEPORT port, restarted if they die."""

from __future__ import annotations

import multiprocessing
import shutil
import signal
import tempfile
import time
from multiprocessing.process import BaseProcess
from types import FrameType

import structlog

from potok.config.models import GatewayConfig
from potok.server.worker import run_worker

log = structlog.get_logger("potok.supervisor")

RESTART_BACKOFF = 1.0


def _worker_entry(config: GatewayConfig, worker_id: str, metrics_dir: str) -> None:
    # Children handle SIGTERM themselves; SIGINT from a terminal reaches the
    # whole process group, so the parent alone decides when to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise SystemExit(run_worker(config, worker_id, metrics_dir))


class Supervisor:
    def __init__(self, config: GatewayConfig, workers: int) -> None:
        self.config = config
        self.count = workers
        self.metrics_dir = tempfile.mkdtemp(prefix="potok-metrics-")
        # spawn, not fork: each worker starts with a fresh interpreter and event loop.
        self._context = multiprocessing.get_context("spawn")
        self._workers: dict[str, BaseProcess] = {}
        self._stopping = False

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        try:
            for index in range(self.count):
                self._start(str(index))
            while not self._stopping:
                time.sleep(0.2)
                self._restart_dead()
            return self._stop_all()
        finally:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)

    def _start(self, worker_id: str) -> None:
        process = self._context.Process(
            target=_worker_entry,
            args=(self.config, worker_id, self.metrics_dir),
            name=f"potok-worker-{worker_id}",
        )
        process.start()
        self._workers[worker_id] = process

    def _restart_dead(self) -> None:
        for worker_id, process in list(self._workers.items()):
            if not process.is_alive() and not self._stopping:
                log.error("worker died; restarting", worker=worker_id, exit_code=process.exitcode)
                time.sleep(RESTART_BACKOFF)
                self._start(worker_id)

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True

    def _stop_all(self) -> int:
        for process in self._workers.values():
            if process.is_alive() and process.pid is not None:
                process.terminate()  # SIGTERM: each worker drains
        deadline = time.monotonic() + self.config.server.timeouts.shutdown_grace + 5
        failed = False
        for process in self._workers.values():
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
                failed = True
            elif process.exitcode not in (0, None):
                failed = True
        return 1 if failed else 0
