"""The store contract: every method of the `bot.store.Store` Protocol, through its public API.

Parametrized by backend (STORE_BACKENDS): a new backend is added to that dict and must pass
these tests unchanged. Nothing here knows how a backend keeps its data.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot import store as store_module
from bot.events import Event, LiveInfo
from bot.store import (
    DELIVERY_STATES,
    Mute,
    NewDelivery,
    PruneResult,
    RoutingInputs,
    SessionMarks,
    Store,
    StreamState,
    Subscription,
)
from bot.store.postgres import PostgresStore
from bot.store.process import PROCESS_ID
from bot.store.sqlite import SQLiteStore

#: Backend name -> a factory for a new (not yet opened) store on the test's own database,
#: empty at first: a file in `tmp_path`, or a database of the throwaway PostgreSQL server
#: (tests/postgres_cluster.py; CI fails rather than skips without one).
#: `owner` names the process the store belongs to (as PROCESS_ID does in a real one).
STORE_BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Path, str], Store]] = {
    "sqlite": lambda request, tmp_path, owner: SQLiteStore(
        tmp_path / "contract.sqlite3", owner=owner
    ),
    "postgresql": lambda request, tmp_path, owner: PostgresStore(
        request.getfixturevalue("postgres_url"), owner=owner
    ),
}

T0 = datetime(2026, 3, 11, 5, 0, tzinfo=UTC)
NOW = T0.timestamp()


@pytest.fixture(params=sorted(STORE_BACKENDS))
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., Store]:
    """A factory of stores on one and the same (initially empty) database; by default
    all of this process, or `owner=` another's."""
    return lambda owner=PROCESS_ID: STORE_BACKENDS[request.param](request, tmp_path, owner)


@pytest.fixture
async def db(make_store: Callable[..., Store]) -> AsyncIterator[Store]:
    store = make_store()
    await store.open()
    yield store
    await store.close()


def event(
    kind: str = "live_start",
    event_id: str = "e1",
    *,
    source: str = "rec",
    channel: str = "quinn",
    minutes: float = 0,
    title: str | None = "Painting",
) -> Event:
    at = T0 + timedelta(minutes=minutes)
    return Event(
        source=source,
        event_id=event_id,
        kind=kind,
        occurred_at=at,
        received_at=at,
        platform="twitch",
        channel=channel,
        display_name="Quinn",
        live=LiveInfo(title=title) if title is not None else None,
    )


def state(key: str = "twitch/quinn", *, live: bool = True, started: float = 0) -> StreamState:
    start = T0 + timedelta(minutes=started)
    return StreamState(
        streamer_key=key,
        display_name="Quinn",
        url="https://twitch.tv/quinn",
        live=live,
        info=LiveInfo(title="Painting", categories=("Art",)),
        started_at=start,
        ended_at=None if live else start + timedelta(hours=1),
        state_at=start,
    )


async def stored_event(db: Store, event_id: str = "e1", **fields: object) -> int:
    async with db.transaction():
        row = await db.insert_event(event(event_id=event_id, **fields), notified=True)  # type: ignore[arg-type]
    assert row is not None
    return row


async def delivery(
    db: Store,
    event_row: int,
    target: str,
    *,
    sink: str = "discord",
    action: str = "post",
    due: float = NOW,
    created: float = NOW,
    options: dict[str, object] | None = None,
) -> int:
    async with db.transaction():
        return await db.add_delivery(
            event_row=event_row,
            sink=sink,
            target=target,
            action=action,
            options=options,
            not_before=due,
            now=created,
        )


async def states(db: Store) -> dict[int, str]:
    return {row.id: row.state for row in await db.list_deliveries(DELIVERY_STATES)}


# -- the contract covers the whole Protocol ------------------------------------------------


def test_every_protocol_method_is_exercised_here() -> None:
    members = {
        name
        for name, value in inspect.getmembers(store_module.Store)
        if not name.startswith("_") and callable(value)
    }
    source = Path(__file__).read_text(encoding="utf-8")
    missing = sorted(name for name in members if f".{name}(" not in source)
    assert not missing, f"store methods with no contract test: {missing}"


# -- lifecycle and transactions ------------------------------------------------------------


async def test_recent_events_of_a_kind_newest_first(db: Store) -> None:
    async with db.transaction():
        for number, kind in enumerate(["live_start", "live_end", "live_start", "live_start"]):
            await db.insert_event(event(kind, f"e{number}", minutes=number), notified=True)
    assert [e.event_id for e in await db.recent_events("live_start")] == ["e3", "e2", "e0"]
    assert [e.event_id for e in await db.recent_events("live_start", limit=1)] == ["e3"]
    assert [e.kind for e in await db.recent_events("live_end")] == ["live_end"]
    assert await db.recent_events("error") == []


async def test_a_store_reopened_keeps_everything_and_its_schema(
    make_store: Callable[..., Store],
) -> None:
    first = make_store()
    await first.open()
    version = await first.schema_version()
    assert version >= 1
    async with first.transaction():
        assert await first.insert_event(event(), notified=True) is not None
    await first.close()
    await first.close()  # idempotent
    again = make_store()
    await again.open()
    try:
        assert await again.schema_version() == version
        assert await again.find_event("rec", "e1") is not None
        assert [e.event_id for e in await again.recent_events("live_start")] == ["e1"]
        assert again.location
    finally:
        await again.close()


async def test_a_transaction_that_raises_changes_nothing(db: Store) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        async with db.transaction():
            await db.insert_event(event(), notified=True)
            await db.add_mute(Mute("discord", "1", "*", None), now=NOW)
            raise RuntimeError("boom")
    assert await db.count_events() == 0
    assert await db.mutes_for("discord", "1", NOW) == []


async def test_a_failed_savepoint_undoes_only_its_own_step(db: Store) -> None:
    async with db.transaction():
        await db.insert_event(event(event_id="kept"), notified=True)
        with pytest.raises(ValueError, match="step"):
            async with db.savepoint():
                await db.insert_event(event(event_id="undone"), notified=True)
                raise ValueError("step")
        async with db.savepoint():
            await db.insert_event(event(event_id="also kept"), notified=True)
    assert await db.find_event("rec", "kept") is not None
    assert await db.find_event("rec", "also kept") is not None
    assert await db.find_event("rec", "undone") is None


async def test_health_check_and_write_probe(db: Store) -> None:
    assert await db.check() == "ok"
    await db.probe_write()
    assert db.health.ok and db.health.error is None


# -- events --------------------------------------------------------------------------------


async def test_a_batch_of_new_events_is_stored_in_order_and_deduped(db: Store) -> None:
    """The intake's batch insert: row ids in the batch's order, None for an event stored
    before and for a repeat within the batch, and every one waits for dispatch."""
    await stored_event(db, "old")
    batch = [
        (event(event_id="a", minutes=1), b'{"a": 1}'),
        (event(event_id="old"), None),
        (event(event_id="b", minutes=2, title="Now \u2603 'quoted'"), None),
        (event(event_id="a", minutes=3), None),
    ]
    async with db.transaction(serial=False):
        rows = await db.insert_new_events(batch)
    assert rows[1] is None and rows[3] is None
    assert rows[0] is not None and rows[2] is not None and rows[0] < rows[2]
    pending = await db.undispatched()
    assert [(row, e.event_id) for row, e in pending] == [(rows[0], "a"), (rows[2], "b")]
    assert pending[1][1].live is not None and pending[1][1].live.title == "Now \u2603 'quoted'"
    assert await db.insert_new_events([]) == []
    # Outside a transaction it is atomic on its own.
    [alone] = await db.insert_new_events([(event(event_id="c"), None)])
    assert alone is not None and await db.find_event("rec", "c") is not None


async def test_an_event_is_stored_once_per_source_and_id(db: Store) -> None:
    row = await stored_event(db)
    async with db.transaction():
        assert await db.insert_event(event(), notified=True) is None  # a repeat
        other = await db.insert_event(event(source="lp"), notified=False)  # another source
        derived = await db.insert_event(
            event("title_change", "e1/title"), notified=True, parent=row, raw=b"{}"
        )
    assert other is not None and derived is not None
    assert await db.count_events() == 3
    assert await db.find_event("rec", "e1") is not None
    assert await db.find_event("rec", "e2") is None
    loaded = await db.load_event(row)
    assert (loaded.event_id, loaded.kind, loaded.live) == (
        "e1",
        "live_start",
        LiveInfo("Painting"),
    )
    found = await db.find_event("lp", "e1")
    assert found is not None and found.source == "lp"
    assert await db.find_event("lp", "nope") is None
    with pytest.raises(KeyError):
        await db.load_event(10_000)


async def test_a_retired_event_id_is_free_again_and_the_old_event_kept(db: Store) -> None:
    old = await stored_event(db, "digest", minutes=0)
    async with db.transaction():
        # Not older than the cut-off: stays where it is.
        assert not await db.retire_event_id("rec", "digest", received_before=T0)
        assert await db.retire_event_id("rec", "digest", received_before=T0 + timedelta(minutes=1))
        assert not await db.retire_event_id("rec", "never", received_before=T0)
        new = await db.insert_event(event(event_id="digest", minutes=2), notified=True)
    assert new is not None
    moved = await db.find_event("rec", f"digest@{old}")
    assert moved is not None and moved.received_at == T0
    current = await db.find_event("rec", "digest")
    assert current is not None and current.received_at == T0 + timedelta(minutes=2)


async def test_events_stored_for_dispatch_wait_in_order_until_marked(db: Store) -> None:
    async with db.transaction():
        first = await db.insert_event(event(event_id="a"), raw=b"{}", dispatched=False)
        done = await db.insert_event(event(event_id="b"), notified=True)
        second = await db.insert_event(event(event_id="c", minutes=1), dispatched=False)
    assert first is not None and done is not None and second is not None
    assert await db.count_undispatched() == 2
    waiting = await db.undispatched(limit=10)
    assert [(row, e.event_id) for row, e in waiting] == [(first, "a"), (second, "c")]
    assert [row for row, _e in await db.undispatched(limit=1)] == [first]
    enriched = event(event_id="a", title="Enriched")
    async with db.transaction():
        await db.mark_dispatched(first, enriched, notified=True)
    assert [row for row, _e in await db.undispatched()] == [second]
    assert await db.count_undispatched() == 1
    assert (await db.load_event(first)).live == LiveInfo(title="Enriched")


async def test_a_batch_of_events_is_marked_dispatched_at_once(db: Store) -> None:
    """The dispatch stage's marks for a whole batch: each event stored as enriched, and
    the events after the batch still waiting."""
    async with db.transaction():
        rows = await db.insert_new_events([(event(event_id=n), None) for n in "abc"])
    a, b, c = rows
    assert a is not None and b is not None and c is not None
    async with db.transaction():
        await db.mark_many_dispatched(
            [
                (a, event(event_id="a", title="A \u2603 'x'"), True),
                (b, event(event_id="b", title="B"), False),
            ]
        )
        await db.mark_many_dispatched([])
    assert [row for row, _e in await db.undispatched()] == [c]
    assert (await db.load_event(a)).live == LiveInfo(title="A \u2603 'x'")
    assert (await db.load_event(b)).live == LiveInfo(title="B")
    assert await db.count_undispatched() == 1


async def test_a_batch_is_read_with_its_streams_as_if_read_apart(db: Store) -> None:
    """The dispatch stage's first read: the events waiting, and their streams as saved
    (a stream never seen is left out; two events of one stream bring it once)."""
    async with db.transaction():
        rows = await db.insert_new_events(
            [
                (event(event_id="a"), None),
                (event(event_id="b", channel="newcomer"), None),
                (event(event_id="c", minutes=1), None),
            ]
        )
    saved = replace(state("twitch/quinn"), marks=SessionMarks(change_posted_at=NOW))
    async with db.transaction():
        await db.save_streams([saved, state("twitch/elsewhere")], now=T0)
    batch, streams = await db.undispatched_with_streams(limit=10)
    assert batch == await db.undispatched(limit=10)
    assert [row for row, _e in batch] == rows
    assert streams == {"twitch/quinn": saved}
    first, _streams = await db.undispatched_with_streams(limit=1)
    assert first == batch[:1]
    async with db.transaction():
        await db.mark_many_dispatched([(row, e, False) for row, e in batch])
    assert await db.undispatched_with_streams() == ([], {})


async def test_a_batchs_streams_and_marks_are_written_at_once_as_if_apart(db: Store) -> None:
    async with db.transaction():
        a, b = await db.insert_new_events([(event(event_id=n), None) for n in "ab"])
    assert a is not None and b is not None
    ended = replace(state(live=False), marks=SessionMarks(session_row=a))
    async with db.transaction():
        await db.save_dispatched(
            [state(), ended, state("twitch/other")],  # a key twice: its last state
            [(a, event(event_id="a", title="Enriched"), True)],
            now=T0,
        )
    assert await db.get_streams(["twitch/quinn", "twitch/other"]) == {
        "twitch/quinn": ended,
        "twitch/other": state("twitch/other"),
    }
    assert (await db.load_event(a)).live == LiveInfo(title="Enriched")
    assert [row for row, _e in await db.undispatched()] == [b]
    # Either part may be empty.
    async with db.transaction():
        await db.save_dispatched([], [(b, event(event_id="b"), False)], now=T0)
        await db.save_dispatched([state("twitch/third")], [], now=T0)
        await db.save_dispatched([], [], now=T0)
    assert await db.undispatched() == []
    assert await db.get_stream("twitch/third") == state("twitch/third")


# -- streams -------------------------------------------------------------------------------


async def test_stream_state_round_trips_with_its_session_marks(db: Store) -> None:
    assert await db.get_stream("twitch/quinn") is None
    start = await stored_event(db)
    end = await stored_event(db, "e2", kind="live_end")
    marks = SessionMarks(session_row=start, end_row=end, change_posted_at=NOW + 5)
    async with db.transaction():
        await db.save_streams([replace(state(), marks=SessionMarks(session_row=start))], now=T0)
        # Saving again replaces state and marks; a key given twice keeps its last state.
        await db.save_streams(
            [state("twitch/other"), state(), replace(state(live=False), marks=marks)], now=T0
        )
        await db.save_streams([], now=T0)
    saved = await db.get_stream("twitch/quinn")
    assert saved is not None
    assert (saved.live, saved.info.title, saved.info.categories) == (False, "Painting", ("Art",))
    assert saved.started_at == T0 and saved.ended_at == T0 + timedelta(hours=1)
    assert saved.marks == marks
    assert saved == replace(state(live=False), marks=marks)
    assert await db.known_streamers() == ["twitch/other", "twitch/quinn"]


async def test_several_streams_are_read_at_once_as_one_by_one(db: Store) -> None:
    start = await stored_event(db)
    quinn = replace(state("twitch/quinn"), marks=SessionMarks(session_row=start))
    async with db.transaction():
        await db.save_streams([quinn, state("twitch/off", live=False)], now=T0)
    found = await db.get_streams(["twitch/off", "twitch/never", "twitch/quinn"])
    assert set(found) == {"twitch/off", "twitch/quinn"}
    for key, saved in found.items():
        assert saved == await db.get_stream(key)
    assert found["twitch/quinn"].marks.session_row == start
    assert await db.get_streams([]) == {}


async def test_live_streams_longest_running_first_and_every_known_streamer(db: Store) -> None:
    async with db.transaction():
        await db.save_streams(
            [
                state("twitch/late", started=30),
                state("twitch/early", started=0),
                state("twitch/off", live=False),
            ],
            now=T0,
        )
    assert [s.streamer_key for s in await db.live_streams()] == ["twitch/early", "twitch/late"]
    assert await db.known_streamers() == ["twitch/early", "twitch/late", "twitch/off"]


# -- mutes and subscriptions ---------------------------------------------------------------


async def test_mutes_expire_replace_and_lift(db: Store) -> None:
    async with db.transaction():
        await db.add_mute(Mute("discord", "1", "*", until=NOW + 60), created_by="u", now=NOW)
        await db.add_mute(Mute("discord", "1", "twitch/a", until=None), now=NOW)
        await db.add_mute(Mute("telegram", "1", "*", until=None), now=NOW)
        # The same pattern again replaces the first one's expiry.
        await db.add_mute(Mute("discord", "1", "*", until=NOW + 120), now=NOW)
    mutes = await db.mutes_for("discord", "1", NOW + 90)
    assert sorted((m.pattern, m.until) for m in mutes) == [("*", NOW + 120), ("twitch/a", None)]
    assert [m.pattern for m in await db.mutes_for("discord", "1", NOW + 121)] == ["twitch/a"]
    async with db.transaction():
        assert await db.remove_mute("discord", "1", "twitch/a") == 1
        assert await db.remove_mute("discord", "1", "twitch/a") == 0
        assert await db.remove_mute("discord", "1", None) == 1
    assert await db.mutes_for("discord", "1", NOW) == []
    assert len(await db.mutes_for("telegram", "1", NOW)) == 1


async def test_active_mutes_of_every_chat(db: Store) -> None:
    async with db.transaction():
        await db.add_mute(Mute("discord", "1", "*", until=NOW + 60), now=NOW)
        await db.add_mute(Mute("telegram", "-100", "twitch/a", until=None), now=NOW)
    assert sorted((m.sink, m.target) for m in await db.active_mutes(NOW)) == [
        ("discord", "1"),
        ("telegram", "-100"),
    ]
    assert [m.sink for m in await db.active_mutes(NOW + 61)] == ["telegram"]


async def test_subscriptions_are_unique_per_chat_and_pattern(db: Store) -> None:
    first = Subscription("telegram", "-100", "twitch/*")
    async with db.transaction():
        assert await db.add_subscription(first, created_by="u", now=NOW)
        assert not await db.add_subscription(first, now=NOW)
        assert await db.add_subscription(Subscription("discord", "5", "twitch/*"), now=NOW)
    assert await db.subscriptions() == [first, Subscription("discord", "5", "twitch/*")]
    async with db.transaction():
        assert await db.remove_subscription(first)
        assert not await db.remove_subscription(first)
    assert await db.subscriptions() == [Subscription("discord", "5", "twitch/*")]


async def test_routing_inputs_are_read_at_once_as_one_by_one(db: Store) -> None:
    """The dispatch stage's one read of subscriptions, mutes in force and moves: the
    same as the three reads, with an odd expiry and hostile text intact."""
    assert await db.routing_inputs(NOW) == RoutingInputs([], [], {})
    async with db.transaction():
        await db.add_subscription(Subscription("telegram", "-100", 'twitch/"q\\*'), now=NOW)
        await db.add_subscription(Subscription("discord", "5", "*"), now=NOW)
        await db.add_mute(Mute("discord", "5", "*", until=NOW + 0.1 + 0.2), now=NOW)
        await db.add_mute(Mute("discord", "6", "kick/a", until=None), now=NOW)
        await db.add_mute(Mute("discord", "7", "*", until=NOW - 1), now=NOW)  # over
        assert await db.move_target("telegram", "-1", "-1001", now=NOW)
    inputs = await db.routing_inputs(NOW)
    assert inputs == RoutingInputs(
        await db.subscriptions(), await db.active_mutes(NOW), await db.moved_targets()
    )
    assert [m.target for m in inputs.mutes] == ["5", "6"]
    assert inputs.mutes[0].until == NOW + 0.1 + 0.2
    assert inputs.subscriptions[0].pattern == 'twitch/"q\\*'
    assert inputs.moves == {("telegram", "-1"): "-1001"}


# -- outbox --------------------------------------------------------------------------------


async def test_deliveries_queued_at_once_are_as_if_queued_one_by_one(db: Store) -> None:
    """An event's deliveries are queued in one write: the rows, their order, options with
    hostile text and the order they are claimed in are as if each were queued in turn,
    and one row that cannot be queued queues none."""
    row = await stored_event(db)
    hostile = {"text": "a\"b'c\\d @everyone", "mention_roles": [1]}
    batch = [
        NewDelivery(row, "discord", "b", not_before=NOW - 5, options=hostile),
        NewDelivery(row, "telegram", "-100", not_before=NOW + 60, action="edit"),
        NewDelivery(row, "discord", "a", not_before=NOW - 5),
    ]
    async with db.transaction():
        await db.add_deliveries(batch, now=NOW)
        await db.add_deliveries([], now=NOW)
    queued = await db.deliveries_for_event(row)
    assert [(d.sink, d.target, d.action, d.options, d.not_before) for d in queued] == [
        (new.sink, new.target, new.action, new.options, new.not_before) for new in batch
    ]
    assert all(d.state == "pending" and d.created_at == NOW for d in queued)
    assert [d.id for d in queued] == sorted(d.id for d in queued)
    async with db.transaction():
        claimed = await db.claim_due("discord", now=NOW)
    assert [(d.target, d.options) for d in claimed] == [("b", hostile), ("a", {})]
    broken = [
        NewDelivery(row, "discord", "c", not_before=NOW),
        NewDelivery(row + 1000, "discord", "d", not_before=NOW),  # no such event
    ]
    with pytest.raises(Exception, match=r"(?i)foreign key"):
        await db.add_deliveries(broken, now=NOW)
    assert len(await db.deliveries_for_event(row)) == 3


async def test_claiming_takes_due_rows_oldest_first_skipping_busy_chats(db: Store) -> None:
    row = await stored_event(db)
    a1 = await delivery(db, row, "a", due=NOW - 10, options={"mention_roles": [1]})
    b1 = await delivery(db, row, "b", due=NOW - 5)
    await delivery(db, row, "c", due=NOW + 60)  # not due yet
    await delivery(db, row, "a", sink="telegram", due=NOW - 20)  # another sink
    assert await db.next_due("discord") == NOW - 10
    assert await db.next_due("discord", busy_targets=["a", "b"]) == NOW + 60
    async with db.transaction():
        claimed = await db.claim_due("discord", now=NOW, busy_targets=["b"])
    assert [(d.id, d.target, d.attempts) for d in claimed] == [(a1, "a", 1)]
    assert claimed[0].options == {"mention_roles": [1]}
    assert claimed[0].event_row == row and claimed[0].action == "post"
    assert (await states(db))[a1] == "sending"
    async with db.transaction():
        assert [d.id for d in await db.claim_due("discord", now=NOW, limit=1)] == [b1]


async def test_outcomes_sent_retry_failed_and_released(db: Store) -> None:
    row = await stored_event(db)
    ids = [await delivery(db, row, target) for target in ("a", "b", "c", "d")]
    async with db.transaction():
        await db.claim_due("discord", now=NOW)
        await db.mark_sent(ids[0], message_id="m1", now=NOW)
        await db.mark_retry(ids[1], error="503", not_before=NOW + 30, now=NOW)
        await db.mark_failed(ids[2], error="403 Missing Access", now=NOW)
        await db.release_claimed([ids[3]], now=NOW)
    rows = {r.id: r for r in await db.list_deliveries(DELIVERY_STATES)}
    assert (rows[ids[0]].state, rows[ids[0]].message_id) == ("sent", "m1")
    assert (rows[ids[1]].state, rows[ids[1]].not_before, rows[ids[1]].last_error) == (
        "pending",
        NOW + 30,
        "503",
    )
    assert (rows[ids[2]].state, rows[ids[2]].attempts) == ("failed", 1)
    # Released untried: back in the queue with its attempt undone.
    assert (rows[ids[3]].state, rows[ids[3]].attempts) == ("pending", 0)
    assert rows[ids[0]].kind == "live_start" and rows[ids[0]].streamer_key == "twitch/quinn"
    assert await db.delivery_status(ids[0]) == ("sent", "m1")
    with pytest.raises(KeyError):
        await db.delivery_status(10_000)
    # The default listing leaves out what is done.
    assert {r.id for r in await db.list_deliveries()} == set(ids[1:])


async def test_one_delivery_can_be_called_off(db: Store) -> None:
    row = await stored_event(db)
    kept, called_off = await delivery(db, row, "a"), await delivery(db, row, "b")
    async with db.transaction():
        await db.mark_cancelled(called_off, reason="muted", now=NOW)
    rows = {r.id: r for r in await db.list_deliveries(DELIVERY_STATES)}
    assert (rows[called_off].state, rows[called_off].last_error) == ("cancelled", "muted")
    assert rows[kept].state == "pending"
    async with db.transaction():
        assert [d.id for d in await db.claim_due("discord", now=NOW)] == [kept]


async def test_in_flight_rows_are_requeued_and_failed_ones_retried(db: Store) -> None:
    row = await stored_event(db)
    first, second = await delivery(db, row, "a"), await delivery(db, row, "b")
    async with db.transaction():
        await db.claim_due("discord", now=NOW)
        await db.mark_failed(second, error="gone", now=NOW)
    async with db.transaction():
        assert await db.requeue_in_flight() == 1
        assert await db.retry_failed(now=NOW + 100) == 1
    rows = {r.id: r for r in await db.list_deliveries(DELIVERY_STATES)}
    assert rows[first].state == rows[second].state == "pending"
    assert rows[second].not_before == NOW + 100 and rows[second].attempts == 1


async def test_outbox_counts_and_the_oldest_due(db: Store) -> None:
    row = await stored_event(db)
    await delivery(db, row, "a", created=NOW - 50, due=NOW - 50)
    # Held back on purpose (an end in its grace): scheduled, not waiting.
    await delivery(db, row, "b", created=NOW - 100, due=NOW + 600)
    sent = await delivery(db, row, "c", sink="telegram", created=NOW - 200, due=NOW - 200)
    async with db.transaction():
        await db.mark_sent(sent, message_id="x", now=NOW)
    counts = await db.outbox_counts(now=NOW)
    assert counts.by_state == {"pending": 2, "sent": 1}
    assert counts.oldest_pending_created == NOW - 50
    assert await db.oldest_due(["discord"]) == NOW - 50
    assert await db.oldest_due(["telegram"]) is None
    assert await db.oldest_due([]) is None


async def test_held_rows_are_released_or_cancelled_per_event(db: Store) -> None:
    start = await stored_event(db)
    end = await stored_event(db, "e2", kind="live_end")
    held = await delivery(db, end, "a", due=NOW + 600)
    other = await delivery(db, end, "b", due=NOW + 600)
    card = await delivery(db, start, "a")
    async with db.transaction():
        assert await db.release_held(end, now=NOW) == 2
        assert await db.release_held(end, now=NOW) == 0
    rows = {r.id: r for r in await db.deliveries_for_event(end)}
    assert list(rows) == [held, other]
    assert rows[held].not_before == NOW and rows[held].options["due"] == NOW
    async with db.transaction():
        await db.mark_sent(other, message_id="m", now=NOW)
        assert await db.cancel_pending(end, reason="came back", now=NOW) == 1
    assert (await states(db))[held] == "cancelled"
    # Cancelled rows never reached their chat; sent ones did.
    assert await db.reached_targets(end) == {("discord", "b")}
    assert (await states(db))[card] == "pending"


async def test_sends_to_a_chat_by_other_processes_and_earlier_runs_are_told(
    make_store: Callable[..., Store], db: Store
) -> None:
    """What a per-chat rate limit still counts when this process sends to a chat next:
    the others' sends there (forum topics included), and an earlier run's."""
    row = await stored_event(db)
    actions = iter(range(100))  # one event's rows: a chat's are told apart by action

    async def sent_by(store: Store, target: str, at: float, sink: str = "telegram") -> None:
        await delivery(store, row, target, sink=sink, due=at, action=f"edit{next(actions)}")
        async with store.transaction():
            [claimed] = await store.claim_due(sink, now=at)
            await store.mark_sent(claimed.id, message_id="m", now=at)

    earlier = make_store(owner="an earlier run")
    await earlier.open()
    try:
        await sent_by(earlier, "-100", NOW - 20)
    finally:
        await earlier.close()
    other = make_store(owner="another process")
    await other.open()
    try:
        await sent_by(other, "-100", NOW - 100)  # before the window asked about
        await sent_by(other, "-100", NOW - 10)
        await sent_by(other, "-100/7", NOW - 5)  # a forum topic of the chat
        await sent_by(other, "-1001", NOW - 4)  # another chat, its id starting alike
        await sent_by(other, "-100", NOW - 3, sink="discord")  # another platform
        await delivery(other, row, "-100/8", sink="telegram", due=NOW)  # not sent yet
        await sent_by(db, "-100", NOW - 2)  # this process's own: its limiter has it
        async with other.transaction():
            await other.claim_due("telegram", now=NOW)  # sending: not sent yet
    finally:
        await other.close()
    assert await db.sent_elsewhere("telegram", "-100", since=NOW - 60) == [
        NOW - 20,
        NOW - 10,
        NOW - 5,
    ]
    assert await db.sent_elsewhere("telegram", "-300", since=NOW - 60) == []


async def test_failed_counts_include_a_chats_forum_topics(db: Store) -> None:
    row = await stored_event(db)
    for n, target in enumerate(("-100", "-100/7", "-1001", "-100")):
        delivery_id = await delivery(db, row, target, sink="telegram", action=f"edit{n}")
        async with db.transaction():
            await db.mark_failed(delivery_id, error="x", now=NOW)
    assert await db.failed_count("telegram", "-100") == 3
    assert await db.failed_count("telegram", "-1001") == 1
    assert await db.failed_count("discord", "-100") == 0


# -- card refs -----------------------------------------------------------------------------


async def test_cards_are_an_events_posts_and_can_point_at_a_new_message(db: Store) -> None:
    row = await stored_event(db)
    post_a = await delivery(db, row, "a")
    await delivery(db, row, "a", action="edit")
    post_b = await delivery(db, row, "b", sink="telegram")
    assert await db.cards(row) == {("discord", "a"): post_a, ("telegram", "b"): post_b}
    assert await db.reached_targets(row) == {("discord", "a"), ("telegram", "b")}
    async with db.transaction():
        await db.mark_sent(post_a, message_id="old", now=NOW)
        await db.set_message_id(post_a, "new")
    assert await db.delivery_status(post_a) == ("sent", "new")


# -- chats that moved ----------------------------------------------------------------------

OLD, NEW = "-777", "-1000000000777"


async def test_a_moved_chat_takes_its_subscriptions_mutes_and_deliveries_along(
    db: Store,
) -> None:
    row = await stored_event(db)
    later = await stored_event(db, "e2")
    sent = await delivery(db, row, OLD, sink="telegram")
    failed = await delivery(db, row, OLD, sink="telegram", action="edit")
    pending = await delivery(db, later, OLD, sink="telegram")
    topic = await delivery(db, later, f"{OLD}/7", sink="telegram")
    # Not this chat: another sink's chat of the same id, and an id that only starts alike.
    other_sink = await delivery(db, row, OLD, sink="discord")
    lookalike = await delivery(db, row, f"{OLD}7", sink="telegram")
    async with db.transaction():
        await db.mark_sent(sent, message_id="text:5", now=NOW)
        await db.mark_failed(failed, error="403", now=NOW)
        await db.add_subscription(Subscription("telegram", OLD, "twitch/*"), now=NOW)
        await db.add_mute(Mute("telegram", OLD, "*", until=NOW + 60), now=NOW)
        await db.add_mute(Mute("discord", OLD, "*", until=None), now=NOW)
        assert await db.move_target("telegram", OLD, NEW, now=NOW)

    assert await db.subscriptions() == [Subscription("telegram", NEW, "twitch/*")]
    assert [m.pattern for m in await db.mutes_for("telegram", NEW, NOW)] == ["*"]
    assert await db.mutes_for("telegram", OLD, NOW) == []
    assert len(await db.mutes_for("discord", OLD, NOW)) == 1
    targets = {
        info.id: (info.target, info.state) for info in await db.deliveries_for_event(row)
    } | {info.id: (info.target, info.state) for info in await db.deliveries_for_event(later)}
    assert targets == {
        sent: (NEW, "sent"),
        failed: (NEW, "failed"),
        pending: (NEW, "pending"),
        topic: (f"{NEW}/7", "pending"),
        other_sink: (OLD, "pending"),
        lookalike: (f"{OLD}7", "pending"),
    }
    # The card and the failure count went along.
    assert (await db.cards(row))[("telegram", NEW)] == sent
    assert await db.delivery_status(sent) == ("sent", "text:5")
    assert await db.failed_count("telegram", NEW) == 1
    assert await db.failed_count("telegram", OLD) == 0
    assert await db.moved_targets() == {("telegram", OLD): NEW}
    assert await db.moved_targets("telegram") == {("telegram", OLD): NEW}
    assert await db.moved_targets("discord") == {}


async def test_a_chat_moves_once_whoever_reports_it_first(db: Store) -> None:
    async with db.transaction():
        assert await db.move_target("telegram", OLD, NEW, now=NOW)
        await db.add_subscription(Subscription("telegram", OLD, "twitch/a"), now=NOW)
    async with db.transaction():
        # Reported again (the service message after the send error): nothing moves.
        assert not await db.move_target("telegram", OLD, NEW, now=NOW + 1)
        assert not await db.move_target("telegram", OLD, "-1009", now=NOW + 1)
    assert await db.subscriptions() == [Subscription("telegram", OLD, "twitch/a")]
    assert await db.moved_targets() == {("telegram", OLD): NEW}


async def test_a_move_onto_a_chat_that_has_the_same_rows_merges_them(db: Store) -> None:
    row = await stored_event(db)
    old_post = await delivery(db, row, OLD, sink="telegram")
    new_post = await delivery(db, row, NEW, sink="telegram")
    async with db.transaction():
        await db.add_subscription(Subscription("telegram", OLD, "twitch/*"), now=NOW)
        await db.add_subscription(Subscription("telegram", NEW, "twitch/*"), now=NOW)
        await db.add_subscription(Subscription("telegram", OLD, "kick/*"), now=NOW)
        await db.add_mute(Mute("telegram", OLD, "*", until=None), now=NOW)
        await db.add_mute(Mute("telegram", NEW, "*", until=NOW + 60), now=NOW)
        await db.add_mute(Mute("telegram", OLD, "twitch/a", until=NOW + 30), now=NOW)
        await db.add_mute(Mute("telegram", NEW, "twitch/a", until=NOW + 90), now=NOW)
        assert await db.move_target("telegram", OLD, NEW, now=NOW)
    assert sorted(s.pattern for s in await db.subscriptions()) == ["kick/*", "twitch/*"]
    assert {s.target for s in await db.subscriptions()} == {NEW}
    # The longer of two mutes of one pattern wins; "until unmuted" is the longest.
    assert sorted((m.pattern, m.until) for m in await db.mutes_for("telegram", NEW, NOW)) == [
        ("*", None),
        ("twitch/a", NOW + 90),
    ]
    # The new chat gets that event once: the old id's copy is called off.
    assert await states(db) == {old_post: "cancelled", new_post: "pending"}
    assert (await db.cards(row))[("telegram", NEW)] == new_post


async def test_a_move_survives_a_reopen(make_store: Callable[..., Store]) -> None:
    first = make_store()
    await first.open()
    try:
        assert await first.move_target("telegram", OLD, NEW, now=NOW)
    finally:
        await first.close()
    second = make_store()
    await second.open()
    try:
        assert await second.moved_targets("telegram") == {("telegram", OLD): NEW}
        assert not await second.move_target("telegram", OLD, NEW, now=NOW)
    finally:
        await second.close()


# -- source state --------------------------------------------------------------------------


async def test_a_sources_values_are_kept_by_source_and_key(db: Store) -> None:
    assert await db.source_value("kick", "public_key") is None
    await db.set_source_value("kick", "public_key", "PEM 1", now=NOW)
    await db.set_source_value("kick2", "public_key", "other", now=NOW)
    await db.set_source_value("kick", "public_key", "PEM 2", now=NOW + 1)
    assert await db.source_value("kick", "public_key") == "PEM 2"
    assert await db.source_value("kick2", "public_key") == "other"
    assert await db.source_value("kick", "live") is None


async def test_a_sources_values_survive_a_reopen(make_store: Callable[..., Store]) -> None:
    first = make_store()
    await first.open()
    try:
        await first.set_source_value("kick", "public_key", "PEM", now=NOW)
    finally:
        await first.close()
    second = make_store()
    await second.open()
    try:
        assert await second.source_value("kick", "public_key") == "PEM"
    finally:
        await second.close()


# -- retention -----------------------------------------------------------------------------

#: The retention cut-off of these tests: events from T0 are old, from LATER recent.
CUT = T0 + timedelta(days=1)
LATER = 2 * 24 * 60  # minutes after T0: a day after the cut-off


async def finished(db: Store, event_row: int, target: str, how: str, *, at: float = NOW) -> int:
    """A delivery of `event_row` that ended `how` (sent, failed or cancelled) at `at`."""
    delivery_id = await delivery(db, event_row, target, created=at, due=at)
    async with db.transaction():
        if how == "sent":
            await db.mark_sent(delivery_id, message_id=f"m-{target}", now=at)
        elif how == "failed":
            await db.mark_failed(delivery_id, error="403", now=at)
        else:
            assert await db.cancel_pending(event_row, reason="came back", now=at) == 1
    return delivery_id


async def prune_all(db: Store, *, limit: int = 1000) -> tuple[int, int]:
    """Prune until nothing more goes; (events, deliveries) removed."""
    events = deliveries = 0
    while True:
        result = await db.prune(before=CUT, limit=limit)
        events, deliveries = events + result.events, deliveries + result.deliveries
        if not result.more:
            return events, deliveries


async def exists(db: Store, event_row: int) -> bool:
    try:
        await db.load_event(event_row)
    except KeyError:
        return False
    return True


async def test_old_finished_events_go_with_their_deliveries_and_recent_ones_stay(
    db: Store,
) -> None:
    old = await stored_event(db, "old", kind="title_change")
    for target, how in (("a", "sent"), ("b", "failed"), ("c", "cancelled")):
        await finished(db, old, target, how)
    bare = await stored_event(db, "bare", kind="app_launch")  # recorded, never delivered
    recent = await stored_event(db, "recent", kind="title_change", minutes=LATER)
    recent_delivery = await finished(db, recent, "a", "sent", at=NOW + LATER * 60)
    # Old, but its send finished only after the cut-off (a retried failure).
    late = await stored_event(db, "late", kind="title_change")
    await finished(db, late, "a", "sent", at=CUT.timestamp() + 60)

    assert await prune_all(db) == (2, 3)

    assert not await exists(db, old) and not await exists(db, bare)
    assert await db.deliveries_for_event(old) == []
    assert await exists(db, recent) and await exists(db, late)
    assert [d.id for d in await db.deliveries_for_event(recent)] == [recent_delivery]
    assert await db.count_events() == 2
    # The pruned event's (source, id) is free again: a new event may take it.
    assert await db.find_event("rec", "old") is None
    assert await stored_event(db, "old", minutes=LATER) != old
    # Nothing is left to prune: calls say so and change nothing.
    assert await db.prune(before=CUT) == PruneResult()


async def test_an_old_event_not_yet_dispatched_stays(db: Store) -> None:
    async with db.transaction():
        waiting = await db.insert_event(event(event_id="waiting"), dispatched=False)
    assert waiting is not None
    assert await prune_all(db) == (0, 0)
    assert [row for row, _e in await db.undispatched()] == [waiting]


async def test_an_old_event_with_a_delivery_still_to_go_out_stays(db: Store) -> None:
    waiting = await stored_event(db, "waiting", kind="live_end")
    await finished(db, waiting, "a", "sent")
    pending = await delivery(db, waiting, "b", due=NOW + 3600)  # held back, or retrying
    sending = await stored_event(db, "sending", kind="title_change")
    await delivery(db, sending, "a")
    async with db.transaction():
        [claimed] = await db.claim_due("discord", now=NOW)
    assert claimed.event_row == sending

    assert await prune_all(db) == (0, 0)

    assert await exists(db, waiting) and await exists(db, sending)
    assert len(await db.deliveries_for_event(waiting)) == 2
    assert (await states(db))[pending] == "pending"


async def session(
    db: Store, key: str, *, live: bool, end_minutes: float | None
) -> tuple[int, int]:
    """A stream whose old session posted cards in chats a and b; (live_start row, its card)."""
    channel = key.split("/")[1]
    start = await stored_event(db, f"{channel}-start", channel=channel)
    card = await finished(db, start, "a", "sent")
    await finished(db, start, "b", "sent")
    marks = SessionMarks(session_row=start)
    if end_minutes is not None:
        end = await stored_event(db, f"{channel}-end", kind="live_end", minutes=end_minutes)
        marks = replace(marks, end_row=end)
    async with db.transaction():
        await db.save_streams([replace(state(key, live=live), marks=marks)], now=T0)
    return start, card


async def test_a_live_sessions_start_and_cards_stay_while_its_old_changes_go(db: Store) -> None:
    start, card = await session(db, "twitch/quinn", live=True, end_minutes=None)
    change = await stored_event(db, "retitled", kind="title_change")
    await finished(db, change, "a", "sent")

    assert await prune_all(db) == (1, 1)

    assert await exists(db, start) and not await exists(db, change)
    assert await db.cards(start) == {("discord", "a"): card, ("discord", "b"): card + 1}
    assert await db.delivery_status(card) == ("sent", "m-a")
    saved = await db.get_stream("twitch/quinn")
    assert saved is not None and saved.marks.session_row == start


async def test_an_ended_sessions_old_events_go_and_the_stream_forgets_them(db: Store) -> None:
    start, _card = await session(db, "twitch/quinn", live=False, end_minutes=60)
    end = (await db.get_stream("twitch/quinn")).marks.end_row  # type: ignore[union-attr]
    assert end is not None
    await finished(db, end, "a", "sent", at=NOW + 3600)

    assert await prune_all(db) == (2, 3)

    assert not await exists(db, start) and not await exists(db, end)
    saved = await db.get_stream("twitch/quinn")
    assert saved is not None and saved.live is False
    assert (saved.marks.session_row, saved.marks.end_row) == (None, None)
    assert await db.known_streamers() == ["twitch/quinn"]


async def test_a_session_ended_recently_or_whose_end_waits_keeps_its_cards(db: Store) -> None:
    # Ended after the cut-off: a comeback within rejoin_window reopens these cards.
    recent_start, _card = await session(db, "twitch/recent", live=False, end_minutes=LATER)
    # Ended long ago, but its end notice is still held back (or retrying).
    held_start, _card = await session(db, "twitch/held", live=False, end_minutes=60)
    held = await db.get_stream("twitch/held")
    assert held is not None and held.marks.end_row is not None
    await delivery(db, held.marks.end_row, "a", action="edit", due=NOW + 10**6)

    assert await prune_all(db) == (0, 0)

    assert await exists(db, recent_start) and await exists(db, held_start)
    assert await exists(db, held.marks.end_row)
    assert len(await db.cards(held_start)) == 2
    again = await db.get_stream("twitch/held")
    assert again is not None and again.marks == held.marks


async def test_a_card_that_a_waiting_delivery_edits_stays(db: Store) -> None:
    # No stream names this event any more, but an edit still to go out acts on its card.
    start = await stored_event(db, "start")
    card = await finished(db, start, "a", "sent")
    change = await stored_event(db, "retitled", kind="title_change", minutes=LATER)
    await delivery(db, change, "a", action="edit", options={"card": card})

    assert await prune_all(db) == (0, 0)

    assert await db.delivery_status(card) == ("sent", "m-a")


async def test_derived_events_go_with_their_parent_and_keep_it_while_they_stay(
    db: Store,
) -> None:
    parent = await stored_event(db, "update", kind="app_launch")
    async with db.transaction():
        child = await db.insert_event(
            event("title_change", "update/title"), notified=True, parent=parent
        )
        kept_parent = await db.insert_event(event("app_launch", "update2"), notified=True)
        assert kept_parent is not None
        kept_child = await db.insert_event(
            event("title_change", "update2/title"), notified=True, parent=kept_parent
        )
    assert child is not None and kept_child is not None
    await finished(db, child, "a", "sent")
    await delivery(db, kept_child, "a", due=NOW + 3600)  # still to go out

    assert await prune_all(db) == (2, 1)

    assert not await exists(db, parent) and not await exists(db, child)
    assert await exists(db, kept_parent) and await exists(db, kept_child)


async def test_pruning_goes_in_bounded_batches(db: Store) -> None:
    rows = [await stored_event(db, f"old{n}", kind="title_change") for n in range(5)]
    for row in rows:
        await finished(db, row, "a", "sent")

    # An event and its deliveries go together, two rows each: two events per call of 4.
    first = await db.prune(before=CUT, limit=4)
    assert (first.events, first.deliveries, first.more) == (2, 2, True)
    assert await prune_all(db, limit=4) == (3, 3)
    assert await db.count_events() == 0
    # One event with more deliveries than the limit still goes, alone.
    big = await stored_event(db, "big", kind="title_change")
    for target in "abcdef":
        await finished(db, big, target, "sent")
    assert await db.prune(before=CUT, limit=4) == PruneResult(events=1, deliveries=6)


async def test_a_heartbeat_counts_this_process_alive(db: Store) -> None:
    assert await db.heartbeat(now=NOW) == 1
    assert await db.heartbeat(now=NOW + 30) == 1


async def test_a_lone_process_waits_for_nobody_to_count_it(db: Store) -> None:
    """Its own heartbeat, however old, is not another process that has yet to count it."""
    await db.heartbeat(now=NOW)
    assert await db.unaware_of(NOW + 1, now=NOW + 1, quiet=4) == 0


async def test_a_lone_process_holds_every_role(db: Store) -> None:
    assert await db.hold_role("telegram-updates")
    assert await db.hold_role("telegram-updates")  # asking again: still held
    assert await db.hold_role("sources")
    # Given up, a role is free: with nobody else asking, this process takes it again.
    await db.release_role("sources")
    assert await db.hold_role("sources")
    await db.release_role("never-held")  # nothing to give up: no error


async def test_a_turn_is_taken_spacing_after_the_last_one(
    make_store: Callable[..., Store],
) -> None:
    first = make_store()
    await first.open()
    try:
        # Shards asking at once: one takes the turn; the others are told to wait, and
        # nothing is booked for them (a process gone meanwhile leaves nothing to wait out).
        waits = [await first.take_turn("discord-identify-0", 30.0) for _ in range(3)]
        assert waits[0] == 0
        assert all(29 < wait <= 30 for wait in waits[1:]), waits
        assert await first.take_turn("discord-identify-1", 30.0) == 0  # a turn of its own
        # Once the spacing is over, the next turn is taken at once.
        assert await first.take_turn("short", 0.05) == 0
        assert 0 < await first.take_turn("short", 0.05) <= 0.05
        await asyncio.sleep(0.1)
        assert await first.take_turn("short", 0.05) == 0
    finally:
        await first.close()
    # A process started again (or another one) waits out the turn taken before it.
    again = make_store()
    await again.open()
    try:
        assert 28 < await again.take_turn("discord-identify-0", 30.0) <= 30
    finally:
        await again.close()


async def test_deliveries_queued_by_another_process_are_heard_and_its_own_are_not(
    make_store: Callable[..., Store], db: Store
) -> None:
    """On PostgreSQL a process hears what the others queue (NOTIFY), not what it
    queued itself: its dispatcher woke its workers already, and a second wake made each
    one look at the outbox again for nothing."""
    heard: list[str] = []
    db.on_deliveries_queued(heard.append)
    await db.heartbeat(now=NOW)  # listening starts here
    await delivery(db, await stored_event(db, "mine"), "0", sink="discord")  # first, if heard
    other = make_store()  # another process on the database
    await other.open()
    try:
        row = await stored_event(other)
        for target in ("1", "2", "3"):
            await delivery(other, row, target, sink="telegram")
        await delivery(other, row, "4", sink="discord")
        listens = isinstance(db, PostgresStore)  # SQLite: one process, nobody to hear
        async with asyncio.timeout(5):
            while listens and len(heard) < 4:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        assert heard == (["telegram"] * 3 + ["discord"] if listens else [])
        # An event's deliveries queued at once: each sink is heard of once.
        chats = [("telegram", "5"), ("discord", "6"), ("telegram", "7"), ("discord", "8")]
        async with other.transaction():
            await other.add_deliveries(
                [NewDelivery(row, sink, target, not_before=NOW) for sink, target in chats],
                now=NOW,
            )
        async with asyncio.timeout(5):
            while listens and len(heard) < 6:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        assert sorted(heard[4:]) == (["discord", "telegram"] if listens else [])
    finally:
        await other.close()
