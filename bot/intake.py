"""Group commit for webhook handlers: events that arrive together share one transaction.

Each accepted webhook must be committed before its 2xx goes out. One COMMIT per request
caps how many webhooks a second the bot can take, so handlers hand their event to the
Intake and wait: everything queued during one pass of the event loop is stored with one
`Dispatcher.accept_many` call right after it. Under load one COMMIT serves many requests;
a lone request waits no longer than before (one pass of the loop).

When another process holds the database's write lock past the store's short busy
timeout, the batch is tried again a few times, giving the event loop back in between
(the wait would otherwise block every other request), before the handlers answer 503.
"""

from __future__ import annotations

import asyncio
import time
from typing import Final

from bot.dispatch import AcceptResult, Dispatcher
from bot.errors import StoreUnavailable
from bot.events import Event

#: How long a batch keeps retrying a locked database before its senders hear 503; well
#: inside the 5-10 s senders wait for an answer.
LOCK_RETRY_SECONDS: Final = 3.0
LOCK_RETRY_PAUSE_SECONDS: Final = 0.2

_Waiting = list[tuple[Event, bytes | None, "asyncio.Future[AcceptResult]"]]


class Intake:
    """Batches `accept` calls from concurrent handlers into group commits."""

    def __init__(
        self, dispatcher: Dispatcher, *, lock_retry_seconds: float = LOCK_RETRY_SECONDS
    ) -> None:
        self._dispatcher = dispatcher
        self._lock_retry_seconds = lock_retry_seconds
        self._waiting: _Waiting = []
        # True from when a flush is scheduled until it has finished: one flush at a time,
        # so batches commit in the order their events came.
        self._flush_scheduled = False
        # While a batch waits out a lock, when it gives up (monotonic); None otherwise.
        self._retry_until: float | None = None
        self._flushing: asyncio.Task[None] | None = None

    async def accept(self, event: Event, *, raw: bytes | None = None) -> AcceptResult:
        """Store the event (with whatever else is waiting); returns once it is committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[AcceptResult] = loop.create_future()
        self._waiting.append((event, raw, future))
        # During a lock retry, new events wait for it and join it, so that events are
        # still stored in the order they came (a live_end never before its live_start).
        if not self._flush_scheduled and self._retry_until is None:
            self._flush_scheduled = True
            loop.call_soon(self._start_flush)
        return await future

    def _start_flush(self) -> None:
        # Called after one pass of the loop, so that pass's arrivals share the commit.
        self._flushing = asyncio.create_task(self._flush(), name="intake-flush")

    async def _flush(self) -> None:
        retrying = False
        try:
            retrying = await self._commit()
        finally:
            if not retrying:
                self._flush_scheduled = False
                if self._waiting and self._retry_until is None:
                    # Arrived while this batch was committing: their own pass now.
                    self._flush_scheduled = True
                    asyncio.get_running_loop().call_soon(self._start_flush)

    async def _commit(self) -> bool:
        """Commit what is waiting; True when it is to be tried again after a pause."""
        batch, self._waiting = self._waiting, []
        try:
            outcomes = await self._dispatcher.accept_many(
                [(event, raw) for event, raw, _ in batch]
            )
        except StoreUnavailable as exc:
            now = time.monotonic()
            if self._retry_until is None:
                self._retry_until = now + self._lock_retry_seconds
            if exc.busy and now < self._retry_until:
                # Try again with everything that is waiting, this batch first.
                self._waiting = batch + self._waiting
                loop = asyncio.get_running_loop()
                loop.call_later(LOCK_RETRY_PAUSE_SECONDS, self._start_flush)
                return True
            self._retry_until = None
            self._fail(batch, exc)
            return False
        except Exception as exc:
            self._retry_until = None
            self._fail(batch, exc)
            return False
        self._retry_until = None
        for (*_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():
                continue  # the handler is gone; its event is stored all the same
            if isinstance(outcome, Exception):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
        return False

    @staticmethod
    def _fail(batch: _Waiting, exc: Exception) -> None:
        # The transaction failed: nothing of the batch is stored, every handler says so.
        for *_, future in batch:
            if not future.done():
                future.set_exception(exc)
