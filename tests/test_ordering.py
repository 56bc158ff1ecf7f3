"""Ordering under wrong sender clocks, and how long an id-less payload stays a duplicate."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from bot.events import Event, LiveInfo
from bot.pipeline.clocks import CLOCK_SKEW
from bot.pipeline.dispatch import Dispatcher
from bot.pipeline.ingest import DIGEST_WINDOW
from bot.sources.base import body_digest, is_body_digest
from bot.store import Store, StreamState
from tests.test_dispatch import EVERYTHING

#: The bot's clock when each test's first event arrives.
NOW = datetime(2026, 3, 11, 5, 0, tzinfo=UTC)
FUTURE = datetime(2099, 6, 1, 12, 0, tzinfo=UTC)
LATENCY = timedelta(milliseconds=300)


def at(minutes: float) -> datetime:
    return NOW + timedelta(minutes=minutes)


def sent(
    kind: str,
    event_id: str,
    *,
    received: float,
    occurred: datetime | None = None,
    source: str = "rec",
    **fields: object,
) -> Event:
    """An event that arrived at minute `received`, stamped by its sender with `occurred`
    (by default a moment before it arrived, as from a sender whose clock is right)."""
    arrived = at(received)
    base: dict[str, object] = {
        "source": source,
        "event_id": event_id,
        "kind": kind,
        "occurred_at": occurred if occurred is not None else arrived - LATENCY,
        "received_at": arrived,
        "platform": "twitch",
        "channel": "quinn",
    }
    base.update(fields)
    return Event(**base)  # type: ignore[arg-type]


def dispatcher(store: Store, **kwargs: object) -> Dispatcher:
    return Dispatcher(
        store=store, routes=(EVERYTHING,), sinks=("console",), clock=NOW.timestamp, **kwargs
    )  # type: ignore[arg-type]


def notified(result: object) -> list[str]:
    return [e.kind for e in result.notified]  # type: ignore[attr-defined]


# -- a sender's clock in the future ---------------------------------------------------


async def test_one_event_dated_2099_does_not_silence_the_stream(store: Store) -> None:
    d = dispatcher(store)
    start = await d.accept(
        sent(
            "live_start",
            "s",
            received=0,
            occurred=FUTURE,
            live=LiveInfo(title="Clock from the future", start_time=FUTURE),
        )
    )
    assert notified(start) == ["live_start"]
    # The session starts when the start arrived, not in 2099 ...
    assert start.notified[0].started_at == at(0)
    # ... while the event keeps the time its sender gave.
    assert (await store.load_event(start.event_row)).occurred_at == FUTURE

    end = await d.accept(sent("live_end", "e", received=90))
    assert notified(end) == ["live_end"]
    assert end.notified[0].duration == timedelta(minutes=90) - LATENCY
    assert not (await store.get_stream("twitch/quinn")).live

    again = await d.accept(sent("live_start", "s2", received=24 * 60))
    assert notified(again) == ["live_start"]
    assert (await store.get_stream("twitch/quinn")).live


async def test_a_sender_stuck_in_the_future_is_ordered_by_arrival(store: Store) -> None:
    d = dispatcher(store)
    await d.accept(sent("live_start", "s", received=0, occurred=FUTURE))
    change = await d.accept(
        sent(
            "title_change",
            "t",
            received=5,
            occurred=FUTURE,
            live=LiveInfo(title="Still 2099 here"),
        )
    )
    assert notified(change) == ["title_change"]
    end = await d.accept(sent("live_end", "e", received=30, occurred=FUTURE))
    assert notified(end) == ["live_end"]
    # Start and end were both taken as their arrival: a duration, not 0 or 73 years.
    assert end.notified[0].duration == timedelta(minutes=30)


async def test_a_clock_slightly_ahead_still_orders_by_the_senders_time(store: Store) -> None:
    # Within the allowance the sender's times count: its end raced ahead of a start
    # sent earlier, and the start, arriving last, is recognised as the older one.
    ahead = timedelta(minutes=3)
    d = dispatcher(store)
    await d.accept(sent("title_change", "t", received=0, occurred=at(0) + ahead))
    await d.accept(sent("live_start", "s", received=1, occurred=at(1) + ahead))
    await d.accept(sent("live_end", "e", received=50, occurred=at(50) + ahead))
    late = await d.accept(
        sent(
            "live_start",
            "s-retry",
            received=52,
            occurred=at(10) + ahead,
            live=LiveInfo(live_id="other"),
        )
    )
    assert late.notified == []
    assert not (await store.get_stream("twitch/quinn")).live


async def test_the_skew_is_logged_once_per_source_saying_how_far_ahead(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    d = dispatcher(store)
    with caplog.at_level(logging.WARNING, logger="bot.pipeline.clocks"):
        await d.accept(sent("live_start", "s", received=0, occurred=at(0) + timedelta(hours=2)))
        await d.accept(sent("title_change", "t", received=1, occurred=at(1) + timedelta(hours=2)))
        await d.accept(sent("live_end", "e", received=2, occurred=at(2) + timedelta(hours=2)))
        await d.accept(
            sent(
                "live_start",
                "o",
                received=3,
                source="other",
                occurred=at(3) + timedelta(minutes=30),
                channel="ada",
            )
        )
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings
    assert "'rec'" in warnings[0] and "2h ahead" in warnings[0]
    assert "'other'" in warnings[1] and "30m ahead" in warnings[1]


async def test_within_the_allowance_nothing_is_logged(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    d = dispatcher(store)
    with caplog.at_level(logging.WARNING, logger="bot.pipeline.clocks"):
        await d.accept(sent("live_start", "s", received=0, occurred=at(0) + CLOCK_SKEW))
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


async def test_a_repeated_start_with_a_future_start_time_is_the_same_session(store: Store) -> None:
    # A recorder that restarts re-announces its session; the start time it sends (in
    # 2099 here) still identifies the session although the bot started it on arrival.
    d = dispatcher(store)
    info = LiveInfo(title="Marathon", start_time=FUTURE)
    assert notified(
        await d.accept(sent("live_start", "s1", received=0, occurred=FUTURE, live=info))
    ) == ["live_start"]
    assert (
        await d.accept(sent("live_start", "s2", received=20, occurred=FUTURE, live=info))
    ).notified == []


# -- a database an older version wrote -------------------------------------------------


async def old_version_state(store: Store, *, live: bool) -> None:
    """What the bot before this fix saved after a live_start dated 2099."""
    async with store.transaction():
        await store.save_streams(
            [
                StreamState(
                    streamer_key="twitch/quinn",
                    display_name="Quinn",
                    url=None,
                    live=live,
                    info=LiveInfo(title="Stuck"),
                    started_at=FUTURE,
                    ended_at=None,
                    state_at=FUTURE,
                )
            ],
            now=NOW,
        )


async def test_a_saved_state_time_in_the_future_is_healed(store: Store) -> None:
    await old_version_state(store, live=True)
    d = dispatcher(store)
    end = await d.accept(sent("live_end", "e", received=0))
    assert notified(end) == ["live_end"]
    # Nothing says when that session started: no duration rather than a negative one.
    assert end.notified[0].duration is None
    state = await store.get_stream("twitch/quinn")
    assert not state.live and state.state_at <= at(0)
    assert state.started_at is None
    assert notified(await d.accept(sent("live_start", "s", received=5))) == ["live_start"]


async def test_a_healed_session_start_is_when_its_live_start_arrived(store: Store) -> None:
    d = dispatcher(store)
    await d.accept(sent("live_start", "s", received=0, live=LiveInfo(title="Before")))
    # As the older version left it: the stream's times from a sender dated 2099.
    saved = await store.get_stream("twitch/quinn")
    assert saved is not None and saved.marks.session_row is not None
    async with store.transaction():
        await store.save_streams(
            [replace(saved, started_at=FUTURE, ended_at=None, state_at=FUTURE)], now=NOW
        )
    end = await d.accept(sent("live_end", "e", received=45))
    assert notified(end) == ["live_end"]
    assert end.notified[0].started_at == at(0)
    assert end.notified[0].duration == timedelta(minutes=45) - LATENCY


# -- a sender's clock far behind -------------------------------------------------------


async def test_a_sender_hours_behind_is_not_older_than_another_sources_state(store: Store) -> None:
    behind = timedelta(hours=3)
    d = dispatcher(store)
    await d.accept(sent("live_start", "s", received=0, source="rec-a", live=LiveInfo(title="A")))
    # Another recorder of the same stream, its clock three hours slow.
    change = await d.accept(
        sent(
            "title_change",
            "t",
            received=10,
            source="rec-b",
            occurred=at(10) - behind - LATENCY,
            live=LiveInfo(title="B"),
        )
    )
    assert notified(change) == ["title_change"]
    end = await d.accept(
        sent("live_end", "e", received=60, source="rec-b", occurred=at(60) - behind - LATENCY)
    )
    assert notified(end) == ["live_end"]
    assert not (await store.get_stream("twitch/quinn")).live
    # Start and end came from clocks three hours apart: the end is taken on the bot's
    # clock (when it arrived), so the duration is the stream's, not zero.
    assert end.notified[0].duration == timedelta(minutes=60) + LATENCY


async def test_a_slow_senders_late_retry_is_still_older_than_its_own_events(store: Store) -> None:
    # Past times are real ordering information: relative to each other, the slow
    # sender's times still recognise a retry that comes after what followed it.
    behind = timedelta(hours=3)
    d = dispatcher(store)
    await d.accept(sent("live_start", "s", received=0, occurred=at(0) - behind))
    await d.accept(sent("live_end", "e", received=60, occurred=at(60) - behind))
    late = await d.accept(
        sent(
            "title_change",
            "t",
            received=62,
            occurred=at(30) - behind,
            live=LiveInfo(title="Sent mid-stream"),
        )
    )
    assert late.notified == []
    assert (await store.get_stream("twitch/quinn")).info.title != "Sent mid-stream"
    # The sender's own durations stand.
    assert (await store.get_stream("twitch/quinn")).ended_at == at(60) - behind


# -- id-less payloads --------------------------------------------------------------------


def idless(kind: str, *, received: float, body: bytes) -> Event:
    return sent(kind, body_digest(body), received=received, occurred=at(received))


START_BODY = json.dumps(
    {"type": "live_start", "data": {"platform": "twitch", "channel": "quinn"}}
).encode()
END_BODY = json.dumps(
    {"type": "live_end", "data": {"platform": "twitch", "channel": "quinn"}}
).encode()


def test_digest_ids_are_recognised_and_provider_ids_are_not() -> None:
    assert is_body_digest(body_digest(b"{}"))
    assert not is_body_digest("398ea849-7c4b-45c4-bd2f-093df217266c")
    assert not is_body_digest("sha256:not-a-digest")
    assert not is_body_digest(body_digest(b"{}") + "@7")


async def test_an_idless_payload_is_a_duplicate_within_the_window_and_new_after_it(
    store: Store,
) -> None:
    d = dispatcher(store)
    first = await d.accept(idless("live_start", received=0, body=START_BODY))
    assert notified(first) == ["live_start"]
    assert (await d.accept(idless("live_start", received=30, body=START_BODY))).duplicate
    assert notified(await d.accept(idless("live_end", received=120, body=END_BODY))) == [
        "live_end"
    ]
    # Just inside the window it is still a retry...
    window = DIGEST_WINDOW / timedelta(minutes=1)
    assert (await d.accept(idless("live_start", received=window - 1, body=START_BODY))).duplicate
    # ...and the next day's stream, byte for byte the same, is a new one.
    tomorrow = await d.accept(idless("live_start", received=window + 1, body=START_BODY))
    assert not tomorrow.duplicate and notified(tomorrow) == ["live_start"]
    assert (await store.get_stream("twitch/quinn")).live
    # Yesterday's row is kept, under an id no sender uses.
    digest = body_digest(START_BODY)
    kept = await store.find_event("rec", f"{digest}@{first.event_row}")
    assert kept is not None and kept.received_at == at(0)
    new = await store.find_event("rec", digest)
    assert new is not None and new.received_at == at(window + 1)
    # The day after, the new row is the one retries are duplicates of.
    assert (await d.accept(idless("live_start", received=window + 2, body=START_BODY))).duplicate


async def test_a_provider_id_is_a_duplicate_for_good(store: Store) -> None:
    d = dispatcher(store)
    await d.accept(sent("live_start", "398ea849", received=0))
    await d.accept(sent("live_end", "e", received=60))
    assert (await d.accept(sent("live_start", "398ea849", received=7 * 24 * 60))).duplicate
    assert not (await store.get_stream("twitch/quinn")).live


async def test_the_window_is_a_dispatcher_setting(store: Store) -> None:
    d = dispatcher(store, digest_window=timedelta(minutes=10))
    await d.accept(idless("live_start", received=0, body=START_BODY))
    await d.accept(idless("live_end", received=5, body=END_BODY))
    assert notified(await d.accept(idless("live_start", received=11, body=START_BODY))) == [
        "live_start"
    ]


async def test_retiring_an_id_moves_its_derived_change_events_too(store: Store) -> None:
    body = json.dumps({"type": "stream_update"}).encode()
    async with store.transaction():
        parent = await store.insert_event(
            idless("stream_update", received=0, body=body), notified=False
        )
        assert parent is not None
        child = idless("stream_update", received=0, body=body)
        await store.insert_event(
            child.with_changes(kind="title_change", event_id=f"{child.event_id}#title_change"),
            notified=True,
            parent=parent,
        )
        assert await store.retire_event_id("rec", body_digest(body), received_before=at(1))
        # The id and the derived ids are free again: the same body's events store anew.
        again = idless("stream_update", received=1, body=body)
        assert await store.insert_event(again, notified=False) is not None
        assert (
            await store.insert_event(
                again.with_changes(kind="title_change", event_id=f"{again.event_id}#title_change"),
                notified=True,
            )
            is not None
        )
    assert await store.count_events() == 4


async def test_retiring_a_row_received_inside_the_window_does_nothing(store: Store) -> None:
    async with store.transaction():
        await store.insert_event(idless("live_start", received=0, body=START_BODY), notified=True)
        assert not await store.retire_event_id(
            "rec", body_digest(START_BODY), received_before=at(0)
        )
        assert not await store.retire_event_id("rec", "never-stored", received_before=at(60))


async def test_an_id_shaped_like_a_moved_aside_one_leaves_the_event_a_duplicate(
    store: Store,
) -> None:
    d = dispatcher(store)
    digest = body_digest(START_BODY)
    first = await d.accept(idless("live_start", received=0, body=START_BODY))
    # A sender that chose, as its own id, the very name the old row would be moved to.
    await d.accept(sent("error", f"{digest}@{first.event_row}", received=1, error="odd"))
    later = await d.accept(idless("live_start", received=2 * 24 * 60, body=START_BODY))
    assert later.duplicate


async def test_a_start_time_of_year_one_means_not_set_and_the_duration_counts_from_arrival(
    store: Store,
) -> None:
    bot = dispatcher(store)
    zero = datetime(1, 1, 1, tzinfo=UTC)  # Go's zero time, what an unset time.Time sends
    await bot.accept(sent("live_start", "s", received=0, live=LiveInfo(start_time=zero)))
    end = await bot.accept(sent("live_end", "e", received=90))
    [ended] = end.notified
    assert ended.started_at is not None and ended.ended_at is not None
    assert timedelta(minutes=89) < ended.ended_at - ended.started_at <= timedelta(minutes=90)
