"""Accepting events: dedupe, live state across restarts, routing, mutes, subscriptions."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.config import BehaviourConfig, Route
from bot.errors import TransactionAborted
from bot.events import NOTIFIED_KINDS, Event, LiveInfo, glob_match
from bot.pipeline.dispatch import Dispatcher, DispatchStage
from bot.store import DELIVERY_STATES, Mute, Store, StreamState, Subscription
from bot.store.sqlite import SQLiteStore
from tests.routes import chats
from tests.store_doubles import InstrumentedStore

T0 = datetime(2026, 3, 11, 5, 0, tzinfo=UTC)
EVERYTHING = Route(patterns=("*",), events=frozenset(NOTIFIED_KINDS))


def event(kind: str, event_id: str, minutes: float = 0, **fields: object) -> Event:
    at = T0 + timedelta(minutes=minutes)
    base: dict[str, object] = {
        "source": "rec",
        "event_id": event_id,
        "kind": kind,
        "occurred_at": at,
        "received_at": at,
        "platform": "twitch",
        "channel": "quinn",
    }
    base.update(fields)
    return Event(**base)  # type: ignore[arg-type]


def dispatcher(
    store: Store, *routes: Route, sinks: tuple[str, ...] = ("console", "discord", "telegram")
) -> Dispatcher:
    return Dispatcher(store=store, routes=routes or (EVERYTHING,), sinks=sinks, clock=T0.timestamp)


def kinds_notified(result: object) -> list[str]:
    return [e.kind for e in result.notified]


async def test_same_event_id_twice_is_a_duplicate_and_changes_nothing(store: Store) -> None:
    d = dispatcher(store)
    first = await d.accept(event("live_start", "a"))
    assert not first.duplicate and first.deliveries == 1
    again = await d.accept(event("live_start", "a", minutes=5, live=LiveInfo(title="other")))
    assert again.duplicate
    assert await store.count_events() == 1
    assert (await store.outbox_counts()).by_state == {"pending": 1}
    assert (await store.get_stream("twitch/quinn")).info.title is None


async def test_live_end_after_reopen_knows_how_long_the_stream_lasted(tmp_path: Path) -> None:
    path = tmp_path / "bot.sqlite3"
    first = SQLiteStore(path)
    await first.open()
    await dispatcher(first).accept(event("live_start", "s", live=LiveInfo(title="Hello")))
    await first.close()

    reopened = SQLiteStore(path)
    await reopened.open()
    result = await dispatcher(reopened).accept(event("live_end", "e", minutes=133))
    ended = result.notified[0]
    assert ended.duration == timedelta(hours=2, minutes=13)
    assert ended.live.title == "Hello"  # the final title, from saved state
    stored = await reopened.load_event(result.event_row)
    assert stored.duration == timedelta(hours=2, minutes=13)
    assert not (await reopened.get_stream("twitch/quinn")).live
    await reopened.close()


async def test_start_time_from_payload_wins_over_event_time(store: Store) -> None:
    started = T0 - timedelta(minutes=10)
    d = dispatcher(store)
    await d.accept(event("live_start", "s", live=LiveInfo(start_time=started), started_at=started))
    end = (await d.accept(event("live_end", "e", minutes=50))).notified[0]
    assert end.duration == timedelta(hours=1)


async def test_repeated_live_start_of_the_same_session_is_not_notified(store: Store) -> None:
    d = dispatcher(store)
    assert kinds_notified(
        await d.accept(event("live_start", "s1", live=LiveInfo(live_id="L1")))
    ) == ["live_start"]
    # The recorder restarted and announced the session again under a new event id.
    repeat = await d.accept(event("live_start", "s2", minutes=3, live=LiveInfo(live_id="L1")))
    assert repeat.notified == [] and repeat.deliveries == 0
    # A different live id is a new session whose live_end was missed: notify.
    new = await d.accept(event("live_start", "s3", minutes=9, live=LiveInfo(live_id="L2")))
    assert kinds_notified(new) == ["live_start"]


async def test_repeated_live_end_is_not_notified(store: Store) -> None:
    d = dispatcher(store)
    await d.accept(event("live_start", "s"))
    assert kinds_notified(await d.accept(event("live_end", "e1", minutes=5))) == ["live_end"]
    assert (await d.accept(event("live_end", "e2", minutes=6))).notified == []


async def test_an_event_older_than_the_saved_state_is_recorded_not_notified(store: Store) -> None:
    d = dispatcher(store)
    lag = timedelta(seconds=1)  # deliveries take a moment; the retry comes an hour late
    await d.accept(event("live_start", "s", minutes=0, received_at=T0 + lag))
    await d.accept(
        event("live_end", "e", minutes=60, received_at=T0 + timedelta(minutes=60) + lag)
    )
    late = await d.accept(
        event(
            "live_start",
            "s-retry",
            minutes=1,
            live=LiveInfo(live_id="X"),
            received_at=T0 + timedelta(minutes=61),
        )
    )
    assert late.notified == []
    assert await store.count_events() == 3
    assert not (await store.get_stream("twitch/quinn")).live


async def test_only_if_live_end_is_dropped_for_a_stream_never_seen_live(store: Store) -> None:
    d = dispatcher(store)
    result = await d.accept(event("live_end", "gone", details={"only_if_live": True}))
    assert result.notified == [] and await store.count_events() == 1


async def test_title_change_fills_old_info_name_and_url_from_state(store: Store) -> None:
    d = dispatcher(store)
    await d.accept(
        event(
            "live_start",
            "s",
            display_name="Quinn",
            url="https://twitch.tv/quinn",
            live=LiveInfo(title="Before", categories=("Art",)),
        )
    )
    change = await d.accept(event("title_change", "t", minutes=5, live=LiveInfo(title="After")))
    ev = change.notified[0]
    assert ev.old_live.title == "Before"
    assert ev.live.title == "After" and ev.live.categories == ("Art",)
    assert ev.display_name == "Quinn" and ev.url == "https://twitch.tv/quinn"
    assert ev.duration == timedelta(minutes=5)
    assert (await store.get_stream("twitch/quinn")).info.title == "After"


async def test_full_state_update_derives_title_and_category_changes(store: Store) -> None:
    d = dispatcher(store)
    await d.accept(event("live_start", "s", live=LiveInfo(title="A", categories=("Art",))))
    same = await d.accept(
        event("stream_update", "u0", minutes=1, live=LiveInfo(title="A", categories=("Art",)))
    )
    assert same.notified == []
    both = await d.accept(
        event("stream_update", "u1", minutes=2, live=LiveInfo(title="B", categories=("Music",)))
    )
    assert kinds_notified(both) == ["title_change", "category_change"]
    title, category = both.notified
    assert (title.old_live.title, title.live.title) == ("A", "B")
    assert (category.old_live.categories, category.live.categories) == (("Art",), ("Music",))
    assert title.event_id == "u1#title_change"
    assert both.deliveries == 2
    # A retried update is a duplicate: no second pair of notices.
    assert (
        await d.accept(event("stream_update", "u1", minutes=2, live=LiveInfo(title="B")))
    ).duplicate


async def test_update_while_offline_changes_state_silently(store: Store) -> None:
    d = dispatcher(store)
    await d.accept(event("stream_update", "u", live=LiveInfo(title="Prepared title")))
    assert (await store.get_stream("twitch/quinn")).info.title == "Prepared title"
    start = (await d.accept(event("live_start", "s", minutes=1))).notified[0]
    assert start.live.title == "Prepared title"


@pytest.mark.parametrize(
    ("key", "pattern", "expected"),
    [
        ("twitch/quinn", "*", True),
        ("twitch/quinn", "twitch/*", True),
        ("twitch/quinn", "TWITCH/Quinn", True),
        ("twitch/quinn", "youtube/*", False),
        ("twitch/quinn", "*/quinn", True),
        ("twitch/quinn", "twitch/q?inn", True),
        ("", "twitch/*", False),
    ],
)
def test_glob_match(key: str, pattern: str, expected: bool) -> None:
    assert glob_match(key, pattern) is expected


async def test_routes_pick_targets_by_glob_and_kind(store: Store) -> None:
    twitch = Route(
        patterns=("twitch/*",),
        events=frozenset({"live_start"}),
        mention_roles=(999,),
        targets=chats(discord=(111,)),
    )
    errors = Route(patterns=("*",), events=frozenset({"error"}), targets=chats(telegram=("-100",)))
    d = dispatcher(store, twitch, errors)
    start = await d.accept(event("live_start", "s"))
    rows = await store.deliveries_for_event(start.event_row)
    assert sorted((r.sink, r.target) for r in rows) == [("console", ""), ("discord", "111")]
    discord_row = next(r for r in rows if r.sink == "discord")
    assert discord_row.options["mention_roles"] == [999]
    end = await d.accept(event("live_end", "e", minutes=1))
    assert end.deliveries == 0 and await store.count_events() == 2
    err = await d.accept(event("error", "x", minutes=2, error="boom"))
    assert sorted((r.sink, r.target) for r in await store.deliveries_for_event(err.event_row)) == [
        ("console", ""),
        ("telegram", "-100"),
    ]


async def test_roles_are_pinged_only_on_live_start(store: Store) -> None:
    route = Route(
        patterns=("*",),
        events=frozenset(NOTIFIED_KINDS),
        mention_roles=(5,),
        targets=chats(discord=(1,)),
    )
    d = dispatcher(store, route)
    await d.accept(event("live_start", "s"))
    change = await d.accept(event("title_change", "t", minutes=1, live=LiveInfo(title="x")))
    rows = [r for r in await store.deliveries_for_event(change.event_row) if r.sink == "discord"]
    assert rows and all("mention_roles" not in r.options for r in rows)


async def test_targets_of_disabled_sinks_get_no_rows(store: Store) -> None:
    route = Route(
        patterns=("*",),
        events=frozenset(NOTIFIED_KINDS),
        targets=chats(discord=(1,), telegram=("2",)),
    )
    d = dispatcher(store, route, sinks=("console",))
    assert (await d.accept(event("live_start", "s"))).deliveries == 1


async def test_recorded_kinds_are_delivered_only_when_a_route_names_them(store: Store) -> None:
    d = dispatcher(store)
    quiet = await d.accept(event("video_file_finish", "v1", details={"path": "a.mp4"}))
    assert quiet.deliveries == 0 and quiet.notified == []
    files = Route(patterns=("*",), events=frozenset({"video_file_finish"}))
    loud = await dispatcher(store, files).accept(event("video_file_finish", "v2"))
    assert loud.deliveries == 1


async def test_mutes_suppress_delivery_not_recording(store: Store) -> None:
    route = Route(patterns=("*",), events=frozenset(NOTIFIED_KINDS), targets=chats(discord=(1, 2)))
    now = T0.timestamp()
    await store.add_mute(Mute("discord", "1", "twitch/*", until=None))
    await store.add_mute(Mute("discord", "2", "*", until=now - 1))  # expired
    d = dispatcher(store, route)
    result = await d.accept(event("live_start", "s"))
    targets = {(r.sink, r.target) for r in await store.deliveries_for_event(result.event_row)}
    assert targets == {("console", ""), ("discord", "2")}
    assert (await store.get_stream("twitch/quinn")).live


async def test_subscriptions_add_targets_at_run_time(store: Store) -> None:
    await store.add_subscription(Subscription("telegram", "42", "twitch/qu*"))
    await store.add_subscription(Subscription("telegram", "43", "youtube/*"))
    d = dispatcher(store, Route(patterns=("nothing",), events=frozenset(NOTIFIED_KINDS)))
    result = await d.accept(event("live_start", "s"))
    assert [(r.sink, r.target) for r in await store.deliveries_for_event(result.event_row)] == [
        ("telegram", "42")
    ]


async def test_queued_sinks_are_reported_for_waking_workers(store: Store) -> None:
    woken: list[set[str]] = []
    d = Dispatcher(store=store, routes=[EVERYTHING], sinks=["console"], on_queued=woken.append)
    await d.accept(event("live_start", "s"))
    await d.accept(event("live_start", "s"))  # duplicate: nothing new to deliver
    assert woken == [{"console"}]


async def test_a_new_session_does_not_inherit_the_last_sessions_start(store: Store) -> None:
    d = dispatcher(store)
    first_start = T0 - timedelta(hours=5)
    await d.accept(event("live_start", "s1", live=LiveInfo(live_id="L1", start_time=first_start)))
    await d.accept(event("live_end", "e1", minutes=10))
    second = await d.accept(event("live_start", "s2", minutes=60, live=LiveInfo(title="Again")))
    assert kinds_notified(second) == ["live_start"]
    assert second.notified[0].started_at == T0 + timedelta(minutes=60)
    end = (await d.accept(event("live_end", "e2", minutes=90))).notified[0]
    assert end.duration == timedelta(minutes=30)


@pytest.mark.parametrize(
    ("on_change", "expected"),
    [("edit", ["edit"]), ("post", ["post"]), ("both", ["edit", "post"])],
)
async def test_changes_edit_the_sessions_card_and_post_per_on_change(
    store: Store, on_change: str, expected: list[str]
) -> None:
    route = Route(
        patterns=("*",),
        events=frozenset(NOTIFIED_KINDS),
        targets=chats(discord=(7,), telegram=("-5",)),
    )
    d = Dispatcher(
        store=store,
        routes=[route],
        sinks=["console", "discord", "telegram"],
        behaviour=BehaviourConfig(on_change=on_change, end_grace=timedelta(0)),
        clock=T0.timestamp,
    )
    start = await d.accept(event("live_start", "s"))
    cards = {(r.sink, r.target): r.id for r in await store.deliveries_for_event(start.event_row)}
    change = await d.accept(
        event("category_change", "c", minutes=1, live=LiveInfo(categories=("Music",)))
    )
    rows = await store.deliveries_for_event(change.event_row)
    for sink, target in (("discord", "7"), ("telegram", "-5")):
        mine = [r for r in rows if (r.sink, r.target) == (sink, target)]
        assert [r.action for r in mine] == expected
        for row in mine:
            if row.action == "edit":
                assert row.options["card"] == cards[(sink, target)]
    # The console cannot edit: it always prints the change.
    assert [r.action for r in rows if r.sink == "console"] == ["post"]
    assert change.deliveries == len(rows)


async def test_a_change_with_no_card_in_a_chat_posts(store: Store) -> None:
    d = dispatcher(
        store,
        Route(patterns=("*",), events=frozenset({"title_change"}), targets=chats(discord=(7,))),
    )
    await d.accept(event("live_start", "s"))  # not routed to the channel: no card there
    change = await d.accept(event("title_change", "t", minutes=1, live=LiveInfo(title="x")))
    assert [r.action for r in await store.deliveries_for_event(change.event_row)] == [
        "post",
        "post",
    ]


async def test_a_renamed_stream_in_any_event_while_live_is_a_title_change(store: Store) -> None:
    # Livepeer has no "updated" event, but every event carries the stream's name.
    d = dispatcher(store)
    await d.accept(event("live_start", "s", live=LiveInfo(title="Morning show", live_id="L")))
    same = await d.accept(
        event("recording_ready", "r0", minutes=1, live=LiveInfo(title="Morning show"))
    )
    assert same.notified == []
    renamed = await d.accept(
        event("multistream.connected", "r1", minutes=2, live=LiveInfo(title="Evening show"))
    )
    assert kinds_notified(renamed) == ["title_change"]
    change = renamed.notified[0]
    assert (change.old_live.title, change.live.title) == ("Morning show", "Evening show")
    # A repeated start of the same session with a new title is a change, not a new ping.
    again = await d.accept(
        event("live_start", "s2", minutes=3, live=LiveInfo(title="Night show", live_id="L"))
    )
    assert kinds_notified(again) == ["title_change"]


async def test_a_forum_topic_is_its_own_target_but_follows_its_chats_mutes(store: Store) -> None:
    route = Route(
        patterns=("*",),
        events=frozenset(NOTIFIED_KINDS),
        targets=chats(telegram=("-100", "-100/42", "-200/7")),
    )
    await store.add_mute(Mute("telegram", "-200", "*", until=None))
    d = dispatcher(store, route, sinks=("telegram",))
    result = await d.accept(event("live_start", "s"))
    assert sorted(r.target for r in await store.deliveries_for_event(result.event_row)) == [
        "-100",
        "-100/42",
    ]


async def test_an_end_waits_out_each_routes_grace_in_the_outbox(store: Store) -> None:
    quick = Route(
        patterns=("*",),
        events=frozenset(NOTIFIED_KINDS),
        end_grace=timedelta(0),
        targets=chats(discord=(7,)),
    )
    slow = Route(
        patterns=("*",), events=frozenset(NOTIFIED_KINDS), targets=chats(telegram=("-5",))
    )
    d = Dispatcher(
        store=store,
        routes=[quick, slow],
        sinks=["discord", "telegram"],
        behaviour=BehaviourConfig(end_grace=timedelta(seconds=90)),
        clock=T0.timestamp,
    )
    await d.accept(event("live_start", "s"))
    end = await d.accept(event("live_end", "e", minutes=30))
    due = {r.sink: r.not_before for r in await store.deliveries_for_event(end.event_row)}
    assert due == {"discord": T0.timestamp(), "telegram": T0.timestamp() + 90}
    # Nothing of the end is due before its grace is over.
    early = await store.claim_due("telegram", now=T0.timestamp() + 89)
    assert [x.event_row for x in early] == [end.event_row - 1]  # the card, not the end
    await store.mark_sent(early[0].id, message_id="m", now=0)
    assert [x.action for x in await store.claim_due("telegram", now=T0.timestamp() + 90)] == [
        "edit"
    ]


async def test_a_comeback_reopens_cards_without_the_roles_ping(store: Store) -> None:
    route = Route(
        patterns=("*",),
        events=frozenset(NOTIFIED_KINDS),
        mention_roles=(99,),
        targets=chats(discord=(7,)),
    )
    d = Dispatcher(
        store=store,
        routes=[route],
        sinks=["discord"],
        behaviour=BehaviourConfig(end_grace=timedelta(0)),
        clock=T0.timestamp,
    )
    start = await d.accept(event("live_start", "s"))
    [card] = await store.deliveries_for_event(start.event_row)
    assert card.options["mention_roles"] == [99]
    await d.accept(event("live_end", "e", minutes=30))
    await store.mark_sent(card.id + 1, message_id="m", now=0)  # the end edit went out
    back = await d.accept(event("live_start", "s2", minutes=32))
    [reopen] = await store.deliveries_for_event(back.event_row)
    assert reopen.action == "edit" and "mention_roles" not in reopen.options
    assert (await store.get_stream("twitch/quinn")).started_at == T0  # one session all along
    later = await d.accept(event("live_end", "e2", minutes=40))
    assert later.notified[0].duration == timedelta(minutes=40)


def carding(store: Store, **behaviour: object) -> Dispatcher:
    route = Route(patterns=("*",), events=frozenset(NOTIFIED_KINDS), targets=chats(discord=(7,)))
    settings: dict[str, object] = {"end_grace": timedelta(0), **behaviour}
    return Dispatcher(
        store=store,
        routes=[route],
        sinks=["discord"],
        behaviour=BehaviourConfig(**settings),  # type: ignore[arg-type]
        clock=T0.timestamp,
    )


async def actions(store: Store, result: object) -> list[str]:
    return [r.action for r in await store.deliveries_for_event(result.event_row)]


async def test_a_title_set_while_offline_leaves_the_ended_card_alone(store: Store) -> None:
    d = carding(store)
    await d.accept(event("live_start", "s"))
    await d.accept(event("live_end", "e", minutes=30))
    later = await d.accept(
        event("title_change", "t", minutes=150, live=LiveInfo(title="Tomorrow"))
    )
    # Not an edit of the last session's card (that would show it live again): a notice.
    assert await actions(store, later) == ["post"]


async def test_a_new_session_during_the_last_ones_grace_announces_that_end_first(
    store: Store,
) -> None:
    d = carding(store, end_grace=timedelta(minutes=10), rejoin_window=timedelta(minutes=2))
    await d.accept(event("live_start", "s"))
    end = await d.accept(event("live_end", "e", minutes=30))
    new = await d.accept(event("live_start", "s2", minutes=35))  # after the window, in the grace
    due = await store.claim_due("discord", now=T0.timestamp())
    # Both due now, the old session's end ahead of the new card.
    assert [(x.event_row, x.action) for x in due][-2:] == [
        (end.event_row, "edit"),
        (new.event_row, "post"),
    ]


async def test_one_update_changing_title_and_category_posts_both_under_the_cooldown(
    store: Store,
) -> None:
    d = carding(store, on_change="post", change_cooldown=timedelta(minutes=10))
    await d.accept(event("live_start", "s", live=LiveInfo(title="A", categories=("X",))))
    both = await d.accept(
        event("stream_update", "u", minutes=1, live=LiveInfo(title="B", categories=("Y",)))
    )
    assert kinds_notified(both) == ["title_change", "category_change"]
    posts = [
        r.kind
        for r in await store.list_deliveries(DELIVERY_STATES)
        if r.action == "post" and r.event_row > both.event_row
    ]
    assert posts == ["title_change", "category_change"]
    # The next change inside the cooldown posts nothing.
    again = await d.accept(event("title_change", "t", minutes=2, live=LiveInfo(title="C")))
    assert await actions(store, again) == []


async def test_a_batch_fails_whole_when_the_database_rolled_it_back_itself(store: Store) -> None:
    class DiskFull(Dispatcher):
        async def _dispatch(self, row, event, view, writes):  # type: ignore[no-untyped-def]
            if event.event_id == "boom":
                # What the store raises when SQLite ended the transaction (SQLITE_FULL).
                raise TransactionAborted("the transaction was rolled back: SQLITE_FULL")
            return await super()._dispatch(row, event, view, writes)

    d = DiskFull(store=store, routes=[EVERYTHING], sinks=["console"])
    with pytest.raises(TransactionAborted, match="SQLITE_FULL"):
        await d.accept_many(
            [
                (event("live_start", "a"), None),
                (event("live_start", "boom"), None),
                (event("live_start", "c", channel="other"), None),
            ]
        )
    assert await store.count_events() == 0
    # The store is usable again at once.
    assert not (await d.accept(event("live_start", "d"))).duplicate


async def test_a_muted_chat_gets_no_new_message_but_its_card_stays_current(store: Store) -> None:
    d = carding(store, on_end="both")
    await d.accept(event("live_start", "s"))
    await store.add_mute(Mute("discord", "7", "*", until=None))
    # The end edits the card to "ended" (silent) but posts no end notice here...
    assert await actions(store, await d.accept(event("live_end", "e", minutes=30))) == ["edit"]
    # ...and a new session, muted from its start, gets nothing at all.
    assert await actions(store, await d.accept(event("live_start", "s2", minutes=90))) == []


async def test_each_dispatched_event_logs_where_it_went(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    d = dispatcher(store, Route(patterns=("twitch/*",), events=frozenset({"live_start"})))
    with caplog.at_level(logging.INFO, logger="bot.pipeline.dispatch"):
        await d.accept(event("live_start", "s"))
        await d.accept(event("live_start", "y", channel="other", platform="youtube"))
    lines = [r.getMessage() for r in caplog.records if r.message.startswith("dispatched")]
    assert lines == [
        "dispatched live_start s for twitch/quinn: 1 deliveries",
        "dispatched live_start y for youtube/other: 0 deliveries",
    ]


async def test_the_dispatch_stage_survives_a_batch_it_cannot_read_and_says_so(
    store: Store,
) -> None:
    class UnreadableBatches(InstrumentedStore):
        async def undispatched(self, *, limit: int = 100) -> list[tuple[int, Event]]:
            raise ValueError("payload is not JSON")

        async def undispatched_with_streams(
            self, *, limit: int = 100
        ) -> tuple[list[tuple[int, Event]], dict[str, StreamState]]:
            raise ValueError("payload is not JSON")

    stage = DispatchStage(
        Dispatcher(store=UnreadableBatches(store), routes=[EVERYTHING], sinks=["console"])  # type: ignore[arg-type]
    )
    stop = asyncio.Event()
    task = asyncio.create_task(stage.run(stop))
    async with asyncio.timeout(5):
        while stage.error is None:
            await asyncio.sleep(0.01)
    assert "payload is not JSON" in stage.error
    assert not task.done()  # still running, trying again later
    stop.set()
    await task


async def test_the_dispatch_stage_takes_no_write_transaction_it_does_not_need(
    store: Store,
) -> None:
    """A batch smaller than the stage's limit was all there was: the stage waits to be
    woken rather than looking again at once. Each look is a write transaction, which
    on PostgreSQL holds the lock every process's outbox claims wait for."""
    counted = InstrumentedStore(store)
    stage = DispatchStage(Dispatcher(store=counted, routes=[EVERYTHING], sinks=["console"]))  # type: ignore[arg-type]
    stop = asyncio.Event()
    task = asyncio.create_task(stage.run(stop))
    try:
        await stage.idle()  # the look at start, at what a last run left
        counted.commits = 0
        await counted.insert_new_events([(event("live_start", "s"), None)])
        stage.wake()
        async with asyncio.timeout(5):
            while await store.count_undispatched():
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)
        assert counted.commits == 2  # the webhook's insert, and its dispatch
        await counted.insert_new_events([(event("title_change", "t", 1), None)])
        stage.wake()  # and a later webhook is dispatched as soon
        async with asyncio.timeout(5):
            while await store.count_undispatched():
                await asyncio.sleep(0.01)
    finally:
        stop.set()
        await task


async def test_a_batch_dispatches_as_its_events_would_one_by_one(
    store: Store, tmp_path: Path
) -> None:
    """The stage dispatches a batch at once, its streams read ahead and its events marked
    together at the end: a streamer with several events in one batch (each seeing what
    the one before did) and one with a single event come out as if each event had been
    dispatched on its own."""
    quinn = {"live": LiveInfo(title="One")}
    batch = [
        event("live_start", "a1", 0, **quinn),
        event("live_start", "b1", 0, channel="robin", live=LiveInfo(title="Other")),
        event("title_change", "a2", 1, live=LiveInfo(title="Two")),
        event("live_end", "a3", 2),
        event("live_start", "a4", 30, live=LiveInfo(title="Three")),
        event("live_end", "b2", 31, channel="robin"),
    ]
    alone = SQLiteStore(tmp_path / "alone.sqlite3")
    await alone.open()
    try:
        one_by_one = carding(alone)
        for each in batch:
            await one_by_one.accept(each)
        async with store.transaction(serial=False):
            await store.insert_new_events([(each, None) for each in batch])
        assert await carding(store).dispatch_pending() == len(batch)
        assert await store.count_undispatched() == 0

        async def outcome(db: Store) -> object:
            rows = await db.list_deliveries(DELIVERY_STATES)
            streams = {}
            for key in ("twitch/quinn", "twitch/robin"):
                saved = await db.get_stream(key)
                assert saved is not None
                session = saved.marks.session_row
                opened = (await db.load_event(session)).event_id if session else None
                streams[key] = (saved.live, saved.info.title, saved.started_at, opened)
            return [(r.kind, r.streamer_key, r.action) for r in rows], streams

        expected = await outcome(alone)
        assert await outcome(store) == expected
        # What that is: quinn's title change edits the live card, the end closes it, the
        # comeback after 28 minutes is a new session's card; robin's end closes its card.
        assert expected[0] == [
            ("live_start", "twitch/quinn", "post"),
            ("live_start", "twitch/robin", "post"),
            ("title_change", "twitch/quinn", "edit"),
            ("live_end", "twitch/quinn", "edit"),
            ("live_start", "twitch/quinn", "post"),
            ("live_end", "twitch/robin", "edit"),
        ]
    finally:
        await alone.close()
