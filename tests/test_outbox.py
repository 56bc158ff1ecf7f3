"""Outbox workers: deliver once, retry transient failures, fail permanent ones, isolate chats."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from bot.config import Route
from bot.errors import (
    MessageGone,
    PermanentDeliveryError,
    StoreUnavailable,
    TransientDeliveryError,
)
from bot.events import NOTIFIED_KINDS, Event, LiveInfo
from bot.outbox import BACKOFF_CAP_SECONDS, CLAIM_LIMIT, OutboxWorker, backoff_delay
from bot.pipeline.dispatch import Dispatcher
from bot.store import Delivery, Mute, Store
from tests.routes import chats
from tests.waiting import (
    delivery_where,
    every_delivery,
    outbox_states,
    run_until,
)

T0 = datetime(2026, 3, 11, 5, 0, tzinfo=UTC)


class RecordingSink:
    """A sink that records deliveries and fails on demand, per target."""

    name = "discord"
    drain_timeout = 5.0
    keeps_cards = True
    shares_token_limits = False

    def __init__(self) -> None:
        self.delivered: list[tuple[str, str]] = []
        self.failures: dict[str, list[Exception]] = {}
        self.blocked: dict[str, asyncio.Event] = {}
        # (message id, kind the card shows, its title)
        self.edited: list[tuple[str, str, str | None]] = []
        self.gone: set[str] = set()
        self.deleted: list[str] = []
        self.undeletable: set[str] = set()
        self.state = "running"

    async def start(self) -> None:
        return None

    def chat_window(self, target: str) -> float | None:
        return None  # no per-chat limit to share with other processes

    async def stop(self) -> None:
        return None

    async def deliver(self, delivery: Delivery, event: Event) -> str | None:
        if delivery.target in self.blocked:
            await self.blocked[delivery.target].wait()
        queue = self.failures.get(delivery.target)
        if queue:
            raise queue.pop(0)
        self.delivered.append((delivery.target, event.event_id))
        return f"msg-{delivery.id}"

    async def edit(self, delivery: Delivery, message_id: str, event: Event) -> None:
        if message_id in self.gone:
            raise MessageGone("Unknown Message (10008)")
        self.edited.append((message_id, event.kind, event.live.title if event.live else None))

    async def delete(self, delivery: Delivery, message_id: str) -> None:
        if message_id in self.undeletable:
            raise PermanentDeliveryError("message can't be deleted")
        self.deleted.append(message_id)


async def queue_events(store: Store, channels: tuple[int, ...], *ids: str) -> None:
    route = Route(
        patterns=("*",), events=frozenset(NOTIFIED_KINDS), targets=chats(discord=channels)
    )
    dispatcher = Dispatcher(store=store, routes=[route], sinks=["discord"])
    for index, event_id in enumerate(ids):
        at = T0 + timedelta(minutes=index)
        await dispatcher.accept(
            Event(
                source="rec",
                event_id=event_id,
                kind="error",
                occurred_at=at,
                received_at=at,
                platform="twitch",
                channel="quinn",
                error="x",
            )
        )


async def test_each_delivery_is_sent_once_and_remembers_its_message_id(store: Store) -> None:
    await queue_events(store, (1, 2), "a", "b")
    sink = RecordingSink()
    worker = OutboxWorker(store=store, sink=sink)
    await run_until(worker, lambda: len(sink.delivered) == 4)
    await asyncio.sleep(0.05)
    assert sorted(sink.delivered) == [("1", "a"), ("1", "b"), ("2", "a"), ("2", "b")]
    assert (await store.outbox_counts()).by_state == {"sent": 4}
    ids = [r.message_id for r in await every_delivery(store)]
    assert all(i and i.startswith("msg-") for i in ids)


async def test_messages_to_one_chat_keep_their_order(store: Store) -> None:
    await queue_events(store, (1,), "first", "second", "third")
    sink = RecordingSink()
    await run_until(OutboxWorker(store=store, sink=sink), lambda: len(sink.delivered) == 3)
    assert [e for _t, e in sink.delivered] == ["first", "second", "third"]


async def test_transient_failure_is_retried_later_with_backoff(store: Store) -> None:
    await queue_events(store, (1,), "a")
    sink = RecordingSink()
    sink.failures["1"] = [TransientDeliveryError("503 from Discord", retry_after=0.05)]
    ahead = [0.0]  # seconds the worker's clock runs ahead of the wall clock
    worker = OutboxWorker(store=store, sink=sink, clock=lambda: time.time() + ahead[0])
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    async with asyncio.timeout(5):
        while not (rows := await every_delivery(store)) or not (
            rows[0].state == "pending" and rows[0].last_error
        ):
            await asyncio.sleep(0.01)
    [row] = rows
    assert row.attempts == 1
    assert row.last_error is not None and "503 from Discord" in row.last_error
    # Backoff: at least half the first ceiling, even though retry_after was tiny.
    assert row.not_before - row.updated_at >= 1.0
    # Let the backoff pass and poke the worker, as the timer would.
    ahead[0] = 3600.0
    worker.wake()
    async with asyncio.timeout(5):
        while not sink.delivered:
            await asyncio.sleep(0.01)
    stop.set()
    await task
    assert sink.delivered == [("1", "a")]
    assert (await store.outbox_counts()).by_state == {"sent": 1}


class WindowedSink(RecordingSink):
    """A sink with a per-chat limit (as Telegram's groups): it records when it is told
    the chat's sends elsewhere, beside its deliveries."""

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[str] = []

    def chat_window(self, target: str) -> float | None:
        return 60.0

    def sent_elsewhere(self, target: str, sent: Sequence[float], *, now: float) -> None:
        self.steps.append(f"told {target}: {len(sent)} sent elsewhere")

    async def deliver(self, delivery: Delivery, event: Event) -> str | None:
        self.steps.append(f"deliver {delivery.target}")
        return await super().deliver(delivery, event)


@pytest.mark.parametrize("sick", [False, True])
async def test_a_chats_sends_elsewhere_are_told_before_it_is_sent_to_and_a_refusal_holds_nothing(
    store: Store, sick: bool
) -> None:
    """In its first minute a process reads what its last run sent to a chat with a
    per-chat limit, and the sink hears of it before the send, however slow the read. A
    database that is slow and then refuses that one read holds nothing back: the send
    goes out once (a 429, should the chat's minute be full, is waited out by the sink)."""

    class SlowReads:
        def __init__(self, inner: Store) -> None:
            self._inner = inner

        def __getattr__(self, name: str) -> object:
            return getattr(self._inner, name)

        async def sent_elsewhere(self, sink: str, chat: str, *, since: float) -> list[float]:
            await asyncio.sleep(0.2)  # slower than the send's own reads beside it
            if sick:
                raise StoreUnavailable("SQLITE_IOERR: disk I/O error", code="SQLITE_IOERR")
            return await self._inner.sent_elsewhere(sink, chat, since=since)

    await queue_events(store, (1,), "a")
    sink = WindowedSink()
    worker = OutboxWorker(store=SlowReads(store), sink=sink)  # type: ignore[arg-type]
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    async with asyncio.timeout(5):
        while not sink.delivered:
            await asyncio.sleep(0.01)
    stop.set()
    await task
    assert sink.steps == (["deliver 1"] if sick else ["told 1: 0 sent elsewhere", "deliver 1"])
    assert sink.delivered == [("1", "a")]
    assert (await store.outbox_counts()).by_state == {"sent": 1}


async def test_a_send_the_database_cannot_check_for_mutes_waits_and_goes_out_once(
    store: Store,
) -> None:
    """The event and the chat's mutes are read side by side before a send: when the
    mutes' read is slow and then refused (the database sick), nothing is sent, the row
    waits for a retry saying why, and it goes out once when the database answers again."""

    class SickMutes:
        def __init__(self, inner: Store) -> None:
            self._inner = inner
            self.refusals = 1

        def __getattr__(self, name: str) -> object:
            return getattr(self._inner, name)

        async def mutes_for(self, sink: str, target: str, now: float) -> list[Mute]:
            if self.refusals:
                self.refusals -= 1
                await asyncio.sleep(0.2)  # slower than the event's read beside it
                raise StoreUnavailable("SQLITE_IOERR: disk I/O error", code="SQLITE_IOERR")
            return await self._inner.mutes_for(sink, target, now)

    await queue_events(store, (1,), "a")
    sick = SickMutes(store)
    sink = RecordingSink()
    ahead = [0.0]
    worker = OutboxWorker(store=sick, sink=sink, clock=lambda: time.time() + ahead[0])  # type: ignore[arg-type]
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    async with asyncio.timeout(5):
        while not (rows := await every_delivery(store)) or not rows[0].last_error:
            await asyncio.sleep(0.01)
    assert sink.delivered == []
    assert rows[0].state == "pending" and "disk I/O error" in rows[0].last_error
    ahead[0] = 3600.0  # past the retry's wait, as the timer would be
    worker.wake()
    async with asyncio.timeout(5):
        while not sink.delivered:
            await asyncio.sleep(0.01)
    stop.set()
    await task
    assert sink.delivered == [("1", "a")]
    assert (await store.outbox_counts()).by_state == {"sent": 1}


async def test_permanent_failure_fails_at_once_visibly(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    await queue_events(store, (1,), "a")
    sink = RecordingSink()
    sink.failures["1"] = [PermanentDeliveryError("Missing Access (50001)")]
    await run_until(
        OutboxWorker(store=store, sink=sink),
        outbox_states(store, lambda states: states.get("failed") == 1),
    )
    [row] = await every_delivery(store)
    assert (row.state, row.attempts) == ("failed", 1)
    assert row.last_error is not None and "Missing Access" in row.last_error
    assert any(
        "Missing Access" in r.getMessage() and r.levelname == "ERROR" for r in caplog.records
    )


async def test_transient_failure_past_max_age_gives_up(store: Store) -> None:
    await queue_events(store, (1,), "a")
    sink = RecordingSink()
    sink.failures["1"] = [TransientDeliveryError("timeout")]
    # Tried first 25 hours after it was queued (the bot was down, say).
    late = lambda: time.time() + 25 * 3600  # noqa: E731
    await run_until(
        OutboxWorker(store=store, sink=sink, max_age=timedelta(hours=24), clock=late),
        outbox_states(store, lambda states: states.get("failed") == 1),
    )
    assert sink.delivered == []


async def test_a_stuck_chat_does_not_hold_up_another(store: Store) -> None:
    await queue_events(store, (1, 2), "a", "b")
    sink = RecordingSink()
    sink.blocked["1"] = asyncio.Event()
    worker = OutboxWorker(store=store, sink=sink)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    async with asyncio.timeout(5):
        while len(sink.delivered) < 2:
            await asyncio.sleep(0.01)
    assert sink.delivered == [("2", "a"), ("2", "b")]
    sink.blocked["1"].set()
    async with asyncio.timeout(5):
        while len(sink.delivered) < 4:
            await asyncio.sleep(0.01)
    stop.set()
    await task


async def test_deliveries_in_flight_at_a_crash_are_resumed(store: Store) -> None:
    await queue_events(store, (1,), "a")
    claimed = await store.claim_due("discord", now=T0.timestamp() + 1e9)
    assert len(claimed) == 1
    # The process died here: the row is stuck in 'sending'.
    assert await store.requeue_in_flight() == 1
    sink = RecordingSink()
    await run_until(OutboxWorker(store=store, sink=sink), lambda: bool(sink.delivered))
    assert sink.delivered == [("1", "a")]


async def test_an_unexpected_crash_in_a_sink_keeps_the_delivery(store: Store) -> None:
    await queue_events(store, (1,), "a")
    sink = RecordingSink()
    sink.failures["1"] = [RuntimeError("bug")]
    await run_until(
        OutboxWorker(store=store, sink=sink),
        delivery_where(store, lambda row: bool(row.last_error)),
    )
    assert (await store.outbox_counts()).by_state == {"pending": 1}


@pytest.mark.parametrize("attempts", [1, 2, 5, 30, 2000])
def test_backoff_grows_and_is_capped(attempts: int) -> None:
    low = backoff_delay(attempts, rng=lambda: 0.0)
    high = backoff_delay(attempts, rng=lambda: 1.0)
    assert 0 < low <= high <= BACKOFF_CAP_SECONDS
    assert high == 2 * low
    if attempts > 1:
        assert backoff_delay(attempts, rng=lambda: 0.0) >= backoff_delay(
            attempts - 1, rng=lambda: 0.0
        )


async def start_and_change(store: Store) -> Dispatcher:
    route = Route(patterns=("*",), events=frozenset(NOTIFIED_KINDS), targets=chats(discord=(1,)))
    dispatcher = Dispatcher(store=store, routes=[route], sinks=["discord"])
    for index, (kind, title) in enumerate([("live_start", "One"), ("title_change", "Two")]):
        at = T0 + timedelta(minutes=index)
        await dispatcher.accept(
            Event(
                source="rec",
                event_id=kind,
                kind=kind,
                occurred_at=at,
                received_at=at,
                platform="twitch",
                channel="quinn",
                live=LiveInfo(title=title),
            )
        )
    return dispatcher


async def test_a_change_edits_the_posted_card(store: Store) -> None:
    await start_and_change(store)
    sink = RecordingSink()
    await run_until(OutboxWorker(store=store, sink=sink), lambda: bool(sink.edited))
    assert sink.delivered == [("1", "live_start")]
    [card] = [r for r in await every_delivery(store) if r.action == "post"]
    # The card keeps looking like a live card, now with the new title.
    assert sink.edited == [(card.message_id, "live_start", "Two")]


async def test_a_deleted_card_is_posted_anew_and_later_edits_follow_it(store: Store) -> None:
    dispatcher = await start_and_change(store)
    sink = RecordingSink()
    first_card = f"msg-{(await store.cards(1))['discord', '1']}"
    sink.gone.add(first_card)
    await run_until(OutboxWorker(store=store, sink=sink), lambda: len(sink.delivered) == 2)
    assert sink.delivered == [("1", "live_start"), ("1", "title_change")]
    new_card = (await store.delivery_status((await store.cards(1))["discord", "1"]))[1]
    assert new_card != first_card
    at = T0 + timedelta(minutes=5)
    await dispatcher.accept(
        Event(
            source="rec",
            event_id="c3",
            kind="category_change",
            occurred_at=at,
            received_at=at,
            platform="twitch",
            channel="quinn",
            live=LiveInfo(categories=("Art",)),
        )
    )
    await run_until(OutboxWorker(store=store, sink=sink), lambda: bool(sink.edited))
    assert sink.edited == [(new_card, "live_start", "Two")]


async def start_and_end(store: Store, on_end: str, *, end_grace: timedelta | None = None) -> None:
    route = Route(
        patterns=("*",),
        events=frozenset(NOTIFIED_KINDS),
        on_end=on_end,
        end_grace=end_grace,
        targets=chats(discord=(1,)),
    )
    dispatcher = Dispatcher(store=store, routes=[route], sinks=["discord"])
    for minutes, kind in ((0, "live_start"), (30, "live_end")):
        at = T0 + timedelta(minutes=minutes)
        await dispatcher.accept(
            Event(
                source="rec",
                event_id=kind,
                kind=kind,
                occurred_at=at,
                received_at=at,
                platform="twitch",
                channel="quinn",
                live=LiveInfo(title="Final"),
            )
        )


async def test_on_end_delete_takes_the_card_down(store: Store) -> None:
    await start_and_end(store, "delete")
    sink = RecordingSink()
    await run_until(OutboxWorker(store=store, sink=sink), lambda: bool(sink.deleted))
    card = (await store.delivery_status((await store.cards(1))["discord", "1"]))[1]
    assert sink.deleted == [card]
    assert sink.delivered == [("1", "live_start")] and sink.edited == []


async def test_a_card_that_cannot_be_deleted_is_marked_ended_instead(store: Store) -> None:
    await start_and_end(store, "delete")
    sink = RecordingSink()
    sink.undeletable.add(f"msg-{(await store.cards(1))['discord', '1']}")
    await run_until(OutboxWorker(store=store, sink=sink), lambda: bool(sink.edited))
    assert sink.edited == [(f"msg-{(await store.cards(1))['discord', '1']}", "live_end", "Final")]
    assert (await store.outbox_counts()).by_state == {"sent": 2}


async def test_a_mute_set_while_an_end_waits_out_its_grace_holds_back_that_new_message(
    store: Store,
) -> None:
    await start_and_end(store, "both", end_grace=timedelta(minutes=5))
    sink = RecordingSink()
    await run_until(OutboxWorker(store=store, sink=sink), lambda: bool(sink.delivered))
    # The end (an edit of the card and a notice of its own) waits in the outbox; meanwhile
    # the channel is muted.
    await store.add_mute(Mute("discord", "1", "*", until=None), now=time.time())
    after_grace = lambda: time.time() + 600  # noqa: E731
    await run_until(
        OutboxWorker(store=store, sink=sink, clock=after_grace),
        outbox_states(store, lambda states: "pending" not in states),
    )
    assert sink.delivered == [("1", "live_start")]  # no end notice was posted...
    assert [(kind, title) for _id, kind, title in sink.edited] == [("live_end", "Final")]
    [notice] = [
        r for r in await every_delivery(store) if r.kind == "live_end" and r.action == "post"
    ]
    assert notice.state == "cancelled" and "muted" in (notice.last_error or "")


async def test_sharing_the_outbox_a_process_keeps_only_its_share_of_sends_in_flight(
    store: Store,
) -> None:
    """With three processes on the database, one claims no more than a third of what one
    alone would (CLAIM_LIMIT), so the others find the rest of a fan-out to send."""
    channels = tuple(range(1, 61))
    await queue_events(store, channels, "a")
    sink = RecordingSink()
    for channel in channels:
        sink.blocked[str(channel)] = asyncio.Event()
    worker = OutboxWorker(store=store, sink=sink)
    worker.share(3)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        share = -(-CLAIM_LIMIT // 3)
        async with asyncio.timeout(5):
            while len((await store.outbox_counts()).by_state) < 2:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # looks enough to claim more, were it allowed to
        counts = (await store.outbox_counts()).by_state
        assert counts == {"sending": share, "pending": len(channels) - share}
        # One send ends: one more is claimed in its place.
        sink.blocked["1"].set()
        async with asyncio.timeout(5):
            while (await store.outbox_counts()).by_state.get("sent") != 1:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        assert (await store.outbox_counts()).by_state["sending"] == share
        # Alone again: the rest is claimed.
        worker.share(1)
        worker.wake()
        async with asyncio.timeout(5):
            while (await store.outbox_counts()).by_state.get("pending"):
                await asyncio.sleep(0.01)
    finally:
        for event in sink.blocked.values():
            event.set()
        stop.set()
        await task
    assert len(sink.delivered) == len(channels)
