"""`potok cache purge`: forget cached answers of a running gateway (its admin API)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any

TOKEN_ENV = "POTOK_ADMIN_TOKEN"


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "cache", help="the response cache of a running gateway"
    )
    actions = parser.add_subparsers(dest="cache_command", required=True, metavar="ACTION")
    purge = actions.add_parser(
        "purge",
        help="forget entries by route, key, key prefix or tag (POST /api/v1/admin/cache/purge)",
    )
    purge.add_argument("--url", default="http://127.0.0.1:8080", help="the gateway's base URL")
    purge.add_argument(
        "--token",
        default=None,
        help=f"an access token with the admin role (default: ${TOKEN_ENV})",
    )
    purge.add_argument("--route", help="only this route's cache")
    what = purge.add_mutually_exclusive_group()
    what.add_argument("--key", help="an exact key: 'host path?query'")
    what.add_argument("--prefix", help="every key starting with this")
    what.add_argument("--tag", help="every entry with this tag")
    purge.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    token = args.token or os.environ.get(TOKEN_ENV)
    if not token:
        print(f"potok cache purge: give --token or set {TOKEN_ENV}", file=sys.stderr)
        return 2
    body = {
        name: value
        for name in ("route", "key", "prefix", "tag")
        if (value := getattr(args, name)) is not None
    }
    request = urllib.request.Request(
        args.url.rstrip("/") + "/api/v1/admin/cache/purge",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            document = json.loads(answer.read())
    except urllib.error.HTTPError as error:
        detail = json.loads(error.read() or b"{}").get("detail", error.reason)
        print(f"potok cache purge: {error.code} {detail}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as error:
        print(f"potok cache purge: cannot reach {args.url}: {error}", file=sys.stderr)
        return 1
    print(f"purged {document.get('purged', 0)}")
    if document.get("scope") == "all":
        print("every other worker and instance purges as the event bus delivers the command")
    else:
        print(
            "note: only the worker that answered (and Redis stores) purged: the gateway has "
            "no event bus (a `realtime:` section) or it is down; other workers keep their "
            "memory entries",
            file=sys.stderr,
        )
    return 0
