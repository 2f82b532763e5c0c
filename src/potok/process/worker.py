"""One worker process: wire the application (own API, Runtime, Gateway), serve it with the
HTTP server (server/), reload on SIGHUP, and drain on SIGTERM."""

from __future__ import annotations

import asyncio
import resource
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import structlog
import uvloop

from potok.admin.agent import WorkerAgent
from potok.admin.cluster import Cluster
from potok.admin.router import AdminHandle
from potok.api.app import ApiContext, create_api
from potok.app import Gateway
from potok.config.models import GatewayConfig
from potok.config.source import ConfigSource
from potok.observability.access_log import AccessLog
from potok.observability.logging import configure_logging
from potok.observability.metrics import (
    GatewayMetrics,
    MetricsRegistry,
    ProcessMetrics,
    SnapshotStore,
    build_prometheus_registry,
    write_snapshots,
)
from potok.process.gc_tuning import tune_gc
from potok.process.reload import Reloader
from potok.resources import Resources
from potok.runtime import Runtime
from potok.server.admission import Admission
from potok.server.asgi import AsgiBridge
from potok.server.connection import ClientConnection
from potok.server.listener import PortInUse, effective_backlog, listening_socket
from potok.server.state import ServerState

if TYPE_CHECKING:
    from potok.realtime.service import Realtime

log = structlog.get_logger("potok.worker")

POOL_PRUNE_INTERVAL = 5.0

# SIGHUPs that arrived before the event loop's handler was installed.
_early_sighups: list[int] = []


@dataclass
class _Wired:
    """One worker's application, built from the config: what `serve` starts and stops."""

    registry: MetricsRegistry
    metrics: GatewayMetrics
    store: SnapshotStore | None
    access_log: AccessLog | None
    resources: Resources
    bridge: AsgiBridge
    realtime: Realtime | None
    gateway: Gateway
    admission: Admission
    state: ServerState
    admin: AdminHandle


async def _wire(
    config: GatewayConfig, worker_id: str, metrics_dir: Path | None, supervised: bool = False
) -> _Wired:
    """Metrics, the own API behind its ASGI bridge, the Runtime, the Gateway and the state
    the server's connections share; identity's migrations and the realtime bus started."""
    registry = MetricsRegistry(worker_id)
    metrics = GatewayMetrics(registry)
    ProcessMetrics(registry)
    store = SnapshotStore(metrics_dir, worker_id) if metrics_dir is not None else None
    prometheus = build_prometheus_registry(registry, store)
    access_log = (
        AccessLog(config.logging.access_log.path, worker_id)
        if config.logging.access_log.enabled
        else None
    )
    holder: dict[str, ServerState] = {}  # the API asks the state and gateway built after it
    admin_holder: dict[str, AdminHandle] = {}
    api = create_api(
        ApiContext(
            is_ready=lambda: not holder["state"].draining,
            runtime=lambda: gateway.runtime,
            prometheus=prometheus,
            admin=lambda: admin_holder.get("admin"),
        )
    )
    resources = Resources()
    bridge = AsgiBridge(api, (config.server.host, config.server.port))
    runtime = Runtime(config, bridge, resources, registry)
    await runtime.identity.start()  # migrations run before the listener accepts anything
    realtime = runtime.realtime
    if realtime is not None:
        await realtime.start()
        bridge.websockets.limits = realtime.socketio_limits()
    gateway = Gateway(runtime, metrics, access_log)
    admission = Admission(gateway, config.server.overload, registry)
    state = ServerState(admission, runtime.settings)
    holder["state"] = state
    state.on_refusal = lambda status: metrics.refused.inc((str(status),))
    # The admin API's side of this worker; with --workers N its siblings reach it over a
    # Unix socket in the supervisor's private run directory (admin/cluster.py).
    agent = WorkerAgent(worker_id, lambda: gateway.runtime, metrics, supervised, state)
    admin = admin_holder["admin"] = AdminHandle(
        Cluster(agent, metrics_dir if supervised else None), supervised
    )
    return _Wired(
        registry,
        metrics,
        store,
        access_log,
        resources,
        bridge,
        realtime,
        gateway,
        admission,
        state,
        admin,
    )


async def serve(
    config: GatewayConfig,
    *,
    worker_id: str = "0",
    metrics_dir: Path | None = None,
    source: ConfigSource | None = None,
    supervised: bool = False,
    sock: socket.socket | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT, then drain and return; SIGHUP reloads from `source`.

    `sock` is the listening socket the supervisor made (and keeps across restarts);
    without one this worker claims the port itself.
    """
    loop = asyncio.get_running_loop()
    app = await _wire(config, worker_id, metrics_dir, supervised)
    state = app.state
    watching = source is not None and config.reload.watch and not supervised
    # Under the supervisor, it watches the file and sends SIGHUP (one log line, not N).
    seen = await asyncio.to_thread(source.fingerprint) if watching and source is not None else None
    backlog = config.server.backlog
    if sock is None:
        effective_backlog(backlog)  # warns when the kernel caps it
        sock = listening_socket(config.server.host, config.server.port, backlog)
    # The backlog again: the event loop calls listen() itself, with 100 unless told.
    server = await loop.create_server(lambda: ClientConnection(state), sock=sock, backlog=backlog)
    state.start_sweeper()
    app.admission.start()
    runtime = app.gateway.runtime
    # Worker 0 alone serves the metrics listener: a scrape merges every worker's
    # metrics whichever worker answers, and a port has one owner (server/listener.py).
    admin = (
        await _admin_listener(config, runtime, app.metrics, app.access_log)
        if worker_id == "0"
        else None
    )
    gateways = [app.gateway] if admin is None else [app.gateway, admin.gateway]
    runtime.start()
    background = [loop.create_task(_prune_pools(app.gateway))]
    if app.store is not None:
        background.append(loop.create_task(write_snapshots(app.registry, app.store)))
    reloader = _reloader(source, gateways=gateways, app=app)
    app.admin.cluster.agent.reloader = reloader
    await app.admin.cluster.start()
    loop.add_signal_handler(signal.SIGHUP, _on_sighup, reloader)
    if _early_sighups:  # sent while this worker was starting: the file may be newer
        _early_sighups.clear()
        _on_sighup(reloader)
    if reloader is not None and watching:
        background.append(loop.create_task(reloader.watch(config.reload.interval, seen)))

    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        # Under the supervisor, Ctrl-C reaches the parent, which sends SIGTERM.
        loop.add_signal_handler(signal.SIGINT, stop.set)
    log.info("listening", host=config.server.host, port=config.server.port, worker=worker_id)
    tune_gc()
    await stop.wait()
    await _shut_down(app, server, admin, background)
    log.info("stopped", worker=worker_id)


async def _shut_down(
    app: _Wired,
    server: asyncio.Server,
    admin: AdminListener | None,
    background: list[asyncio.Task[None]],
) -> None:
    # WebSocket clients hear 1001 (going away) before the drain closes idle connections.
    app.bridge.websockets.going_away()
    if app.realtime is not None:
        await app.realtime.shutdown()
    await _drain(app.state, server, app.gateway.runtime.config)  # the newest, after reloads
    if admin is not None:  # probes answered "draining" until the public side was done
        admin.close()
    await app.admin.cluster.close()
    for task in background:
        task.cancel()
    app.state.stop_sweeper()
    app.admission.stop()
    app.gateway.runtime.close()
    await app.resources.close()
    if app.access_log is not None:
        app.access_log.close()
    if app.store is not None:
        app.store.write(app.registry.snapshot())


async def _drain(state: ServerState, server: asyncio.Server, config: GatewayConfig) -> None:
    """Readiness 503 at once; stop accepting; let in-flight requests finish within the grace."""
    loop = asyncio.get_running_loop()
    timeouts = config.server.timeouts
    state.draining = True
    log.info("draining", connections=len(state.connections), grace_s=timeouts.shutdown_grace)
    if timeouts.shutdown_delay:
        await asyncio.sleep(timeouts.shutdown_delay)
    server.close()
    deadline = loop.time() + timeouts.shutdown_grace
    while state.connections and loop.time() < deadline:
        for connection in list(state.connections):
            connection.close_if_idle()
        await asyncio.sleep(0.02)
    if state.connections:
        log.warning("grace period over; closing connections", remaining=len(state.connections))
        for connection in list(state.connections):
            connection.force_close()
        await asyncio.sleep(0)


class AdminListener(NamedTuple):
    gateway: Gateway
    state: ServerState
    server: asyncio.Server

    def close(self) -> None:
        self.server.close()
        self.state.stop_sweeper()
        for connection in list(self.state.connections):
            connection.force_close()


async def _admin_listener(
    config: GatewayConfig,
    runtime: Runtime,
    metrics: GatewayMetrics,
    access_log: AccessLog | None,
) -> AdminListener | None:
    """The metrics listener (`metrics.listen`): health probes and metrics on a port of
    their own, served by a handler that routes only those."""
    address = config.metrics.address()
    if address is None:
        return None
    handler = Gateway(runtime, metrics, access_log, admin=True)
    state = ServerState(handler, runtime.settings)
    sock = listening_socket(*address, config.server.backlog)
    server = await asyncio.get_running_loop().create_server(
        lambda: ClientConnection(state), sock=sock, backlog=config.server.backlog
    )
    state.start_sweeper()
    log.info("metrics listening", host=address[0], port=address[1])
    return AdminListener(handler, state, server)


def _reloader(
    source: ConfigSource | None, *, gateways: list[Gateway], app: _Wired
) -> Reloader | None:
    if source is None:
        return None

    def install(runtime: Runtime) -> None:
        for gateway in gateways:
            gateway.runtime = runtime
        app.state.settings = runtime.settings
        app.admission.configure(runtime.config.server.overload)

    bridge, resources, registry = app.bridge, app.resources, app.registry
    return Reloader(
        source,
        current=lambda: gateways[0].runtime,
        build=lambda config, old: Runtime(config, bridge, resources, registry, previous=old),
        install=install,
        counter=registry.counter("config_reloads_total", "Config reloads, by result.", ("result",)),
        history=gateways[0].runtime.config.admin.reload_history,
    )


def _on_sighup(reloader: Reloader | None) -> None:
    if reloader is None:
        log.warning("SIGHUP ignored: this gateway was not started from a config file")
        return
    reloader.request("SIGHUP")


async def _prune_pools(gateway: Gateway) -> None:
    while True:
        await asyncio.sleep(POOL_PRUNE_INTERVAL)
        gateway.runtime.prune_pools()


def run_worker(
    config: GatewayConfig,
    worker_id: str = "0",
    metrics_dir: str | None = None,
    source: ConfigSource | None = None,
    *,
    supervised: bool = False,
    sock: socket.socket | None = None,
) -> int:
    """Process entry point (also used by the supervisor's forked children)."""
    # Until the loop's handler is in place, a SIGHUP (a reload) must neither end the
    # process nor be lost: it is noted, and serve() reloads once it can.
    signal.signal(signal.SIGHUP, lambda signum, frame: _early_sighups.append(signum))
    # Under the supervisor the process starts with SIGHUP blocked; one sent meanwhile is
    # delivered to the handler above now.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
    configure_logging(config.logging.level, config.logging.format, worker_id)
    raise_open_files_limit()
    try:
        uvloop.run(
            serve(
                config,
                worker_id=worker_id,
                metrics_dir=Path(metrics_dir) if metrics_dir else None,
                source=source,
                supervised=supervised,
                sock=sock,
            )
        )
    except PortInUse as exc:
        log.error("cannot listen", error=str(exc), port=exc.port)
        return 1
    except OSError as exc:
        log.error("cannot serve", error=str(exc))
        return 1
    sys.stdout.flush()
    return 0


def raise_open_files_limit() -> None:
    """Soft RLIMIT_NOFILE up to the hard limit: every client and upstream connection is a
    file descriptor, and the usual soft default (1,024) ends a connection storm in EMFILE."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (OSError, ValueError):
            log.warning("cannot raise the open files limit", soft=soft, hard=hard)
