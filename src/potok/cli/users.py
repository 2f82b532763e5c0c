"""`potok users add|list|disable|enable|set-password|update`: the token service's users.

Disabling a user or setting a new password also revokes the user's refresh
tokens and every access token issued before (running gateways pick the
revocation up from the database within `auth.revocation.poll_interval`).
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
from typing import Any

from potok.admin.identity import user_row
from potok.cli.identity_store import add_store_arguments, audit_admin, fail, run_with_database
from potok.config.models import GatewayConfig
from potok.identity import audit as events
from potok.identity.database import Database
from potok.identity.passwords import PasswordError, PasswordHasher, check_password
from potok.identity.refresh_tokens import RefreshTokenStore
from potok.identity.revocation import SUBJECT, RevocationStore
from potok.identity.users import User, UserError, UserStore


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "users", help="manage users of the token service"
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    add = actions.add_parser("add", help="create a user (asks for the password)")
    add.add_argument("username")
    add.add_argument("--roles", type=_csv, default=(), help="comma-separated roles")
    add.add_argument("--org", help="organisation (tenant) of the user")
    add.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )

    listing = actions.add_parser("list", help="list users")
    listing.add_argument("--json", action="store_true", help="one JSON document")

    disable = actions.add_parser("disable", help="disable a user and end their sessions")
    disable.add_argument("username")
    enable = actions.add_parser("enable", help="enable a user again")
    enable.add_argument("username")

    password = actions.add_parser("set-password", help="set a new password, ending all sessions")
    password.add_argument("username")
    password.add_argument("--password-stdin", action="store_true", help="read it from stdin")

    update = actions.add_parser("update", help="change roles or organisation")
    update.add_argument("username")
    update.add_argument("--roles", type=_csv, help="comma-separated roles (replaces them)")
    update.add_argument("--org", help="organisation ('' removes it)")

    for sub in (add, listing, disable, enable, password, update):
        add_store_arguments(sub)
    parser.set_defaults(handler=main)


def read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Repeat: ") != first:
        raise PasswordError("the passwords differ")
    return first


async def _end_sessions(database: Database, config: GatewayConfig, user: User) -> None:
    await RefreshTokenStore(database).revoke_user(user.id)
    horizon = time.time() + config.auth.token_service.access_ttl + 60
    await RevocationStore(database).add(SUBJECT, user.id, horizon)


def main(args: argparse.Namespace) -> int:
    try:
        password = (
            check_password(read_password(args.password_stdin))
            if args.action in ("add", "set-password")
            else None
        )
    except PasswordError as exc:
        return fail(str(exc))

    async def act(config: GatewayConfig, database: Database) -> int:
        store = UserStore(database)
        hasher = PasswordHasher(config.auth.passwords)
        action = args.action
        if action == "list":
            users = await store.all()
            if args.json:
                print(json.dumps([user_row(u) for u in users], indent=2))
            else:
                for u in users:
                    state = "disabled" if u.disabled else "active"
                    roles = ",".join(u.roles) or "-"
                    print(f"{u.username}\t{state}\troles={roles}\torg={u.org or '-'}")
            return 0
        if action == "add":
            assert password is not None
            user = await store.add(args.username, hasher.hash_now(password), args.roles, args.org)
            await audit_admin(database, events.USER_CREATED, user.username, roles=list(user.roles))
            print(f"user {user.username} created (id {user.id})")
            return 0
        if action in ("disable", "enable"):
            user = await store.update(args.username, disabled=action == "disable")
            if action == "disable":
                await _end_sessions(database, config, user)
            await audit_admin(database, events.USER_CHANGED, user.username, change=action)
            print(f"user {user.username} {action}d")
            return 0
        if action == "set-password":
            assert password is not None
            user = await store.update(args.username, password_hash=hasher.hash_now(password))
            await _end_sessions(database, config, user)
            await audit_admin(database, events.USER_CHANGED, user.username, change="password")
            print(f"password of {user.username} changed; existing sessions ended")
            return 0
        user = await store.update(
            args.username,
            roles=args.roles,
            org=args.org or None,
            clear_org=args.org == "",
        )
        await audit_admin(
            database, events.USER_CHANGED, user.username, roles=list(user.roles), org=user.org
        )
        print(f"user {user.username}: roles={','.join(user.roles) or '-'} org={user.org or '-'}")
        return 0

    try:
        result = run_with_database(args, act, create=args.action == "add")
    except (UserError, PasswordError) as exc:
        return fail(str(exc))
    return 1 if result is None else result
