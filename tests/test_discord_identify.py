"""Gateway IDENTIFYs in turn across the bot's processes (bot/sinks/discord/identify.py,
issue 20): Discord answers an IDENTIFY within 5 s of its bucket's last one with Opcode 9
Invalid Session, whichever process sent them, so the processes book their turns in the
database they share. Real discord.py against the gateway fake with Discord's spacing on."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Sequence

import pytest

from bot.commands import Commands
from bot.errors import StoreUnavailable
from bot.registry import message_formats
from bot.render import Renderer
from bot.sinks.base import TakesTurn
from bot.sinks.discord.config import DiscordConfig
from bot.sinks.discord.identify import IDENTIFY_SPACING, IdentifyTurns
from bot.sinks.discord.sink import DiscordSink
from bot.store import Store
from bot.store.postgres import PostgresStore
from tests.fakes.discord_api import FakeDiscord, point_discord_at, sharded_guilds

TOKEN = "fake-discord-token"
SHARDS = 2
#: Discord's: "the number of identify requests allowed per 5 seconds".
DISCORD_SPACING = 5.0


def sink_of(
    holders: dict[str, str], process: str, store: Store, takes_turn: TakesTurn | None
) -> DiscordSink:
    """One process's sink: its shard roles in `holders` (the database's, in memory)."""

    async def hold(role: str) -> bool:
        return holders.setdefault(role, process) == process

    async def release(role: str) -> None:
        if holders.get(role) == process:
            del holders[role]

    sink = DiscordSink(
        config=DiscordConfig(token=TOKEN, shard_count=SHARDS, disabled_reason=None),
        renderer=Renderer(formats=message_formats()),
        commands=Commands(store=store, routes=()),
        client_options={"guild_ready_timeout": 0.1},
        ready_timeout=30.0,
        holds_role=hold,
        releases_role=release,
        shard_check_interval=0.2,
        takes_turn=takes_turn,
    )
    sink.share_limits(SHARDS)  # each counts the other: one shard each
    return sink


@contextlib.asynccontextmanager
async def started_together(sinks: Sequence[DiscordSink]) -> AsyncIterator[None]:
    try:
        await asyncio.gather(*(sink.start() for sink in sinks))
        yield
    finally:
        for sink in sinks:
            await sink.stop()


def accepted_gaps(fake: FakeDiscord) -> list[float]:
    times = [at for at, _shard, accepted in fake.identifies if accepted]
    return [later - earlier for earlier, later in itertools.pairwise(times)]


async def test_processes_starting_together_identify_in_turn_through_postgresql(
    postgres_url: str, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot.sinks.discord")
    guilds = sharded_guilds(2, SHARDS)
    # Two processes: two stores on one database, as two `python -m bot run` have.
    databases = [PostgresStore(postgres_url), PostgresStore(postgres_url)]
    async with contextlib.AsyncExitStack() as stack:
        for database in databases:
            await database.open()
            stack.push_async_callback(database.close)
        fake = await stack.enter_async_context(
            FakeDiscord(guilds=guilds, token=TOKEN, identify_spacing=DISCORD_SPACING)
        )
        stack.enter_context(point_discord_at(fake))
        holders: dict[str, str] = {}
        sinks = [
            sink_of(holders, f"p{n}", store, database.take_turn)
            for n, database in enumerate(databases)
        ]
        async with started_together(sinks):
            await fake.wait_for_shards([(0, SHARDS), (1, SHARDS)], timeout=30)
            assert {sink.shards for sink in sinks} == {
                (frozenset({0}), SHARDS),
                (frozenset({1}), SHARDS),
            }
            assert all(sink.state == "running" for sink in sinks)
        # Both IDENTIFYs taken the first time, 5 s or more apart: no Invalid Session, no
        # reconnect, no session start spent twice.
        assert [accepted for _at, _shard, accepted in fake.identifies] == [True, True]
        [gap] = accepted_gaps(fake)
        assert gap >= DISCORD_SPACING
    waited = [
        r.getMessage()
        for r in caplog.records
        if "waits for its turn to identify" in r.getMessage()
    ]
    assert len(waited) == 1, waited


async def test_without_turns_the_gateway_refuses_one_of_two_starting_together(
    store: Store,
) -> None:
    """What the turns prevent, so that the fake is known to refuse it: discord.py alone
    lets each process's first IDENTIFY go at once; the later one gets Opcode 9, and its
    shard comes up only after discord.py's 5 s wait and a second IDENTIFY."""
    guilds = sharded_guilds(2, SHARDS)
    async with FakeDiscord(guilds=guilds, token=TOKEN, identify_spacing=DISCORD_SPACING) as fake:
        with point_discord_at(fake):
            holders: dict[str, str] = {}
            sinks = [sink_of(holders, f"p{n}", store, None) for n in range(2)]
            async with started_together(sinks):
                await fake.wait_for_shards([(0, SHARDS), (1, SHARDS)], timeout=30)
    assert [accepted for _at, _shard, accepted in fake.identifies] == [True, False, True]
    assert all(gap >= DISCORD_SPACING for gap in accepted_gaps(fake))


async def test_a_restart_identifies_after_its_previous_run_on_sqlite(
    store: Store,
) -> None:
    """One process on SQLite, stopped and started again at once (a crash loop under a
    supervisor): the second run's IDENTIFY waits for the turn after the first's."""
    guilds = sharded_guilds(1, 1)
    config = DiscordConfig(token=TOKEN, shard_count=1, disabled_reason=None)
    async with FakeDiscord(guilds=guilds, token=TOKEN, identify_spacing=DISCORD_SPACING) as fake:
        with point_discord_at(fake):
            for _run in range(2):
                sink = DiscordSink(
                    config=config,
                    renderer=Renderer(formats=message_formats()),
                    commands=Commands(store=store, routes=()),
                    client_options={"guild_ready_timeout": 0.1},
                    ready_timeout=30.0,
                    takes_turn=store.take_turn,
                )
                try:
                    await sink.start()
                    assert sink.state == "running"
                finally:
                    await sink.stop()
    assert [accepted for _at, _shard, accepted in fake.identifies] == [True, True]
    assert accepted_gaps(fake)[0] >= DISCORD_SPACING


# -- the hook on its own ---------------------------------------------------------------------


async def test_each_bucket_has_its_own_turns_and_an_unreachable_database_means_waiting(
    caplog: pytest.LogCaptureFixture,
) -> None:
    booked: list[tuple[str, float]] = []
    down = False

    async def take_turn(name: str, spacing: float) -> float:
        if down:
            raise StoreUnavailable("database unavailable: connection refused")
        booked.append((name, spacing))
        return 0.0

    turns = IdentifyTurns(take_turn, spacing=0.05)
    turns.max_concurrency = 2  # GET /gateway/bot's, for a large bot
    for shard in (0, 1, 2, 3):
        await turns(shard, initial=shard == 0)
    await turns(None)  # an unsharded client: shard 0's bucket
    assert booked == [
        ("discord-identify-0", 0.05),
        ("discord-identify-1", 0.05),
        ("discord-identify-0", 0.05),
        ("discord-identify-1", 0.05),
        ("discord-identify-0", 0.05),
    ]
    # The database cannot be asked: wait the spacing, as one process alone would.
    down = True
    loop = asyncio.get_running_loop()
    began = loop.time()
    await turns(1)
    assert loop.time() - began >= 0.05
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "cannot take shard 1's turn to identify" in warning.getMessage()
    assert IDENTIFY_SPACING > DISCORD_SPACING  # a margin for the way to Discord
