"""Group commit: webhooks arriving together are stored in one transaction, each on its own."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta

import pytest

from bot.config import Route
from bot.errors import StoreUnavailable
from bot.events import NOTIFIED_KINDS, Event
from bot.pipeline.dispatch import Dispatcher
from bot.pipeline.ingest import Ingested, Intake
from bot.store import Store
from tests.store_doubles import InstrumentedStore

T0 = datetime(2026, 3, 11, 5, 0, tzinfo=UTC)


def start(n: int, *, kind: str = "live_start", event_id: str = "e", later: int = 0) -> Event:
    """Streamer n's event (a live_start by default), `later` minutes after its start."""
    at = T0 + timedelta(seconds=n, minutes=later)
    return Event(
        source="rec",
        event_id=f"{event_id}{n}",
        kind=kind,
        occurred_at=at,
        received_at=at,
        platform="twitch",
        channel=f"streamer{n}",
    )


def intake(store: Store, woken: list[str] | None = None) -> Intake:
    """An Intake that notes each time it tells the dispatch stage about new events."""
    return Intake(
        store, on_committed=(lambda: woken.append("wake")) if woken is not None else None
    )


def dispatcher(store: Store) -> Dispatcher:
    route = Route(patterns=("*",), events=frozenset(NOTIFIED_KINDS))
    return Dispatcher(store=store, routes=[route], sinks=["console"])


async def test_concurrent_webhooks_share_one_commit_and_each_gets_its_answer(
    store: Store,
) -> None:
    woken: list[str] = []
    counted = InstrumentedStore(store)
    gate = intake(counted, woken)  # type: ignore[arg-type]
    results = await asyncio.gather(
        *(gate.accept(start(n)) for n in range(20)), gate.accept(start(3))
    )
    assert counted.commits == 1
    assert [r.duplicate for r in results] == [False] * 20 + [True]
    assert await store.count_events() == await store.count_undispatched() == 20
    assert woken == ["wake"]  # the dispatch stage is woken once, after the commit
    # Ingest stored the events only; the dispatch stage applies them after the answers.
    assert (await store.outbox_counts()).by_state == {}
    assert await dispatcher(store).dispatch_pending() == 20
    assert (await store.outbox_counts()).by_state == {"pending": 20}


async def test_a_lone_webhook_is_committed_before_its_answer(store: Store) -> None:
    result = await intake(store).accept(start(1))
    assert isinstance(result, Ingested) and not result.duplicate
    # Another connection sees it: it is committed, not just inside an open transaction.
    other = sqlite3.connect(store.path)
    assert other.execute("SELECT count(*) FROM events").fetchone()[0] == 1
    other.close()


async def test_one_bad_event_fails_alone(store: Store) -> None:
    gate = intake(store)
    good, bad, also_good = await asyncio.gather(
        gate.accept(start(1)),
        gate.accept(start(2), raw=object()),  # type: ignore[arg-type]  # cannot be stored
        gate.accept(start(3)),
        return_exceptions=True,
    )
    assert isinstance(bad, Exception) and not isinstance(bad, StoreUnavailable)
    assert isinstance(good, Ingested) and isinstance(also_good, Ingested)
    assert await store.count_events() == await store.count_undispatched() == 2
    assert await store.find_event("rec", "e2") is None


async def test_a_failed_commit_fails_every_waiting_webhook_and_stores_nothing(
    store: Store,
) -> None:
    failing = InstrumentedStore(store)
    failing.fail_commits = True
    gate = intake(failing)  # type: ignore[arg-type]
    outcomes = await asyncio.gather(
        *(gate.accept(start(n)) for n in range(3)), return_exceptions=True
    )
    assert all(isinstance(o, StoreUnavailable) for o in outcomes)
    failing.fail_commits = False
    assert await store.count_events() == 0
    # The store is usable again afterwards.
    assert not (await gate.accept(start(9))).duplicate


@pytest.mark.parametrize("count", [1, 5])
async def test_batches_follow_one_another(store: Store, count: int) -> None:
    gate = intake(store)
    for round_ in range(3):
        await asyncio.gather(*(gate.accept(start(round_ * 10 + n)) for n in range(count)))
    assert await store.count_events() == 3 * count


def end(n: int) -> Event:
    return start(n, kind="live_end", event_id="end", later=1)


async def test_a_brief_lock_is_waited_out_and_events_keep_their_order(store: Store) -> None:
    holder = sqlite3.connect(store.path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    asyncio.get_running_loop().call_later(0.6, holder.rollback)
    gate = intake(store)
    first = asyncio.ensure_future(gate.accept(start(1)))
    await asyncio.sleep(0.3)  # the start is retrying; the end comes in meanwhile
    results = await asyncio.gather(first, gate.accept(end(1)))
    holder.close()
    assert [r.duplicate for r in results] == [False, False]
    # The end was stored after its start, so, dispatched, it ends the stream.
    assert results[0].event_row < results[1].event_row
    await dispatcher(store).dispatch_pending()
    state = await store.get_stream("twitch/streamer1")
    assert state is not None and not state.live
    assert (await store.outbox_counts()).by_state == {"pending": 2}


async def test_a_lock_held_too_long_fails_the_batch_as_unavailable(store: Store) -> None:
    holder = sqlite3.connect(store.path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    gate = Intake(store, lock_retry_seconds=0.5)
    with pytest.raises(StoreUnavailable) as refused:
        await gate.accept(start(1))
    assert refused.value.busy
    holder.rollback()
    holder.close()
    assert await store.count_events() == 0
    assert not (await gate.accept(start(1))).duplicate  # usable again at once
