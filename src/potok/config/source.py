"""Where the running config comes from: a file plus the command line's overrides.

`potok run` loads it once at start; a reload (SIGHUP, a watched file) loads it
again the same way, so `--port 9000` still holds after the file is edited.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from potok.config.loader import ConfigError, load_config
from potok.config.models import GatewayConfig
from potok.config.paths import path_context

Fingerprint = tuple[int, int, int, int]


@dataclass(frozen=True, slots=True)
class ConfigSource:
    path: str
    host: str | None = None
    port: int | None = None
    workers: int | None = None

    def load(self) -> GatewayConfig:
        """The validated config; ConfigError naming every bad field otherwise (blocking I/O)."""
        config = load_config(self.path)
        try:
            return with_overrides(config, self.host, self.port, self.workers, self.directory)
        except ValidationError as exc:
            # An override can make a valid file invalid (a memory rate limit with --workers 2).
            problems = [
                ("command line", str(error["msg"]).removeprefix("Value error, "))
                for error in exc.errors()
            ]
            raise ConfigError(problems) from exc

    @property
    def directory(self) -> Path:
        """The config file's folder: what relative paths in it are relative to."""
        return Path(self.path).resolve().parent

    def fingerprint(self) -> Fingerprint | None:
        """(device, inode, size, mtime) of the file, following symlinks; None if it is gone.

        A Kubernetes ConfigMap update swaps a symlink: the inode changes even when the
        size and mtime happen to match, so all four are compared.
        """
        try:
            stat = os.stat(self.path)
        except OSError:
            return None
        return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


def with_overrides(
    config: GatewayConfig,
    host: str | None,
    port: int | None,
    workers: int | None,
    base: Path | None = None,
) -> GatewayConfig:
    """`config` with the command line's server settings, validated again (a memory rate
    limit is wrong with --workers 2), and nothing else changed: only what the file set
    is set after it (`database` not given stays not given, so no database is opened).
    `base` is the config file's folder, for defaults that are paths (the SQLite file)."""
    server: dict[str, Any] = {}
    if host is not None:
        server["host"] = host
    if port is not None:
        server["port"] = port
    if workers is not None:
        server["workers"] = workers
    if not server:
        return config
    given = config.model_dump(exclude_unset=True)
    given["server"] = given.get("server", {}) | server
    return config.model_validate(given, context=path_context(base))
