"""`potok check`: validate a config; exit 0, or 1 listing every problem by field."""

from __future__ import annotations

import argparse
from typing import Any

from potok.cli.common import add_config_argument, load_or_report
from potok.tls.context import CertificateError
from potok.tls.listeners import load_certificates


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser("check", help="validate a config file")
    add_config_argument(parser)
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    config = load_or_report(args.config)
    if config is None:
        return 1
    try:
        # The https listeners' files, loaded as `potok run` would (a missing or
        # mismatched key is found here, not at the next deploy).
        load_certificates(config.listeners(), config.server.http2.enabled)
    except CertificateError as exc:
        print(f"{args.config}: {exc}")
        return 1
    print(f"{args.config}: ok ({len(config.services)} services, {len(config.routes)} routes)")
    return 0
