"""Outbox workers: one per sink, sending due deliveries and retrying with backoff.

Deliveries are rows, not tasks (design.md): a worker claims due rows, sends them, and
records the outcome. Each target (a channel or chat) is served by its own short-lived
task, so one slow or rate-limited chat never delays another, while messages to the same
chat keep their order. A transient failure is retried with exponential backoff and
jitter until the delivery is `max_age` old; a permanent one fails at once, visibly.

A chat that answers with a new id (TargetMoved: a Telegram group upgraded to a
supergroup) is followed: the store moves what it keeps for the chat to the new id (once,
bot.pipeline.routing.follow_move), and the delivery, with the rest of its batch, goes
back to the queue, due at once and no attempt spent, to be claimed again at the new id.

A database that refuses reads or writes (full disk, read-only, locked) never ends a
worker: it backs off and tries again. An outcome the database would not take (a message
that was sent, say) is kept in memory and recorded as soon as the database is back, so
the row is neither sent again by this process nor lost.

On stop, no new send starts; a send already on the wire is waited for up to the sink's
`drain_timeout` (as long as it may take to answer), since cutting it off is what makes a
platform without an idempotency key post twice. Claimed rows never tried go back to the
queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from bot.errors import (
    DeliveryError,
    MessageGone,
    PermanentDeliveryError,
    StoreUnavailable,
    TargetMoved,
    TransientDeliveryError,
)
from bot.events import REPLAY_READY, Event
from bot.metrics import Metrics
from bot.pipeline.cards import DELETE, EDIT, card_view
from bot.pipeline.muting import chat_of, held_back, is_muted
from bot.pipeline.routing import follow_move
from bot.sinks.base import CLOCK_ALLOWANCE, Sink
from bot.store import Delivery, Mute, Store

log = logging.getLogger(__name__)

BACKOFF_BASE_SECONDS = 2.0
BACKOFF_CAP_SECONDS = 600.0
# How long a worker sleeps at most between looks at the outbox when nothing wakes it.
IDLE_POLL_SECONDS = 30.0
#: Deliveries one look at the outbox claims (Store.claim_due's limit).
CLAIM_LIMIT = 50
# Backoff while the database refuses the worker: from half a second up to this.
STORE_BACKOFF_CAP_SECONDS = 15.0
# How long a stopping worker keeps trying to record outcomes the database refused.
RECORD_AT_STOP_SECONDS = 5.0
#: A sink is reported degraded after this many failed sends in a row (rate limits and
#: waits for another message do not count), or when it has not managed a send for
#: DEGRADED_AFTER_SECONDS while failing.
DEGRADED_AFTER_FAILURES = 3
DEGRADED_AFTER_SECONDS = 300.0
#: How long a send in flight at shutdown is waited for, when the sink does not say.
DEFAULT_DRAIN_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class _Unrecorded:
    """An outcome the database refused: written again until it goes through."""

    delivery_id: int
    target: str
    what: str
    write: Callable[[], Awaitable[None]]


def backoff_delay(attempts: int, *, rng: Callable[[], float] = random.random) -> float:
    """Seconds to wait after `attempts` failed tries: exponential, capped, full jitter."""
    # Capped exponent: a row retried for days (or re-queued by `deliveries --retry` again
    # and again) must not overflow the float.
    doublings = min(max(attempts - 1, 0), 32)
    ceiling = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2.0**doublings)
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
        drain_timeout: float | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._drain_timeout = (
            drain_timeout
            if drain_timeout is not None
            else float(getattr(sink, "drain_timeout", DEFAULT_DRAIN_TIMEOUT))
        )
        self._sink = sink
        self._max_age = max_age.total_seconds()
        self._clock = clock
        self._wakeup = asyncio.Event()
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        self._unrecorded: list[_Unrecorded] = []
        self._stop: asyncio.Event | None = None
        self._store_failures = 0
        # For `degraded`: failed sends since the last success, and since when.
        self._failures_in_a_row = 0
        self._failing_since: float | None = None
        # Bot processes sharing the outbox (several on one PostgreSQL database), and
        # since when this one has been the only one: from its start, since a restart is
        # another process to the messages the last run sent.
        self._processes = 1
        self._alone_since: float | None = clock()

    @property
    def max_age(self) -> timedelta:
        """How long a failing delivery is retried ([delivery] max_age)."""
        return timedelta(seconds=self._max_age)

    @max_age.setter
    def max_age(self, value: timedelta) -> None:
        self._max_age = value.total_seconds()

    @property
    def unrecorded(self) -> int:
        """Outcomes (sent, failed, retry) the database has not taken yet."""
        return len(self._unrecorded)

    @property
    def degraded(self) -> bool:
        """True while sends keep failing: the sink is up but not getting messages through."""
        if self._failures_in_a_row >= DEGRADED_AFTER_FAILURES:
            return True
        return (
            self._failing_since is not None
            and self._clock() - self._failing_since >= DEGRADED_AFTER_SECONDS
        )

    @property
    def state(self) -> str:
        """The sink's state, or "degraded" when it runs but its sends keep failing."""
        state = self._sink.state
        return "degraded" if state == "running" and self.degraded else state

    @property
    def sink_name(self) -> str:
        """The sink this worker serves."""
        return self._sink.name

    def share(self, processes: int) -> None:
        """`processes` bot processes share the outbox (and the platform's limits) now."""
        self._processes = max(processes, 1)
        if self._processes > 1:
            self._alone_since = None
        elif self._alone_since is None:
            self._alone_since = self._clock()

    def wake(self) -> None:
        """New deliveries were queued: look at the outbox now."""
        self._wakeup.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until `stop` is set, then let in-flight sends finish."""
        self._stop = stop
        try:
            while not stop.is_set():
                self._wakeup.clear()
                try:
                    await self._record_pending_outcomes()
                    next_due: float | None = None
                    if await self._start_due():
                        next_due = await self._store.next_due(
                            self._sink.name, busy_targets=self._busy_targets(), now=self._clock()
                        )
                    # else at its share: a send ending wakes this worker
                except StoreUnavailable as exc:
                    # The store logs the outage once; here only when it goes on.
                    self._store_failures += 1
                    # The exponent is capped: an outage of hours must not overflow it.
                    doublings = min(self._store_failures - 1, 16)
                    delay = min(0.5 * 2**doublings, STORE_BACKOFF_CAP_SECONDS)
                    log.debug(
                        "%s: database unavailable (%s); next look in %.1fs",
                        self._sink.name,
                        exc,
                        delay,
                    )
                    await self._sleep(stop, delay)
                    continue
                self._store_failures = 0
                await self._sleep_until_next(stop, next_due)
        finally:
            await self._drain()

    def _busy_targets(self) -> list[str]:
        """Targets not to claim for: a send in flight, or an outcome not yet recorded."""
        busy = set(self._in_flight)
        busy.update(item.target for item in self._unrecorded)
        return sorted(busy)

    async def _start_due(self) -> bool:
        """Claim what is due and start sending it; False when this process has its share
        of the sends in flight already (several processes on the database)."""
        limit = CLAIM_LIMIT
        if self._processes > 1:
            # Each process sends at its share of the platform's limits, so what one
            # claims beyond its share waits while the others could send it: a fan-out
            # would end when the process holding the most does. A share of the claims in
            # flight at a time keeps them all sending to the end.
            limit = -(-CLAIM_LIMIT // self._processes) - len(self._in_flight)
            if limit <= 0:
                return False
        now = self._clock()
        claimed = await self._store.claim_due(
            self._sink.name, now=now, busy_targets=self._busy_targets(), limit=limit
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
        return True

    def _finished(self, task: asyncio.Task[None]) -> None:
        for target, running in list(self._in_flight.items()):
            if running is task:
                del self._in_flight[target]
        # The target is free again: anything queued for it meanwhile can go now.
        self._wakeup.set()

    async def _sleep_until_next(self, stop: asyncio.Event, next_due: float | None) -> None:
        timeout = IDLE_POLL_SECONDS
        if next_due is not None:
            timeout = min(timeout, max(next_due - self._clock(), 0.0))
        if timeout <= 0:
            return
        await self._sleep(stop, timeout)

    async def _sleep(self, stop: asyncio.Event, seconds: float) -> None:
        """Wait `seconds`, or less when woken or stopped."""
        waiters = [asyncio.ensure_future(self._wakeup.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)

    async def _deliver_batch(self, batch: list[Delivery]) -> None:
        told = self._tell_sent_elsewhere(batch[0].target)
        try:
            for index, delivery in enumerate(batch):
                if self._stop is not None and self._stop.is_set():
                    # Stopping: no new send starts (only the one on its way is waited for).
                    await self._release(batch[index:])
                    return
                if await self._deliver_one(delivery, told):
                    # The chat moved: the rest of the batch is claimed again at its new id.
                    await self._release(batch[index + 1 :])
                    return
        finally:
            if told is not None:
                told.cancel()
                await asyncio.gather(told, return_exceptions=True)

    def _tell_sent_elsewhere(self, target: str) -> asyncio.Task[None] | None:
        """Start reading what the other processes sent to the target's chat lately, for
        the sink's per-chat limit (`Sink.chat_window`), when any of it may still count:
        several processes, or a process alone for less than the window (it may have
        just started, after a run whose messages still count, or just outlived the
        others). The read goes beside the first send's own reads; the send waits for it.
        """
        window = self._sink.chat_window(target)
        if window is None:
            return None
        window += CLOCK_ALLOWANCE
        if self._alone_since is not None and self._clock() - self._alone_since >= window:
            return None
        return asyncio.create_task(self._read_sent_elsewhere(target, window))

    async def _read_sent_elsewhere(self, target: str, window: float) -> None:
        now = self._clock()
        try:
            sent = await self._store.sent_elsewhere(
                self._sink.name, chat_of(target), since=now - window
            )
        except StoreUnavailable as exc:
            # Its send reads the database too, and waits for it: this one is not retried.
            log.debug("%s %s: the chat's recent sends unread (%s)", self._sink.name, target, exc)
            return
        self._sink.sent_elsewhere(target, sent, now=now)

    async def _release(self, deliveries: list[Delivery]) -> None:
        """Claimed rows not sent go back to the queue, due as they were, no attempt spent
        (stopping: for the next start; a chat that moved: to be claimed at its new id)."""
        # If the database refuses, they stay 'sending' and the next start re-queues them:
        # never tried either way.
        with contextlib.suppress(StoreUnavailable):
            await self._store.release_claimed([d.id for d in deliveries], now=self._clock())

    # -- recording outcomes ----------------------------------------------------------

    async def _record(
        self, delivery: Delivery, what: str, write: Callable[[], Awaitable[None]]
    ) -> None:
        """Write an outcome now, or keep it until the database takes it."""
        if not self._unrecorded:
            try:
                await write()
            except StoreUnavailable as exc:
                log.warning(
                    "delivery %d to %s %s: %s, but the database refused to record it (%s);"
                    " kept in memory until it can",
                    delivery.id,
                    delivery.sink,
                    delivery.target,
                    what,
                    exc,
                )
            else:
                return
        # Behind others already waiting: keep their order.
        self._unrecorded.append(_Unrecorded(delivery.id, delivery.target, what, write))
        self._report_unrecorded()

    async def _record_pending_outcomes(self) -> None:
        """Write the outcomes the database refused before; raises while it still refuses."""
        if not self._unrecorded:
            return
        while self._unrecorded:
            await self._unrecorded[0].write()
            done = self._unrecorded.pop(0)
            log.info("delivery %d: recorded at last (%s)", done.delivery_id, done.what)
        self._report_unrecorded()

    def _report_unrecorded(self) -> None:
        if self._metrics is not None:
            self._metrics.unrecorded(self._sink.name, len(self._unrecorded))

    # -- one delivery ---------------------------------------------------------------

    async def _event_and_mutes(self, delivery: Delivery) -> tuple[Event, list[Mute] | None]:
        """The delivery's event and, when a mute could hold it back, its chat's mutes in
        force, read side by side: on a database server, one round trip's wait, not two,
        before every send."""
        event_read = self._store.load_event(delivery.event_row)
        if not held_back(delivery.action, has_cards=self._sink.keeps_cards):
            return await event_read, None
        mutes_read = self._store.mutes_for(delivery.sink, chat_of(delivery.target), self._clock())
        event, mutes = await asyncio.gather(event_read, mutes_read, return_exceptions=True)
        for outcome in (event, mutes):
            if isinstance(outcome, BaseException):
                raise outcome
        assert isinstance(event, Event) and isinstance(mutes, list)
        return event, mutes

    async def _held_by_mute(
        self, delivery: Delivery, event: Event, mutes: list[Mute] | None
    ) -> bool:
        """Muting again, at send time: a chat muted after this row was queued (an end
        waiting out its end_grace, a backlog after an outage) gets no new message; the
        row is called off. Card edits still go out (muting.py): no mutes were read."""
        if mutes is None or not is_muted(mutes, event.streamer_key):
            return False
        now = self._clock()
        log.info(
            "delivery %d (%s %s) to %s %s called off: muted there since it was queued",
            delivery.id,
            delivery.action,
            event.kind,
            delivery.sink,
            delivery.target,
        )
        await self._record(
            delivery,
            "cancelled (muted)",
            lambda: self._store.mark_cancelled(
                delivery.id, reason="cancelled: muted here after it was queued", now=now
            ),
        )
        return True

    async def _into_thread(self, delivery: Delivery) -> Delivery:
        """A notice of a session with a thread (`thread = "per_stream"`) goes into it: the
        thread is the card's message (Discord gives a thread made from a message, and a
        forum post's first message, one id). Without a posted card, into the channel."""
        if delivery.options.get("thread") is None or delivery.options.get("card") is None:
            return delivery
        _card_id, state, message = await self._card(delivery, "post in the thread of")
        if state != "sent" or message is None:
            return delivery
        return dataclasses.replace(delivery, options={**delivery.options, "in_thread": message})

    async def _live_again(self, delivery: Delivery, event: Event) -> bool:
        """A replay link waits as long as the end it follows; a stream that came back
        meanwhile (its card live again) must not be shown ended: the row is called off."""
        key = event.streamer_key
        stream = await self._store.get_stream(key) if key is not None else None
        if stream is None or not stream.live:
            return False
        now = self._clock()
        await self._record(
            delivery,
            "cancelled (live again)",
            lambda: self._store.mark_cancelled(
                delivery.id, reason="cancelled: the stream is live again", now=now
            ),
        )
        return True

    async def _deliver_one(
        self, delivery: Delivery, told: asyncio.Task[None] | None = None
    ) -> bool:
        """Send one delivery and record the outcome; True when its chat turned out to
        have moved (the delivery is queued again, for the new id). `told`: the read of
        the chat's recent sends elsewhere, which the sink must have before it sends."""
        store = self._store
        try:
            event, mutes = await self._event_and_mutes(delivery)
            if await self._held_by_mute(delivery, event, mutes):
                return False
            if event.kind == REPLAY_READY and await self._live_again(delivery, event):
                return False
            if told is not None:
                await told  # the batch's first send waits for it; the others find it done
            if delivery.action == EDIT:
                message_id = await self._edit_card(delivery, card_view(event))
            elif delivery.action == DELETE:
                message_id = await self._delete_card(delivery, event)
            else:
                delivery = await self._into_thread(delivery)
                view = delivery.options.get("view")
                if isinstance(view, int):
                    # A late card (a change brought the stream into a route's filters):
                    # the session's card, drawn as the stream is after that change.
                    event = card_view(await store.load_event(view))
                message_id = await self._sink.deliver(delivery, event)
        except asyncio.CancelledError:
            # Cut off mid-send: the row stays 'sending' and is re-queued on start.
            raise
        except StoreUnavailable as exc:
            # Raised before anything was sent (reading the event or the card): try later.
            await self._failed(delivery, exc, retryable=True, retry_after=None, counts=False)
            return False
        except TargetMoved as exc:
            await self._follow(delivery, exc)
            return True
        except DeliveryError as exc:
            counts = exc.retry_after is None  # a rate limit or a wait is no failure
            await self._failed(
                delivery, exc, retryable=exc.retryable, retry_after=exc.retry_after, counts=counts
            )
            return False
        except Exception as exc:
            # A bug, not the platform: keep the delivery and say loudly what happened.
            log.exception(
                "delivery %d to %s %s crashed", delivery.id, delivery.sink, delivery.target
            )
            await self._failed(delivery, exc, retryable=True, retry_after=None)
            return False
        now = self._clock()
        self._failures_in_a_row, self._failing_since = 0, None
        await self._record(
            delivery,
            "sent",
            lambda: store.mark_sent(delivery.id, message_id=message_id, now=now),
        )
        if self._metrics is not None:
            self._metrics.delivery(self._sink.name, delivery.action, "sent", now - _due(delivery))
        return False

    async def _follow(self, delivery: Delivery, moved: TargetMoved) -> None:
        """The chat has a new id: move what the store keeps for it there (once), then
        queue the delivery again, due now and no attempt spent: it is claimed next at
        the new id. Nothing was sent, so this is no failure."""
        now = self._clock()
        if moved.new == chat_of(delivery.target):
            # "Moved" to where it already is: following it would loop; fail it visibly.
            error = PermanentDeliveryError(f"the platform says chat {moved.new} moved to itself")
            await self._failed(delivery, error, retryable=False, retry_after=None)
            return
        try:
            await follow_move(self._store, delivery.sink, moved.old, moved.new, now=now)
        except StoreUnavailable as exc:
            # Not recorded: the platform says the same again at the next attempt.
            await self._failed(delivery, exc, retryable=True, retry_after=None, counts=False)
            return
        log.info(
            "delivery %d to %s %s: the chat is %s now; sending it there",
            delivery.id,
            delivery.sink,
            delivery.target,
            moved.new,
        )
        await self._release([delivery])

    async def _card(self, delivery: Delivery, doing: str) -> tuple[int, str, str | None]:
        """(delivery id, state, platform message id) of the card a delivery acts on."""
        card_id = int(delivery.options["card"])
        state, card_message = await self._store.delivery_status(card_id)
        if state in ("pending", "sending"):
            # Same chat, so normally the card went first; it may be waiting on a retry.
            raise TransientDeliveryError(f"the card to {doing} is not posted yet", retry_after=2.0)
        return card_id, state, card_message

    async def _edit_card(self, delivery: Delivery, event: Event) -> str | None:
        """Edit the session's card in place; post a new card when it is gone."""
        card_id, state, card_message = await self._card(delivery, "edit")
        if state == "sent" and card_message is not None:
            try:
                await self._sink.edit(delivery, card_message, event)
            except MessageGone as exc:
                log.warning(
                    "card %s in %s %s cannot be edited (%s); posting a new one",
                    card_message,
                    delivery.sink,
                    delivery.target,
                    exc,
                )
            else:
                return card_message
        else:
            log.warning(
                "no card to edit in %s %s (its post %s); posting instead",
                delivery.sink,
                delivery.target,
                state,
            )
        new_message = await self._sink.deliver(delivery, event)
        if new_message is not None:
            # Later changes in this session edit the new message.
            await self._record(
                delivery,
                f"card reposted as {new_message}",
                lambda: self._store.set_message_id(card_id, new_message),
            )
        return new_message

    async def _delete_card(self, delivery: Delivery, event: Event) -> str | None:
        """Take the session's card down; where the platform refuses, mark it ended instead."""
        _card_id, state, card_message = await self._card(delivery, "delete")
        if state != "sent" or card_message is None:
            log.info(
                "no card to delete in %s %s (its post %s)", delivery.sink, delivery.target, state
            )
            return None
        try:
            await self._sink.delete(delivery, card_message)
        except PermanentDeliveryError as exc:
            # Telegram bots cannot delete group messages older than 48 hours; a card
            # saying "ended" is the next best thing to no card.
            log.warning(
                "card %s in %s %s cannot be deleted (%s); marking it ended instead",
                card_message,
                delivery.sink,
                delivery.target,
                exc,
            )
            with contextlib.suppress(MessageGone):  # gone after all: what was wanted
                await self._sink.edit(delivery, card_message, card_view(event))
        return None

    async def _failed(
        self,
        delivery: Delivery,
        exc: Exception,
        *,
        retryable: bool,
        retry_after: float | None,
        counts: bool = True,
    ) -> None:
        now = self._clock()
        if counts:
            self._failures_in_a_row += 1
            if self._failing_since is None:
                self._failing_since = now
        error = f"{type(exc).__name__}: {exc}"
        age = now - _due(delivery)
        if not retryable or age >= self._max_age:
            reason = "permanent error" if not retryable else "gave up after max age"
            log.error(
                "delivery %d to %s %s failed (%s, attempt %d): %s",
                delivery.id,
                delivery.sink,
                delivery.target,
                reason,
                delivery.attempts,
                error,
            )
            await self._record(
                delivery,
                "failed",
                lambda: self._store.mark_failed(delivery.id, error=error, now=now),
            )
            if self._metrics is not None:
                self._metrics.delivery(self._sink.name, delivery.action, "failed")
            return
        delay = max(retry_after or 0.0, backoff_delay(delivery.attempts))
        log.warning(
            "delivery %d to %s %s failed (attempt %d), retrying in %.1fs: %s",
            delivery.id,
            delivery.sink,
            delivery.target,
            delivery.attempts,
            delay,
            error,
        )
        await self._record(
            delivery,
            "to retry",
            lambda: self._store.mark_retry(
                delivery.id, error=error, not_before=now + delay, now=now
            ),
        )
        if self._metrics is not None:
            self._metrics.delivery(self._sink.name, delivery.action, "retry")

    async def _drain(self) -> None:
        """Let in-flight sends answer (up to the drain timeout), then record their outcomes."""
        tasks = list(self._in_flight.values())
        if tasks:
            log.info(
                "%s: waiting up to %.0fs for %d in-flight sends to answer",
                self._sink.name,
                self._drain_timeout,
                len(tasks),
            )
            _done, pending = await asyncio.wait(tasks, timeout=self._drain_timeout)
            if pending:
                log.warning(
                    "%s: %d sends did not answer within %.0fs and were cut off; they are"
                    " sent again at the next start (the platform may have posted them)",
                    self._sink.name,
                    len(pending),
                    self._drain_timeout,
                )
            for task in pending:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*pending, return_exceptions=True)
        await self._record_before_exit()

    async def _record_before_exit(self) -> None:
        deadline = time.monotonic() + RECORD_AT_STOP_SECONDS
        while self._unrecorded:
            try:
                await self._record_pending_outcomes()
            except StoreUnavailable:
                if time.monotonic() >= deadline:
                    break
                await asyncio.sleep(0.25)
        if self._unrecorded:
            sent = sorted({u.delivery_id for u in self._unrecorded if u.what == "sent"})
            log.error(
                "%s: the database still refuses writes; %d outcomes are lost with this"
                " process, and deliveries %s, already sent, will be sent again at the next"
                " start",
                self._sink.name,
                len(self._unrecorded),
                sent or "none",
            )


def _due(delivery: Delivery) -> float:
    """When a delivery was first due: its creation, or the end of the wait it was held for.

    Latency and `max_age` count from here, so an end notice held back by `end_grace`
    neither looks slow nor loses part of its retry time to the wait.
    """
    held_until = delivery.options.get("due")
    return float(held_until) if isinstance(held_until, (int, float)) else delivery.created_at
