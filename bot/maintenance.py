"""Housekeeping while the bot runs: history older than `[storage] retention` is pruned.

Alertmanager's notification log works the same way: entries carry their retention and a
maintenance loop garbage-collects the expired ones now and then. What "still needed"
means (a live session, a delivery still to go out, the cards it edits) is the store's
business (`Store.prune`); this module only decides when, and in what steps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final

from bot.durations import format_duration
from bot.errors import StoreUnavailable

if TYPE_CHECKING:
    from bot.metrics import Metrics
    from bot.store import Store

log = logging.getLogger(__name__)

#: The first prune waits this long after start, so that start-up work (re-queued
#: deliveries, a backlog of webhooks after downtime) goes first.
FIRST_DELAY_SECONDS: Final = 60.0
#: How often to prune. Retention is counted in days, so an hour adds at most an hour to
#: how long a row is kept, and each pass is small: an hour's worth of history.
EVERY_SECONDS: Final = 3600.0
#: Rows (events and their deliveries) one prune call removes in one transaction: a few
#: milliseconds of the write lock, well inside the 200 ms another writer waits.
BATCH_ROWS: Final = 500
#: Pause between two batches, so webhooks and workers get the loop and the write lock.
BATCH_PAUSE_SECONDS: Final = 0.05
#: While the database refuses, try again after this long, doubling up to EVERY_SECONDS.
RETRY_FIRST_SECONDS: Final = 30.0


class Pruner:
    """Prunes the store now and then; `run(stop)` until stop is set."""

    def __init__(
        self,
        *,
        store: Store,
        retention: timedelta,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        first_delay: float = FIRST_DELAY_SECONDS,
        every: float = EVERY_SECONDS,
        batch_rows: int = BATCH_ROWS,
        batch_pause: float = BATCH_PAUSE_SECONDS,
        retry_first: float = RETRY_FIRST_SECONDS,
    ) -> None:
        self._store = store
        self._retention = retention
        self._metrics = metrics
        self._clock = clock
        self._first_delay = first_delay
        self._every = every
        self._batch_rows = batch_rows
        self._batch_pause = batch_pause
        self._retry_first = retry_first

    async def run(self, stop: asyncio.Event) -> None:
        """Prune after `first_delay`, then every `every` seconds, until `stop` is set."""
        delay = self._first_delay
        retry = self._retry_first
        while not await _stopped(stop, delay):
            try:
                await self.prune(stop)
            except StoreUnavailable as exc:
                # Quietly: the store's own health logs an unavailable database once, and
                # /healthz shows it; history can wait.
                log.debug("retention: database unavailable (%s); trying again later", exc)
                delay, retry = retry, min(retry * 2, self._every)
                continue
            delay, retry = self._every, self._retry_first

    async def prune(self, stop: asyncio.Event | None = None) -> tuple[int, int]:
        """Remove what is older than the retention, batch by batch; (events, deliveries).

        Raises StoreUnavailable when the database refuses (what went before stays gone).
        Stops early, between batches, when `stop` is set.
        """
        before = _cutoff(self._clock(), self._retention)
        if before is None:
            return 0, 0
        events = deliveries = 0
        try:
            while True:
                result = await self._store.prune(before=before, limit=self._batch_rows)
                events += result.events
                deliveries += result.deliveries
                if self._metrics is not None:
                    self._metrics.pruned(events=result.events, deliveries=result.deliveries)
                if not result.more or await _stopped(stop, self._batch_pause):
                    break
        finally:
            if events or deliveries:
                log.info(
                    "retention: removed %d events and %d deliveries older than %s",
                    events,
                    deliveries,
                    format_duration(self._retention),
                )
        return events, deliveries


def _cutoff(now: float, retention: timedelta) -> datetime | None:
    """When history begins to be old; None when the retention reaches before any clock."""
    try:
        return datetime.fromtimestamp(now, UTC) - retention
    except OverflowError:
        return None


async def _stopped(stop: asyncio.Event | None, delay: float) -> bool:
    """Wait `delay` seconds or until `stop` is set; whether it is."""
    if stop is None:
        await asyncio.sleep(delay)
        return False
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), delay)
    return stop.is_set()
