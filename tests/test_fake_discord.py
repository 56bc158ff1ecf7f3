"""The Discord fake, driven by the real discord.py: if these pass, the fake speaks Discord."""

from __future__ import annotations

import asyncio
import time
import warnings
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.fakes.discord_api import (
    ANNOUNCEMENTS_CHANNEL_ID,
    BOT_ROLE_ID,
    BOT_ROLE_PERMISSIONS,
    CATEGORY_ID,
    CREATE_PUBLIC_THREADS,
    EMBED_LINKS,
    FORUM_CHANNEL_ID,
    GENERAL_CHANNEL_ID,
    GUILD_ID,
    MANAGE_THREADS,
    MEMBER_USER_ID,
    MENTION_EVERYONE,
    MOD_ROLE_ID,
    MOD_USER_ID,
    NO_EMBEDS_CHANNEL_ID,
    READONLY_CHANNEL_ID,
    RESTRICTED_CHANNEL_ID,
    SEND_MESSAGES,
    SEND_MESSAGES_IN_THREADS,
    STAFF_ROLE_ID,
    STREAMERS_ROLE_ID,
    STREAMS_CHANNEL_ID,
    THREAD_ID,
    TOKEN,
    VIEW_CHANNEL,
    VOICE_CHANNEL_ID,
    CommandNotAvailable,
    FakeDiscord,
    assert_no_heartbeat_threads,
    default_guild,
    fast_client_options,
    point_discord_at,
    running_client,
)

with warnings.catch_warnings():
    # discord.py imports audioop (deprecated since 3.11); filterwarnings=error would fail.
    warnings.filterwarnings("ignore", "'audioop' is deprecated", DeprecationWarning)
    import discord
    import discord.gateway
    import discord.http
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


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    """A started fake with the default guild; heartbeats every 100 ms."""
    async with FakeDiscord(heartbeat_interval=100) as server:
        yield server
        assert server.errors == []
        assert [(r.method, r.path) for r in server.unhandled] == []


@pytest.fixture
def client() -> discord.Client:
    """A plain client with the options that keep tests fast."""
    return discord.Client(**fast_client_options())


def statuses(fake: FakeDiscord, method: str, path: str) -> list[int]:
    """Statuses the fake answered for one route, in order."""
    return [r.status for r in fake.requests if r.method == method and r.path == path]


async def test_client_logs_in_and_sees_the_guild(
    fake: FakeDiscord, client: discord.Client
) -> None:
    original_base = discord.http.Route.BASE
    original_gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    async with running_client(fake, client):
        assert client.is_ready()
        assert fake.ready.is_set()
        assert client.user is not None
        assert client.user.id == fake.bot_user_id
        assert client.application_id == fake.application_id
        guild = client.get_guild(GUILD_ID)
        assert guild is not None
        assert {c.name for c in guild.text_channels} >= {"general", "streams", "restricted"}
        assert guild.me is not None
        streams = guild.get_channel(STREAMS_CHANNEL_ID)
        assert streams is not None
        assert streams.permissions_for(guild.me).send_messages
        assert not guild.get_channel(RESTRICTED_CHANNEL_ID).permissions_for(guild.me).view_channel
        identify = next(f for f in fake.gateway_frames if f["op"] == 2)
        assert identify["d"]["token"] == TOKEN
        assert any(f["op"] == 1 for f in fake.gateway_frames)  # heartbeats are acked
        assert fake.requests[0].headers["Authorization"] == f"Bot {TOKEN}"
        assert fake.gateway_paths[0].startswith("/gateway?v=10")
    assert original_base == discord.http.Route.BASE
    assert original_gateway == discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY


async def test_wrong_token_is_a_login_failure(client: discord.Client) -> None:
    async with FakeDiscord(token="the-right-token") as fake:
        with pytest.raises(discord.LoginFailure):
            async with running_client(fake, client, token="a-wrong-token"):
                pass


async def test_send_edit_and_moderator_delete(fake: FakeDiscord, client: discord.Client) -> None:
    async with running_client(fake, client):
        channel = client.get_channel(STREAMS_CHANNEL_ID)
        embed = discord.Embed(title="Alice is live", description="Playing chess", colour=0x9146FF)
        embed.add_field(name="Viewers", value="12")
        mentions = discord.AllowedMentions(
            everyone=False, users=False, roles=[discord.Object(STREAMERS_ROLE_ID)]
        )
        content = f"<@&{STREAMERS_ROLE_ID}> <@{MEMBER_USER_ID}> @everyone Alice is live"
        sent = await channel.send(content, embed=embed, allowed_mentions=mentions)

        stored = await fake.wait_for_message(STREAMS_CHANNEL_ID)
        assert int(stored["id"]) == sent.id
        assert stored["content"] == content
        assert [(e["title"], e["description"], e["color"]) for e in stored["embeds"]] == [
            ("Alice is live", "Playing chess", 0x9146FF)
        ]
        assert stored["embeds"][0]["fields"] == [
            {"name": "Viewers", "value": "12", "inline": True}
        ]
        # allowed_mentions decides who is pinged: only the listed role.
        assert stored["mention_roles"] == [str(STREAMERS_ROLE_ID)]
        assert stored["mentions"] == []
        assert stored["mention_everyone"] is False
        post = next(r for r in fake.requests if r.method == "POST")
        assert post.json["allowed_mentions"] == {
            "parse": [],
            "roles": [STREAMERS_ROLE_ID],
            "replied_user": True,
        }
        assert post.json["enforce_nonce"] is True

        edited = await sent.edit(content="Alice was live", embed=None)
        assert edited.content == "Alice was live"
        assert fake.messages[STREAMS_CHANNEL_ID][0]["content"] == "Alice was live"
        assert fake.messages[STREAMS_CHANNEL_ID][0]["embeds"] == []
        assert fake.messages[STREAMS_CHANNEL_ID][0]["edited_timestamp"] is not None

        fake.delete_message(STREAMS_CHANNEL_ID, sent.id)
        assert fake.messages[STREAMS_CHANNEL_ID] == []
        with pytest.raises(discord.NotFound) as caught:
            await sent.edit(content="gone")
        assert caught.value.code == 10008


async def test_everyone_and_here_ping_wherever_they_stand_when_allowed(
    client: discord.Client,
) -> None:
    # Only a bot its server granted Mention Everyone pings @everyone at all.
    granted = default_guild(bot_permissions=BOT_ROLE_PERMISSIONS | MENTION_EVERYONE)
    async with FakeDiscord(guilds=[granted]) as fake, running_client(fake, client):
        channel = client.get_channel(STREAMS_CHANNEL_ID)
        everyone = discord.AllowedMentions(everyone=True)
        for content in ("@everyone1", "hi@here_", "@\u200beveryone", "@ everyone"):
            await channel.send(content, allowed_mentions=everyone)
    pinged = [m["mention_everyone"] for m in fake.messages[STREAMS_CHANNEL_ID]]
    assert pinged == [True, True, False, False]


async def test_the_bot_has_what_its_invite_asks_for_and_no_mention_everyone(
    fake: FakeDiscord, client: discord.Client
) -> None:
    async with running_client(fake, client):
        guild = client.get_guild(GUILD_ID)
        assert guild is not None
        perms = guild.get_channel(STREAMS_CHANNEL_ID).permissions_for(guild.me)
        assert perms.view_channel and perms.send_messages and perms.embed_links
        assert not perms.mention_everyone
        channel = client.get_channel(STREAMS_CHANNEL_ID)
        roles = discord.AllowedMentions(everyone=True, roles=True)
        await channel.send(
            f"@everyone <@&{STAFF_ROLE_ID}> <@&{STREAMERS_ROLE_ID}>", allowed_mentions=roles
        )
    [message] = fake.messages[STREAMS_CHANNEL_ID]
    # Staff is not mentionable and the bot may not mention everyone: only Streamers pings.
    assert message["mention_everyone"] is False
    assert message["mention_roles"] == [str(STREAMERS_ROLE_ID)]


async def test_guild_create_carries_only_the_bots_own_member(
    fake: FakeDiscord, client: discord.Client
) -> None:
    # As Discord without the presences intent; discord.py always caches the bot's member.
    async with running_client(fake, client):
        guild = client.get_guild(GUILD_ID)
        assert guild is not None
        assert [m.id for m in guild.members] == [fake.bot_user_id]
        assert guild.me is not None


async def test_non_text_channels_refuse_messages_and_threads_take_them(
    fake: FakeDiscord, client: discord.Client
) -> None:
    async with running_client(fake, client):
        guild = client.get_guild(GUILD_ID)
        assert guild is not None
        for channel_id in (CATEGORY_ID, FORUM_CHANNEL_ID):
            with pytest.raises(discord.HTTPException) as refused:
                await client.get_partial_messageable(channel_id).send("hello")
            assert (refused.value.status, refused.value.code) == (400, 50008)
            assert "non-text channel" in refused.value.text
        assert isinstance(guild.get_channel(CATEGORY_ID), discord.CategoryChannel)
        assert isinstance(guild.get_channel(FORUM_CHANNEL_ID), discord.ForumChannel)
        # Announcement channels, threads and a voice channel's text chat take messages.
        announcements = guild.get_channel(ANNOUNCEMENTS_CHANNEL_ID)
        assert isinstance(announcements, discord.TextChannel) and announcements.is_news()
        thread = guild.get_thread(THREAD_ID)
        assert thread is not None and thread.parent_id == STREAMS_CHANNEL_ID
        voice = guild.get_channel(VOICE_CHANNEL_ID)
        assert isinstance(voice, discord.VoiceChannel)
        for target in (announcements, thread, voice):
            await target.send("hello")
            assert [m["content"] for m in fake.messages[target.id]] == ["hello"]


async def test_a_thread_needs_send_messages_in_threads(client: discord.Client) -> None:
    guild = default_guild()
    everyone = next(r for r in guild["roles"] if r["id"] == str(GUILD_ID))
    everyone["permissions"] = str(int(everyone["permissions"]) & ~SEND_MESSAGES_IN_THREADS)
    bot_role = next(r for r in guild["roles"] if r["id"] == str(BOT_ROLE_ID))
    bot_role["permissions"] = str(VIEW_CHANNEL | SEND_MESSAGES | EMBED_LINKS)
    async with FakeDiscord(guilds=[guild]) as fake, running_client(fake, client):
        thread = client.get_guild(GUILD_ID).get_thread(THREAD_ID)
        assert not thread.permissions_for(thread.guild.me).send_messages_in_threads
        with pytest.raises(discord.Forbidden) as refused:
            await thread.send("hello")
        assert refused.value.code == 50013
        await client.get_channel(STREAMS_CHANNEL_ID).send("the parent still works")


async def test_embed_links_denied_drops_the_embed_and_updates_reach_the_client(
    fake: FakeDiscord, client: discord.Client
) -> None:
    async with running_client(fake, client):
        guild = client.get_guild(GUILD_ID)
        channel = guild.get_channel(NO_EMBEDS_CHANNEL_ID)
        assert not channel.permissions_for(guild.me).embed_links
        await channel.send("card", embed=discord.Embed(title="dropped"))
        assert fake.messages[NO_EMBEDS_CHANNEL_ID][0]["embeds"] == []

        # A moderator lifts the overwrite: CHANNEL_UPDATE updates discord.py's cache.
        await fake.update_channel(NO_EMBEDS_CHANNEL_ID, permission_overwrites=[])
        async with asyncio.timeout(5):
            while (
                not guild.get_channel(NO_EMBEDS_CHANNEL_ID).permissions_for(guild.me).embed_links
            ):
                await asyncio.sleep(0.01)
        await guild.get_channel(NO_EMBEDS_CHANNEL_ID).send(
            "card", embed=discord.Embed(title="kept")
        )
        assert fake.messages[NO_EMBEDS_CHANNEL_ID][1]["embeds"][0]["title"] == "kept"

        # The bot's role loses Embed Links (GUILD_ROLE_UPDATE), then the bot gets a role
        # that has it (GUILD_MEMBER_UPDATE for the bot's own member, sent whatever the intents).
        await fake.update_role(BOT_ROLE_ID, permissions=VIEW_CHANNEL | SEND_MESSAGES)
        everyone = guild.get_role(GUILD_ID)
        await fake.update_role(
            GUILD_ID, permissions=int(everyone.permissions.value) & ~EMBED_LINKS
        )
        async with asyncio.timeout(5):
            while guild.get_channel(STREAMS_CHANNEL_ID).permissions_for(guild.me).embed_links:
                await asyncio.sleep(0.01)
        await fake.update_member(fake.bot_user_id, [BOT_ROLE_ID, MOD_ROLE_ID])
        await fake.update_role(MOD_ROLE_ID, permissions=EMBED_LINKS)
        async with asyncio.timeout(5):
            while not guild.get_channel(STREAMS_CHANNEL_ID).permissions_for(guild.me).embed_links:
                await asyncio.sleep(0.01)
        assert MOD_ROLE_ID in [r.id for r in guild.me.roles]


async def test_429_is_waited_out_and_delivered_once(
    fake: FakeDiscord, client: discord.Client
) -> None:
    async with running_client(fake, client):
        fake.rate_limit_next("POST", "/channels/*/messages", retry_after=0.2)
        started = time.monotonic()
        await client.get_channel(STREAMS_CHANNEL_ID).send("hello")
        assert time.monotonic() - started >= 0.2
    path = f"/channels/{STREAMS_CHANNEL_ID}/messages"
    assert statuses(fake, "POST", path) == [429, 200]
    assert len(fake.messages[STREAMS_CHANNEL_ID]) == 1


async def test_the_global_limit_answers_a_global_429_to_bot_requests() -> None:
    async with FakeDiscord(global_rate_limit=(2, 60.0)) as fake:
        answers = []
        async with aiohttp.ClientSession(headers={"Authorization": "Bot any"}) as http:
            for _ in range(3):
                async with http.get(f"{fake.api_url}/users/@me") as response:
                    answers.append((response.status, response.headers, await response.json()))
            # Requests without the bot token (interaction answers, /gateway) are exempt.
            async with http.get(f"{fake.api_url}/gateway") as response:
                assert response.status == 200
    assert [status for status, _, _ in answers] == [200, 200, 429]
    _, headers, body = answers[2]
    assert body["global"] is True
    assert 0 < body["retry_after"] <= 60
    assert headers["Via"], "discord.py treats a 429 without Via as a Cloudflare ban"
    assert headers["X-RateLimit-Scope"] == "global"


async def test_server_errors_are_retried_and_nonce_keeps_it_single(
    fake: FakeDiscord, client: discord.Client
) -> None:
    path = f"/channels/{STREAMS_CHANNEL_ID}/messages"
    async with running_client(fake, client):
        channel = client.get_channel(STREAMS_CHANNEL_ID)
        fake.fail_next("POST", path, status=500, json={"message": "500: Internal Server Error"})
        await channel.send("first")
        # The write happened but the answer was lost; the retry carries the same nonce.
        fake.fail_next(
            "POST", path, status=502, json={"message": "Bad Gateway"}, after_processing=True
        )
        second = await channel.send("second")
    assert statuses(fake, "POST", path) == [500, 200, 502, 200]
    assert [m["content"] for m in fake.messages[STREAMS_CHANNEL_ID]] == ["first", "second"]
    assert int(fake.messages[STREAMS_CHANNEL_ID][1]["id"]) == second.id


async def test_forbidden_and_unknown_channel(fake: FakeDiscord, client: discord.Client) -> None:
    async with running_client(fake, client):
        channel = client.get_channel(STREAMS_CHANNEL_ID)
        fake.fail_next(
            "POST",
            "/channels/*/messages",
            status=403,
            json={"code": 50001, "message": "Missing Access"},
        )
        with pytest.raises(discord.Forbidden) as caught:
            await channel.send("hello")
        assert caught.value.code == 50001
        # The same answers come from the guild's real permission overwrites.
        with pytest.raises(discord.Forbidden) as caught:
            await client.get_channel(RESTRICTED_CHANNEL_ID).send("hello")
        assert caught.value.code == 50001
        with pytest.raises(discord.Forbidden) as caught:
            await client.get_channel(READONLY_CHANNEL_ID).send("hello")
        assert caught.value.code == 50013
        gone = client.get_partial_messageable(424242)
        with pytest.raises(discord.NotFound) as unknown:
            await gone.send("hello")
        assert unknown.value.code == 10003
    assert fake.messages[STREAMS_CHANNEL_ID] == []


async def test_enforced_nonce_sent_twice_makes_one_message(
    fake: FakeDiscord, client: discord.Client
) -> None:
    async with running_client(fake, client):
        channel = client.get_channel(STREAMS_CHANNEL_ID)
        first = await channel.send("card", nonce="event-42")
        again = await channel.send("card", nonce="event-42")
        other = await channel.send("card", nonce="event-43")
    assert first.id == again.id != other.id
    assert len(fake.messages[STREAMS_CHANNEL_ID]) == 2


async def test_oversized_messages_are_rejected_like_discord(
    fake: FakeDiscord, client: discord.Client
) -> None:
    async with running_client(fake, client):
        channel = client.get_channel(STREAMS_CHANNEL_ID)
        with pytest.raises(discord.HTTPException) as caught:
            await channel.send("x" * 2001)
        assert (caught.value.status, caught.value.code) == (400, 50035)
        assert "content" in caught.value.text
        with pytest.raises(discord.HTTPException) as caught:
            await channel.send(embed=discord.Embed(description="d" * 4097))
        assert (caught.value.status, caught.value.code) == (400, 50035)
        big = discord.Embed(title="t" * 256, description="d" * 4096)
        big.add_field(name="n", value="v" * 1024).add_field(name="n", value="v" * 1024)
        with pytest.raises(discord.HTTPException) as caught:
            await channel.send(embed=big)
        assert "6000" in caught.value.text
        with pytest.raises(discord.HTTPException) as caught:
            await channel.send(embed=discord.Embed(title="t", url="not a url"))
        assert caught.value.code == 50035
    assert fake.messages[STREAMS_CHANNEL_ID] == []


def build_tree(client: discord.Client, seen: list[tuple[str, object]]) -> app_commands.CommandTree:
    """Commands shaped like the bot's: an option with autocomplete, a permissioned one."""
    tree = app_commands.CommandTree(client)

    @tree.command(description="Show what is live")
    async def status(interaction: discord.Interaction, source: str) -> None:
        seen.append(("status", source))
        await interaction.response.send_message(f"{source}: offline", ephemeral=True)

    @status.autocomplete("source")
    async def status_sources(
        interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        names = ["livepeer", "fastpix", "onliverec"]
        return [app_commands.Choice(name=n, value=n) for n in names if n.startswith(current)]

    @tree.command(description="Mute a source")
    @app_commands.default_permissions(manage_channels=True)
    async def mute(interaction: discord.Interaction, source: str, minutes: int = 60) -> None:
        seen.append(("mute", (source, minutes, interaction.permissions.manage_channels)))
        await interaction.response.defer(ephemeral=True, thinking=True)
        await interaction.edit_original_response(content=f"muted {source} for {minutes} min")

    return tree


async def test_slash_commands_sync_invoke_and_autocomplete(
    fake: FakeDiscord, client: discord.Client
) -> None:
    seen: list[tuple[str, object]] = []
    tree = build_tree(client, seen)
    async with running_client(fake, client):
        synced = await tree.sync()
        assert sorted(c.name for c in synced) == ["mute", "status"]
        assert sorted(c["name"] for c in fake.commands) == ["mute", "status"]
        mute = next(c for c in fake.commands if c["name"] == "mute")
        assert mute["default_member_permissions"] == str(
            discord.Permissions(manage_channels=True).value
        )
        tree.copy_global_to(guild=discord.Object(GUILD_ID))
        await tree.sync(guild=discord.Object(GUILD_ID))
        assert sorted(c["name"] for c in fake.guild_commands[GUILD_ID]) == ["mute", "status"]

        result = await fake.invoke_command(
            "status", {"source": "livepeer"}, channel_id=STREAMS_CHANNEL_ID
        )
        assert seen == [("status", "livepeer")]
        assert result.response_type == 4
        assert result.content == "livepeer: offline"
        assert result.ephemeral
        assert fake.messages[STREAMS_CHANNEL_ID] == []  # ephemeral replies are not in the channel

        choices = await fake.autocomplete("status", {"source": "f"}, "source")
        assert choices == [{"name": "fastpix", "value": "fastpix"}]

        with pytest.raises(CommandNotAvailable):
            await fake.invoke_command("mute", {"source": "fastpix"}, user_id=MEMBER_USER_ID)
        result = await fake.invoke_command(
            "mute", {"source": "fastpix", "minutes": 5}, user_id=MOD_USER_ID
        )
        assert seen[-1] == ("mute", ("fastpix", 5, True))
        assert result.response_type == 5
        assert result.content == "muted fastpix for 5 min"
        assert result.flags == 64  # ephemeral, no longer loading
        assert [kind for kind, _ in result.events] == ["callback", "edit_original"]


async def test_defer_then_followup_edits_the_loading_message(
    fake: FakeDiscord, client: discord.Client
) -> None:
    tree = app_commands.CommandTree(client)

    @tree.command(description="Subscribe this channel to a source")
    async def subscribe(interaction: discord.Interaction, source: str) -> None:
        await interaction.response.defer(thinking=True)
        await interaction.followup.send(f"subscribed to {source}")
        await interaction.followup.send("only you see this", ephemeral=True)

    async with running_client(fake, client):
        await tree.sync()
        with pytest.raises(ValueError, match="required"):
            await fake.invoke_command("subscribe")
        result = await fake.invoke_command(
            "subscribe", {"source": "fastpix"}, channel_id=STREAMS_CHANNEL_ID
        )
        await result.wait_for(lambda r: len(r.followups) == 1)
    assert result.content == "subscribed to fastpix"
    assert not result.ephemeral
    assert [m["content"] for m in fake.messages[STREAMS_CHANNEL_ID]] == ["subscribed to fastpix"]
    assert [(m["content"], m["flags"]) for m in result.followups] == [("only you see this", 64)]


async def test_late_answer_is_unknown_interaction(client: discord.Client) -> None:
    errors: list[BaseException] = []
    tree = app_commands.CommandTree(client)

    @tree.command(description="Too slow")
    async def slow(interaction: discord.Interaction) -> None:
        await asyncio.sleep(0.3)
        try:
            await interaction.response.send_message("finally")
        except discord.NotFound as exc:
            errors.append(exc)

    async with FakeDiscord(interaction_ack_timeout=0.1) as fake, running_client(fake, client):
        await tree.sync()
        with pytest.raises(TimeoutError):
            await fake.invoke_command("slow")
        for _ in range(50):
            if errors:
                break
            await asyncio.sleep(0.02)
    assert [getattr(e, "code", None) for e in errors] == [10062]
    assert fake.messages[GENERAL_CHANNEL_ID] == []


async def test_dropped_gateway_resumes_at_resume_url(
    fake: FakeDiscord, client: discord.Client
) -> None:
    async with running_client(fake, client):
        resumed = asyncio.ensure_future(client.wait_for("resumed", timeout=5))
        await fake.drop_connections()
        await resumed
        assert fake.gateway_paths[1].startswith("/gateway/resume?")
        assert [f["op"] for f in fake.gateway_frames].count(6) == 1
        await client.get_channel(STREAMS_CHANNEL_ID).send("still here")
    assert len(fake.messages[STREAMS_CHANNEL_ID]) == 1


async def test_point_discord_at_restores_on_error(fake: FakeDiscord) -> None:
    before = discord.http.Route.BASE
    with pytest.raises(RuntimeError), point_discord_at(fake):
        assert fake.api_url == discord.http.Route.BASE
        raise RuntimeError
    assert before == discord.http.Route.BASE


async def test_a_login_refused_for_the_ip_address_is_a_plain_429(client: discord.Client) -> None:
    async with FakeDiscord() as fake:
        fake.fail_next(
            "GET",
            "/users/@me",
            status=429,
            json={"message": "You are being blocked.", "retry_after": 2.5, "global": True},
            headers={"Retry-After": "3"},
        )
        with point_discord_at(fake), pytest.raises(discord.HTTPException) as caught:
            await client.login(TOKEN)
        await client.close()
        # No Via header: discord.py takes it for a Cloudflare ban and does not retry.
        assert caught.value.status == 429
        assert not isinstance(caught.value, discord.RateLimited)
        assert caught.value.response.headers.get("Via") is None
        assert caught.value.response.headers["Retry-After"] == "3"
        assert statuses(fake, "GET", "/users/@me") == [429]


async def test_crosspost_publishes_once_in_announcement_channels_within_its_limit(
    client: discord.Client,
) -> None:
    async with FakeDiscord(heartbeat_interval=100, crosspost_limit=(2, 3600.0)) as fake:
        async with running_client(fake, client):
            news = client.get_channel(ANNOUNCEMENTS_CHANNEL_ID)
            plain = client.get_channel(STREAMS_CHANNEL_ID)
            assert isinstance(news, discord.TextChannel) and news.is_news()
            first = await news.send("one")
            await first.publish()
            with pytest.raises(discord.HTTPException) as twice:
                await first.publish()
            assert twice.value.code == 40033
            in_plain = await plain.send("not news")
            with pytest.raises(discord.Forbidden) as wrong:
                await in_plain.publish()
            assert wrong.value.code == 50024
            await (await news.send("two")).publish()
            client.http.max_ratelimit_timeout = 30.0  # discord.py's floor: the limit is 1h
            with pytest.raises(discord.RateLimited):
                await (await news.send("three")).publish()
        assert [m["content"] for m in fake.crossposted(ANNOUNCEMENTS_CHANNEL_ID)] == [
            "one",
            "two",
        ]
        assert fake.errors == []


async def test_edits_of_a_published_message_are_limited_with_discords_own_headers(
    client: discord.Client,
) -> None:
    async with FakeDiscord(heartbeat_interval=100, published_edit_limit=(1, 3600.0)) as fake:
        async with running_client(fake, client):
            news = client.get_channel(ANNOUNCEMENTS_CHANNEL_ID)
            assert isinstance(news, discord.TextChannel)
            message = await news.send("v1")
            await message.edit(content="v1, unpublished edits are free")
            await message.publish()
            await message.edit(content="v2")
            client.http.max_ratelimit_timeout = 30.0
            with pytest.raises(discord.RateLimited) as limited:
                await message.edit(content="v3")
            assert limited.value.retry_after > 3000  # the body's figure, not the header's
        (stored,) = fake.messages[ANNOUNCEMENTS_CHANNEL_ID]
        assert stored["content"] == "v2"
        assert [r.method for r in fake.requests if r.status == 429] == ["PATCH"]


async def test_threads_from_messages_and_forum_posts_as_discord_makes_them(
    client: discord.Client,
) -> None:
    granted = default_guild(bot_permissions=BOT_ROLE_PERMISSIONS | CREATE_PUBLIC_THREADS)
    async with FakeDiscord(heartbeat_interval=100, guilds=[granted]) as fake:
        async with running_client(fake, client):
            streams = client.get_channel(STREAMS_CHANNEL_ID)
            forum = client.get_channel(FORUM_CHANNEL_ID)
            assert isinstance(streams, discord.TextChannel)
            assert isinstance(forum, discord.ForumChannel)
            card = await streams.send("Quinn is live")
            thread = await card.create_thread(name="Quinn: Any%", auto_archive_duration=60)
            assert thread.id == card.id  # "the same as the id of the source message"
            with pytest.raises(discord.HTTPException) as again:
                await card.create_thread(name="again")
            assert again.value.code == 160004
            with pytest.raises(discord.HTTPException) as empty:
                await (await streams.send("another")).create_thread(name="")
            assert empty.value.code == 50035
            post = await forum.create_thread(name="Quinn: Any%", content="Quinn is live")
            assert post.message.id == post.thread.id
            # Archiving needs Manage Threads, which the bot lacks here.
            with pytest.raises(discord.Forbidden):
                await post.thread.edit(archived=True)
        assert [t["name"] for t in fake.threads_of(STREAMS_CHANNEL_ID)][-1] == "Quinn: Any%"
        (forum_post,) = fake.threads_of(FORUM_CHANNEL_ID)
        assert fake.messages[int(forum_post["id"])][0]["content"] == "Quinn is live"
        assert fake.errors == []


async def test_an_archived_thread_refuses_edits_and_reopens_for_a_post(
    client: discord.Client,
) -> None:
    everything = BOT_ROLE_PERMISSIONS | CREATE_PUBLIC_THREADS | MANAGE_THREADS
    async with FakeDiscord(
        heartbeat_interval=100, guilds=[default_guild(bot_permissions=everything)]
    ) as fake:
        async with running_client(fake, client):
            forum = client.get_channel(FORUM_CHANNEL_ID)
            assert isinstance(forum, discord.ForumChannel)
            post = await forum.create_thread(
                name="Quinn", content="live", auto_archive_duration=60
            )
            await post.thread.edit(archived=True)
            with pytest.raises(discord.HTTPException) as frozen:
                await post.message.edit(content="ended")
            assert frozen.value.code == 50083
            await post.thread.send("a notice")  # unarchives it, as Discord does
            await post.message.edit(content="ended")
        (thread,) = fake.threads_of(FORUM_CHANNEL_ID)
        assert thread["thread_metadata"]["archived"] is False
        assert fake.messages[int(thread["id"])][0]["content"] == "ended"
