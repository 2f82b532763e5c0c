"""`potok audit`: the security events recorded in the database, newest first."""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from typing import Any

from potok.cli.identity_store import add_store_arguments, run_with_database
from potok.cli.keys import _duration
from potok.config.models import GatewayConfig
from potok.identity.audit import AuditStore
from potok.identity.database import Database
from potok.identity.users import UserStore


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser("audit", help="show audit events")
    parser.add_argument("--since", type=_duration, help="only this far back, e.g. 1h")
    parser.add_argument("--event", help="event name; '*' is a wildcard (login.*)")
    parser.add_argument("--actor", help="only this user (by name or id), key (key:<id>) or subject")
    parser.add_argument("--limit", type=int, default=50, help="most events shown (50)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    add_store_arguments(parser)
    parser.set_defaults(handler=main)


async def _actor_names(database: Database, actor: str) -> tuple[str, ...]:
    """A user is recorded by name (logins, tokens) or by id (policies see the token's
    subject): `--actor alice` finds both."""
    users = UserStore(database)
    user = await users.by_username(actor) or await users.by_id(actor)
    if user is None:
        return (actor,)
    return tuple(dict.fromkeys((actor, user.username, user.id)))


def main(args: argparse.Namespace) -> int:
    async def act(config: GatewayConfig, database: Database) -> int:
        since = time.time() - args.since if args.since else None
        actors = await _actor_names(database, args.actor) if args.actor else None
        found = await AuditStore(database).query(
            since=since, event=args.event, actor=actors, limit=max(1, args.limit)
        )
        for item in found:
            when = datetime.fromtimestamp(item.at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            if args.json:
                row = {"at": when} | {
                    k: v for k, v in item.row().items() if k not in ("at", "detail")
                }
                row["detail"] = item.detail
                print(json.dumps(row))
            else:
                detail = json.dumps(item.detail) if item.detail else ""
                print(
                    f"{when}  {item.event:<22} {item.outcome:<7} actor={item.actor or '-'} "
                    f"ip={item.ip or '-'} route={item.route or '-'} {detail}".rstrip()
                )
        return 0

    result = run_with_database(args, act)
    return 1 if result is None else result
