"""What several subcommands share: finding and loading the config file."""

from __future__ import annotations

import argparse
import os
import sys

from potok.config import ConfigError, GatewayConfig, load_config

DEFAULT_CONFIG = "potok.yaml"


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        "-c",
        default=os.environ.get("POTOK_CONFIG", DEFAULT_CONFIG),
        help="YAML file (default: $POTOK_CONFIG or ./potok.yaml)",
    )


def load_or_report(path: str) -> GatewayConfig | None:
    """The config, or None after printing every problem to stderr."""
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"{path}: invalid configuration", file=sys.stderr)
        for field, message in exc.problems:
            print(f"  {field}: {message}" if field else f"  {message}", file=sys.stderr)
        return None
