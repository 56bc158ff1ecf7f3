"""Outbox workers: one per sink, sending due deliveries and retrying with backoff.

Deliveries are rows, not tasks (design.md): a worker claims due rows, sends them, and
records the outcome. Each target (a channel or chat) is served by its own short-lived
task, so one slow or rate-limited chat never delays another, while messages to the same
chat keep their order. A transient failure is retried with exponential backoff and
jitter until the delivery is `max_age` old; a permanent one fails at once, visibly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from datetime import timedelta

from bot.cards import DELETE, EDIT, card_view
from bot.errors import (
    DeliveryError,
    MessageGone,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from bot.events import Event
from bot.metrics import Metrics
from bot.sinks.base import Sink
from bot.store import Delivery, Store

log = logging.getLogger(__name__)

BACKOFF_BASE_SECONDS = 2.0
BACKOFF_CAP_SECONDS = 600.0
# How long a worker sleeps at most between looks at the outbox when nothing wakes it.
IDLE_POLL_SECONDS = 30.0


def backoff_delay(attempts: int, *, rng: Callable[[], float] = random.random) -> float:
    """Seconds to wait after `attempts` failed tries: exponential, capped, full jitter."""
    ceiling = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2.0 ** max(attempts - 1, 0))
    # "Equal jitter": never less than half the ceiling, so retries still spread out.
    return ceiling / 2 + rng() * ceiling / 2


class OutboxWorker:
    """Delivers one sink's outbox rows until stopped."""

    def __init__(
        self,
        *,
        store: Store,
        sink: Sink,
        max_age: timedelta = timedelta(hours=24),
        clock: Callable[[], float] = time.time,
        drain_grace: float = 5.0,
        metrics: Metrics | None = None,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._drain_grace = drain_grace
        self._sink = sink
        self._max_age = max_age.total_seconds()
        self._clock = clock
        self._wakeup = asyncio.Event()
        self._in_flight: dict[str, asyncio.Task[None]] = {}

    @property
    def sink_name(self) -> str:
        """The sink this worker serves."""
        return self._sink.name

    def wake(self) -> None:
        """New deliveries were queued: look at the outbox now."""
        self._wakeup.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until `stop` is set, then let in-flight sends finish."""
        try:
            while not stop.is_set():
                self._wakeup.clear()
                self._start_due()
                await self._sleep_until_next(stop)
        finally:
            await self._drain()

    def _start_due(self) -> None:
        now = self._clock()
        claimed = self._store.claim_due(
            self._sink.name, now=now, busy_targets=list(self._in_flight)
        )
        by_target: dict[str, list[Delivery]] = {}
        for delivery in claimed:
            by_target.setdefault(delivery.target, []).append(delivery)
        for target, batch in by_target.items():
            task = asyncio.create_task(
                self._deliver_batch(batch), name=f"deliver-{self._sink.name}-{target}"
            )
            self._in_flight[target] = task
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        for target, running in list(self._in_flight.items()):
            if running is task:
                del self._in_flight[target]
        # The target is free again: anything queued for it meanwhile can go now.
        self._wakeup.set()

    async def _sleep_until_next(self, stop: asyncio.Event) -> None:
        next_due = self._store.next_due(self._sink.name, busy_targets=list(self._in_flight))
        timeout = IDLE_POLL_SECONDS
        if next_due is not None:
            timeout = min(timeout, max(next_due - self._clock(), 0.0))
        if timeout <= 0:
            return
        waiters = [asyncio.ensure_future(self._wakeup.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)

    async def _deliver_batch(self, batch: list[Delivery]) -> None:
        for delivery in batch:
            await self._deliver_one(delivery)

    async def _deliver_one(self, delivery: Delivery) -> None:
        store = self._store
        try:
            event = store.load_event(delivery.event_row)
            if delivery.action == EDIT:
                message_id = await self._edit_card(delivery, card_view(event))
            elif delivery.action == DELETE:
                message_id = await self._delete_card(delivery, event)
            else:
                message_id = await self._sink.deliver(delivery, event)
        except asyncio.CancelledError:
            # Shutting down mid-send: the row stays 'sending' and is re-queued on start.
            raise
        except DeliveryError as exc:
            self._failed(delivery, exc, retryable=exc.retryable, retry_after=exc.retry_after)
            return
        except Exception as exc:
            # A bug, not the platform: keep the delivery and say loudly what happened.
            log.exception("delivery %d to %s %s crashed", delivery.id, delivery.sink,
                          delivery.target)
            self._failed(delivery, exc, retryable=True, retry_after=None)
            return
        now = self._clock()
        store.mark_sent(delivery.id, message_id=message_id, now=now)
        if self._metrics is not None:
            self._metrics.delivery(self._sink.name, delivery.action, "sent", now - _due(delivery))

    def _card(self, delivery: Delivery, doing: str) -> tuple[int, str, str | None]:
        """(delivery id, state, platform message id) of the card a delivery acts on."""
        card_id = int(delivery.options["card"])
        state, card_message = self._store.delivery_status(card_id)
        if state in ("pending", "sending"):
            # Same chat, so normally the card went first; it may be waiting on a retry.
            raise TransientDeliveryError(f"the card to {doing} is not posted yet", retry_after=2.0)
        return card_id, state, card_message

    async def _edit_card(self, delivery: Delivery, event: Event) -> str | None:
        """Edit the session's card in place; post a new card when it is gone."""
        card_id, state, card_message = self._card(delivery, "edit")
        if state == "sent" and card_message is not None:
            try:
                await self._sink.edit(delivery, card_message, event)
            except MessageGone as exc:
                log.warning(
                    "card %s in %s %s cannot be edited (%s); posting a new one",
                    card_message, delivery.sink, delivery.target, exc,
                )
            else:
                return card_message
        else:
            log.warning(
                "no card to edit in %s %s (its post %s); posting instead",
                delivery.sink, delivery.target, state,
            )
        new_message = await self._sink.deliver(delivery, event)
        if new_message is not None:
            # Later changes in this session edit the new message.
            self._store.set_message_id(card_id, new_message)
        return new_message

    async def _delete_card(self, delivery: Delivery, event: Event) -> str | None:
        """Take the session's card down; where the platform refuses, mark it ended instead."""
        _card_id, state, card_message = self._card(delivery, "delete")
        if state != "sent" or card_message is None:
            log.info("no card to delete in %s %s (its post %s)", delivery.sink,
                     delivery.target, state)
            return None
        try:
            await self._sink.delete(delivery, card_message)
        except PermanentDeliveryError as exc:
            # Telegram bots cannot delete group messages older than 48 hours; a card
            # saying "ended" is the next best thing to no card.
            log.warning("card %s in %s %s cannot be deleted (%s); marking it ended instead",
                        card_message, delivery.sink, delivery.target, exc)
            with contextlib.suppress(MessageGone):  # gone after all: what was wanted
                await self._sink.edit(delivery, card_message, card_view(event))
        return None

    def _failed(
        self, delivery: Delivery, exc: Exception, *, retryable: bool, retry_after: float | None
    ) -> None:
        now = self._clock()
        error = f"{type(exc).__name__}: {exc}"
        age = now - _due(delivery)
        if not retryable or age >= self._max_age:
            reason = "permanent error" if not retryable else "gave up after max age"
            log.error(
                "delivery %d to %s %s failed (%s, attempt %d): %s",
                delivery.id, delivery.sink, delivery.target, reason, delivery.attempts, error,
            )
            self._store.mark_failed(delivery.id, error=error, now=now)
            if self._metrics is not None:
                self._metrics.delivery(self._sink.name, delivery.action, "failed")
            return
        delay = max(retry_after or 0.0, backoff_delay(delivery.attempts))
        log.warning(
            "delivery %d to %s %s failed (attempt %d), retrying in %.1fs: %s",
            delivery.id, delivery.sink, delivery.target, delivery.attempts, delay, error,
        )
        self._store.mark_retry(delivery.id, error=error, not_before=now + delay, now=now)
        if self._metrics is not None:
            self._metrics.delivery(self._sink.name, delivery.action, "retry")

    async def _drain(self) -> None:
        """Give in-flight sends the drain grace, then cancel what is left."""
        tasks = list(self._in_flight.values())
        if not tasks:
            return
        log.info("%s: waiting up to %.0fs for %d in-flight sends",
                 self._sink.name, self._drain_grace, len(tasks))
        _done, pending = await asyncio.wait(tasks, timeout=self._drain_grace)
        for task in pending:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*pending, return_exceptions=True)


def _due(delivery: Delivery) -> float:
    """When a delivery was first due: its creation, or the end of the wait it was held for.

    Latency and `max_age` count from here, so an end notice held back by `end_grace`
    neither looks slow nor loses part of its retry time to the wait.
    """
    held_until = delivery.options.get("due")
    return float(held_until) if isinstance(held_until, (int, float)) else delivery.created_at
