"""Signed Standard Webhooks deliveries for bench/webhooks.sh, one per line for
bench/webhooks.lua: `id <TAB> timestamp <TAB> signature <TAB> body`. Each id is unique,
so every request is a new delivery (not a replay)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import sys
import time

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def main(path: str, count: int, prefix: str) -> None:
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    stamp = str(int(time.time()))
    pad = "x" * 400  # a body of about half a kilobyte, like a typical event
    with open(path, "w") as out:
        for n in range(count):
            message_id = f"{prefix}-{n}"
            body = f'{{"type":"task.updated","n":{n},"data":"{pad}"}}'
            signed = f"{message_id}.{stamp}.{body}".encode()
            digest = hmac.new(key, signed, hashlib.sha256).digest()
            signature = "v1," + base64.b64encode(digest).decode()
            out.write(f"{message_id}\t{stamp}\t{signature}\t{body}\n")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
