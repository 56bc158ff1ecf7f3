"""This process's heartbeat on the database, and its share of the platforms' limits.

Every second the process says it is alive (`Store.heartbeat`): the leases of the
deliveries it is sending are renewed, and when the number of bot processes on the
database changes, each sink takes its share of its platform's global rate limit, which
counts the whole bot token (Discord's 50 requests and Telegram's 30 messages a second).

A process that joins others makes no request to a platform until they have counted it
and what they sent at their larger shares has left the platforms' windows: sooner,
their old shares and its new one add up to more than the token's limit, and the
platform answers 429. "Counted" is read from the database, not assumed from a delay:
each of the others has beaten since this process's row was there (`Store.unaware_of`),
however slow their heartbeats are just then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Final

from bot.errors import StoreUnavailable
from bot.outbox import OutboxWorker
from bot.sinks.base import CLOCK_ALLOWANCE, Sink
from bot.store import Store

log = logging.getLogger(__name__)

#: How often a process says it is alive (at least three times per lease).
HEARTBEAT_SECONDS: Final = 1.0
#: Discord's and Telegram's global limits count the requests of one second.
PLATFORM_WINDOW_SECONDS: Final = 1.0
#: Once the others have counted a process that joins: one window for what they sent at
#: their larger shares to leave it, and one more for the requests they still had in
#: flight (a platform may count a request as late as its answer).
JOIN_SETTLE_SECONDS: Final = 2 * PLATFORM_WINDOW_SECONDS
#: A process not heard from for this many heartbeats is dead (a kill leaves its row
#: until the lease ends) or cut off from the database: one that joins does not wait for
#: it to count it.
QUIET_BEATS: Final = 3


class Heartbeat:
    """Beats every `interval` seconds until stopped; `joined` tells when this process may
    start making requests to the platforms."""

    def __init__(
        self,
        store: Store,
        sinks: Mapping[str, Sink],
        workers: Mapping[str, OutboxWorker],
        *,
        lease: float,
        on_count: Callable[[int], None] | None = None,
    ) -> None:
        self._store = store
        self._sinks = sinks
        self._workers = workers
        self._on_count = on_count
        self.interval = min(lease / 3, HEARTBEAT_SECONDS)
        #: Silent this long: not waited for by a process that joins.
        self.quiet = QUIET_BEATS * self.interval + CLOCK_ALLOWANCE
        self._processes, self._rank = 1, 0
        self._joined = asyncio.Event()
        # When this process's row was first written (by its clock), while it joins.
        self._counted_in: float | None = None
        self._settling = False

    async def joined(self, stop: asyncio.Event) -> None:
        """Return once this process has its share of the platforms' limits and the others
        have made room for it (at once when it is alone), or once `stop` is set."""
        waits = {
            asyncio.create_task(self._joined.wait(), name="heartbeat-joined"),
            asyncio.create_task(stop.wait(), name="heartbeat-joined-stop"),
        }
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
            await asyncio.gather(*waits, return_exceptions=True)

    async def run(self, stop: asyncio.Event) -> None:
        """Beat until `stop` is set."""
        try:
            while not stop.is_set():
                beaten = await self._beat()
                if not self._joined.is_set():
                    await self._join(beaten)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.interval)
        finally:
            # Stopped while joining: nothing must wait for it any longer.
            self._joined.set()

    async def _beat(self) -> bool:
        """One heartbeat, the shares taken anew when the count (or this process's rank
        among the others) changed; False when the database refused it."""
        try:
            alive = await self._store.heartbeat(now=time.time())
        except StoreUnavailable:
            return False
        rank = self._store.rank
        if alive != self._processes:
            log.info(
                "%d bot processes share the database: each sends at 1/%d of the"
                " platforms' rate limits",
                alive,
                alive,
            )
        if (alive, rank) != (self._processes, self._rank):
            self._processes, self._rank = alive, rank
            if self._on_count is not None:
                self._on_count(alive)
            for sink in self._sinks.values():
                sink.share_limits(alive, rank)
            for worker in self._workers.values():
                worker.share(alive)
        return True

    async def _join(self, beaten: bool) -> None:
        """After a heartbeat, while this process has not joined: joined at once when it
        is alone; with others alive, once each has beaten since its row was there (by
        the clock allowance, for other machines' clocks) and the settling time after."""
        if not self._store.shared:
            # The database is this process's alone (SQLite's lock file), so its share is
            # the whole limit even when the heartbeat could not be written.
            self._joined.set()
            return
        if not beaten or self._settling:
            return  # no share known yet, or already counted and settling
        if self._counted_in is None:
            self._counted_in = time.time()
            if self._processes == 1:
                self._joined.set()
                return
            log.info(
                "joining %d more bot process(es) on the database: connecting to the"
                " platforms once they have counted this one",
                self._processes - 1,
            )
            return  # none can have beaten since a moment ago
        try:
            unaware = await self._store.unaware_of(
                self._counted_in + CLOCK_ALLOWANCE, now=time.time(), quiet=self.quiet
            )
        except StoreUnavailable:
            return
        if unaware == 0:
            self._settling = True
            asyncio.get_running_loop().call_later(JOIN_SETTLE_SECONDS, self._joined.set)
