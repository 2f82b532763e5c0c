"""`potok <command>`: argument parsing and dispatch."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from potok import __version__
from potok.policies.entry import PolicyRegistryError

DEFAULT_CONFIG = "potok.yaml"


def build_parser() -> argparse.ArgumentParser:
    # The commands import the config models, which are generated from the policy registry
    # and so load the installed policy plugins: imported here, where main() can turn a
    # plugin that clashes or does not load into one clear line instead of a traceback.
    from potok.cli import (  # noqa: PLC0415
        audit,
        cache,
        certs,
        check,
        config_docs,
        demo,
        keys,
        routes,
        run,
        secrets,
        status,
        users,
        webhooks,
    )

    parser = argparse.ArgumentParser(prog="potok", description="Potok API gateway")
    parser.add_argument("--version", action="version", version=f"potok {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (
        run,
        check,
        routes,
        status,
        demo,
        config_docs,
        users,
        keys,
        secrets,
        audit,
        certs,
        cache,
        webhooks,
    ):
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()
    except PolicyRegistryError as error:
        print(f"potok: {error}", file=sys.stderr)
        return 2
    from potok.cli.common import read_env_file  # noqa: PLC0415  (loaded by build_parser)

    args = parser.parse_args(argv)
    if not read_env_file(args):
        return 1
    result: int = args.handler(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
