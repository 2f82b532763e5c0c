"""What several subcommands share: finding and loading the config file."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from potok.config.env_file import EnvFileError, apply_env_file
from potok.config.loader import ConfigError, load_config
from potok.config.models import GatewayConfig

DEFAULT_CONFIG = "potok.yaml"


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        "-c",
        default=os.environ.get("POTOK_CONFIG", DEFAULT_CONFIG),
        help="YAML file (default: $POTOK_CONFIG or ./potok.yaml)",
    )
    parser.add_argument(
        "--env-file",
        default=None,
        help=(
            "KEY=value lines added to the environment before the config is read; variables "
            "already set win (default: .env beside the config file, if there is one)"
        ),
    )


def read_env_file(args: argparse.Namespace) -> bool:
    """Apply `--env-file` (or a `.env` beside the config); False after saying why not."""
    if not hasattr(args, "config"):
        return True
    given = getattr(args, "env_file", None)
    path = Path(given) if given else Path(args.config).resolve().parent / ".env"
    if not given and not path.is_file():
        return True  # the default file is optional; an explicit one is not
    try:
        apply_env_file(path)
    except OSError as exc:
        print(f"potok: cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
        return False
    except EnvFileError as exc:
        print(f"potok: {exc}", file=sys.stderr)
        return False
    return True


def load_or_report(path: str) -> GatewayConfig | None:
    """The config, or None after printing every problem to stderr."""
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"{path}: invalid configuration", file=sys.stderr)
        for field, message in exc.problems:
            print(f"  {field}: {message}" if field else f"  {message}", file=sys.stderr)
        return None
