"""`--workers N`: N worker processes on one SO_REUSEPORT port, restarted if they die."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import tempfile
import time
from multiprocessing.process import BaseProcess
from types import FrameType

import structlog

from potok.config.models import GatewayConfig
from potok.config.source import ConfigSource
from potok.server.reload import Refused, load_candidate, log_refusal
from potok.server.worker import run_worker

log = structlog.get_logger("potok.supervisor")

RESTART_BACKOFF = 1.0


def _worker_entry(
    config: GatewayConfig, worker_id: str, metrics_dir: str, source: ConfigSource | None
) -> None:
    # Children handle SIGTERM themselves; SIGINT from a terminal reaches the
    # whole process group, so the parent alone decides when to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise SystemExit(run_worker(config, worker_id, metrics_dir, source, supervised=True))


class Supervisor:
    def __init__(
        self, config: GatewayConfig, workers: int, source: ConfigSource | None = None
    ) -> None:
        self.config = config
        self.source = source
        self.count = workers
        self.metrics_dir = tempfile.mkdtemp(prefix="potok-metrics-")
        # spawn, not fork: each worker starts with a fresh interpreter and event loop.
        self._context = multiprocessing.get_context("spawn")
        self._workers: dict[str, BaseProcess] = {}
        self._stopping = False
        self._reload_requested = False
        self._fingerprint = source.fingerprint() if source is not None else None
        self._next_watch = 0.0

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)
        try:
            for index in range(self.count):
                self._start(str(index))
            while not self._stopping:
                time.sleep(0.2)
                self._restart_dead()
                if self._reload_requested or self._file_changed():
                    self._reload_requested = False
                    self._reload()
            return self._stop_all()
        finally:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)

    def _start(self, worker_id: str) -> None:
        process = self._context.Process(
            target=_worker_entry,
            args=(self.config, worker_id, self.metrics_dir, self.source),
            name=f"potok-worker-{worker_id}",
        )
        # The child starts with SIGHUP blocked (the mask survives fork and exec) and
        # unblocks it once its handler is in place: a reload sent while it imports
        # waits for it instead of killing it (SIGHUP's default action).
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
        try:
            process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        self._workers[worker_id] = process

    def _restart_dead(self) -> None:
        for worker_id, process in list(self._workers.items()):
            if not process.is_alive() and not self._stopping:
                log.error("worker died; restarting", worker=worker_id, exit_code=process.exitcode)
                time.sleep(RESTART_BACKOFF)
                self._start(worker_id)

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True

    def _on_hup(self, signum: int, frame: FrameType | None) -> None:
        self._reload_requested = True

    def _file_changed(self) -> bool:
        if self.source is None or not self.config.reload.watch:
            return False
        now = time.monotonic()
        if now < self._next_watch:
            return False
        self._next_watch = now + self.config.reload.interval
        fingerprint = self.source.fingerprint()
        if fingerprint is None or fingerprint == self._fingerprint:
            return False
        self._fingerprint = fingerprint
        return True

    def _reload(self) -> None:
        """Check the file once here, then let every worker apply it (SIGHUP).

        Workers load and judge it themselves (the same rules); checking here first
        keeps a bad file to one log line, and a worker restarted later starts from
        the newest config that passed.
        """
        if self.source is None:
            log.warning("SIGHUP ignored: this gateway was not started from a config file")
            return
        try:
            self.config = load_candidate(self.source, self.config)
        except Refused as refused:
            log_refusal("supervisor", self.source.path, refused.problems)
            return
        for process in self._workers.values():
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGHUP)

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
