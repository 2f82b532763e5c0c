"""Config hot reload in a worker: validate, build, swap one reference, retire the old.

Triggered by SIGHUP (the supervisor forwards it to every worker) or, with
`reload.watch`, by the config file changing. The new file is read and validated
off the event loop; a config that does not validate, cannot be built, or
changes a setting only a restart can apply is refused with every reason logged,
and the old config keeps serving. Nothing is closed by a reload: connections
stay open, requests in flight finish on the Runtime they started with, and
services whose config is unchanged are carried over with their pools, breakers
and target health.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog

from potok.config.loader import ConfigError
from potok.config.models import GatewayConfig
from potok.config.source import ConfigSource, Fingerprint
from potok.routing.endpoints import route_name
from potok.runtime import Runtime

if TYPE_CHECKING:
    from potok.observability.metrics import Counter

log = structlog.get_logger("potok.reload")

# Settings read once when a worker starts (listener, logging, shared clients): a
# reload that changes one of these is refused, naming it, rather than half-applied.
RESTART_ONLY = (
    "server.host",
    "server.port",
    "server.workers",
    "server.backlog",
    "logging",
    "metrics",
    "redis",
    "database",
    "auth",
    "realtime",
    "reload",
)


def restart_only_changes(old: GatewayConfig, new: GatewayConfig) -> list[str]:
    """The RESTART_ONLY settings that differ between two configs."""
    changed = []
    for dotted in RESTART_ONLY:
        before: object = old
        after: object = new
        for part in dotted.split("."):
            before = getattr(before, part)
            after = getattr(after, part)
        if before != after:
            changed.append(dotted)
    return changed


class Refused(Exception):
    """A candidate config that may not replace the running one, with every reason."""

    def __init__(self, problems: tuple[str, ...]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def load_candidate(source: ConfigSource, running: GatewayConfig) -> GatewayConfig:
    """The file's config if it may replace `running`; Refused naming every reason if not.

    The one set of rules, applied by each worker and, first, by the supervisor
    (blocking I/O: call it off the event loop).
    """
    try:
        config = source.load()
    except ConfigError as exc:
        raise Refused(
            tuple(f"{field}: {message}" if field else message for field, message in exc.problems)
        ) from exc
    changed = restart_only_changes(running, config)
    if changed:
        raise Refused(tuple(f"{name}: changing it needs a restart" for name in changed))
    return config


def log_refusal(trigger: str, path: str, problems: tuple[str, ...]) -> None:
    log.error(
        "config reload refused; the running config stays",
        trigger=trigger,
        path=path,
        problems=list(problems),
    )


@dataclass(frozen=True, slots=True)
class ReloadOutcome:
    result: str  # "applied" | "unchanged" | "refused"
    problems: tuple[str, ...] = ()
    changes: dict[str, object] = field(default_factory=dict)  # what an applied one changed


@dataclass(frozen=True, slots=True)
class ReloadRecord:
    """One reload as the admin API reports it."""

    at: float  # UNIX time it finished
    trigger: str  # "SIGHUP", "file changed", "admin", "admin: config applied"
    result: str
    problems: tuple[str, ...]
    digest: str  # the config serving after it
    changes: dict[str, object]


class Reloader:
    """Reloads one worker's Runtime from its ConfigSource, one reload at a time."""

    def __init__(
        self,
        source: ConfigSource,
        current: Callable[[], Runtime],
        build: Callable[[GatewayConfig, Runtime], Runtime],
        install: Callable[[Runtime], None],
        *,
        counter: Counter | None = None,
        history: int = 20,
    ) -> None:
        self.history: deque[ReloadRecord] = deque(maxlen=history)
        self._source = source
        self._current = current
        self._build = build
        self._install = install
        self._counter = counter
        self._lock = asyncio.Lock()
        self._pending: set[asyncio.Task[ReloadOutcome]] = set()

    def request(self, trigger: str) -> None:
        """Reload in the background (from a signal handler); the task is kept until done."""
        task = asyncio.get_running_loop().create_task(self.reload(trigger))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def reload(self, trigger: str) -> ReloadOutcome:
        async with self._lock:
            outcome = await self._reload()
        if self._counter is not None:
            self._counter.inc((outcome.result,))
        if outcome.result == "refused":
            log_refusal(trigger, self._source.path, outcome.problems)
        record = ReloadRecord(
            time.time(),
            trigger,
            outcome.result,
            outcome.problems,
            self._current().digest,
            outcome.changes,
        )
        self.history.append(record)
        return outcome

    @property
    def source(self) -> ConfigSource:
        return self._source

    async def _reload(self) -> ReloadOutcome:
        old = self._current()
        try:
            config = await asyncio.to_thread(load_candidate, self._source, old.config)
        except Refused as refused:
            return ReloadOutcome("refused", refused.problems)
        if config == old.config:
            log.info("config reload: nothing changed", path=self._source.path)
            return ReloadOutcome("unchanged")
        try:
            runtime = self._build(config, old)
        except Exception as exc:  # a policy or service that validates but cannot be built
            log.exception("config reload: building the new runtime failed")
            return ReloadOutcome("refused", (f"building the new config failed: {exc}",))
        self._install(runtime)
        runtime.start()
        old.retire(runtime)
        summary = _summary(old, runtime)
        log.info("config reloaded", path=self._source.path, **summary)
        return ReloadOutcome("applied", changes=summary)

    async def watch(self, interval: float, seen: Fingerprint | None) -> None:
        """Reload whenever the file's fingerprint differs from `seen` (polled off the loop).

        `seen` is taken before the gateway listens: a baseline taken here, after the
        port is open, would miss an edit made in between and never reload it.
        """
        while True:
            await asyncio.sleep(interval)
            now = await asyncio.to_thread(self._source.fingerprint)
            if now is None or now == seen:
                continue  # a missing file mid-swap is not a change yet
            seen = now
            await self.reload("file changed")


def _summary(old: Runtime, new: Runtime) -> dict[str, object]:
    """What an operator wants to read in the log line: what came, went and changed."""
    old_routes = _routes(old.config)
    new_routes = _routes(new.config)
    kept = {name for name, svc in new.services.items() if old.services.get(name) is svc}
    return {
        "config": new.digest,
        "routes": len(new.routes),
        **_changes("routes", old_routes, new_routes),
        "services_added": sorted(set(new.services) - set(old.services)),
        "services_removed": sorted(set(old.services) - set(new.services)),
        "services_changed": sorted(set(new.services) & set(old.services) - kept),
        **_changes("policies", _policies(old.config), _policies(new.config)),
    }


def _routes(config: GatewayConfig) -> dict[str, object]:
    return {route_name(index, route): route for index, route in enumerate(config.routes)}


def _policies(config: GatewayConfig) -> dict[str, object]:
    """The global policies and the own API's (`api.<name>`) that are on, by name."""
    blocks = (("", config.policies), ("api.", config.api.policies))
    return {
        prefix + name: value
        for prefix, block in blocks
        for name in type(block).model_fields
        if (value := getattr(block, name)) is not None
    }


def _changes(kind: str, old: dict[str, object], new: dict[str, object]) -> dict[str, list[str]]:
    both = set(old) & set(new)
    return {
        f"{kind}_added": sorted(set(new) - set(old)),
        f"{kind}_removed": sorted(set(old) - set(new)),
        f"{kind}_changed": sorted(name for name in both if old[name] != new[name]),
    }
