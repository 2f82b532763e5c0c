"""`--workers N`: N worker processes on one port, a dead one replaced at once.

Workers are forked from this process, which has already imported everything a worker
runs, so a replacement serves within a fraction of a second (spawning a fresh
interpreter re-imported the whole gateway first). Only a worker that keeps dying soon
after it starts is restarted with a growing delay.

The supervisor makes the listening sockets, one per worker (`server/listener.py`: the
first claims the port, so a second gateway on it refuses to start), and keeps each
across its worker's restarts: connections queued for a worker that dies wait for its
replacement instead of being reset.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from types import FrameType

import structlog

from potok.config.models import GatewayConfig
from potok.config.source import ConfigSource
from potok.process.reload import Refused, load_candidate, log_refusal
from potok.process.worker import run_worker
from potok.server.listener import PortInUse, effective_backlog, listening_sockets

log = structlog.get_logger("potok.supervisor")

POLL_INTERVAL = 0.2
# A worker that dies within STABLE_AFTER of starting counts as crash-looping: the first
# such death is restarted at once, each further one in a row waits twice as long.
STABLE_AFTER = 10.0
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0


def restart_delay(quick_deaths: int) -> float:
    """Seconds to wait before restarting a worker that died young `quick_deaths` times
    in a row: 0, 0, 0.5, 1, 2, ... BACKOFF_MAX."""
    if quick_deaths <= 1:
        return 0.0
    return float(min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (quick_deaths - 2)))


def _worker_entry(
    config: GatewayConfig,
    worker_id: str,
    metrics_dir: str,
    source: ConfigSource | None,
    *,
    sock: socket.socket,
    inherited: list[socket.socket],
) -> None:
    # Children handle SIGTERM themselves; SIGINT from a terminal reaches the
    # whole process group, so the parent alone decides when to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Forked with the supervisor's handler (and SIGTERM blocked until here): until the
    # worker's event loop takes over, SIGTERM simply ends it.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    for other in inherited:
        if other is not sock:
            other.close()  # the siblings' sockets: held by the supervisor, not by this worker
    raise SystemExit(run_worker(config, worker_id, metrics_dir, source, supervised=True, sock=sock))


@dataclass
class _Slot:
    """One worker position: its socket outlives the processes that serve it."""

    worker_id: str
    sock: socket.socket
    process: BaseProcess | None = None
    started: float = 0.0
    quick_deaths: int = 0
    restart_at: float = 0.0


class Supervisor:
    def __init__(
        self, config: GatewayConfig, workers: int, source: ConfigSource | None = None
    ) -> None:
        self.config = config
        self.source = source
        self.count = workers
        self.metrics_dir = tempfile.mkdtemp(prefix="potok-metrics-")
        # fork, not spawn: a worker starts from this already-imported process.
        self._context = multiprocessing.get_context("fork")
        self._slots: list[_Slot] = []
        self._stopping = False
        self._reload_requested = False
        self._adopt_requested = False
        self._fingerprint = source.fingerprint() if source is not None else None
        self._next_watch = 0.0

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)
        signal.signal(signal.SIGUSR1, self._on_adopt)
        try:
            server = self.config.server
            try:
                sockets = listening_sockets(server.host, server.port, self.count, server.backlog)
            except PortInUse as exc:
                log.error("cannot listen", error=str(exc), port=exc.port)
                return 1
            except OSError as exc:
                log.error("cannot listen", error=str(exc), host=server.host, port=server.port)
                return 1
            effective_backlog(server.backlog)
            self._slots = [_Slot(str(index), sock) for index, sock in enumerate(sockets)]
            for slot in self._slots:
                self._start(slot)
            while not self._stopping:
                self._wait(POLL_INTERVAL)
                if self._adopt_requested:  # before restarting: a worker killed right after
                    self._adopt_requested = False  # an admin apply starts from the new config
                    self._adopt()
                self._restart_dead()
                if self._reload_requested or self._file_changed():
                    self._reload_requested = False
                    self._reload()
            return self._stop_all()
        finally:
            self._close_sockets()
            shutil.rmtree(self.metrics_dir, ignore_errors=True)

    def _start(self, slot: _Slot) -> None:
        process = self._context.Process(
            target=_worker_entry,
            args=(self.config, slot.worker_id, self.metrics_dir, self.source),
            kwargs={"sock": slot.sock, "inherited": [s.sock for s in self._slots]},
            name=f"potok-worker-{slot.worker_id}",
        )
        # Objects that exist now live as long as the worker: keeping them out of the
        # collector's generations keeps their pages shared with this process.
        gc.freeze()
        # Anything still buffered would be written twice: by this process and by the child.
        sys.stdout.flush()
        sys.stderr.flush()
        # The child starts with SIGHUP blocked (the mask survives fork) and unblocks it
        # once its handler is in place: a reload sent while it starts waits for it
        # instead of killing it (SIGHUP's default action). SIGTERM likewise until the
        # child has dropped the supervisor's handler.
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP, signal.SIGTERM})
        try:
            process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        slot.process = process
        slot.started = time.monotonic()

    def _wait(self, timeout: float) -> None:
        """Sleep until a worker exits, or `timeout`."""
        sentinels = [s.process.sentinel for s in self._slots if s.process is not None]
        if sentinels:
            wait(sentinels, timeout)
        else:
            time.sleep(timeout)

    def _restart_dead(self) -> None:
        now = time.monotonic()
        for slot in self._slots:
            process = slot.process
            if process is not None and not process.is_alive() and not self._stopping:
                lived = now - slot.started
                slot.quick_deaths = slot.quick_deaths + 1 if lived < STABLE_AFTER else 0
                delay = restart_delay(slot.quick_deaths)
                # `worker` in a line is the process writing it (here "supervisor").
                log.error(
                    "worker died; restarting",
                    child=slot.worker_id,
                    exit_code=process.exitcode,
                    lived_s=round(lived, 2),
                    restart_in_s=delay,
                )
                slot.process = None
                slot.restart_at = now + delay
            if slot.process is None and not self._stopping and now >= slot.restart_at:
                self._start(slot)

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True

    def _on_hup(self, signum: int, frame: FrameType | None) -> None:
        self._reload_requested = True

    def _on_adopt(self, signum: int, frame: FrameType | None) -> None:
        self._adopt_requested = True

    def _adopt(self) -> None:
        """SIGUSR1, from a worker whose admin API reloaded every worker (or wrote a new
        config and did): take the file's config for workers started from now on, without
        reloading the running ones again. The file's fingerprint too, so a watcher does
        not reload it once more."""
        if self.source is None:
            return
        try:
            self.config = load_candidate(self.source, self.config)
        except Refused as refused:
            log_refusal("supervisor (admin reload)", self.source.path, refused.problems)
            return
        self._fingerprint = self.source.fingerprint()

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
        for process in self._processes():
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGHUP)

    def _processes(self) -> list[BaseProcess]:
        return [slot.process for slot in self._slots if slot.process is not None]

    def _close_sockets(self) -> None:
        for slot in self._slots:
            slot.sock.close()

    def _stop_all(self) -> int:
        for process in self._processes():
            if process.is_alive() and process.pid is not None:
                process.terminate()  # SIGTERM: each worker drains
        # From now on a socket lives only as long as its worker keeps it: once the worker
        # stops accepting (after shutdown_delay), new connections are refused, not queued.
        self._close_sockets()
        deadline = time.monotonic() + self.config.server.timeouts.shutdown_grace + 5
        failed = False
        for process in self._processes():
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
                failed = True
            elif process.exitcode not in (0, None):
                failed = True
        return 1 if failed else 0
