"""`potok keys create|list|revoke|rotate`: API keys for machine clients.

A key is printed once, at creation or rotation; the database keeps its hash.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from typing import Any

from potok.cli.identity_store import add_store_arguments, audit_admin, fail, run_with_database
from potok.config.models import GatewayConfig
from potok.config.units import parse_duration
from potok.identity import audit as events
from potok.identity.api_keys import ApiKey, ApiKeyStore
from potok.identity.database import Database
from potok.identity.users import UserError


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _duration(text: str) -> float:
    try:
        value = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not isinstance(value, float) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive duration")
    return value


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser("keys", help="manage API keys")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="create a key (printed once)")
    create.add_argument("--name", required=True, help="what the key is for")
    create.add_argument("--scopes", type=_csv, default=(), help="comma-separated scopes")
    create.add_argument("--roles", type=_csv, default=(), help="comma-separated roles")
    create.add_argument("--org", help="organisation (tenant) the key acts for")
    create.add_argument("--expires", type=_duration, help="lifetime, e.g. 720h (default: none)")
    listing = actions.add_parser("list", help="list keys (never the keys themselves)")
    listing.add_argument("--json", action="store_true", help="one JSON document")
    revoke = actions.add_parser("revoke", help="revoke a key now")
    revoke.add_argument("key_id")
    rotate = actions.add_parser("rotate", help="new key; the old one keeps working for --overlap")
    rotate.add_argument("key_id")
    rotate.add_argument(
        "--overlap", type=_duration, default=86400.0, help="old key's remaining life (24h)"
    )
    rotate.add_argument(
        "--expires",
        type=_duration,
        help="new key's lifetime from now, e.g. 720h (default: the old key's original lifetime)",
    )
    for sub in (create, listing, revoke, rotate):
        add_store_arguments(sub)
    parser.set_defaults(handler=main)


def _when(value: float | None) -> str | None:
    if value is None:
        return None
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _row(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "name": key.name,
        "state": key.state(time.time()),
        "scopes": list(key.scopes),
        "roles": list(key.roles),
        "org": key.org,
        "created_at": _when(key.created_at),
        "expires_at": _when(key.expires_at),
        "last_used_at": _when(key.last_used_at),
        "replaced_by": key.replaced_by,
    }


def main(args: argparse.Namespace) -> int:
    async def act(config: GatewayConfig, database: Database) -> int:
        store = ApiKeyStore(database)
        if args.action == "create":
            expires = time.time() + args.expires if args.expires else None
            key, plaintext = await store.create(
                args.name, args.scopes, args.roles, args.org, expires
            )
            await audit_admin(database, events.KEY_CREATED, key.id, name=key.name)
            print(plaintext)
            print(f"key id {key.id}: store the key now, it is not shown again", flush=True)
            return 0
        if args.action == "list":
            rows = [_row(k) for k in await store.all()]
            if args.json:
                print(json.dumps(rows, indent=2))
            else:
                for r in rows:
                    scopes = ",".join(r["scopes"]) or "-"
                    print(
                        f"{r['id']}\t{r['state']}\t{r['name']}\tscopes={scopes}\t"
                        f"org={r['org'] or '-'}\tlast_used={r['last_used_at'] or '-'}"
                    )
            return 0
        if args.action == "revoke":
            key = await store.revoke(args.key_id)
            await audit_admin(database, events.KEY_REVOKED, key.id, name=key.name)
            print(f"key {key.id} revoked")
            return 0
        old, new, plaintext = await store.rotate(args.key_id, args.overlap, args.expires)
        await audit_admin(database, events.KEY_ROTATED, old.id, new_key=new.id)
        print(plaintext)
        print(
            f"key id {new.id} replaces {old.id}, which stops working at {_when(old.expires_at)}; "
            f"the new key expires {_when(new.expires_at) or 'never'}",
            flush=True,
        )
        return 0

    try:
        result = run_with_database(args, act, create=args.action == "create")
    except UserError as exc:
        return fail(str(exc))
    return 1 if result is None else result
