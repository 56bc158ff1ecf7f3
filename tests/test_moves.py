"""A chat that gets a new id (a Telegram group upgraded to a supergroup), platform-neutral:
the outbox follows it, the dispatch stage routes the old id to the new one, the commands
layer follows it when the platform says so, and bot.toml naming the old id is warned about.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.__main__ import main
from bot.commands import Chat, Commands
from bot.config import Route
from bot.errors import TargetMoved
from bot.events import NOTIFIED_KINDS, Event
from bot.outbox import OutboxWorker
from bot.pipeline.dispatch import Dispatcher
from bot.store import Delivery, Mute, Store, Subscription
from bot.store.sqlite import SQLiteStore
from tests.conftest import SECRET
from tests.routes import chats
from tests.store_doubles import InstrumentedStore
from tests.waiting import every_delivery, outbox_states

T0 = datetime(2026, 3, 11, 5, 0, tzinfo=UTC)
OLD, NEW = "-777", "-1000000000777"


class MovingSink:
    """A chat platform where the chats in `moved` answer every call with their new id."""

    name = "telegram"
    drain_timeout = 5.0
    keeps_cards = True
    shares_token_limits = False
    state = "running"

    def __init__(self, moved: dict[str, str]) -> None:
        self.moved = moved
        self.delivered: list[tuple[str, str]] = []
        self.edited: list[tuple[str, str]] = []
        self.attempts = 0

    async def start(self) -> None:
        return None

    def chat_window(self, target: str) -> float | None:
        return None  # no per-chat limit to share with other processes

    async def stop(self) -> None:
        return None

    def _check(self, target: str) -> None:
        self.attempts += 1
        chat = target.partition("/")[0]
        if chat in self.moved:
            raise TargetMoved(chat, self.moved[chat])

    async def deliver(self, delivery: Delivery, event: Event) -> str | None:
        self._check(delivery.target)
        self.delivered.append((delivery.target, event.event_id))
        return f"text:{delivery.id}"

    async def edit(self, delivery: Delivery, message_id: str, event: Event) -> None:
        self._check(delivery.target)
        self.edited.append((delivery.target, message_id))

    async def delete(self, delivery: Delivery, message_id: str) -> None:
        self._check(delivery.target)

    async def preflight(self, targets: object, **_options: object) -> None:
        return None


def route(*targets: str) -> Route:
    return Route(
        patterns=("*",), events=frozenset(NOTIFIED_KINDS), targets=chats(telegram=targets)
    )


def error_event(event_id: str, minutes: float = 0) -> Event:
    at = T0 + timedelta(minutes=minutes)
    return Event(
        source="rec",
        event_id=event_id,
        kind="error",
        occurred_at=at,
        received_at=at,
        platform="twitch",
        channel="quinn",
        error=f"failure {event_id}",
    )


async def run_until_settled(store: Store, worker: OutboxWorker) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    settled = outbox_states(store, lambda states: set(states) <= {"sent", "failed", "cancelled"})
    try:
        async with asyncio.timeout(5):
            while not await settled():
                await asyncio.sleep(0.01)
    finally:
        stop.set()
        await task


async def test_a_batch_to_a_chat_that_moved_goes_to_its_new_id_in_order_with_no_failure(
    store: Store,
) -> None:
    dispatcher = Dispatcher(store=store, routes=[route(OLD)], sinks=["telegram"])
    for index, event_id in enumerate(("a", "b", "c")):
        await dispatcher.accept(error_event(event_id, index))
    sink = MovingSink({OLD: NEW})
    worker = OutboxWorker(store=store, sink=sink)
    await run_until_settled(store, worker)

    assert sink.delivered == [(NEW, "a"), (NEW, "b"), (NEW, "c")]
    rows = await every_delivery(store)
    assert [(r.target, r.state, r.attempts, r.last_error) for r in rows] == [
        (NEW, "sent", 1, None)
    ] * 3
    assert await store.moved_targets() == {("telegram", OLD): NEW}
    assert not worker.degraded


async def test_a_move_while_the_database_refuses_writes_is_followed_once_it_is_back(
    store: Store,
) -> None:
    dispatcher = Dispatcher(store=store, routes=[route(OLD)], sinks=["telegram"])
    await dispatcher.accept(error_event("a"))
    sick = InstrumentedStore(store)
    sick.fail_commits = True  # a full disk: the move cannot be recorded
    sink = MovingSink({OLD: NEW})
    worker = OutboxWorker(store=sick, sink=sink)  # type: ignore[arg-type]
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        async with asyncio.timeout(5):
            while not sink.attempts:
                await asyncio.sleep(0.01)
        # Nothing was sent and nothing moved: the row waits, it is not failed.
        assert await store.moved_targets() == {}
        assert sink.delivered == []
        sick.fail_commits = False
        settled = outbox_states(store, lambda states: states == {"sent": 1})
        async with asyncio.timeout(10):
            while not await settled():
                await asyncio.sleep(0.01)
    finally:
        stop.set()
        await task
    assert sink.delivered == [(NEW, "a")]
    assert await store.moved_targets() == {("telegram", OLD): NEW}


async def test_a_chat_said_to_move_to_itself_fails_visibly_instead_of_looping(
    store: Store,
) -> None:
    dispatcher = Dispatcher(store=store, routes=[route(OLD)], sinks=["telegram"])
    await dispatcher.accept(error_event("a"))
    worker = OutboxWorker(store=store, sink=MovingSink({OLD: OLD}))
    await run_until_settled(store, worker)
    [row] = await every_delivery(store)
    assert row.state == "failed" and "moved to itself" in (row.last_error or "")
    assert await store.moved_targets() == {}


async def test_a_chat_that_moved_takes_its_subscriptions_mutes_and_cards_along(
    store: Store,
) -> None:
    async with store.transaction():
        await store.add_subscription(Subscription("telegram", OLD, "twitch/*"), now=0)
        await store.add_mute(Mute("telegram", OLD, "kick/*", until=None), now=0)
    commands = Commands(store=store, routes=[])
    assert await commands.target_moved("telegram", OLD, NEW)
    # Told again (the error after the service message): moved once only.
    assert not await commands.target_moved("telegram", OLD, NEW)
    assert await commands.patterns_for(Chat("telegram", NEW)) == ["twitch/*"]
    assert await commands.patterns_for(Chat("telegram", OLD)) == []
    assert [m.pattern for m in await commands.mutes(Chat("telegram", NEW))] == ["kick/*"]


async def test_a_route_naming_the_old_id_reaches_the_new_one_without_a_restart(
    store: Store,
) -> None:
    dispatcher = Dispatcher(store=store, routes=[route(OLD, f"{OLD}/7")], sinks=["telegram"])
    await dispatcher.accept(error_event("before"))
    # Learnt while the dispatcher runs (the service message, say).
    assert await Commands(store=store, routes=[]).target_moved("telegram", OLD, NEW)
    await dispatcher.accept(error_event("after", 1))
    rows = await every_delivery(store)
    assert sorted(r.target for r in rows) == sorted([NEW, f"{NEW}/7"] * 2)


async def test_check_warns_when_the_database_says_a_configured_chat_moved(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "bot.toml"
    config.write_text(f"""
[storage]
path = "bot.sqlite3"

[[sources]]
name = "rec"
kind = "onliverec"
secret = "{SECRET}"

[[routes]]
match = "twitch/*"
telegram_chats = ["{OLD}", "-555"]
""")
    database = tmp_path / "bot.sqlite3"
    # No database yet: nothing to say, and none is created.
    assert await asyncio.to_thread(main, ["check", "-c", str(config)]) == 0
    assert "moved" not in capsys.readouterr().err
    assert not database.exists()

    store = SQLiteStore(database)
    await store.open()
    try:
        assert await store.move_target("telegram", OLD, NEW, now=0)
    finally:
        await store.close()
    before = database.read_bytes()
    assert await asyncio.to_thread(main, ["check", "-c", str(config)]) == 0
    err = capsys.readouterr().err
    # One for the move (another says Telegram is off: this config has no [telegram]).
    assert (
        len(
            [line for line in err.splitlines() if line.startswith("warning: ") and "moved" in line]
        )
        == 1
    )
    assert f"bot.toml names telegram chat {OLD}; it moved to {NEW}" in err
    assert database.read_bytes() == before, "check only reads the database"
