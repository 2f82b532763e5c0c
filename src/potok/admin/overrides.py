"""Operator overrides (a breaker held open or closed, a target drained) as state of the
instance, not of one worker's memory.

A worker keeps the latest change per breaker and per target in memory; under the
supervisor (`--workers N`) they are also in `admin-overrides.json` in its private run
directory (mode 0700, the one the metrics snapshots and admin sockets use), so a worker
restarted after a crash, and a service rebuilt by a reload, gets them back.

Every change carries the time it was taken and who took it: a change older than the
one already known for the same breaker or target is ignored (last writer wins), in
memory and in the file alike, whatever order workers and instances see them in.
Releases are kept a while (RELEASE_KEPT_S) for the same reason: a late "drain" must not
undo a newer "enable". The file is read and written under an exclusive `flock`, in a
thread (admin path only: never on the event loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import orjson
import structlog

log = structlog.get_logger("potok.admin.overrides")

FILE = "admin-overrides.json"
LOCK = "admin-overrides.lock"
RELEASE_KEPT_S = 3600.0
Kind = Literal["breaker", "drain"]
# breaker: "open" | "closed" | "auto" (released); drain: "drained" | "enabled" (released)
RELEASED = frozenset({"auto", "enabled"})
Key = tuple[str, str, str]  # (kind, service, target or "")


@dataclass(frozen=True, slots=True)
class Change:
    """One operator action on a breaker or a target."""

    kind: Kind
    service: str
    state: str
    actor: str
    at: float  # UNIX time it was taken (orders changes: the later wins)
    target: str = ""  # drain only
    origin: str = ""  # the instance that took it
    scope: str = "instance"

    @property
    def key(self) -> Key:
        return (self.kind, self.service, self.target)

    @property
    def active(self) -> bool:
        """An override in force (not a release)."""
        return self.state not in RELEASED

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> Change:
        """ValueError when `data` is not a change (a file or bus message gone wrong)."""
        if not isinstance(data, dict):
            raise ValueError("a change is an object")
        try:
            change = cls(
                kind=data["kind"],
                service=str(data["service"]),
                state=str(data["state"]),
                actor=str(data.get("actor") or ""),
                at=float(data["at"]),
                target=str(data.get("target") or ""),
                origin=str(data.get("origin") or ""),
                scope=str(data.get("scope") or "instance"),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a change: {exc!r}") from None
        valid = {"breaker": ("open", "closed", "auto"), "drain": ("drained", "enabled")}
        if change.kind not in valid or change.state not in valid[change.kind]:
            raise ValueError(f"not a change: {change.kind} {change.state}")
        if (change.kind == "drain") != bool(change.target):
            raise ValueError("a drain names a target; a breaker does not")
        return change


def newer(change: Change, known: Change | None) -> bool:
    """Does `change` replace `known`? Equal times too: applying one twice is harmless."""
    return known is None or change.at >= known.at


class OverrideStore:
    """This worker's overrides; with a run directory, the instance's file behind them."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self.changes: dict[Key, Change] = {}

    def known(self, key: Key) -> Change | None:
        return self.changes.get(key)

    def remember(self, change: Change) -> bool:
        """Keep `change` if it is the newest for its key; False if an older one lost."""
        if not newer(change, self.changes.get(change.key)):
            return False
        self.changes[change.key] = change
        return True

    def forget(self, change: Change) -> None:
        if self.changes.get(change.key) == change:
            del self.changes[change.key]

    def active(self) -> list[Change]:
        return [change for change in self.changes.values() if change.active]

    def breaker(self, service: str) -> Change | None:
        found = self.changes.get(("breaker", service, ""))
        return found if found is not None and found.active else None

    def drained(self, service: str, target: str) -> Change | None:
        found = self.changes.get(("drain", service, target))
        return found if found is not None and found.active else None

    # The file --------------------------------------------------------------------------

    async def persist(self, change: Change) -> None:
        """Merge `change` into the file (if newer than what it holds)."""
        if self.directory is not None:
            await asyncio.to_thread(_update, self.directory, [change], [])

    async def drop(self, stale: list[Change]) -> None:
        """Remove these entries from memory and the file (unless replaced meanwhile)."""
        for change in stale:
            self.forget(change)
        if self.directory is not None and stale:
            await asyncio.to_thread(_update, self.directory, [], stale)

    async def load(self) -> None:
        """Take the file's changes that are newer than this worker's."""
        if self.directory is None:
            return
        for change in await asyncio.to_thread(_read_locked, self.directory):
            self.remember(change)


@contextlib.contextmanager
def _locked(directory: Path) -> Any:
    fd = os.open(directory / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _read(directory: Path) -> dict[Key, Change]:
    try:
        raw = (directory / FILE).read_bytes()
    except FileNotFoundError:
        return {}
    try:
        entries = orjson.loads(raw)
        if not isinstance(entries, list):
            raise ValueError("the file holds a list of changes")
    except ValueError as exc:
        log.error("overrides file unreadable; starting from none", error=str(exc))
        return {}
    found: dict[Key, Change] = {}
    for entry in entries:
        try:
            change = Change.from_json(entry)
        except ValueError as exc:
            log.warning("override entry skipped", error=str(exc))
            continue
        if newer(change, found.get(change.key)):
            found[change.key] = change
    return found


def _read_locked(directory: Path) -> list[Change]:
    with _locked(directory):
        return list(_read(directory).values())


def _update(directory: Path, changes: list[Change], stale: list[Change]) -> None:
    """Read, merge (later wins), drop stale and old releases, write atomically."""
    with _locked(directory):
        entries = _read(directory)
        before = dict(entries)
        for change in changes:
            if newer(change, entries.get(change.key)):
                entries[change.key] = change
        for change in stale:
            if entries.get(change.key) == change:
                del entries[change.key]
        horizon = time.time() - RELEASE_KEPT_S
        entries = {k: c for k, c in entries.items() if c.active or c.at >= horizon}
        if entries != before:
            _write(directory, [change.to_json() for change in entries.values()])


def _write(directory: Path, document: list[dict[str, Any]]) -> None:
    """tmp + fsync + rename: a reader sees the old file or the new, never half of one."""
    path = directory / FILE
    tmp = directory / f".{FILE}.{os.getpid()}.tmp"
    with open(tmp, "wb") as out:
        out.write(orjson.dumps(document))
        out.flush()
        os.fsync(out.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
