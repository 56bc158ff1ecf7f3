"""The Discord fake's sharding, driven by the real discord.py: each gateway session gets the
guilds of its shard only, as Discord routes them ("Sharding", Discord's gateway docs)."""

from __future__ import annotations

import asyncio
import json
import warnings
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from tests.fakes.discord_api import (
    GENERAL_CHANNEL_ID,
    GUILD_ID,
    GUILDS_INTENT,
    MEMBER_USER_ID,
    STREAMS_CHANNEL_ID,
    TOKEN,
    FakeDiscord,
    assert_no_heartbeat_threads,
    default_guild,
    fast_client_options,
    guild_channel_id,
    running_client,
    shard_of,
    sharded_guilds,
)

with warnings.catch_warnings():
    # discord.py imports audioop (deprecated since 3.11); filterwarnings=error would fail.
    warnings.filterwarnings("ignore", "'audioop' is deprecated", DeprecationWarning)
    import discord
    from discord import app_commands


@pytest.fixture(autouse=True)
async def no_leftovers() -> AsyncIterator[None]:
    """Each test leaves no pending tasks and no gateway heartbeat threads behind."""
    yield
    await asyncio.sleep(0)
    current = asyncio.current_task()
    leftover = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    assert leftover == []
    assert_no_heartbeat_threads()


FOUR_GUILDS = sharded_guilds(4, 2)  # guilds 0 and 2 on shard 0, 1 and 3 on shard 1
ON_SHARD_0 = {int(g["id"]) for g in FOUR_GUILDS[0::2]}
ON_SHARD_1 = {int(g["id"]) for g in FOUR_GUILDS[1::2]}


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    """A started fake with four guilds, two on each of two shards."""
    async with FakeDiscord(guilds=FOUR_GUILDS, heartbeat_interval=100) as server:
        yield server
        assert server.errors == []
        assert [(r.method, r.path) for r in server.unhandled] == []


def sharded(*shard_ids: int, shard_count: int = 2) -> discord.AutoShardedClient:
    """An AutoShardedClient running `shard_ids` of `shard_count`, with the fast options."""
    return discord.AutoShardedClient(
        shard_count=shard_count, shard_ids=list(shard_ids), **fast_client_options()
    )


def streams_of(index: int) -> int:
    return guild_channel_id(FOUR_GUILDS[index], "streams")


def record_messages(client: discord.Client) -> list[tuple[int | None, str]]:
    """(guild id, content) of every MESSAGE_CREATE the client gets, in order."""
    seen: list[tuple[int | None, str]] = []

    @client.event
    async def on_message(message: discord.Message) -> None:
        seen.append((message.guild.id if message.guild else None, message.content))

    return seen


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


# --------------------------------------------------------------------------- the helpers


def test_sharded_guilds_land_on_their_shards_with_ids_of_their_own() -> None:
    guilds = sharded_guilds(5, 3)
    assert [shard_of(int(g["id"]), 3) for g in guilds] == [0, 1, 2, 0, 1]
    # discord.py's own formula (Guild.shard_id) agrees.
    assert [(int(g["id"]) >> 22) % 3 for g in guilds] == [0, 1, 2, 0, 1]
    picked = sharded_guilds(3, 4, shard_ids=[3, 3, 1])
    assert [shard_of(int(g["id"]), 4) for g in picked] == [3, 3, 1]

    def ids(guild: dict[str, Any]) -> set[int]:
        own = [*guild["channels"], *guild["threads"], *guild["roles"]]
        return {int(guild["id"]), *(int(x["id"]) for x in own)}

    default = ids(default_guild())
    seen: set[int] = set()
    for guild in guilds:
        mine = ids(guild)
        assert len(mine) == len(default)
        assert not mine & seen and not mine & default
        seen |= mine
        # The same shape: its streams channel is where default_guild()'s is, and its
        # @everyone overwrite names its own guild.
        streams = guild_channel_id(guild, "streams")
        assert streams - int(guild["id"]) == STREAMS_CHANNEL_ID - GUILD_ID
        readonly = next(c for c in guild["channels"] if c["name"] == "readonly")
        assert readonly["permission_overwrites"][0]["id"] == guild["id"]
    assert sharded_guilds(5, 3) == guilds  # the same ids on every call
    with pytest.raises(ValueError):
        sharded_guilds(2, 2, shard_ids=[0, 2])
    with pytest.raises(ValueError):
        shard_of(GUILD_ID, 0)


# --------------------------------------------------------------------------- the protocol


async def identify(
    fake: FakeDiscord, **extra: Any
) -> tuple[aiohttp.ClientSession, aiohttp.ClientWebSocketResponse]:
    """Open a raw gateway socket and IDENTIFY with `extra` added to the payload."""
    http = aiohttp.ClientSession()
    ws = await http.ws_connect(fake.gateway_url + "?v=10&encoding=json")
    hello = await ws.receive_json()
    assert hello["op"] == 10
    payload = {"token": TOKEN, "intents": 513, "properties": {"os": "linux"}, **extra}
    await ws.send_json({"op": 2, "d": payload})
    return http, ws


async def dispatches(ws: aiohttp.ClientWebSocketResponse, count: int) -> list[dict[str, Any]]:
    frames = []
    for _ in range(count):
        frame = json.loads((await ws.receive(timeout=5)).data)
        assert frame["op"] == 0
        frames.append(frame)
    return frames


@pytest.mark.parametrize(
    "shard",
    [[2, 2], [0, 0], [-1, 2], [1], [0, 1, 2], [0, "2"], [True, 2], [0.0, 1], None, "0,1"],
)
async def test_an_invalid_shard_closes_the_socket_with_4010(
    fake: FakeDiscord, shard: object
) -> None:
    http, ws = await identify(fake, shard=shard)
    try:
        msg = await ws.receive(timeout=5)
        assert msg.type is aiohttp.WSMsgType.CLOSE
        assert (msg.data, msg.extra) == (4010, "Invalid shard.")
    finally:
        await ws.close()
        await http.close()
    assert fake.shards_connected() == []


async def test_ready_lists_only_the_shards_guilds_and_echoes_the_shard(
    fake: FakeDiscord,
) -> None:
    http, ws = await identify(fake, shard=[1, 2])
    plain_http, plain = await identify(fake)
    try:
        ready, *creates = await dispatches(ws, 3)
        assert ready["t"] == "READY"
        assert ready["d"]["shard"] == [1, 2]
        assert {int(g["id"]) for g in ready["d"]["guilds"]} == ON_SHARD_1
        assert [c["t"] for c in creates] == ["GUILD_CREATE"] * 2
        assert {int(c["d"]["id"]) for c in creates} == ON_SHARD_1

        plain_ready, *plain_creates = await dispatches(plain, 5)
        assert "shard" not in plain_ready["d"]  # "if sent when identifying"
        assert {int(c["d"]["id"]) for c in plain_creates} == ON_SHARD_0 | ON_SHARD_1
        assert await fake.wait_for_shards([(0, 1), (1, 2)]) == [(0, 1), (1, 2)]

        # A guild's event reaches its shard and the unsharded session; a DM, having no
        # guild, only sessions on shard 0 ("only be sent to the first shard").
        guild1 = FOUR_GUILDS[1]
        channel = dict(guild1["channels"][1], guild_id=guild1["id"])
        assert await fake.dispatch("CHANNEL_UPDATE", channel, intent=GUILDS_INTENT) == 2
        assert await fake.dispatch("TYPING_START", {"channel_id": "1", "user_id": "2"}) == 1
        # GUILD_UPDATE names its guild by ``id``.
        assert await fake.dispatch("GUILD_UPDATE", {"id": guild1["id"]}) == 2
        assert [f["t"] for f in await dispatches(ws, 2)] == ["CHANNEL_UPDATE", "GUILD_UPDATE"]
        events = [f["t"] for f in await dispatches(plain, 3)]
        assert events == ["CHANNEL_UPDATE", "TYPING_START", "GUILD_UPDATE"]
    finally:
        for socket, session in ((ws, http), (plain, plain_http)):
            await socket.close()
            await session.close()
    await fake.wait_for_shards([])


async def test_member_chunks_answer_only_the_session_that_asked(fake: FakeDiscord) -> None:
    http, ws = await identify(fake, shard=[1, 2])
    other_http, other = await identify(fake, shard=[1, 2])
    try:
        await dispatches(ws, 3)
        await dispatches(other, 3)
        guild0, guild1 = FOUR_GUILDS[0]["id"], FOUR_GUILDS[1]["id"]
        for guild_id, nonce in ((guild0, "not-my-shard"), (guild1, "mine")):
            request = {"guild_id": guild_id, "query": "", "limit": 0, "nonce": nonce}
            await ws.send_json({"op": 8, "d": request})
        (chunk,) = await dispatches(ws, 1)
        assert (chunk["t"], chunk["d"]["nonce"]) == ("GUILD_MEMBERS_CHUNK", "mine")
        assert chunk["d"]["guild_id"] == guild1
        # The other session of the shard got no chunk: the next thing it gets is this.
        assert await fake.dispatch("GUILD_UPDATE", {"id": guild1}) == 2
        assert [f["t"] for f in await dispatches(other, 1)] == ["GUILD_UPDATE"]
    finally:
        for socket, session in ((ws, http), (other, other_http)):
            await socket.close()
            await session.close()


async def test_wait_for_shards_says_what_is_connected(fake: FakeDiscord) -> None:
    http, ws = await identify(fake, shard=[0, 2])
    try:
        await dispatches(ws, 3)
        with pytest.raises(TimeoutError, match=r"connected: \[\(0, 2\)\]"):
            await fake.wait_for_shards([(0, 2), (1, 2)], timeout=0.1)
    finally:
        await ws.close()
        await http.close()


# --------------------------------------------------------------------------- discord.py


async def test_one_client_running_both_shards_sees_every_guild(fake: FakeDiscord) -> None:
    client = sharded(0, 1)
    async with running_client(fake, client):
        assert fake.shards_connected() == [(0, 2), (1, 2)]
        identifies = [f["d"]["shard"] for f in fake.gateway_frames if f["op"] == 2]
        assert sorted(identifies) == [[0, 2], [1, 2]]
        assert {g.id for g in client.guilds} == ON_SHARD_0 | ON_SHARD_1
        for index, guild in enumerate(FOUR_GUILDS):
            seen = client.get_guild(int(guild["id"]))
            assert seen is not None
            assert seen.shard_id == shard_of(seen.id, 2) == index % 2
        # Sending needs no shard: REST reaches every guild's channel.
        for index in range(4):
            channel = client.get_channel(streams_of(index))
            assert isinstance(channel, discord.TextChannel)
            await channel.send(f"live in guild {index}")
        for index in range(4):
            await fake.wait_for_message(streams_of(index))


async def test_two_processes_each_get_only_their_shards_guilds(fake: FakeDiscord) -> None:
    first, second = sharded(0), sharded(1)
    seen_first, seen_second = record_messages(first), record_messages(second)
    async with running_client(fake, first):
        await fake.wait_for_shards([(0, 2)])
        async with running_client(fake, second):
            assert fake.shards_connected() == [(0, 2), (1, 2)]
            assert {g.id for g in first.guilds} == ON_SHARD_0
            assert {g.id for g in second.guilds} == ON_SHARD_1
            assert first.get_guild(int(FOUR_GUILDS[1]["id"])) is None

            # Each message is dispatched before its send returns, so one that went to
            # the wrong process would reach it before that process's own next one.
            for index in range(4):
                client = first if index % 2 == 0 else second
                channel = client.get_channel(streams_of(index))
                assert isinstance(channel, discord.TextChannel)
                await channel.send(f"m{index}")
            await until(lambda: len(seen_first) >= 2 and len(seen_second) >= 2)
            guild = [int(g["id"]) for g in FOUR_GUILDS]
            assert seen_first == [(guild[0], "m0"), (guild[2], "m2")]
            assert seen_second == [(guild[1], "m1"), (guild[3], "m3")]

            # A DM (no guild_id) goes to shard 0 only.
            dm: dict[str, Any] = {
                "id": "1300000000000000001",
                "channel_id": "1300000000000000002",
                "author": {
                    "id": str(MEMBER_USER_ID),
                    "username": "member",
                    "discriminator": "0",
                    "global_name": "Member",
                    "avatar": None,
                    "public_flags": 0,
                },
                "content": "hello bot",
                "timestamp": "2024-01-01T00:00:00.000000+00:00",
                "edited_timestamp": None,
                "tts": False,
                "mention_everyone": False,
                "mentions": [],
                "mention_roles": [],
                "attachments": [],
                "embeds": [],
                "pinned": False,
                "type": 0,
            }
            assert await fake.dispatch("MESSAGE_CREATE", dm) == 1
            await until(lambda: len(seen_first) == 3)
            assert seen_first[-1] == (None, "hello bot")
            channel = second.get_channel(streams_of(3))
            assert isinstance(channel, discord.TextChannel)
            await channel.send("m3 again")
            await until(lambda: len(seen_second) == 3)
            assert seen_second[-1] == (guild[3], "m3 again")
        await fake.wait_for_shards([(0, 2)])
    await fake.wait_for_shards([])


def answering_tree(
    client: discord.Client,
    name: str,
    calls: list[int | None],
    outcomes: list[int | None] | None = None,
) -> app_commands.CommandTree[discord.Client]:
    """A /where command answering `name`. It records the interaction's guild as it
    starts (in the order the socket brought them) and then the answer's error code or
    None."""
    tree = app_commands.CommandTree(client)

    @tree.command(description="Which process answers")
    async def where(interaction: discord.Interaction) -> None:
        calls.append(interaction.guild_id)
        try:
            await interaction.response.send_message(name)
        except discord.HTTPException as exc:
            code: int | None = exc.code
        else:
            code = None
        if outcomes is not None:
            outcomes.append(code)

    return tree


async def test_an_interaction_reaches_only_the_process_running_its_shard(
    fake: FakeDiscord,
) -> None:
    first, second = sharded(0), sharded(1)
    calls_first: list[int | None] = []
    calls_second: list[int | None] = []
    trees = [answering_tree(first, "first", calls_first)]
    trees.append(answering_tree(second, "second", calls_second))
    guild = [int(g["id"]) for g in FOUR_GUILDS]
    async with running_client(fake, first), running_client(fake, second):
        for tree in trees:
            await tree.sync()
        await fake.wait_for_shards([(0, 2), (1, 2)])
        result = await fake.invoke_command(
            "where", channel_id=streams_of(1), guild_id=guild[1], user_id=MEMBER_USER_ID
        )
        assert result.content == "second"
        # The first process's socket would have carried that one before this one.
        result = await fake.invoke_command("where", channel_id=streams_of(2), guild_id=guild[2])
        assert result.content == "first"
        assert calls_first == [guild[2]]
        assert calls_second == [guild[1]]
    # Nobody runs shard 1 now: Discord has no one to send the interaction to.
    async with running_client(fake, sharded(0)):
        with pytest.raises(RuntimeError, match="runs the shard of guild"):
            await fake.invoke_command("where", channel_id=streams_of(3), guild_id=guild[3])


async def test_two_sessions_on_one_shard_both_get_the_interaction_one_answer_wins() -> None:
    """Discord delivers to every session of the shard; the second answer is refused, as
    for a bot run twice ("Interaction has already been acknowledged", 40060)."""
    calls: list[int | None] = []
    outcomes: list[int | None] = []
    clients = [discord.Client(**fast_client_options()) for _ in range(2)]
    trees = [answering_tree(c, f"process {i}", calls, outcomes) for i, c in enumerate(clients)]
    async with (
        FakeDiscord() as fake,
        running_client(fake, clients[0]),
        running_client(fake, clients[1]),
    ):
        await trees[0].sync()
        assert fake.shards_connected() == [(0, 1), (0, 1)]
        result = await fake.invoke_command("where", channel_id=GENERAL_CHANNEL_ID)
        await until(lambda: len(outcomes) == 2)
        assert calls == [GUILD_ID, GUILD_ID]
        assert sorted(outcomes, key=str) == [40060, None]
        assert result.content in ("process 0", "process 1")
        assert fake.messages[GENERAL_CHANNEL_ID] == [result.message]


async def test_an_invalid_shard_is_connection_closed_4010(fake: FakeDiscord) -> None:
    with pytest.raises(discord.ConnectionClosed) as closed:
        async with running_client(fake, sharded(2, shard_count=2)):
            pass
    assert (closed.value.code, closed.value.shard_id) == (4010, 2)
    assert fake.shards_connected() == []


async def test_too_many_guilds_for_one_session_is_4011_until_the_bot_shards() -> None:
    async with FakeDiscord(guilds=FOUR_GUILDS, max_guilds_per_shard=2) as fake:
        with pytest.raises(discord.ConnectionClosed) as closed:
            async with running_client(fake, discord.Client(**fast_client_options())):
                pass
        assert closed.value.code == 4011
        assert fake.shards_connected() == []
        async with running_client(fake, sharded(0, 1)) as client:
            assert fake.shards_connected() == [(0, 2), (1, 2)]
            assert len(client.guilds) == 4
    async with FakeDiscord(guilds=sharded_guilds(3, 2), max_guilds_per_shard=1) as fake:
        # Shard 0 has guilds 0 and 2: one too many; shard 1's one is fine.
        with pytest.raises(discord.ConnectionClosed) as closed:
            async with running_client(fake, sharded(1, 0)):
                pass
        assert (closed.value.code, closed.value.shard_id) == (4011, 0)
        # discord.py's close leaves shard 1's wait for its guilds (guild_ready_timeout,
        # 0.1 s) running; let it end before no_leftovers looks.
        await asyncio.sleep(0.3)


async def test_gateway_bot_recommends_shards_and_counts_session_starts() -> None:
    guilds = sharded_guilds(3, 3)
    async with FakeDiscord(guilds=guilds, recommended_shards=3, max_concurrency=4) as fake:
        async with aiohttp.ClientSession() as http:
            headers = {"Authorization": f"Bot {TOKEN}"}
            async with http.get(fake.api_url + "/gateway/bot", headers=headers) as resp:
                body = await resp.json()
        assert body == {
            "url": fake.gateway_url,
            "shards": 3,
            "session_start_limit": {
                "total": 1000,
                "remaining": 1000,
                "reset_after": 0,
                "max_concurrency": 4,
            },
        }
        # Without a shard_count, AutoShardedClient runs what Discord recommends.
        client = discord.AutoShardedClient(**fast_client_options())
        async with running_client(fake, client):
            assert fake.shards_connected() == [(0, 3), (1, 3), (2, 3)]
            assert client.shard_count == 3
            assert {g.id: g.shard_id for g in client.guilds} == {
                int(g["id"]): i for i, g in enumerate(guilds)
            }
            limits = await client.fetch_session_start_limits()
            assert (limits.total, limits.remaining, limits.max_concurrency) == (1000, 997, 4)
            assert 0 < limits.reset_after <= 24 * 3600 * 1000


async def test_a_resumed_session_keeps_its_shard(fake: FakeDiscord) -> None:
    client = sharded(0, 1)
    async with running_client(fake, client):
        resumed = [
            asyncio.ensure_future(
                client.wait_for("shard_resumed", check=lambda s, i=i: s == i, timeout=5)
            )
            for i in (0, 1)
        ]
        await fake.drop_connections()
        await asyncio.gather(*resumed)
        await fake.wait_for_shards([(0, 2), (1, 2)])
        assert [f["op"] for f in fake.gateway_frames].count(6) == 2
        assert [f["op"] for f in fake.gateway_frames].count(2) == 2  # no new IDENTIFY
        # Still routed by shard: one socket, shard 1's, gets guild 1's update.
        guild1 = FOUR_GUILDS[1]
        channel = dict(guild1["channels"][1], guild_id=guild1["id"], topic="after resume")
        updated = asyncio.ensure_future(client.wait_for("guild_channel_update", timeout=5))
        assert await fake.dispatch("CHANNEL_UPDATE", channel, intent=GUILDS_INTENT) == 1
        _, after = await updated
        assert isinstance(after, discord.TextChannel)
        assert after.topic == "after resume"
