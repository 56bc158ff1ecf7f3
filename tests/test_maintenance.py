"""The retention task against a real SQLite store: it prunes, waits out a locked
database, and stops when told."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.events import Event, LiveInfo
from bot.maintenance import Pruner
from bot.metrics import Metrics
from bot.store import Store
from bot.store.sqlite import SQLiteStore

NOW = datetime(2026, 3, 11, 5, 0, tzinfo=UTC).timestamp()
RETENTION = timedelta(days=30)
#: Generous bound on waiting for the task to do something; never a measure of speed.
PATIENCE = 10.0


def clock() -> float:
    return NOW


async def stored(store: Store, event_id: str, *, days_ago: float, sent: int = 1) -> int:
    """An event received `days_ago` days before NOW, with `sent` deliveries sent then."""
    at = datetime.fromtimestamp(NOW, UTC) - timedelta(days=days_ago)
    event = Event(
        source="rec",
        event_id=event_id,
        kind="title_change",
        occurred_at=at,
        received_at=at,
        platform="twitch",
        channel="quinn",
        live=LiveInfo(title="Painting"),
    )
    async with store.transaction():
        row = await store.insert_event(event, notified=True)
        assert row is not None
        for n in range(sent):
            delivery = await store.add_delivery(
                event_row=row, sink="console", target=str(n), not_before=0, now=at.timestamp()
            )
            await store.mark_sent(delivery, message_id=None, now=at.timestamp())
    return row


async def until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    """Wait until an async predicate holds (the task runs meanwhile)."""
    try:
        async with asyncio.timeout(PATIENCE):
            while not await condition():
                await asyncio.sleep(0.01)
    except TimeoutError:
        pytest.fail(f"waited in vain for {what}")


def pruned_rows(text: str) -> dict[str, float]:
    return {
        sample.labels["table"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "streambot_pruned_rows"
        for sample in family.samples
        if sample.name == "streambot_pruned_rows_total"
    }


async def test_the_task_prunes_what_is_older_than_the_retention(
    store: SQLiteStore, caplog: pytest.LogCaptureFixture
) -> None:
    for n in range(5):
        await stored(store, f"old{n}", days_ago=40)
    recent = await stored(store, "recent", days_ago=2)
    metrics = Metrics(process=False)
    assert pruned_rows((await metrics.render()).decode()) == {"events": 0, "deliveries": 0}
    caplog.set_level(logging.INFO, logger="bot.maintenance")
    stop = asyncio.Event()
    # Small batches, so one pass takes several of them.
    pruner = Pruner(
        store=store,
        retention=RETENTION,
        metrics=metrics,
        clock=clock,
        first_delay=0,
        batch_rows=4,
        batch_pause=0,
    )
    task = asyncio.create_task(pruner.run(stop))

    async def only_recent_left() -> bool:
        return await store.count_events() == 1

    await until(only_recent_left, "the old events pruned")
    stop.set()
    await asyncio.wait_for(task, PATIENCE)

    assert (await store.load_event(recent)).event_id == "recent"
    lines = [r.getMessage() for r in caplog.records if r.name == "bot.maintenance"]
    assert lines == ["retention: removed 5 events and 5 deliveries older than 30d"]
    assert pruned_rows((await metrics.render()).decode()) == {"events": 5, "deliveries": 5}


async def test_the_task_waits_out_a_locked_database_quietly(
    store: SQLiteStore, caplog: pytest.LogCaptureFixture
) -> None:
    await stored(store, "old", days_ago=40)
    # Another program holds the write lock: every prune is refused until it lets go.
    holder = sqlite3.connect(store.path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    stop = asyncio.Event()
    pruner = Pruner(store=store, retention=RETENTION, clock=clock, first_delay=0, retry_first=0.05)
    task = asyncio.create_task(pruner.run(stop))
    try:

        async def refused() -> bool:
            return not store.health.ok

        await until(refused, "a prune refused")
        assert not task.done()
        assert await store.count_events() == 1
    finally:
        holder.rollback()
        holder.close()

    async def pruned() -> bool:
        return await store.count_events() == 0

    await until(pruned, "the prune tried again")
    assert not task.done()
    stop.set()
    await asyncio.wait_for(task, PATIENCE)
    # The store logged the refusal; the task added no warning of its own.
    assert not [
        r for r in caplog.records if r.name == "bot.maintenance" and r.levelno >= logging.WARNING
    ]


async def test_the_task_stops_at_once_while_waiting_and_between_batches(store: Store) -> None:
    stop = asyncio.Event()
    idle = asyncio.create_task(Pruner(store=store, retention=RETENTION).run(stop))
    await asyncio.sleep(0)  # waiting out its first delay (a minute)
    stop.set()
    await asyncio.wait_for(idle, PATIENCE)

    for n in range(4):
        await stored(store, f"old{n}", days_ago=40)
    stop = asyncio.Event()
    # One event per batch and a long pause between batches: stop is set during it.
    pruner = Pruner(
        store=store,
        retention=RETENTION,
        clock=clock,
        first_delay=0,
        batch_rows=2,
        batch_pause=3600,
    )
    busy = asyncio.create_task(pruner.run(stop))

    async def one_batch_done() -> bool:
        return await store.count_events() == 3

    await until(one_batch_done, "the first batch")
    stop.set()
    await asyncio.wait_for(busy, PATIENCE)
    assert await store.count_events() == 3


async def test_a_retention_longer_than_any_clock_removes_nothing(store: Store) -> None:
    await stored(store, "ancient", days_ago=10_000)
    pruner = Pruner(store=store, retention=timedelta(days=999_999), clock=clock)
    assert await pruner.prune() == (0, 0)
    assert await store.count_events() == 1
