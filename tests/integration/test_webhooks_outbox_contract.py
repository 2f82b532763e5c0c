"""One contract, both outbox backends (a SQLite file in tmp; a fresh PostgreSQL database):
replay keys unique per source, claims exclusive and leased, ordered sources one at a time,
outcomes, replay, purge and depth."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from potok.webhooks.config import OutboxConfig
from potok.webhooks.outbox import Outbox, open_outbox
from potok.webhooks.outbox.base import DEAD, DELIVERED, PENDING, NewDelivery, Outcome
from tests.support.identity_db import postgres_database


@pytest.fixture(params=["sqlite", "postgresql"])
def outbox_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'outbox.db'}"
        return
    with postgres_database() as url:
        yield url


@pytest.fixture
async def outbox(outbox_url: str) -> AsyncIterator[Outbox]:
    store = open_outbox(OutboxConfig(url=outbox_url))
    await store.start()
    yield store
    await store.close()


def delivery(n: int, source: str = "s", key: str | None = None, at: float = 0.0) -> NewDelivery:
    return NewDelivery(
        id=f"wh_{source}_{n}",
        source=source,
        replay_key=key or f"k{n}",
        event_type="webhook",
        received_at=at or time.time(),
        headers=(("content-type", "application/json"),),
        body=b'{"n": %d}' % n,
    )


async def test_replay_keys_are_unique_per_source(outbox: Outbox) -> None:
    results = await asyncio.gather(
        outbox.accept(delivery(1)),
        outbox.accept(delivery(2, key="k1")),  # the same key: a replay
        outbox.accept(delivery(3, source="t", key="k1")),  # another source: its own
    )
    assert sorted(results) == [False, True, True]
    stored = await outbox.get("wh_s_1") or await outbox.get("wh_s_2")
    assert stored is not None and stored.body.startswith(b'{"n": ')
    assert stored.headers == (("content-type", "application/json"),)


async def test_claims_are_exclusive_and_leased(outbox: Outbox) -> None:
    await asyncio.gather(*(outbox.accept(delivery(n)) for n in range(10)))
    now = time.time()
    first, second = await asyncio.gather(
        outbox.claim("a", now, 6, 30.0, ()), outbox.claim("b", now, 6, 30.0, ())
    )
    ids_a, ids_b = {d.id for d in first}, {d.id for d in second}
    assert not ids_a & ids_b and len(ids_a | ids_b) == 10
    assert await outbox.claim("c", now, 10, 30.0, ()) == []  # all leased
    # A lease that ran out (its holder died): another instance takes the rows over.
    taken = await outbox.claim("c", now + 31, 20, 30.0, ())
    assert len(taken) == 10


async def test_outcomes_replay_purge_and_depth(outbox: Outbox) -> None:
    for n in range(3):
        assert await outbox.accept(delivery(n))
    now = time.time()
    claimed = await outbox.claim("a", now, 10, 30.0, ())
    outcomes = [
        Outcome(claimed[0].id, DELIVERED),
        Outcome(claimed[1].id, PENDING, "503", now + 60),
        Outcome(claimed[2].id, DEAD, "gave up"),
    ]
    await outbox.settle("a", outcomes, now)
    states = {d.id: (d.state, d.attempts) for d in await outbox.recent(None, None, 10)}
    assert states == {
        claimed[0].id: (DELIVERED, 1),
        claimed[1].id: (PENDING, 1),
        claimed[2].id: (DEAD, 1),
    }
    assert await outbox.claim("b", now + 1, 10, 30.0, ()) == []  # the retry is not due yet
    [due] = await outbox.claim("b", now + 61, 10, 30.0, ())
    assert due.id == claimed[1].id and due.last_error == "503"
    # Held back (breaker open): no attempt spent.
    await outbox.settle("b", [Outcome(due.id, PENDING, "open", now, attempted=False)], now)
    assert (await outbox.get(due.id)).attempts == 1  # type: ignore[union-attr]
    [depth] = await outbox.depth()
    assert depth.source == "s" and depth.pending == 1
    assert await outbox.replay(claimed[2].id, now)
    assert (await outbox.get(claimed[2].id)).state == PENDING  # type: ignore[union-attr]
    assert not await outbox.replay("wh_unknown", now)
    assert await outbox.purge(DELIVERED, now + 1) == 1
    assert await outbox.get(claimed[0].id) is None


async def test_an_ordered_source_is_claimed_one_at_a_time(outbox: Outbox) -> None:
    for n in range(3):
        await outbox.accept(delivery(n, source="q"))
        await outbox.accept(delivery(n, source="free"))
    now = time.time()
    claimed = await outbox.claim("a", now, 10, 30.0, ("q",))
    assert [d.id for d in claimed if d.source == "q"] == ["wh_q_0"]
    assert len([d for d in claimed if d.source == "free"]) == 3
    # While the head is in flight nothing else of the source is eligible, for anyone.
    assert await outbox.claim("b", now, 10, 30.0, ("q",)) == []
    await outbox.settle("a", [Outcome("wh_q_0", PENDING, "503", now)], now)
    # It failed and is due again: still the head, before the next one.
    assert [d.id for d in await outbox.claim("b", now, 10, 30.0, ("q",))] == ["wh_q_0"]
    await outbox.settle("b", [Outcome("wh_q_0", DELIVERED)], now)
    assert [d.id for d in await outbox.claim("c", now, 10, 30.0, ("q",))] == ["wh_q_1"]
