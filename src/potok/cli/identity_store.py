"""What the identity subcommands share: the config's database, opened and migrated for one command.

`--database-url` (or $POTOK_DATABASE_URL) overrides the config's `database.url`,
so `potok users add` works without a config file too.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from potok.cli.common import add_config_argument, load_or_report
from potok.config.models import GatewayConfig
from potok.identity.audit import AuditEvent, AuditStore
from potok.identity.config import DatabaseConfig
from potok.identity.database import Database
from potok.identity.schema import migrate

T = TypeVar("T")


def add_store_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument(
        "--database-url",
        default=None,  # read after parsing: a .env file may set $POTOK_DATABASE_URL
        help="database to use instead of the config's database.url ($POTOK_DATABASE_URL)",
    )


def config_for(args: argparse.Namespace) -> GatewayConfig | None:
    """The config file's settings, or the defaults when there is no file at the default path."""
    path = Path(args.config)
    if not path.exists() and args.config == "potok.yaml" and "POTOK_CONFIG" not in os.environ:
        config = GatewayConfig()
    else:
        loaded = load_or_report(args.config)
        if loaded is None:
            return None
        config = loaded
    url = args.database_url or os.environ.get("POTOK_DATABASE_URL")
    if url:
        database = DatabaseConfig(**(config.database.model_dump() | {"url": url}))
        config = config.model_copy(update={"database": database})
    return config


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL (None for another database or an in-memory one)."""
    for prefix in ("sqlite+aiosqlite:///", "sqlite:///"):
        if url.startswith(prefix):
            file = url.removeprefix(prefix).partition("?")[0]
            return Path(file) if file and file != ":memory:" else None
    return None


def run_with_database(
    args: argparse.Namespace,
    action: Callable[[GatewayConfig, Database], Awaitable[T]],
    create: bool = False,
) -> T | None:
    """Open and migrate the database, run `action`, close. None (after saying why on
    stderr) if the config is invalid or its SQLite file does not exist: a typo in a path
    must not look like an empty database. With `create` (adding the first user or key
    before the gateway ever ran) a missing file is created, and that is said too."""
    config = config_for(args)
    if config is None:
        return None
    file = sqlite_file(config.database.url)
    if file is not None and not file.exists():
        if not create:
            fail(
                f"no database at {file} (database.url {config.database.url}); "
                "check --config or --database-url"
            )
            return None
        file.parent.mkdir(parents=True, exist_ok=True)
        print(f"potok: creating the database {file}", file=sys.stderr)

    async def main() -> T:
        database = Database(config.database)
        try:
            await migrate(database)
            return await action(config, database)
        finally:
            await database.close()

    return asyncio.run(main())


async def audit_admin(database: Database, event: str, actor: str, **detail: object) -> None:
    """An admin action done from the command line, recorded straight away."""
    import getpass  # noqa: PLC0415 - only here
    import time  # noqa: PLC0415

    try:
        operator = getpass.getuser()
    except (KeyError, OSError):
        operator = "unknown"
    await AuditStore(database).write(
        [AuditEvent(time.time(), event, "ok", actor, None, None, None, detail | {"by": operator})]
    )


def fail(message: str) -> int:
    print(f"potok: {message}", file=sys.stderr)
    return 1
