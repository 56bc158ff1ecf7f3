"""Which Discord shards each bot process runs (bot/sinks/discord/shards.py, issue 20):
claimed through the database's roles, each shard by exactly one process, up to a share
each, moving on when a process joins, dies or loses the database."""

from __future__ import annotations

from typing import Any

import pytest

from bot.commands import Commands
from bot.errors import StoreUnavailable
from bot.registry import message_formats
from bot.render import Renderer
from bot.sinks.discord.config import DiscordConfig, read_config
from bot.sinks.discord.shards import ShardClaims, describe, shard_role
from bot.sinks.discord.sink import DiscordSink
from bot.store import Store
from bot.store.postgres import PostgresStore
from tests.fakes.discord_api import (
    FakeDiscord,
    guild_channel_id,
    no_identify_delay,
    point_discord_at,
    sharded_guilds,
)

TOKEN = "fake-discord-token"


class Roles:
    """Roles as the database keeps them: one holder each; a process's go when it dies."""

    def __init__(self) -> None:
        self.holders: dict[str, str] = {}
        self.down = False

    def of(self, process: str) -> ShardClaims:
        async def hold(role: str) -> bool:
            if self.down:
                raise StoreUnavailable("database unavailable")
            return self.holders.setdefault(role, process) == process

        async def release(role: str) -> None:
            if self.holders.get(role) == process:
                del self.holders[role]

        return ShardClaims(4, holds_role=hold, releases_role=release)

    def die(self, process: str) -> None:
        self.holders = {role: p for role, p in self.holders.items() if p != process}


async def test_each_shard_is_run_once_and_moves_as_processes_come_and_go() -> None:
    roles = Roles()
    a, b, c = roles.of("a"), roles.of("b"), roles.of("c")
    assert await a.review(1) == {0, 1, 2, 3}  # alone: every shard
    assert await b.review(2) == set()  # all taken
    # A learns there are two: it keeps its lowest two, and lets the others go only once
    # its client no longer runs them.
    assert await a.review(2) == {0, 1}
    assert await b.review(2) == set()
    await a.release_extras()
    assert await b.review(2) == {2, 3}
    assert await c.review(3) == set()  # three processes, four shards: shares of 2
    roles.die("a")  # SIGKILL: PostgreSQL frees its locks at once
    assert await c.review(3) == {0, 1}
    assert await b.review(3) == {2, 3}
    assert sorted(roles.holders) == [shard_role(n, 4) for n in range(4)]


async def test_a_database_that_cannot_answer_runs_no_shard_rather_than_a_doubtful_one() -> None:
    roles = Roles()
    a = roles.of("a")
    assert await a.review(1) == {0, 1, 2, 3}
    roles.down = True
    assert await a.review(1) == set()
    roles.down = False
    assert await a.review(1) == {0, 1, 2, 3}
    await a.release_all()
    assert roles.holders == {}


async def test_two_stores_on_postgresql_split_the_shards(postgres_url: str) -> None:
    one = PostgresStore(postgres_url, owner="host-a:1:aaaa")
    two = PostgresStore(postgres_url, owner="host-b:2:bbbb")
    await one.open()
    await two.open()
    try:
        a = ShardClaims(3, holds_role=one.hold_role, releases_role=one.release_role)
        b = ShardClaims(3, holds_role=two.hold_role, releases_role=two.release_role)
        assert await a.review(1) == {0, 1, 2}
        assert await a.review(2) == {0, 1}
        await a.release_extras()
        assert await b.review(2) == {2}
        await one.close()  # the process is gone: its shards are free
        assert await b.review(2) == {0, 2}  # its share of 2 (the dead one still counted)
        assert await b.review(1) == {0, 1, 2}  # once it is not
    finally:
        await one.close()
        await two.close()


def test_shard_count_is_a_number_or_auto_named_by_key() -> None:
    class Table:
        def __init__(self, data: dict[str, object]) -> None:
            self.data = data
            self.problems: list[str] = []

        def has(self, key: str) -> bool:
            return key in self.data

        def problem(self, key: str, message: str) -> None:
            self.problems.append(f"discord.{key}: {message}")

        def url(self, key: str, schemes: tuple[str, ...]) -> None:
            return None

        def items(self, key: str) -> None:
            return None

        def chat_token(self, environ: object) -> tuple[str, None]:
            return "token", None

    assert read_config(Table({}), {}).shard_count is None  # type: ignore[arg-type]
    assert read_config(Table({"shard_count": 8}), {}).shard_count == 8  # type: ignore[arg-type]
    assert read_config(Table({"shard_count": "auto"}), {}).shard_count == "auto"  # type: ignore[arg-type]
    for wrong, shown in ((0, "0"), ("many", "'many'"), (True, "boolean"), (5000, "5000")):
        table = Table({"shard_count": wrong})
        read_config(table, {})  # type: ignore[arg-type]
        assert table.problems == [
            f'discord.shard_count: expected a number of shards (1-4096) or "auto", got {shown}'
        ], table.problems


@pytest.mark.parametrize(
    ("shards", "said"),
    [(frozenset(), "none of the 4 shards"), ({1}, "shard 1 of 4"), ({0, 2}, "shards 0, 2 of 4")],
)
def test_the_log_says_which_shards(shards: frozenset[int], said: str) -> None:
    assert describe(frozenset(shards), 4) == said


# -- two Discord sinks, as two processes, against the sharded gateway fake ------------------


def sharded_sink(roles: Roles, process: str, store: Store, shards: int) -> DiscordSink:
    claims = roles.of(process)  # only for its hold/release callables
    config = DiscordConfig(token=TOKEN, shard_count=shards, disabled_reason=None)
    return DiscordSink(
        config=config,
        renderer=Renderer(formats=message_formats()),
        commands=Commands(store=store, routes=()),
        client_options={"guild_ready_timeout": 0.1},
        before_identify_hook=no_identify_delay,
        ready_timeout=10.0,
        holds_role=claims._holds_role,
        releases_role=claims._releases_role,
        shard_check_interval=0.2,
    )


async def each_server_is_answered(fake: FakeDiscord, guilds: list[dict[str, Any]]) -> None:
    """Each server's /help reaches the one process running its shard, answered once (a
    second answer would be Discord's 40060)."""
    for guild in guilds:
        answered = await fake.invoke_command(
            "help", channel_id=guild_channel_id(guild, "general"), guild_id=int(guild["id"])
        )
        assert answered.response_type in (4, 5)


async def test_two_processes_run_one_shard_each_and_a_survivor_takes_both(store: Store) -> None:
    guilds = sharded_guilds(2, 2)
    async with FakeDiscord(guilds=guilds, token=TOKEN) as fake:
        with point_discord_at(fake):
            roles = Roles()
            a = sharded_sink(roles, "a", store, 2)
            b = sharded_sink(roles, "b", store, 2)
            for sink in (a, b):
                sink.share_limits(2)  # each counts the other: a share of one shard
            try:
                await a.start()
                await b.start()
                await fake.wait_for_shards([(0, 2), (1, 2)], timeout=10)
                assert a.shards is not None and b.shards is not None
                assert {a.shards[0], b.shards[0]} == {frozenset({0}), frozenset({1})}
                await each_server_is_answered(fake, guilds)
                await a.stop()  # its shard is given up as its session closes
                b.share_limits(1)
                await fake.wait_for_shards([(0, 2), (1, 2)], timeout=15)
                assert b.shards == (frozenset({0, 1}), 2)
                await each_server_is_answered(fake, guilds)
                assert b.state == "running"
            finally:
                await a.stop()
                await b.stop()
