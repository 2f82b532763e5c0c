"""`python -m potok.demo.services <admin|state|state-v2|task> --port N`: run one demo service."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Sequence

import uvloop
from starlette.types import ASGIApp

from potok.demo.services import SERVICES
from potok.demo.services.jsonapi import VERSION_ENV
from potok.server.asgi_server import serve_asgi

PARENT_CHECK_INTERVAL = 1.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m potok.demo.services", description=__doc__)
    parser.add_argument("service", choices=sorted(SERVICES), help="which service to run")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to bind (default: the service's demo port)")
    parser.add_argument(
        "--parent-pid",
        type=int,
        help="exit when this process (the `potok demo` that started us) is gone",
    )
    return parser


async def _exit_with_parent(parent_pid: int) -> None:
    # If `potok demo` is killed outright (SIGKILL), nobody stops us: notice the re-parenting.
    while True:
        await asyncio.sleep(PARENT_CHECK_INTERVAL)
        if os.getppid() != parent_pid:
            os.kill(os.getpid(), signal.SIGTERM)
            return


async def _serve(app: ASGIApp, host: str, port: int, parent_pid: int | None) -> None:
    watcher = None
    if parent_pid is not None:
        watcher = asyncio.get_running_loop().create_task(_exit_with_parent(parent_pid))
    try:
        await serve_asgi(app, host, port)
    finally:
        if watcher is not None:
            watcher.cancel()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    spec = SERVICES[args.service]
    port = spec.default_port if args.port is None else args.port
    os.environ[VERSION_ENV] = spec.version
    app = spec.app_from_env()
    guarded = "X-Service-Key required" if os.environ.get(spec.api_key_env) else "no key check"
    print(
        f"{spec.name} service: http://{args.host}:{port} ({guarded})", file=sys.stderr, flush=True
    )
    try:
        uvloop.run(_serve(app, args.host, port, args.parent_pid))
    except OSError as exc:
        print(
            f"{spec.name} service: cannot listen on {args.host}:{port}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        pass
    print(f"{spec.name} service: stopped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
