"""Waiting on conditions that may need the (async) store to tell."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from bot.outbox import OutboxWorker
from bot.store import DELIVERY_STATES, DeliveryInfo, Store

Condition = Callable[[], bool | Awaitable[bool]]


async def holds(condition: Condition) -> bool:
    """Whether `condition` holds now; it may be a plain or an async predicate."""
    result = condition()
    if inspect.isawaitable(result):
        result = await result
    return bool(result)


def outbox_states(store: Store, check: Callable[[dict[str, int]], bool]) -> Condition:
    """A condition on the outbox's deliveries per state."""

    async def condition() -> bool:
        return check((await store.outbox_counts()).by_state)

    return condition


def store_health(store: Store) -> Callable[[], Awaitable[dict[str, Any]]]:
    """A /healthz report that only looks at the database."""

    async def report() -> dict[str, Any]:
        database = await store.check()
        return {"ok": database == "ok", "database": database}

    return report


async def every_delivery(store: Store) -> list[DeliveryInfo]:
    """Every outbox row, whatever its state, oldest first."""
    return await store.list_deliveries(DELIVERY_STATES)


def delivery_where(store: Store, check: Callable[[DeliveryInfo], bool]) -> Condition:
    """A condition that holds once some outbox row passes `check`."""

    async def condition() -> bool:
        return any(check(row) for row in await every_delivery(store))

    return condition


async def run_until(worker: OutboxWorker, done: Condition, timeout: float = 5) -> None:
    """Run `worker` until `done` holds (at most `timeout` seconds), then stop it."""
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        async with asyncio.timeout(timeout):
            while not await holds(done):
                await asyncio.sleep(0.01)
    finally:
        stop.set()
        await task
