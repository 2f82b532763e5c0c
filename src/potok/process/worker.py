"""One worker process: wire the application (own API, Runtime, Gateway), serve it with the
HTTP server (server/), reload on SIGHUP, and drain on SIGTERM."""

from __future__ import annotations

import asyncio
import os
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
from potok.admin.broadcast import ClusterBroadcast
from potok.admin.cluster import Cluster
from potok.admin.overrides import OverrideStore
from potok.admin.router import AdminHandle
from potok.api.app import ApiContext, create_api
from potok.app import Gateway
from potok.config.listeners import ListenerConfig
from potok.config.models import GatewayConfig
from potok.config.source import ConfigSource
from potok.listening import ListenerView
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
from potok.server.tls_connection import TlsClientConnection
from potok.tls.context import CertificateError
from potok.tls.listeners import Certificates, load_certificates

if TYPE_CHECKING:
    from potok.acme.service import AcmeService
    from potok.realtime.service import Realtime
    from potok.tls.store import CertificateStore

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
    acme: AcmeService | None
    worker_id: str
    states: list[ServerState]
    admin: AdminHandle


async def _wire(
    config: GatewayConfig,
    worker_id: str,
    metrics_dir: Path | None,
    certificates: Certificates,
    supervised: bool = False,
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
    holder: dict[str, list[ServerState]] = {}  # the API asks the states built after it
    admin_holder: dict[str, AdminHandle] = {}
    api = create_api(
        ApiContext(
            is_ready=lambda: not any(state.draining for state in holder["states"]),
            runtime=lambda: gateway.runtime,
            prometheus=prometheus,
            admin=lambda: admin_holder.get("admin"),
        )
    )
    resources = Resources()
    first = config.listeners()[0]
    bridge = AsgiBridge(api, (first.host, first.port))
    # ACME certificates go to every https listener's store (SNI picks them by name).
    acme = _acme_service(config, registry, [files.store for files in certificates.values()])
    if acme is not None:
        await acme.store.open()  # tables or folders exist before a challenge is looked up
    responder = acme.responder if acme is not None else None
    runtime = Runtime(config, bridge, resources, registry, acme_terminal=responder)
    await runtime.identity.start()  # migrations run before the listener accepts anything
    realtime = runtime.realtime
    if realtime is not None:
        await realtime.start()
        bridge.websockets.limits = realtime.socketio_limits()
    if runtime.webhooks is not None:
        await runtime.webhooks.start()  # the outbox is open before a delivery can arrive
    gateway = Gateway(runtime, metrics, access_log)
    admission = Admission(gateway, config.server.overload, registry)
    state = ServerState(admission, runtime.settings)
    states = holder["states"] = [state]
    state.on_refusal = lambda status: metrics.refused.inc((str(status),))
    # The admin API's side of this worker; with --workers N its siblings reach it over a
    # Unix socket in the supervisor's private run directory (admin/cluster.py).
    run_dir = metrics_dir if supervised else None
    agent = WorkerAgent(worker_id, lambda: gateway.runtime, metrics, supervised, state)
    agent.overrides = OverrideStore(run_dir)
    agent.instance = _instance_name(run_dir)
    admin = admin_holder["admin"] = AdminHandle(Cluster(agent, run_dir), supervised)
    if realtime is not None:
        admin.broadcast = ClusterBroadcast(agent, realtime)
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
        acme,
        worker_id,
        states,
        admin,
    )


def _instance_name(run_dir: Path | None) -> str:
    """The same for every worker of this instance, different on every other: the host
    and the supervisor's run directory (made with mkdtemp), or this process alone."""
    alone = f"{os.getpid()}-{os.urandom(4).hex()}"
    return f"{socket.gethostname()}/{run_dir.name if run_dir is not None else alone}"


def _acme_service(
    config: GatewayConfig, registry: MetricsRegistry, sinks: list[CertificateStore]
) -> AcmeService | None:
    if config.acme is None:
        return None
    # Imported only when configured: the ACME client brings requests and josepy along.
    from potok.acme.service import AcmeService  # noqa: PLC0415

    return AcmeService(config, sinks=sinks, metrics=registry)


async def serve(
    config: GatewayConfig,
    *,
    worker_id: str = "0",
    metrics_dir: Path | None = None,
    source: ConfigSource | None = None,
    supervised: bool = False,
    sockets: list[socket.socket] | None = None,
    certificates: Certificates | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT, then drain and return; SIGHUP reloads from `source`
    and re-reads the certificate files.

    `sockets` are the listening sockets the supervisor made (one per listener, kept across
    restarts), `certificates` the https listeners' stores it loaded before forking (so
    every worker has the same session ticket keys); without them this worker makes its own.
    """
    loop = asyncio.get_running_loop()
    listeners = config.listeners()
    if certificates is None:
        certificates = await asyncio.to_thread(
            load_certificates, listeners, config.server.http2.enabled
        )
    else:
        # Loaded by the supervisor, maybe long ago (this worker may be a replacement):
        # files changed since are read now, not at the first poll or SIGHUP.
        for files in certificates.values():
            await asyncio.to_thread(files.reload, force=False)
    app = await _wire(config, worker_id, metrics_dir, certificates, supervised)
    watching = source is not None and config.reload.watch and not supervised
    # Under the supervisor, it watches the file and sends SIGHUP (one log line, not N).
    seen = await asyncio.to_thread(source.fingerprint) if watching and source is not None else None
    reloader = _reloader(source, app=app)
    app.admin.cluster.agent.reloader = reloader
    await app.admin.cluster.start()
    # The operator's overrides (a drained target, a breaker held) before the first
    # request, and after the socket is up: one taken from now on reaches this worker, one
    # taken before is in the file (the worker taking it writes it before asking anyone).
    await app.admin.cluster.agent.restore()
    backlog = config.server.backlog
    if sockets is None:
        effective_backlog(backlog)  # warns when the kernel caps it
        sockets = [listening_socket(lst.host, lst.port, backlog) for lst in listeners]
    served = await _listen(config, app, listeners, sockets, certificates)
    app.admission.start()
    runtime = app.gateway.runtime
    runtime.start()
    if app.acme is not None:
        app.acme.manager.start()  # HTTP-01 needs the listener above: it is accepting now
    background = [loop.create_task(_prune_pools(app.gateway))]
    background += [loop.create_task(files.watch()) for files in certificates.values()]
    if app.store is not None:
        background.append(loop.create_task(write_snapshots(app.registry, app.store)))
    loop.add_signal_handler(signal.SIGHUP, _on_sighup, reloader, certificates, app.acme)
    if _early_sighups:  # sent while this worker was starting: the file may be newer
        _early_sighups.clear()
        _on_sighup(reloader, certificates, app.acme)
    if reloader is not None and watching:
        background.append(loop.create_task(reloader.watch(config.reload.interval, seen)))

    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        # Under the supervisor, Ctrl-C reaches the parent, which sends SIGTERM.
        loop.add_signal_handler(signal.SIGINT, stop.set)
    tune_gc()
    await stop.wait()
    await _shut_down(app, served, background)
    log.info("stopped", worker=worker_id)


class _Served(NamedTuple):
    """One listener of this worker: its connections' shared state and its server."""

    config: ListenerConfig
    state: ServerState
    server: asyncio.Server

    @property
    def metrics_only(self) -> bool:
        return "proxy" not in self.config.serves and "api" not in self.config.serves


async def _listen(
    config: GatewayConfig,
    app: _Wired,
    listeners: tuple[ListenerConfig, ...],
    sockets: list[socket.socket],
    certificates: Certificates,
) -> list[_Served]:
    """A server per listener; the first listener's state is the one `_wire` made."""
    loop = asyncio.get_running_loop()
    backlog = config.server.backlog
    https_port = next((lst.port for lst in listeners if lst.protocol == "https"), None)
    served: list[_Served] = []
    for index, (listener, sock) in enumerate(zip(listeners, sockets, strict=True)):
        view = ListenerView.of(listener, https_port)
        if index == 0:
            state = app.state
            state.listener = view
        else:
            state = ServerState(app.admission, app.gateway.runtime.settings, view)
            state.on_refusal = app.state.on_refusal
            app.states.append(state)
        files = certificates.get(index)

        def factory(state: ServerState = state, tls: bool = files is not None) -> ClientConnection:
            return TlsClientConnection(state) if tls else ClientConnection(state)

        # The backlog again: the event loop calls listen() itself, with 100 unless told.
        server = await loop.create_server(
            factory,
            sock=sock,
            backlog=backlog,
            ssl=files.store.front if files is not None else None,
            # A client that opens a connection and never finishes the handshake is the
            # TLS form of a slow-loris: it gets the time a request head gets.
            ssl_handshake_timeout=config.server.timeouts.header_read if files else None,
        )
        state.start_sweeper()
        served.append(_Served(listener, state, server))
        log.info(
            "listening",
            listener=listener.label,
            host=listener.host,
            port=sock.getsockname()[1],
            serves=list(listener.serves),
            worker=app.worker_id,
        )
    return served


async def _shut_down(
    app: _Wired, served: list[_Served], background: list[asyncio.Task[None]]
) -> None:
    # WebSocket clients hear 1001 (going away) before the drain closes idle connections.
    app.bridge.websockets.going_away()
    if app.realtime is not None:
        await app.realtime.shutdown()
    if app.acme is not None:
        await app.acme.stop()  # an order in flight is abandoned; the next start retries it
    # The newest config, after reloads. Listeners of only probes and metrics are closed
    # last: they answer "draining" until the public side is done.
    public = [s for s in served if not s.metrics_only]
    await _drain(public or served, app.gateway.runtime.config)
    for rest in served:
        if rest not in public:
            rest.state.draining = True
            _close(rest)
    await app.admin.cluster.close()
    for task in background:
        task.cancel()
    app.admission.stop()
    app.gateway.runtime.close()
    await app.resources.close()
    if app.access_log is not None:
        app.access_log.close()
    if app.store is not None:
        app.store.write(app.registry.snapshot())


def _close(served: _Served) -> None:
    served.server.close()
    served.state.stop_sweeper()
    for connection in list(served.state.connections):
        connection.force_close()


async def _drain(served: list[_Served], config: GatewayConfig) -> None:
    """Readiness 503 at once; stop accepting; let in-flight requests finish within the grace."""
    loop = asyncio.get_running_loop()
    timeouts = config.server.timeouts
    states = [s.state for s in served]
    for state in states:
        state.draining = True
    open_now = sum(len(state.connections) for state in states)
    log.info("draining", connections=open_now, grace_s=timeouts.shutdown_grace)
    if timeouts.shutdown_delay:
        await asyncio.sleep(timeouts.shutdown_delay)
    for listener in served:
        listener.server.close()
    deadline = loop.time() + timeouts.shutdown_grace
    while any(state.connections for state in states) and loop.time() < deadline:
        for state in states:
            for connection in list(state.connections):
                connection.close_if_idle()
        await asyncio.sleep(0.02)
    remaining = sum(len(state.connections) for state in states)
    if remaining:
        log.warning("grace period over; closing connections", remaining=remaining)
        for state in states:
            for connection in list(state.connections):
                connection.force_close()
        await asyncio.sleep(0)
    for state in states:
        state.stop_sweeper()


def _reloader(source: ConfigSource | None, *, app: _Wired) -> Reloader | None:
    if source is None:
        return None

    def install(runtime: Runtime) -> None:
        app.gateway.runtime = runtime
        for state in app.states:
            state.settings = runtime.settings
        app.admission.configure(runtime.config.server.overload)
        # A service the reload rebuilt starts closed with every target in rotation: the
        # operator's overrides go back on (those of services and targets gone, dropped).
        app.admin.cluster.agent.reapply_soon()

    bridge, resources, registry = app.bridge, app.resources, app.registry
    # The acme: section itself is read at start (a change needs a restart); a reload keeps
    # answering challenges.
    responder = app.acme.responder if app.acme is not None else None

    def build(config: GatewayConfig, old: Runtime) -> Runtime:
        return Runtime(config, bridge, resources, registry, previous=old, acme_terminal=responder)

    return Reloader(
        source,
        current=lambda: app.gateway.runtime,
        build=build,
        install=install,
        counter=registry.counter("config_reloads_total", "Config reloads, by result.", ("result",)),
        history=app.gateway.runtime.config.admin.reload_history,
    )


def _on_sighup(
    reloader: Reloader | None, certificates: Certificates, acme: AcmeService | None = None
) -> None:
    if acme is not None:  # `potok certs` changed the storage: look at it now
        acme.manager.wake()
    for files in certificates.values():
        # Every certificate file read again (off the loop); a bad one keeps the old.
        task = asyncio.get_running_loop().create_task(asyncio.to_thread(files.reload, force=True))
        _reloads.add(task)
        task.add_done_callback(_reloads.discard)
    if reloader is None:
        if not certificates:
            log.warning("SIGHUP ignored: this gateway was not started from a config file")
        return
    reloader.request("SIGHUP")


_reloads: set[asyncio.Task[int]] = set()  # certificate reloads running (kept referenced)


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
    sockets: list[socket.socket] | None = None,
    certificates: Certificates | None = None,
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
                sockets=sockets,
                certificates=certificates,
            )
        )
    except CertificateError as exc:
        log.error("cannot serve https", error=str(exc))
        return 1
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
