"""Group commit for webhook handlers: events that arrive together share one transaction.

Each accepted webhook must be committed before its 2xx goes out. One COMMIT per request
caps how many webhooks a second the bot can take, so handlers hand their event to the
Intake and wait: everything queued during one pass of the event loop is stored with one
`Dispatcher.accept_many` call right after it. Under load one COMMIT serves many requests;
a lone request waits no longer than before (one pass of the loop).
"""

from __future__ import annotations

import asyncio

from bot.dispatch import AcceptResult, Dispatcher
from bot.events import Event


class Intake:
    """Batches `accept` calls from concurrent handlers into group commits."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self._dispatcher = dispatcher
        self._waiting: list[tuple[Event, bytes | None, asyncio.Future[AcceptResult]]] = []
        self._flush_scheduled = False

    async def accept(self, event: Event, *, raw: bytes | None = None) -> AcceptResult:
        """Store the event (with whatever else is waiting); returns once it is committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[AcceptResult] = loop.create_future()
        self._waiting.append((event, raw, future))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._flush_scheduled = False
        batch, self._waiting = self._waiting, []
        try:
            outcomes = self._dispatcher.accept_many([(event, raw) for event, raw, _ in batch])
        except Exception as exc:
            # The COMMIT itself failed: nothing of the batch is stored, every handler says so.
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (*_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():
                continue  # the handler is gone; its event is stored all the same
            if isinstance(outcome, Exception):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
