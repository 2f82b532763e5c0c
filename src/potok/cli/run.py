"""`potok run`: serve with a config file."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pydantic import ValidationError

from potok.cli.common import add_config_argument, load_or_report
from potok.config.models import GatewayConfig
from potok.config.source import ConfigSource, with_overrides
from potok.observability.logging import configure_logging
from potok.process.supervisor import Supervisor
from potok.process.worker import run_worker


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser("run", help="run the gateway")
    add_config_argument(parser)
    parser.add_argument("--host", help="address to bind (overrides server.host)")
    parser.add_argument("--port", type=int, help="port to bind (overrides server.port)")
    parser.add_argument("--workers", type=int, help="worker processes (overrides server.workers)")
    parser.set_defaults(handler=main)


def serve(config: GatewayConfig, source: ConfigSource | None = None) -> int:
    """Run the gateway; with a source, SIGHUP (or a watched file) reloads from it."""
    if config.server.workers > 1:
        # The supervisor's own lines in the configured format and shape, like the workers'.
        configure_logging(config.logging.level, config.logging.format, worker="supervisor")
        return Supervisor(config, config.server.workers, source).run()
    return run_worker(config, source=source)


def main(args: argparse.Namespace) -> int:
    config = load_or_report(args.config)
    if config is None:
        return 1
    source = ConfigSource(args.config, args.host, args.port, args.workers)
    try:
        config = with_overrides(config, args.host, args.port, args.workers, source.directory)
    except ValidationError as exc:
        # An override can make a valid file invalid (a memory rate limit with --workers 2).
        print(f"{args.config}: invalid with the command-line overrides", file=sys.stderr)
        for error in exc.errors():
            print(f"  {error['msg'].removeprefix('Value error, ')}", file=sys.stderr)
        return 1
    return serve(config, source)
