"""A Telegram group's 20 messages a minute count every bot process's messages: a
process that restarts, or joins the others, must not send into a minute the others (or
its last run) have filled already, and a busy group gets its whole minute however many
processes there are. The real sink and outbox worker against the fake Bot API, which
answers 429 past the group's limit as Telegram does.

The limit is scaled down (6 in 1.5 s) so a window passes within a test.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.commands import Commands
from bot.events import Event, LiveInfo, utcnow
from bot.outbox import OutboxWorker
from bot.registry import message_formats
from bot.render import Renderer
from bot.sinks.telegram.config import TelegramConfig
from bot.sinks.telegram.sink import TelegramSink
from bot.store import Store
from bot.store.postgres import PostgresStore
from bot.store.sqlite import SQLiteStore
from tests.fakes.telegram_api import FakeTelegram

GROUP = -100777
OTHER = -100555
LIMIT, PERIOD = 6, 1.5


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram(group_send_limit=(LIMIT, PERIOD)) as tg:
        tg.add_chat(GROUP, "supergroup", title="Streams")
        tg.add_chat(OTHER, "supergroup", title="Friends")
        yield tg


def a_sink(fake: FakeTelegram, store: Store, period: float = PERIOD) -> TelegramSink:
    """One process's sink: its limiter knows only what this process sent."""
    return TelegramSink(
        config=TelegramConfig(token=fake.token, api_url=fake.api_url, disabled_reason=None),
        renderer=Renderer(formats=message_formats()),
        commands=Commands(store=store, routes=[]),
        poll_timeout=1.0,
        group_limit=LIMIT,
        group_period=period,
    )


async def queue(store: Store, chat: int, names: list[str]) -> None:
    now = time.time()
    for name in names:
        event = Event(
            source="rec",
            event_id=name,
            kind="live_start",
            occurred_at=utcnow(),
            received_at=utcnow(),
            platform="twitch",
            channel=name,
            display_name=name,
            live=LiveInfo(title=f"{name} is live"),
        )
        async with store.transaction():
            row = await store.insert_event(event, notified=True)
            assert row is not None
            await store.add_delivery(
                event_row=row, sink="telegram", target=str(chat), not_before=now, now=now
            )


async def send_all(store: Store, sink: TelegramSink, *, processes: int = 1) -> None:
    """Run one process's outbox worker until nothing is left to send (or 20 s)."""
    worker = OutboxWorker(store=store, sink=sink)
    worker.share(processes)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        async with asyncio.timeout(20):
            while {"pending", "sending"} & set((await store.outbox_counts()).by_state):
                await asyncio.sleep(0.02)
    finally:
        stop.set()
        await task


async def both_alive(stores: list[PostgresStore], sinks: list[TelegramSink]) -> None:
    """Two processes on one database, each having counted the other (its heartbeat)
    and taken its share of the limits, as the running bot does."""
    await stores[1].heartbeat(now=time.time())
    for store, sink in zip(stores, sinks, strict=True):
        processes = await store.heartbeat(now=time.time())
        assert processes == 2
        sink.share_limits(processes, store.rank)


def texts(fake: FakeTelegram, chat: int) -> list[str]:
    """Whose notices a chat got, in order."""
    messages = fake.messages.get(str(chat), [])
    return [re.findall(r"\b(?:first|then|other)\d*\b", m["text"])[0] for m in messages]


def refused(fake: FakeTelegram) -> list[str]:
    return [call.description for call in fake.calls if call.status == 429]


async def test_a_restarted_bot_waits_out_the_minute_its_last_run_filled(
    fake: FakeTelegram, tmp_path: Path
) -> None:
    path = tmp_path / "state.sqlite3"
    first = [f"first{n}" for n in range(LIMIT)]
    then = [f"then{n}" for n in range(3)]
    store = SQLiteStore(path, owner="the first run")
    await store.open()
    sink = a_sink(fake, store)
    await sink.start()
    try:
        await queue(store, GROUP, first)
        await send_all(store, sink)  # the group's whole minute
    finally:
        await sink.stop()
        await store.close()

    store = SQLiteStore(path, owner="the run after a restart")
    await store.open()
    sink = a_sink(fake, store)
    await sink.start()
    try:
        await queue(store, GROUP, then)
        await queue(store, OTHER, ["other"])
        await send_all(store, sink)
    finally:
        await sink.stop()
        await store.close()
    assert refused(fake) == [], "the new run sent into the minute the last one filled"
    assert texts(fake, GROUP) == first + then
    assert texts(fake, OTHER) == ["other"]


async def test_a_process_that_joins_waits_for_what_the_others_sent_in_the_minute(
    fake: FakeTelegram, postgres_url: str
) -> None:
    first = [f"first{n}" for n in range(LIMIT)]
    then = [f"then{n}" for n in range(LIMIT // 2)]
    alone = PostgresStore(postgres_url, owner="the process alone at first")
    joining = PostgresStore(postgres_url, owner="the process that joins")
    await alone.open()
    await joining.open()
    sinks = [a_sink(fake, alone), a_sink(fake, joining)]
    try:
        for sink in sinks:
            await sink.start()
        await alone.heartbeat(now=time.time())
        await queue(alone, GROUP, first)
        await send_all(alone, sinks[0])  # alone, at the whole limit: the group's minute
        await both_alive([alone, joining], sinks)  # the second process joins
        await queue(alone, GROUP, then)
        await queue(alone, OTHER, ["other"])
        await send_all(joining, sinks[1], processes=2)  # the joiner takes them all
    finally:
        for sink in sinks:
            await sink.stop()
        await joining.close()
        await alone.close()
    assert refused(fake) == [], "the joiner sent into a full minute"
    assert texts(fake, GROUP) == first + then
    assert texts(fake, OTHER) == ["other"]


async def test_a_busy_group_gets_its_whole_limit_from_several_processes(
    postgres_url: str,
) -> None:
    """The group's 20 a minute is not divided among the processes (each would send a
    busy group only its share, with the group's rows claimed by one at a time): the
    one sending there counts every process's messages, so all of the minute is used."""
    period = 30.0  # the group's whole limit must go out well within one window
    async with FakeTelegram(group_send_limit=(LIMIT, period)) as fake:
        fake.add_chat(GROUP, "supergroup", title="Streams")
        stores = [PostgresStore(postgres_url, owner=f"process {n}") for n in range(2)]
        for store in stores:
            await store.open()
        sinks = [a_sink(fake, store, period) for store in stores]
        try:
            for sink in sinks:
                await sink.start()
            await both_alive(stores, sinks)
            names = [f"then{n}" for n in range(LIMIT)]
            await queue(stores[0], GROUP, names)
            workers = [OutboxWorker(store=s, sink=k) for s, k in zip(stores, sinks, strict=True)]
            for worker in workers:
                worker.share(2)
            stop = asyncio.Event()
            tasks = [asyncio.create_task(worker.run(stop)) for worker in workers]
            try:
                async with asyncio.timeout(10):  # a third of the window
                    while len(fake.messages.get(str(GROUP), [])) < LIMIT:
                        await asyncio.sleep(0.02)
            finally:
                stop.set()
                await asyncio.gather(*tasks)
        finally:
            for sink in sinks:
                await sink.stop()
            for store in stores:
                await store.close()
        assert refused(fake) == []
        assert texts(fake, GROUP) == names
