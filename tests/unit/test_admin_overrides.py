"""The overrides an instance keeps: the later change wins in memory and in the file, in
whatever order they come; releases are kept a while, then forgotten; a broken file or
entry is skipped, not fatal."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import stat
import time
from pathlib import Path

import pytest

from potok.admin import overrides
from potok.admin.overrides import FILE, Change, OverrideStore


def drain(state: str, at: float, target: str = "10.0.0.1:80", actor: str = "ops") -> Change:
    return Change("drain", "up", state, actor, at, target=target)


def breaker(state: str, at: float) -> Change:
    return Change("breaker", "up", state, "ops", at)


def test_the_later_change_wins_in_memory_whatever_the_order():
    store = OverrideStore(None)
    assert store.remember(drain("enabled", 20.0))
    assert not store.remember(drain("drained", 10.0))  # older: a late arrival loses
    assert store.drained("up", "10.0.0.1:80") is None
    assert store.remember(drain("drained", 30.0))
    assert store.drained("up", "10.0.0.1:80") == drain("drained", 30.0)
    assert store.remember(drain("drained", 30.0))  # the same one again: harmless


def test_a_breaker_and_targets_are_kept_apart():
    store = OverrideStore(None)
    store.remember(breaker("open", 1.0))
    store.remember(drain("drained", 1.0, target="a:1"))
    store.remember(drain("drained", 1.0, target="b:1"))
    assert store.breaker("up") == breaker("open", 1.0)
    assert len(store.active()) == 3
    store.remember(breaker("auto", 2.0))
    assert store.breaker("up") is None and len(store.active()) == 2


def test_the_file_merges_changes_from_every_worker(tmp_path: Path):
    first, second = OverrideStore(tmp_path), OverrideStore(tmp_path)
    asyncio.run(first.persist(drain("drained", 10.0, target="a:1")))
    asyncio.run(second.persist(breaker("open", 11.0)))
    asyncio.run(second.persist(drain("enabled", 5.0, target="a:1")))  # older: ignored
    fresh = OverrideStore(tmp_path)
    asyncio.run(fresh.load())
    assert fresh.drained("up", "a:1") == drain("drained", 10.0, target="a:1")
    assert fresh.breaker("up") == breaker("open", 11.0)
    assert stat.S_IMODE(os.stat(tmp_path / FILE).st_mode) == 0o600
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_release_clears_the_override_and_is_forgotten_later(tmp_path: Path):
    store = OverrideStore(tmp_path)
    now = time.time()
    asyncio.run(store.persist(drain("drained", now - 2 * overrides.RELEASE_KEPT_S)))
    asyncio.run(store.persist(drain("enabled", now - 2 * overrides.RELEASE_KEPT_S + 1)))
    assert json.loads((tmp_path / FILE).read_text()) == []  # an old release: gone
    asyncio.run(store.persist(drain("drained", now)))
    asyncio.run(store.persist(drain("enabled", now + 1)))
    kept = json.loads((tmp_path / FILE).read_text())
    assert [entry["state"] for entry in kept] == ["enabled"]  # a late "drain" must lose
    fresh = OverrideStore(tmp_path)
    asyncio.run(fresh.load())
    assert fresh.active() == []


def test_stale_entries_are_dropped_unless_replaced_meanwhile(tmp_path: Path):
    store = OverrideStore(tmp_path)
    old = drain("drained", 1.0)
    asyncio.run(store.persist(old))
    store.remember(old)
    asyncio.run(OverrideStore(tmp_path).persist(drain("drained", 2.0)))  # newer, elsewhere
    asyncio.run(store.drop([old]))
    assert store.active() == []
    fresh = OverrideStore(tmp_path)
    asyncio.run(fresh.load())
    assert fresh.drained("up", "10.0.0.1:80") == drain("drained", 2.0)
    asyncio.run(fresh.drop([drain("drained", 2.0)]))
    assert json.loads((tmp_path / FILE).read_text()) == []


def test_a_broken_file_or_entry_is_skipped(tmp_path: Path):
    (tmp_path / FILE).write_text("{not json")
    store = OverrideStore(tmp_path)
    asyncio.run(store.load())
    assert store.active() == []
    good = drain("drained", 1.0).to_json()
    (tmp_path / FILE).write_text(json.dumps([{"kind": "drain"}, good, 7]))
    asyncio.run(store.load())
    assert store.active() == [drain("drained", 1.0)]


@pytest.mark.parametrize(
    "data",
    [
        None,
        {"kind": "breaker", "service": "up", "state": "drained", "at": 1},
        {"kind": "drain", "service": "up", "state": "drained", "at": 1},  # no target
        {"kind": "breaker", "service": "up", "state": "open", "at": 1, "target": "a:1"},
        {"kind": "restart", "service": "up", "state": "open", "at": 1},
        {"kind": "breaker", "service": "up", "state": "open", "at": "soon"},
    ],
)
def test_what_is_not_a_change_is_refused(data):
    with pytest.raises(ValueError):
        Change.from_json(data)


def test_a_change_travels_as_json_unchanged():
    change = Change("drain", "up", "drained", "ops", 1.5, "a:1", "host/run", "cluster")
    assert Change.from_json(json.loads(json.dumps(change.to_json()))) == change


def _persist_many(directory: str, worker: int, count: int) -> None:
    store = OverrideStore(Path(directory))
    for index in range(count):
        change = drain("drained", 1.0 + index, target=f"w{worker}-{index}:80")
        asyncio.run(store.persist(change))


def test_workers_writing_at_once_lose_nothing(tmp_path: Path):
    """Read-modify-write under the lock: every process's changes end up in the file."""
    context = multiprocessing.get_context("fork")
    writers = [
        context.Process(target=_persist_many, args=(str(tmp_path), worker, 25))
        for worker in range(4)
    ]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(30)
        assert writer.exitcode == 0
    fresh = OverrideStore(tmp_path)
    asyncio.run(fresh.load())
    assert len(fresh.active()) == 100
