"""`potok config-docs`: the configuration reference or JSON Schema, from the models."""

from __future__ import annotations

import argparse
from typing import Any

from potok.config.reference import json_schema, markdown


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "config-docs", help="print the configuration reference (Markdown) or JSON Schema"
    )
    parser.add_argument(
        "--schema", action="store_true", help="print JSON Schema for editors instead"
    )
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    print(json_schema() if args.schema else markdown(), end="")
    return 0
