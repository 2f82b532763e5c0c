"""Relative paths in a config file mean "beside the config file", not "wherever potok runs".

The loader validates with `context={CONFIG_DIR: <the file's folder>}`; a field typed
`ConfigPath` (or a SQLite URL passed through `resolve_sqlite_url`) becomes absolute
against it. Without that context (a config built in code, a test) a path stays as given.
So `potok users list -c deploy/potok.yaml` and `potok run -c deploy/potok.yaml`, started
from any directory, open the same `deploy/potok.db`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, ValidationInfo

CONFIG_DIR = "config_dir"
_SQLITE_PREFIXES = ("sqlite+aiosqlite:///", "sqlite:///")


def path_context(base: Path | None) -> dict[str, Path] | None:
    """The validation context that makes relative paths relative to `base`."""
    return {CONFIG_DIR: base} if base is not None else None


def config_dir(info: ValidationInfo) -> Path | None:
    context = info.context
    if isinstance(context, dict):
        base = context.get(CONFIG_DIR)
        if isinstance(base, Path):
            return base
    return None


def resolve_path(value: str, base: Path | None) -> str:
    """`value` made absolute against `base`; '-' (standard output) and absolute paths kept."""
    if base is None or value == "-" or not value:
        return value
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else base / path)


def resolve_sqlite_url(url: str, base: Path | None) -> str:
    """A SQLite URL with its file made absolute against `base`; other URLs unchanged."""
    for prefix in _SQLITE_PREFIXES:
        if url.startswith(prefix):
            rest = url.removeprefix(prefix)
            file, sep, query = rest.partition("?")
            if not file or file == ":memory:" or file.startswith("file:"):
                return url
            return prefix + resolve_path(file, base) + sep + query
    return url


def _config_path(value: str, info: ValidationInfo) -> str:
    return resolve_path(value, config_dir(info))


ConfigPath = Annotated[str, AfterValidator(_config_path)]
"""A file path; relative paths are relative to the config file's folder."""
