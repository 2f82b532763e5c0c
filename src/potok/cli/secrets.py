"""`potok secrets new-key|encrypt|decrypt`: config values encrypted with AES-256-GCM.

The key comes from $POTOK_SECRET_KEY; put the `enc:v1:...` output anywhere a
string goes in the config, and the gateway decrypts it at load.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from potok.identity.secrets import SecretError, decrypt, encrypt, keys_from, new_key


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "secrets", help="encrypt config values (key in $POTOK_SECRET_KEY)"
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("new-key", help="print a new random key for POTOK_SECRET_KEY")
    enc = actions.add_parser("encrypt", help="encrypt a value (argument or standard input)")
    enc.add_argument("value", nargs="?", help="the value; omit to read one line from stdin")
    dec = actions.add_parser("decrypt", help="decrypt an enc:v1: value")
    dec.add_argument("value", nargs="?", help="the value; omit to read one line from stdin")
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    if args.action == "new-key":
        print(new_key())
        return 0
    value = args.value if args.value is not None else sys.stdin.readline().rstrip("\r\n")
    try:
        keys = keys_from()
        print(encrypt(value, keys) if args.action == "encrypt" else decrypt(value, keys))
    except SecretError as exc:
        print(f"potok secrets: {exc}", file=sys.stderr)
        return 1
    return 0
