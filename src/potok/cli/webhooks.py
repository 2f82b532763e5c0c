"""`potok webhooks list|show|replay|purge`: the outbox of accepted deliveries."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from potok.cli.common import add_config_argument, load_or_report
from potok.cli.identity_store import sqlite_file
from potok.cli.keys import _duration
from potok.webhooks.outbox import Delivery, Outbox, open_outbox
from potok.webhooks.outbox.base import STATES

T = TypeVar("T")


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "webhooks", help="inspect, replay and purge stored webhook deliveries"
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="deliveries, newest first")
    listing.add_argument("--state", choices=STATES, help="only this state")
    listing.add_argument("--source", help="only this source")
    listing.add_argument("--limit", type=int, default=50, help="most shown (50)")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(handler=_list)
    show = actions.add_parser("show", help="one delivery with its headers and body")
    show.add_argument("id")
    show.set_defaults(handler=_show)
    replay = actions.add_parser("replay", help="deliver again (from any state), now")
    replay.add_argument("ids", nargs="+", metavar="ID")
    replay.set_defaults(handler=_replay)
    purge = actions.add_parser("purge", help="delete delivered or dead deliveries")
    purge.add_argument("--state", choices=("delivered", "dead"), required=True)
    purge.add_argument(
        "--older-than", type=_duration, default=0.0, help="received this long ago at least (1h)"
    )
    purge.set_defaults(handler=_purge)
    for sub in (listing, show, replay, purge):
        add_config_argument(sub)


def _with_outbox(args: argparse.Namespace, action: Callable[[Outbox], Awaitable[T]]) -> T | None:
    config = load_or_report(args.config)
    if config is None:
        return None
    if config.webhooks is None:
        print("potok: the config has no webhooks section", file=sys.stderr)
        return None
    url = config.webhooks.outbox.url
    file = sqlite_file(url)
    if file is not None and not Path(file).exists():
        print(f"potok: no outbox at {file} (webhooks.outbox.url)", file=sys.stderr)
        return None
    outbox = open_outbox(config.webhooks.outbox)

    async def run() -> T:
        await outbox.start()
        try:
            return await action(outbox)
        finally:
            await outbox.close()

    return asyncio.run(run())


def _when(at: float | None) -> str:
    if at is None:
        return "-"
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _list(args: argparse.Namespace) -> int:
    found = _with_outbox(args, lambda o: o.recent(args.state, args.source, max(1, args.limit)))
    if found is None:
        return 1
    for item in found:
        if args.json:
            print(json.dumps(item.summary()))
            continue
        print(
            f"{item.id}  {item.source:<12} {item.state:<9} attempts={item.attempts:<3} "
            f"received={_when(item.received_at)} {item.last_error or ''}".rstrip()
        )
    return 0


def _show(args: argparse.Namespace) -> int:
    async def get(outbox: Outbox) -> Delivery | None:
        return await outbox.get(args.id)

    found = _with_outbox(args, get)
    if found is None:
        print(f"potok: no delivery {args.id}", file=sys.stderr)
        return 1
    document = found.summary() | {
        "replay_key": found.replay_key,
        "headers": dict(found.headers),
        "body": found.body.decode("utf-8", "replace"),
    }
    print(json.dumps(document, indent=2))
    return 0


def _replay(args: argparse.Namespace) -> int:
    async def replay(outbox: Outbox) -> list[str]:
        now = time.time()
        return [i for i in args.ids if not await outbox.replay(i, now)]

    unknown = _with_outbox(args, replay)
    if unknown is None:
        return 1
    for item in unknown:
        print(f"potok: no delivery {item}", file=sys.stderr)
    print(f"{len(args.ids) - len(unknown)} delivery(ies) queued again")
    return 1 if unknown else 0


def _purge(args: argparse.Namespace) -> int:
    deleted = _with_outbox(args, lambda o: o.purge(args.state, time.time() - args.older_than))
    if deleted is None:
        return 1
    print(f"{deleted} {args.state} delivery(ies) purged")
    return 0
