"""Apply a new config document: validated like `potok check` (and like a reload: the
command line's overrides again, restart-only settings refused), written back to the
config file atomically, then reloaded by every worker.

The write: a temporary file in the same folder (so the rename stays on one file
system), fsync'd, renamed over the file, then the folder fsync'd, so a crash leaves
the old file or the new one, never half of one; a symlinked file (a Kubernetes
ConfigMap) is written where the link points, whose folder is usually read-only, which
refuses the apply. A file or folder the gateway may not write refuses it before
anything changes.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from potok.config.loader import ConfigError, load_config_text
from potok.config.source import with_overrides
from potok.process.reload import restart_only_changes

if TYPE_CHECKING:
    from potok.config.models import GatewayConfig
    from potok.config.source import ConfigSource


@dataclass(frozen=True, slots=True)
class Problem:
    field: str
    message: str


class Rejected(Exception):
    """The document may not replace the running config: each problem names its field."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(f"{p.field}: {p.message}" for p in problems))
        self.problems = problems


class NotWritable(Exception):
    pass


def validate(text: str, source: ConfigSource, running: GatewayConfig) -> GatewayConfig:
    """The document's config, checked as the file would be (blocking: run off the loop)."""
    try:
        config = load_config_text(text, base=source.directory)
        config = with_overrides(config, source.host, source.port, source.workers, source.directory)
    except ConfigError as exc:
        raise Rejected(
            [Problem(field or "document", message) for field, message in exc.problems]
        ) from exc
    except ValidationError as exc:
        raise Rejected(
            [
                Problem("command line", str(e["msg"]).removeprefix("Value error, "))
                for e in exc.errors()
            ]
        ) from exc
    changed = restart_only_changes(running, config)
    if changed:
        raise Rejected([Problem(name, "changing it needs a restart") for name in changed])
    return config


def target(path: str) -> Path:
    """The file the document goes to (through symlinks)."""
    return Path(os.path.realpath(path))


def check_writable(path: Path) -> None:
    if not os.access(path, os.W_OK):
        raise NotWritable(f"{path} is not writable by the gateway")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise NotWritable(
            f"{path.parent} (the config file's folder) is not writable by the gateway"
        )


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text`: temp file, fsync, rename, fsync the folder."""
    check_writable(path)
    mode = path.stat().st_mode & 0o777
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
