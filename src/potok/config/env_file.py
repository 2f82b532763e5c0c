"""`.env` files: `KEY=value` lines that fill in the environment, never override it.

The format is the common subset every tool reads alike (docker compose, systemd's
EnvironmentFile, python-dotenv): blank lines and `#` comments are skipped, an
`export ` prefix is allowed, a value may be wrapped in single or double quotes
(taken literally: no `${VAR}` expansion and no escapes inside a value).
"""

from __future__ import annotations

import os
import re
from collections.abc import MutableMapping
from pathlib import Path

_LINE = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$")


class EnvFileError(Exception):
    """A line that is not `KEY=value`, named by file and line number."""


def parse_env_file(text: str, name: str = ".env") -> dict[str, str]:
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            raise EnvFileError(f"{name}:{number}: expected KEY=value")
        key, value = match.groups()
        values[key] = _value(value, f"{name}:{number}")
    return values


def _value(text: str, where: str) -> str:
    if text[:1] in ("'", '"'):
        quote = text[0]
        end = text.find(quote, 1)
        if end < 0:
            raise EnvFileError(f"{where}: unterminated {quote} quote")
        return text[1:end]
    return text.split(" #", 1)[0].strip()  # an unquoted value may end in a comment


def apply_env_file(path: Path, environ: MutableMapping[str, str] = os.environ) -> list[str]:
    """Add the file's variables that `environ` does not have (the real environment
    wins); the names added. OSError if the file cannot be read, EnvFileError if a
    line is malformed."""
    values = parse_env_file(path.read_text(encoding="utf-8"), str(path))
    added = [key for key in values if key not in environ]
    for key in added:
        environ[key] = values[key]
    return added
