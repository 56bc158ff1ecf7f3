"""Ingest: store each accepted webhook's event, and nothing else, before its 2xx.

The webhook path is verify, parse, then `Intake.accept`: the event is inserted (deduped
on source + event id) in a group commit and the handler answers 202 once that COMMIT is
done. Applying the event (stream state, routes, mutes, cards, outbox rows) is the
dispatch stage's job, in its own transaction, after the answer (dispatch.py); an event
committed here and not yet dispatched when the process dies is dispatched after the
restart.

Group commit: one COMMIT per request caps how many webhooks a second the bot can take,
so handlers hand their event to the Intake and wait: everything queued during one pass
of the event loop is stored in one statement right after it (one transaction with a
savepoint per event when one of them fails, so one bad event fails alone). Under load
one COMMIT serves many requests; a lone request waits no longer than one pass of the
loop.

The intake's transactions only insert (deduped on the unique key), so they do not wait
for the store's other writes (`transaction(serial=False)`: on PostgreSQL, several
processes and this process's dispatch stage insert at once). The dispatch stage still
sees a sender's events in the order it sent them: a sender that waits for each 202 sends
its next event after the last one committed, so the next gets a later row id and commits
later. Events no 202 ordered (two in flight at once, to two processes) can commit in
either order and are dispatched in the order their commits are seen; that is the order
they arrived in as much as any other.

When the database stays locked past the store's short busy timeout, the batch is tried
again a few times, giving the event loop back in between (the wait would otherwise
block every other request), before the handlers answer 503.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

from bot.errors import StoreUnavailable, TransactionAborted
from bot.events import Event
from bot.sources.base import is_body_digest
from bot.store import Store

#: How long a batch keeps retrying a locked database before its senders hear 503; well
#: inside the 5-10 s senders wait for an answer.
LOCK_RETRY_SECONDS: Final = 3.0
LOCK_RETRY_PAUSE_SECONDS: Final = 0.2

#: How long a payload without an id of its own is a duplicate of an identical body. Its
#: id is a hash of the body (sources/base.py `body_digest`; only OneLiveRec payloads
#: without `id` get one, Livepeer and FastPix require theirs), and the same body can
#: honestly come again: the docs' live_start has neither `id` nor `ts`, so tomorrow's
#: stream sends the very bytes of today's. Within the window it is the sender retrying;
#: after it, a new event. OneLiveRec documents no retry schedule, so the window is the
#: horizon the bot's own outbox retries a delivery for (`[delivery] max_age`, 24 h by
#: default): a sender still retrying a day later is not one we know of. The price: a
#: stream that ends and starts again within the day, sending byte-identical payloads
#: with neither `id` nor `ts`, is taken for a retry. Ids a provider sets are unique for
#: good and dedupe as long as the event is kept (`[storage] retention`, 30 days by default).
DIGEST_WINDOW: Final = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class Ingested:
    """What storing one event did: a duplicate, or the new event's row."""

    duplicate: bool
    event_row: int | None = None


async def insert_new(
    store: Store, event: Event, *, raw: bytes | None, digest_window: timedelta
) -> Ingested:
    """Store one event for the dispatch stage, inside the caller's transaction."""
    await retire_old_digest(store, event, digest_window=digest_window)
    row = await store.insert_event(event, raw=raw, dispatched=False)
    return Ingested(duplicate=row is None, event_row=row)


async def retire_old_digest(store: Store, event: Event, *, digest_window: timedelta) -> None:
    """An id made from the body dedupes retries within the window only: after it, the
    stored row's id is moved aside and the same body is a new event (before its insert,
    in the same transaction)."""
    if is_body_digest(event.event_id):
        await store.retire_event_id(
            event.source, event.event_id, received_before=event.received_at - digest_window
        )


_Waiting = list[tuple[Event, bytes | None, "asyncio.Future[Ingested]"]]


class Intake:
    """Batches `accept` calls from concurrent handlers into group commits."""

    def __init__(
        self,
        store: Store,
        *,
        on_committed: Callable[[], None] | None = None,
        digest_window: timedelta = DIGEST_WINDOW,
        lock_retry_seconds: float = LOCK_RETRY_SECONDS,
    ) -> None:
        self._store = store
        self._on_committed = on_committed
        self._digest_window = digest_window
        self._lock_retry_seconds = lock_retry_seconds
        self._waiting: _Waiting = []
        # True from when a flush is scheduled until it has finished: one flush at a time,
        # so batches commit in the order their events came.
        self._flush_scheduled = False
        # While a batch waits out a lock, when it gives up (monotonic); None otherwise.
        self._retry_until: float | None = None
        self._flushing: asyncio.Task[None] | None = None

    async def accept(self, event: Event, *, raw: bytes | None = None) -> Ingested:
        """Store the event (with whatever else is waiting); returns once it is committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Ingested] = loop.create_future()
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
            outcomes = await self._store_batch([(event, raw) for event, raw, _ in batch])
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
        if self._on_committed is not None and any(
            not isinstance(o, Exception) and not o.duplicate for o in outcomes
        ):
            self._on_committed()
        for (*_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():
                continue  # the handler is gone; its event is stored all the same
            if isinstance(outcome, Exception):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
        return False

    async def _store_batch(
        self, batch: Sequence[tuple[Event, bytes | None]]
    ) -> list[Ingested | Exception]:
        """One transaction for the batch: each event succeeds or fails on its own; a
        failing COMMIT raises, and then none of them was stored.

        First without a savepoint per event (two statements each, a good share of the
        work under load); only when an event fails is the batch done again with them.
        """
        try:
            return list(await self._insert_all(batch))
        except StoreUnavailable:
            raise  # the database, not an event: the whole batch waits or fails
        except Exception:
            return await self._insert_each(batch)

    async def _insert_all(self, batch: Sequence[tuple[Event, bytes | None]]) -> list[Ingested]:
        store = self._store
        # One statement for the batch (PostgreSQL): a round trip per webhook was a good
        # share of each one's cost. Atomic on its own, so unless a body digest's old row
        # must be moved aside first it needs no transaction around it: BEGIN and COMMIT
        # were two of a lone webhook's three round trips before its 202.
        if any(is_body_digest(event.event_id) for event, _raw in batch):
            async with store.transaction(serial=False):
                for event, _raw in batch:
                    await retire_old_digest(store, event, digest_window=self._digest_window)
                rows = await store.insert_new_events(batch)
        else:
            rows = await store.insert_new_events(batch)
        return [Ingested(duplicate=row is None, event_row=row) for row in rows]

    async def _insert_each(
        self, batch: Sequence[tuple[Event, bytes | None]]
    ) -> list[Ingested | Exception]:
        store = self._store
        outcomes: list[Ingested | Exception] = []
        async with store.transaction(serial=False):
            for event, raw in batch:
                try:
                    async with store.savepoint():
                        outcome = await insert_new(
                            store, event, raw=raw, digest_window=self._digest_window
                        )
                except TransactionAborted:
                    raise
                except Exception as exc:
                    outcomes.append(exc)
                    continue
                outcomes.append(outcome)
        return outcomes

    @staticmethod
    def _fail(batch: _Waiting, exc: Exception) -> None:
        # The transaction failed: nothing of the batch is stored, every handler says so.
        for *_, future in batch:
            if not future.done():
                future.set_exception(exc)
