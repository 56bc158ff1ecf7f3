"""Channels this process's gateway cache does not hold (issue 20's shards): a sink that runs
shard 0 only, or no shard at all, sends to a server on shard 1 as it would to one in its
cache, having looked the channel, the server's roles and the bot's member up over REST
(bot/sinks/discord/lookup.py). Real discord.py against the protocol fake."""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from bot.commands import Commands
from bot.config import Route
from bot.errors import PermanentDeliveryError, TransientDeliveryError
from bot.events import NOTIFIED_KINDS, Event, LiveInfo
from bot.outbox import OutboxWorker
from bot.pipeline.dispatch import Dispatcher
from bot.registry import message_formats
from bot.render import Renderer
from bot.sinks.discord.config import DiscordConfig
from bot.sinks.discord.lookup import ChannelLookup
from bot.sinks.discord.shards import shard_role
from bot.sinks.discord.sink import DiscordSink
from bot.store import Delivery, Store
from bot.targets import TargetProblem, TargetProblems
from tests.fakes.discord_api import (
    BOT_ROLE_PERMISSIONS,
    BOT_USER_ID,
    MANAGE_THREADS,
    TOKEN,
    VIEW_CHANNEL,
    FakeDiscord,
    assert_no_heartbeat_threads,
    guild_channel_id,
    no_identify_delay,
    sharded_guilds,
)
from tests.routes import chats
from tests.waiting import outbox_states, run_until

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "'audioop' is deprecated", DeprecationWarning)
    import discord
    import discord.http

SHARDS = 2
URL = "https://twitch.example/quinn"
# Guild 0 on shard 0 (in the cache of a process running it), guild 1 on shard 1 (not).
GUILDS = sharded_guilds(2, SHARDS)
HERE, THERE = GUILDS
#: Which shards the sink runs: shard 0 (a gateway session, but not shard 1's servers), or
#: none (it logged in for REST only: the other processes run every shard).
RUNS = [pytest.param(frozenset({0}), id="shard-0"), pytest.param(frozenset(), id="no-shard")]


@pytest.fixture(autouse=True)
async def no_leftovers() -> AsyncIterator[None]:
    """Each test leaves no pending tasks and no gateway heartbeat threads behind."""
    yield
    await asyncio.sleep(0)
    current = asyncio.current_task()
    assert [t for t in asyncio.all_tasks() if t is not current and not t.done()] == []
    assert_no_heartbeat_threads()


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(guilds=GUILDS, token=TOKEN, heartbeat_interval=200) as server:
        yield server
        assert server.errors == []
        assert [(r.method, r.path) for r in server.unhandled] == []


@asynccontextmanager
async def running(
    fake: FakeDiscord, store: Store, runs: Collection[int], **options: Any
) -> AsyncIterator[DiscordSink]:
    """A sharded sink holding the roles of `runs` (another process holds the others)."""
    held = {shard_role(shard, SHARDS) for shard in runs}

    async def hold(role: str) -> bool:
        return role in held

    async def release(role: str) -> None:
        del role

    sink = DiscordSink(
        config=DiscordConfig(
            token=TOKEN,
            api_url=fake.api_url,
            gateway_url=fake.gateway_url,
            shard_count=SHARDS,
            disabled_reason=None,
        ),
        renderer=Renderer(formats=message_formats()),
        commands=Commands(store=store, routes=()),
        client_options={"guild_ready_timeout": 0.1},
        before_identify_hook=no_identify_delay,
        ready_timeout=10.0,
        holds_role=hold,
        releases_role=release,
        **options,
    )
    await sink.start()
    try:
        assert sink.state == "running"
        assert sink.shards == (frozenset(runs), SHARDS)
        await fake.wait_for_shards([(shard, SHARDS) for shard in runs])
        yield sink
    finally:
        await sink.stop()


def channel(guild: dict[str, Any], name: str) -> int:
    return guild_channel_id(guild, name)


def role(guild: dict[str, Any], name: str) -> int:
    return next(int(r["id"]) for r in guild["roles"] if r["name"] == name)


def live_start(n: int = 1) -> Event:
    now = datetime.now(UTC)
    return Event(
        source="rec",
        event_id=f"start-{n}",
        kind="live_start",
        occurred_at=now - timedelta(minutes=5),
        received_at=now,
        platform="twitch",
        channel="quinn",
        display_name="Quinn",
        url=URL,
        live=LiveInfo(title="Painting a dragon", categories=("Art",)),
    )


def live_end(n: int = 1) -> Event:
    start = live_start()
    return start.with_changes(
        event_id=f"end-{n}",
        kind="live_end",
        started_at=start.occurred_at,
        ended_at=start.occurred_at + timedelta(hours=2, minutes=13),
        occurred_at=start.occurred_at + timedelta(hours=2, minutes=13),
    )


def delivery(n: int, channel_id: int, **options: Any) -> Delivery:
    return Delivery(
        id=n,
        event_row=n,
        sink="discord",
        target=str(channel_id),
        action="post",
        options=options,
        attempts=1,
        created_at=1_773_206_558.25 + n,
        not_before=0.0,
    )


def gets(fake: FakeDiscord, path: str) -> int:
    """How many times the sink asked Discord for `path`."""
    return sum(1 for r in fake.requests if r.method == "GET" and r.path == path)


def lookups(fake: FakeDiscord, guild: dict[str, Any]) -> dict[str, int]:
    """The look-ups made of a server and its channels (and threads, new ones too)."""
    live = fake.guilds[int(guild["id"])]
    paths = [f"/guilds/{guild['id']}", f"/guilds/{guild['id']}/members/{BOT_USER_ID}"]
    paths += [f"/channels/{c['id']}" for c in [*live["channels"], *live["threads"]]]
    return {path: count for path in paths if (count := gets(fake, path))}


def posts(fake: FakeDiscord, channel_id: int) -> int:
    path = f"/channels/{channel_id}/messages"
    return sum(1 for r in fake.requests if r.method == "POST" and r.path == path)


def of(problems: TargetProblems, channel_id: int) -> list[TargetProblem]:
    return [p for p in problems.all() if p.target == str(channel_id)]


def unnamed(text: str, guild: dict[str, Any]) -> str:
    """`text` with the server's own ids (channels, roles) put back to shard 0's server's."""
    offset = int(guild["id"]) - int(HERE["id"])
    for item in [*guild["channels"], *guild["threads"], *guild["roles"]]:
        text = text.replace(item["id"], str(int(item["id"]) - offset))
    return text


# --------------------------------------------------------------------------- embed links


@pytest.mark.parametrize("runs", RUNS)
async def test_without_embed_links_in_another_shards_server_the_card_is_text_as_in_the_cache(
    fake: FakeDiscord, store: Store, runs: frozenset[int], caplog: pytest.LogCaptureFixture
) -> None:
    there, here = channel(THERE, "no-embeds"), channel(HERE, "no-embeds")
    streamers = role(THERE, "Streamers")
    problems = TargetProblems()
    async with running(fake, store, runs, problems=problems) as sink:
        client = sink.client
        assert client is not None and client.get_channel(there) is None  # not in the cache
        event = live_start()
        card = await sink.deliver(delivery(1, there, mention_roles=[streamers]), event)
        [message] = fake.messages[there]
        assert message["id"] == card
        posted = message["content"]  # before the edit below changes it
        # The whole card as text, not an embed Discord would have dropped silently.
        assert message["embeds"] == []
        assert message["content"].startswith(f"<@&{streamers}> 🔴 **Quinn** is live!")
        assert "**Painting a dragon**" in message["content"] and URL in message["content"]
        assert message["mention_roles"] == [str(streamers)]
        [problem] = problems.all()
        assert (problem.target, problem.kind, problem.blocking, problem.origin) == (
            str(there),
            "no_embed_links",
            False,
            "send",
        )
        assert f"channel {there} ('no-embeds')" in problem.detail
        assert "allow Embed Links" in problem.detail

        # The end edits the text card as text.
        assert card is not None
        await sink.edit(delivery(2, there), card, live_end())
        ended = fake.messages[there][0]
        assert ended["embeds"] == [] and "ended the stream" in ended["content"]

        # Where the bot may embed links, in the same server, the card is an embed.
        streams = channel(THERE, "streams")
        await sink.deliver(delivery(3, streams, mention_roles=[streamers]), live_start(n=3))
        assert fake.messages[streams][0]["embeds"]
        assert of(problems, streams) == []

        if runs:
            # The same card and the same words for a channel in this process's cache.
            assert client.get_channel(here) is not None
            await sink.deliver(delivery(4, here, mention_roles=[role(HERE, "Streamers")]), event)
            [cached] = fake.messages[here]
            assert unnamed(posted, THERE) == cached["content"]
            [same] = of(problems, here)
            assert (same.kind, same.origin, unnamed(problem.detail, THERE)) == (
                "no_embed_links",
                "send",
                same.detail,
            )
            assert lookups(fake, HERE) == {}  # the cache answered
    # Said once for the channel, however many cards.
    said = [r for r in caplog.records if r.name == "bot.targets" and r.levelno >= logging.WARNING]
    assert len([r for r in said if str(there) in r.getMessage()]) == 1


# --------------------------------------------------------------------------- forums


@pytest.mark.parametrize("runs", RUNS)
async def test_a_session_in_a_forum_of_another_shards_server_is_a_post(
    store: Store, runs: frozenset[int]
) -> None:
    # Servers that let the bot archive a session's post at its end (Manage Threads).
    guilds = sharded_guilds(2, SHARDS, bot_permissions=BOT_ROLE_PERMISSIONS | MANAGE_THREADS)
    there = guilds[1]
    forum = channel(there, "ideas")
    async with (
        FakeDiscord(guilds=guilds, token=TOKEN, heartbeat_interval=200) as fake,
        running(fake, store, runs) as sink,
    ):
        card = await sink.deliver(delivery(1, forum, thread="per_stream"), live_start())
        # A post (a thread and its first message, whose id is the thread's), never a
        # message to the forum itself, which Discord refuses (50008).
        [post] = fake.threads_of(forum)
        assert post["id"] == card and post["name"].startswith("Quinn")
        [first] = fake.messages[int(post["id"])]
        assert first["embeds"] and "Painting a dragon" in first["embeds"][0]["title"]
        assert posts(fake, forum) == 0

        # The end edits the card in the post, and archives it.
        assert card is not None
        await sink.edit(delivery(2, forum, thread="per_stream"), card, live_end())
        [ended] = fake.messages[int(post["id"])]
        assert "Streamed for" in ended["embeds"][0]["description"]
        assert post["thread_metadata"]["archived"] is True

        # Without a thread per session the forum is refused without a request, as it
        # is when the cache has it.
        with pytest.raises(PermanentDeliveryError, match=r"\('ideas'\) is a forum channel"):
            await sink.deliver(delivery(3, forum), live_start(n=3))
        assert posts(fake, forum) == 0
        assert lookups(fake, there) == {
            f"/guilds/{there['id']}": 1,
            f"/guilds/{there['id']}/members/{BOT_USER_ID}": 1,
            f"/channels/{forum}": 1,
            # The post, looked up again to archive it (as for a cached forum).
            f"/channels/{card}": 1,
        }
        assert fake.errors == [] and fake.unhandled == []


# --------------------------------------------------------------------------- fan-out


async def test_a_fan_out_looks_each_channel_and_server_up_once(store: Store) -> None:
    # One server on this process's shard, two on the other one's.
    guilds = sharded_guilds(3, SHARDS, shard_ids=[0, 1, 1])
    names = ("general", "streams", "no-embeds", "announcements", "stream-chat")
    targets = [channel(guild, name) for guild in guilds for name in names]
    async with (
        FakeDiscord(guilds=guilds, token=TOKEN, heartbeat_interval=200) as fake,
        running(fake, store, {0}) as sink,
    ):
        rounds = 3
        sent = await asyncio.gather(
            *(
                sink.deliver(delivery(n * 100 + i, target), live_start(n=n))
                for n in range(rounds)
                for i, target in enumerate(targets)
            )
        )
        assert all(sent)
        assert {t: len(fake.messages[t]) for t in targets} == dict.fromkeys(targets, rounds)
        # The cached server: no look-up. Each of the others: its server and the bot's
        # member once, each channel once (the thread's parent is a target too), however
        # many sends.
        assert lookups(fake, guilds[0]) == {}
        for guild in guilds[1:]:
            assert lookups(fake, guild) == {
                f"/guilds/{guild['id']}": 1,
                f"/guilds/{guild['id']}/members/{BOT_USER_ID}": 1,
                **{f"/channels/{channel(guild, name)}": 1 for name in names},
            }
            [no_embeds] = fake.messages[channel(guild, "no-embeds")][:1]
            assert no_embeds["embeds"] == []
            assert fake.messages[channel(guild, "stream-chat")][0]["embeds"]
        assert fake.errors == [] and fake.unhandled == []


async def test_what_was_looked_up_is_kept_a_while_and_dropped_when_discord_refuses(
    fake: FakeDiscord, store: Store
) -> None:
    no_embeds, streams = channel(THERE, "no-embeds"), channel(THERE, "streams")
    problems = TargetProblems()
    asked: list[tuple[str, str]] = []
    problems.on_recheck = lambda sink, target: asked.append((sink, target))
    now = [0.0]
    lookup = ChannelLookup(ttl=60.0, clock=lambda: now[0])
    async with running(fake, store, {0}, problems=problems, channel_lookup=lookup) as sink:
        await sink.deliver(delivery(1, no_embeds), live_start())
        # A moderator lifts the overwrite; the CHANNEL_UPDATE goes to shard 1's process.
        await fake.update_channel(no_embeds, permission_overwrites=[])
        await sink.deliver(delivery(2, no_embeds), live_start(n=2))
        assert [m["embeds"] for m in fake.messages[no_embeds]] == [[], []]  # kept
        assert gets(fake, f"/channels/{no_embeds}") == 1
        now[0] += 61.0
        await sink.deliver(delivery(3, no_embeds), live_start(n=3))
        assert fake.messages[no_embeds][2]["embeds"]
        assert of(problems, no_embeds) == []  # fixed, and said so
        assert gets(fake, f"/channels/{no_embeds}") == 2
        assert gets(fake, f"/guilds/{THERE['id']}") == 2

        # The bot loses View Channel: Discord's refusal drops what was found, so the
        # next delivery asks again (and is refused as before there were look-ups).
        await sink.deliver(delivery(4, streams), live_start(n=4))
        bot_role = role(THERE, "StreamBot")
        deny = [{"id": str(bot_role), "type": 0, "allow": "0", "deny": str(VIEW_CHANNEL)}]
        await fake.update_channel(streams, permission_overwrites=deny)
        with pytest.raises(PermanentDeliveryError, match="50001"):
            await sink.deliver(delivery(5, streams), live_start(n=5))
        assert ("discord", str(streams)) in asked
        looked = gets(fake, f"/channels/{streams}")
        with pytest.raises(PermanentDeliveryError, match="50001"):
            await sink.deliver(delivery(6, streams), live_start(n=6))
        assert gets(fake, f"/channels/{streams}") == looked + 1
        assert posts(fake, streams) == 3  # the refused look-up: sent to the id, as before


# --------------------------------------------------------------------------- failures


async def test_a_look_up_discord_cannot_answer_is_retried_by_the_outbox_not_lost(
    fake: FakeDiscord, store: Store
) -> None:
    forum = channel(THERE, "ideas")
    route = Route(
        patterns=("twitch/*",),
        events=frozenset(NOTIFIED_KINDS),
        targets=chats(discord=(forum,)),
        thread="per_stream",
    )
    accepted = await Dispatcher(store=store, routes=[route], sinks=["discord"]).accept(
        live_start()
    )
    assert accepted.deliveries == 1
    fake.fail_next("GET", f"/channels/{forum}", status=503, json={"message": "down", "code": 0})
    async with running(fake, store, {0}) as sink:
        await run_until(
            OutboxWorker(store=store, sink=sink),
            outbox_states(store, lambda states: states == {"sent": 1}),
            timeout=10.0,
        )
    # Asked twice (the 503, then the retry's), and then a post: a send made blind would
    # have gone to the forum as a message, refused for good.
    assert [r.status for r in fake.requests if r.path == f"/channels/{forum}"] == [503, 200]
    assert len(fake.threads_of(forum)) == 1
    assert posts(fake, forum) == 0


async def test_a_look_up_that_times_out_is_transient_and_nothing_is_posted(
    fake: FakeDiscord, store: Store
) -> None:
    forum = channel(THERE, "ideas")
    lookup = ChannelLookup(timeout=0.3)
    async with running(fake, store, frozenset(), channel_lookup=lookup) as sink:
        # discord.py waits a second before asking again after a 500: past the bound.
        fake.fail_next("GET", f"/channels/{forum}", status=500, json={"message": "oops"})
        with pytest.raises(TransientDeliveryError, match=f"looking up channel {forum}"):
            await sink.deliver(delivery(1, forum, thread="per_stream"), live_start())
        assert fake.threads_of(forum) == [] and posts(fake, forum) == 0
        # The outbox's retry, same delivery:
        card = await sink.deliver(delivery(1, forum, thread="per_stream"), live_start())
        assert [t["id"] for t in fake.threads_of(forum)] == [card]


async def test_without_the_servers_roles_the_card_goes_out_as_before_and_is_asked_again(
    fake: FakeDiscord, store: Store
) -> None:
    no_embeds = channel(THERE, "no-embeds")
    problems = TargetProblems()
    async with running(fake, store, {0}, problems=problems) as sink:
        fake.fail_next("GET", f"/guilds/{THERE['id']}", status=503, json={"message": "down"})
        # The channel is known (not a forum), its permissions are not: sent at once as an
        # embed, which Discord drops, as every uncached send did before look-ups.
        await sink.deliver(delivery(1, no_embeds), live_start())
        assert len(fake.messages[no_embeds]) == 1
        assert problems.all() == []
        # Not kept: the next delivery asks again, and gets it right.
        await sink.deliver(delivery(2, no_embeds), live_start(n=2))
        second = fake.messages[no_embeds][1]
        assert second["embeds"] == [] and "Painting a dragon" in second["content"]
        assert [p.kind for p in problems.all()] == ["no_embed_links"]
    assert gets(fake, f"/guilds/{THERE['id']}") == 2
    assert gets(fake, f"/channels/{no_embeds}") == 2


async def test_a_client_replaced_under_a_look_up_makes_it_transient_not_an_error(
    fake: FakeDiscord, store: Store
) -> None:
    streams, general = channel(THERE, "streams"), channel(THERE, "general")
    async with running(fake, store, {0}) as sink:
        client = sink.client
        assert client is not None
        # A 500: discord.py waits a second to ask again, and the client closes meanwhile
        # (as when the shards this process runs change): aiohttp's "Session is closed".
        for cid in (streams, general):
            fake.fail_next("GET", f"/channels/{cid}", status=500, json={"message": "oops"})
        sending = asyncio.create_task(sink.deliver(delivery(1, streams), live_start()))
        checking = asyncio.create_task(sink.preflight([str(general)]))
        await eventually(lambda: gets(fake, f"/channels/{general}") == 1)
        await client.close()
        with pytest.raises(TransientDeliveryError, match="replaced during a look-up"):
            await sending
        assert await checking is None  # not checked this time
    assert posts(fake, streams) == 0


async def test_a_send_cut_off_by_the_clients_replacement_is_transient_not_a_crash(
    fake: FakeDiscord, store: Store
) -> None:
    streams = channel(HERE, "streams")
    async with running(fake, store, {0}) as sink:
        client = sink.client
        assert client is not None
        # A 500: discord.py waits a second to send again, and the client closes meanwhile
        # (the shards this process runs changed): its resend meets "Session is closed".
        path = f"/channels/{streams}/messages"
        fake.fail_next("POST", path, status=500, json={"message": "oops"})
        sending = asyncio.create_task(sink.deliver(delivery(1, streams), live_start()))
        await eventually(lambda: posts(fake, streams) == 1)
        await client.close()
        with pytest.raises(TransientDeliveryError, match="replaced during sending"):
            await sending
    assert [r.status for r in fake.requests if r.path == path] == [500]
    assert fake.messages[streams] == []


async def eventually(check: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


# --------------------------------------------------------------------------- preflight


async def test_the_preflight_finds_in_another_shards_server_what_it_finds_in_the_cache(
    fake: FakeDiscord, store: Store
) -> None:
    names = ("streams", "no-embeds", "readonly", "ideas", "Text Channels", "stream-chat")
    async with running(fake, store, {0}) as sink:
        found = {}
        for guild in (HERE, THERE):
            targets = [str(channel(guild, name)) for name in names]
            problems = await sink.preflight(
                targets, mention_roles={targets[0]: [role(guild, "Staff")]}
            )
            assert problems is not None
            found[guild["id"]] = sorted((unnamed(p.target, guild), p.kind) for p in problems)
    assert found[THERE["id"]] == found[HERE["id"]]
    assert {kind for _target, kind in found[HERE["id"]]} == {
        "role_not_pingable",
        "no_embed_links",
        "cannot_send",
        "not_text",
    }


# --------------------------------------------------------------------------- the fake


async def test_the_fake_serves_guild_and_member_reads_as_discord_does() -> None:
    foreign = {"id": 1_210_000_000_000_009_000, "channels": []}
    async with (
        FakeDiscord(guilds=GUILDS, token=TOKEN, foreign_guilds=[foreign]) as fake,
        aiohttp.ClientSession(headers={"Authorization": f"Bot {TOKEN}"}) as http,
    ):

        async def get(path: str) -> tuple[int, Any]:
            async with http.get(fake.api_url + path) as response:
                assert response.headers["Content-Type"] == "application/json"
                return response.status, await response.json()

        gid = THERE["id"]
        status, guild = await get(f"/guilds/{gid}")
        assert status == 200
        assert guild["id"] == gid and guild["owner_id"] and guild["roles"] == THERE["roles"]
        # The guild object: none of what only GUILD_CREATE carries.
        assert not {"channels", "members", "threads", "joined_at"} & set(guild)
        assert "approximate_member_count" not in guild
        status, counted = await get(f"/guilds/{gid}?with_counts=true")
        assert counted["approximate_member_count"] == len(THERE["members"])
        assert await get(f"/guilds/{gid}/roles") == (200, THERE["roles"])
        status, member = await get(f"/guilds/{gid}/members/{BOT_USER_ID}")
        assert status == 200
        assert member["user"]["id"] == str(BOT_USER_ID) and member["roles"] == [
            str(role(THERE, "StreamBot"))
        ]
        assert await get(f"/guilds/{gid}/members/42") == (
            404,
            {"message": "Unknown Member", "code": 10007},
        )
        missing = (403, {"message": "Missing Access", "code": 50001})
        assert await get(f"/guilds/{foreign['id']}") == missing
        assert await get(f"/guilds/{foreign['id']}/members/{BOT_USER_ID}") == missing
        assert await get("/guilds/42") == (404, {"message": "Unknown Guild", "code": 10004})
        async with (
            aiohttp.ClientSession() as anonymous,
            anonymous.get(f"{fake.api_url}/guilds/{gid}") as response,
        ):
            assert response.status == 401

        # And discord.py reads them into its own objects.
        client = discord.Client(intents=discord.Intents.none())
        discord.http.Route.BASE, saved = fake.api_url, discord.http.Route.BASE
        try:
            async with client:
                await client.login(TOKEN)
                fetched = await client.fetch_guild(int(gid), with_counts=False)
                me = await fetched.fetch_member(BOT_USER_ID)
                assert [r.name for r in me.roles] == ["@everyone", "StreamBot"]
        finally:
            discord.http.Route.BASE = saved
