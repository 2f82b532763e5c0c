"""`potok demo`: example services plus the gateway in front of them.

The three services (admin, state, task) run as child processes on loopback;
the gateway runs in the foreground with the config shipped in the package
(`potok/demo/potok-demo.yaml`). Ctrl-C or SIGTERM stops the gateway (it drains
as in production), then the services.
"""

from __future__ import annotations

import argparse
import base64
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from potok.cli.run import serve
from potok.config.loader import ConfigError, load_config
from potok.config.models import GatewayConfig
from potok.config.source import with_overrides
from potok.demo import DEMO_CONFIG_NAME, demo_config_resource
from potok.demo.identity import DEMO_USER, create_demo_user, demo_identity_env
from potok.demo.services import SERVICES
from potok.demo.services.events import EVENTS_KEY_ENV, EVENTS_URL_ENV
from potok.demo.services.task import WEBHOOK_SECRET_ENV
from potok.demo.tls import DemoCertificates, make_demo_certificates, with_https

SERVICES_HOST = "127.0.0.1"
PORT_ENV = {name: f"POTOK_DEMO_{name.upper().replace('-', '_')}_PORT" for name in SERVICES}
METRICS_PORT_ENV = "POTOK_DEMO_METRICS_PORT"  # the metrics listener: metrics, admin API, dashboard
START_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0


class DemoError(Exception):
    """Something that stops the demo from starting, with a message for the user."""


class _Stopped(Exception):
    """SIGTERM arrived before the gateway took over signal handling."""


def _port(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port (1-65535)")
    return value


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "demo",
        help="run example services behind the gateway",
        description=(
            "Start three example services (admin, state, task) on 127.0.0.1 and the gateway "
            "in front of them with a demo config. Needs no Redis, NATS or database."
        ),
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address the gateway binds (default: 127.0.0.1)"
    )
    parser.add_argument("--port", type=_port, default=8080, help="gateway port (default: 8080)")
    for name, spec in SERVICES.items():
        parser.add_argument(
            f"--{name}-port",
            type=_port,
            default=None,
            help=f"port of the {name} service (default: ${PORT_ENV[name]} or {spec.default_port})",
        )
    parser.add_argument(
        "--metrics-port",
        type=_port,
        default=9100,
        help=(
            "port of the loopback listener for metrics, the admin API and the dashboard "
            "(default: 9100)"
        ),
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="gateway worker processes (default: 1)"
    )
    parser.add_argument(
        "--https",
        action="store_true",
        help=(
            "also listen with TLS (a certificate for localhost from a CA made for this run; "
            "the banner prints the curl --cacert line)"
        ),
    )
    parser.add_argument(
        "--https-port", type=_port, default=8443, help="port of --https (default: 8443)"
    )
    parser.add_argument(
        "--show-config", action="store_true", help="print the demo config file and exit"
    )
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    if args.show_config:
        print(demo_config_resource().read_text(encoding="utf-8"), end="")
        return 0
    try:
        ports = _service_ports(args)
        if args.metrics_port in (args.port, *ports.values()):
            raise DemoError(f"--metrics-port {args.metrics_port} is taken by another part")
        config = _load_demo_config(ports, args.metrics_port)
        config = with_overrides(config, args.host, args.port, args.workers)
        _check_ports(args.host, args.port, ports, args.metrics_port)
        if args.https:
            if args.https_port in (args.port, args.metrics_port, *ports.values()):
                raise DemoError(f"--https-port {args.https_port} is taken by another part")
            _check_ports(args.host, args.https_port, {})
    except DemoError as exc:
        print(f"potok demo: {exc}", file=sys.stderr)
        return 1
    certificates = make_demo_certificates() if args.https else None
    if certificates is not None:
        config = with_https(config, args.https_port, certificates)
    previous = signal.signal(signal.SIGTERM, _raise_stopped)
    try:
        events_env = {"task": _events_env(config) | _webhook_env(config)}
        with ServiceProcesses(ports, _service_keys(config), events_env) as services:
            services.wait_ready(START_TIMEOUT)
            password = create_demo_user(config)
            text = banner(
                args.host,
                args.port,
                ports,
                password,
                _webhook_secret(config),
                metrics_port=args.metrics_port,
            )
            if certificates is not None:
                text += https_banner(args.host, args.https_port, certificates)
            print(text, flush=True)
            # From here the gateway's own handlers take SIGTERM/SIGINT and drain.
            return serve(config)
    except DemoError as exc:
        print(f"potok demo: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, _Stopped):
        print("potok demo: stopped before the gateway started", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
        if certificates is not None:
            certificates.remove()


def _raise_stopped(signum: int, frame: FrameType | None) -> None:
    raise _Stopped


def _service_ports(args: argparse.Namespace) -> dict[str, int]:
    ports: dict[str, int] = {}
    for name, spec in SERVICES.items():
        flag = getattr(args, f"{name.replace('-', '_')}_port")
        if flag is not None:
            ports[name] = flag
            continue
        from_env = os.environ.get(PORT_ENV[name])
        try:
            ports[name] = _port(from_env) if from_env else spec.default_port
        except (ValueError, argparse.ArgumentTypeError) as exc:
            raise DemoError(f"${PORT_ENV[name]}={from_env!r}: {exc}") from None
    taken = [*ports.values(), args.port]
    if len(set(taken)) != len(taken):
        raise DemoError(f"the gateway and the services need different ports, got {taken}")
    return ports


def _load_demo_config(ports: Mapping[str, int], metrics_port: int) -> GatewayConfig:
    env = dict(os.environ)
    env.update({PORT_ENV[name]: str(port) for name, port in ports.items()})
    env[METRICS_PORT_ENV] = str(metrics_port)
    env.update(demo_identity_env(env))
    with resources.as_file(demo_config_resource()) as path:
        try:
            return load_config(path, env)
        except ConfigError as exc:
            problems = "\n".join(f"  {field}: {message}" for field, message in exc.problems)
            raise DemoError(
                f"the demo config ({DEMO_CONFIG_NAME}) is invalid:\n{problems}"
            ) from None


def _service_keys(config: GatewayConfig) -> dict[str, str | None]:
    """The key the gateway injects for each service, which the service then demands."""
    return {
        name: (
            service.api_key.value
            if (service := config.services.get(name)) and service.api_key
            else None
        )
        for name in SERVICES
    }


def _events_env(config: GatewayConfig) -> dict[str, str]:
    """Where the task service publishes its events: the gateway's POST /api/v1/events."""
    realtime = config.realtime
    if realtime is None or not realtime.events.keys:
        return {}
    plain = config.listeners()[0]  # with --https too: the plain one comes first
    host = "127.0.0.1" if plain.host in ("0.0.0.0", "::", "") else plain.host
    netloc = f"[{host}]" if ":" in host else host
    return {
        EVENTS_URL_ENV: f"http://{netloc}:{plain.port}/api/v1/events",
        EVENTS_KEY_ENV: realtime.events.keys[0].key,
    }


def _webhook_env(config: GatewayConfig) -> dict[str, str]:
    """The secret the task service checks Potok's signature on forwarded webhooks with."""
    webhooks = config.webhooks
    if webhooks is None or webhooks.delivery.signing_secret is None:
        return {}
    return {WEBHOOK_SECRET_ENV: webhooks.delivery.signing_secret}


def _webhook_secret(config: GatewayConfig) -> str | None:
    """The `demo` source's secret (for the signing command the banner prints)."""
    webhooks = config.webhooks
    source = webhooks.sources.get("demo") if webhooks is not None else None
    return source.secrets[0] if source is not None else None


def _signing_command(base: str, secret: str) -> str:
    """One shell line that signs a delivery the Standard Webhooks way (openssl) and sends it."""
    key = base64.b64decode(secret.removeprefix("whsec_")).hex()
    body = '{"type":"ping","hello":"webhooks"}'
    return (
        f"  ID=msg_$(date +%s%N) TS=$(date +%s) BODY='{body}'; "
        "SIG=$(printf '%s' \"$ID.$TS.$BODY\" | openssl dgst -sha256 -mac HMAC "
        f"-macopt hexkey:{key} -binary | base64); curl -s -X POST {base}/api/v1/webhooks/demo "
        '-H "webhook-id: $ID" -H "webhook-timestamp: $TS" -H "webhook-signature: v1,$SIG" '
        "-H 'Content-Type: application/json' -d \"$BODY\""
    )


def _check_ports(
    gateway_host: str,
    gateway_port: int,
    ports: Mapping[str, int],
    metrics_port: int | None = None,
) -> None:
    """Fail early and clearly if a port is in use (a bind without SO_REUSEPORT is refused then)."""
    wanted = [("gateway", gateway_host, gateway_port)]
    wanted += [(f"{name} service", SERVICES_HOST, port) for name, port in ports.items()]
    if metrics_port is not None:
        wanted.append(("metrics listener", SERVICES_HOST, metrics_port))
    for what, host, port in wanted:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as exc:
                flag = "--port" if what == "gateway" else f"--{what.split()[0]}-port"
                raise DemoError(
                    f"port {port} on {host} for the {what} is not available "
                    f"({exc.strerror or exc}); stop whatever uses it or pick another with {flag}"
                ) from None


class ServiceProcesses:
    """The demo services as child processes; always terminated on leaving the `with` block."""

    def __init__(
        self,
        ports: Mapping[str, int],
        keys: Mapping[str, str | None],
        extra_env: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        self.ports = dict(ports)
        self.keys = dict(keys)
        self.extra_env = {name: dict(env) for name, env in (extra_env or {}).items()}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def __enter__(self) -> ServiceProcesses:
        try:
            for name, port in self.ports.items():
                self._start(name, port)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _start(self, name: str, port: int) -> None:
        env = dict(os.environ)
        key_env = SERVICES[name].api_key_env
        key = self.keys.get(name)
        if key:
            env[key_env] = key
        else:
            env.pop(key_env, None)
        env.update(self.extra_env.get(name, {}))
        command = [
            sys.executable, "-m", "potok.demo.services", name,
            "--host", SERVICES_HOST, "--port", str(port), "--parent-pid", str(os.getpid()),
        ]  # fmt: skip
        # A session of their own: Ctrl-C reaches only us, so the gateway drains before they stop.
        self.processes[name] = subprocess.Popen(command, env=env, start_new_session=True)

    def wait_ready(self, timeout: float) -> None:
        """Return once every service accepts connections; DemoError if one dies or is late."""
        deadline = time.monotonic() + timeout
        waiting = dict(self.ports)
        while waiting:
            for name, port in list(waiting.items()):
                code = self.processes[name].poll()
                if code is not None:
                    raise DemoError(
                        f"the {name} service exited (code {code}) before it was listening"
                    )
                try:
                    with socket.create_connection((SERVICES_HOST, port), timeout=0.2):
                        del waiting[name]
                except OSError:
                    pass
            if waiting and time.monotonic() > deadline:
                names = ", ".join(sorted(waiting))
                raise DemoError(f"services not listening after {timeout:g}s: {names}")
            if waiting:
                time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM every child, wait a little, SIGKILL what is left (signals held off meanwhile)."""
        held = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            running = [p for p in self.processes.values() if p.poll() is None]
            for process in running:
                process.terminate()
            deadline = time.monotonic() + STOP_TIMEOUT
            for process in running:
                try:
                    process.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        finally:
            for sig, handler in held.items():
                signal.signal(sig, handler)


def _python() -> str:
    """This interpreter (the venv's), as a shell word: a bare `python` may not be it, or
    may not have `websockets`."""
    return shlex.quote(sys.executable)


def _potok() -> str:
    """The `potok` command beside this interpreter (the venv's bin), as a shell word."""
    beside = Path(sys.executable).with_name("potok")
    return shlex.quote(str(beside)) if beside.exists() else "potok"


def banner(
    host: str,
    port: int,
    ports: Mapping[str, int],
    password: str = "<password>",
    webhook_secret: str | None = None,
    *,
    metrics_port: int = 9100,
) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    base = f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"
    operations = f"http://{SERVICES_HOST}:{metrics_port}"
    json = "-H 'Content-Type: application/json'"
    services = "  ".join(f"{name} :{p}" for name, p in ports.items())
    ws_base = "ws" + base.removeprefix("http")
    lines = [
        "",
        f"Potok demo: gateway on {base}  (services on {SERVICES_HOST}: {services})",
        "Try:",
        f"  curl -s {base}/api/v1/health",
        f"  curl -s {base}/api/v1/users",
        f'  curl -s -X POST {base}/api/v1/orgs/acme/tasks {json} -d \'{{"title": "Try Potok"}}\'',
        f"  curl -s {base}/legacy/tasks/acme/1        # rewritten to /api/v1/orgs/acme/tasks/1",
        f"  curl -si {base}/api/v1/state/overview | grep -i cache  # potok; fwd=uri-miss; stored",
        f"  curl -si {base}/api/v1/state/overview | grep -i cache  # potok; hit; ttl=29 (30 s)",
        f"  curl -s {base}/api/v1/dashboard-data      # users, state and tasks in one answer",
        f"  curl -si -H 'X-Canary: v2' {base}/api/v1/state | grep -i version  # the canary: v2",
        f"Operations (a loopback listener of its own, no credentials): {operations}/dashboard",
        f"  curl -s {operations}/api/v1/metrics | grep http_requests_total",
        f"  curl -s {operations}/api/v1/admin/services      # the admin API: docs/operations.md",
        f"  {_potok()} status --url {operations}",
        f"Identity: user {DEMO_USER!r}, password {password!r} (org acme, role admin)",
        f"  curl -s -X POST {base}/api/v1/auth/login {json} "
        f'-d \'{{"username": "{DEMO_USER}", "password": "{password}"}}\'',
        "  ACCESS=<access_token from the answer>  REFRESH=<refresh_token from the answer>",
        f'  curl -s -H "Authorization: Bearer $ACCESS" {base}/secure/users       # 401 without',
        f'  curl -s -H "Authorization: Bearer $ACCESS" {base}/secure/orgs/acme/tasks'
        "   # /secure/orgs/globex/tasks: 403",
        f"  curl -s -X POST {base}/api/v1/auth/refresh {json} "
        '-d "{\\"refresh_token\\": \\"$REFRESH\\"}"',
        f'  curl -s -X POST -H "Authorization: Bearer $ACCESS" {base}/api/v1/auth/logout',
        "Live task events over WebSocket (log in first; ACCESS as above):",
        f'  {_python()} -m websockets "{ws_base}/api/v1/ws?token=$ACCESS"',
        '  > {"type": "subscribe", "channel": "org:acme:tasks"}',
        "  then create or PATCH a task (the POST above): task:created / task:updated arrive live.",
        "  Socket.IO: path /api/v1/socket.io, auth {token: ACCESS}; see docs/realtime.md",
    ]
    if webhook_secret is not None:
        lines += [
            "Webhooks: a signed delivery to the source 'demo' (Standard Webhooks, secret "
            f"{webhook_secret}):",
            _signing_command(base, webhook_secret),
            "  -> 200 once stored; the task service prints its arrival (checking the gateway's",
            "  own signature), and it is published on the channel webhooks.demo:",
            '  > {"type": "subscribe", "channel": "webhooks.demo"}   (on the WebSocket above)',
        ]
    lines += [
        f"Swagger UI of the gateway's own API: {base}/api/docs    Press Ctrl-C to stop.",
        "",
    ]
    return "\n".join(lines)


def https_banner(host: str, port: int, files: DemoCertificates) -> str:
    """The --https lines: the same gateway over TLS, verified against the run's CA."""
    shown = "localhost" if host in ("0.0.0.0", "::", "", "127.0.0.1", "::1") else host
    base = f"https://{shown}:{port}"
    cacert = shlex.quote(str(files.ca))
    lines = [
        f"HTTPS on {base} (certificate for localhost from a CA made for this run: {files.ca})",
        f"  curl -s --cacert {cacert} {base}/api/v1/health",
        f"  curl -s --cacert {cacert} {base}/api/v1/users",
        f"  curl -sv --cacert {cacert} {base}/api/v1/health 2>&1 | grep -E 'SSL connection|ALPN'",
        f"  WebSocket over TLS: wss://{shown}:{port}/api/v1/ws (trust {files.ca})",
        "",
    ]
    return "\n".join(lines)
