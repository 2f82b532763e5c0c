"""`potok <command>`: argument parsing and dispatch."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from potok import __version__
from potok.cli import audit, check, config_docs, demo, keys, routes, run, secrets, users
from potok.cli.common import read_env_file

DEFAULT_CONFIG = "potok.yaml"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="potok", description="Potok API gateway")
    parser.add_argument("--version", action="version", version=f"potok {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (run, check, routes, demo, config_docs, users, keys, secrets, audit):
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not read_env_file(args):
        return 1
    result: int = args.handler(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
