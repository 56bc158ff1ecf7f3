"""The whole bot (`bot.app.run`) against the fake Discord: webhooks in, channels out."""

from __future__ import annotations

import asyncio
import itertools
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.app import Running, run
from bot.config import Config
from tests.conftest import SECRET, make_config
from tests.fakes.discord_api import (
    BOT_ROLE_PERMISSIONS,
    GENERAL_CHANNEL_ID,
    MENTION_EVERYONE,
    MOD_USER_ID,
    READONLY_CHANNEL_ID,
    STAFF_ROLE_ID,
    STREAMERS_ROLE_ID,
    STREAMS_CHANNEL_ID,
    TOKEN,
    FakeDiscord,
    assert_no_heartbeat_threads,
    default_guild,
    no_identify_delay,
)

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "'audioop' is deprecated", DeprecationWarning)
    import discord

MANAGE_CHANNELS = discord.Permissions(manage_channels=True).value
_ids = itertools.count(1)


@pytest.fixture(autouse=True)
def no_heartbeat_threads_left() -> Any:
    yield
    assert_no_heartbeat_threads()


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(token=TOKEN, heartbeat_interval=200) as server:
        yield server
        assert server.errors == []


def bot_config(tmp_path: Path, fake: FakeDiscord) -> Any:
    return make_config(
        tmp_path,
        console={"enabled": False},
        discord={"token": TOKEN, "api_url": fake.api_url, "gateway_url": fake.gateway_url},
        routes=[
            {
                "match": "twitch/*",
                "discord_channels": [str(STREAMS_CHANNEL_ID)],
                "mention_roles": [str(STREAMERS_ROLE_ID)],
            },
            {"match": "twitch/quinn", "discord_channels": [str(GENERAL_CHANNEL_ID)]},
        ],
    )


@asynccontextmanager
async def running_bot(tmp_path: Path, fake: FakeDiscord) -> AsyncIterator[Running]:
    async with running_with(bot_config(tmp_path, fake)) as running:
        yield running


@asynccontextmanager
async def running_with(config: Config) -> AsyncIterator[Running]:
    """The whole bot (bot.app.run) on `config`, its Discord client tuned for the fake."""
    stop = asyncio.Event()
    ready: asyncio.Future[Running] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        run(
            config,
            stop,
            on_ready=ready.set_result,
            sink_options={
                "discord": {
                    "client_options": {"guild_ready_timeout": 0.1},
                    "before_identify_hook": no_identify_delay,
                    "ready_timeout": 5.0,
                }
            },
        )
    )
    try:
        running = await asyncio.wait_for(ready, 10)
        assert running.sinks["discord"].state == "running"
        yield running
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def webhook(running: Running, kind: str, channel: str = "quinn", **live: Any) -> int:
    info_key = "new_live_info" if kind.endswith("_change") else "live_info"
    payload = {
        "id": f"e{next(_ids)}",
        "type": kind,
        "data": {
            "platform": "twitch",
            "channel": channel,
            "url": f"https://twitch.tv/{channel}",
            info_key: live,
        },
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{running.base_url}/webhook/rec?key={SECRET}", json=payload) as response,
    ):
        return response.status


LIVE = {
    "uname": "Quinn",
    "title": "Painting a dragon",
    "categories": ["Art"],
    "cover": "https://img.example/quinn.jpg",
}


async def test_live_start_reaches_each_routed_channel_with_embed_and_role_ping(
    tmp_path: Path, fake: FakeDiscord
) -> None:
    async with running_bot(tmp_path, fake) as running:
        assert await webhook(running, "live_start", **LIVE) == 202
        streams = await fake.wait_for_message(STREAMS_CHANNEL_ID)
        general = await fake.wait_for_message(GENERAL_CHANNEL_ID)
        # Another streamer matches only the twitch/* route.
        assert await webhook(running, "live_start", channel="bo", uname="Bo") == 202
        await fake.wait_for_message(STREAMS_CHANNEL_ID, lambda m: "Bo" in str(m["embeds"]))
    [embed] = streams["embeds"]
    assert "Quinn" in str(embed) and "Painting a dragon" in str(embed)
    assert embed["url"] == "https://twitch.tv/quinn"
    # With a query that makes the URL new for this card (render.fresh_cover).
    assert embed["image"]["url"].startswith("https://img.example/quinn.jpg?v=")
    assert any("Art" in field["value"] for field in embed["fields"])
    assert streams["mention_roles"] == [str(STREAMERS_ROLE_ID)]
    assert not streams["mention_everyone"]
    # The general channel's route names no roles: nobody is pinged there.
    assert general["mention_roles"] == [] and not general["mention_everyone"]
    assert len(fake.messages[GENERAL_CHANNEL_ID]) == 1
    assert len(fake.messages[STREAMS_CHANNEL_ID]) == 2
    assert fake.messages.get(READONLY_CHANNEL_ID, []) == []


async def test_hostile_title_pings_nobody_and_fits_the_limits(tmp_path: Path) -> None:
    nasty = f"@everyone @here <@&{STAFF_ROLE_ID}> <@{MOD_USER_ID}> **bold** [x](http://e.vil) "
    title = (nasty * 40)[:3000]
    # A server that granted the bot Mention Everyone: nothing but the bot itself stops
    # @everyone and Staff from being pinged here.
    granted = default_guild(bot_permissions=BOT_ROLE_PERMISSIONS | MENTION_EVERYONE)
    async with (
        FakeDiscord(token=TOKEN, heartbeat_interval=200, guilds=[granted]) as fake,
        running_bot(tmp_path, fake) as running,
    ):
        assert await webhook(running, "live_start", uname="Quinn", title=title) == 202
        message = await fake.wait_for_message(STREAMS_CHANNEL_ID)
    assert not message["mention_everyone"]
    assert message["mentions"] == []
    assert message["mention_roles"] == [str(STREAMERS_ROLE_ID)]  # only the configured one
    [embed] = message["embeds"]
    assert len(embed.get("title", "")) <= 256
    assert len(embed.get("description", "")) <= 4096
    text = embed.get("title", "") + embed.get("description", "")
    assert "\\*\\*bold\\*\\*" in text  # markdown arrives as literal text


async def test_status_mute_and_unmute_act_on_exactly_one_channel(
    tmp_path: Path, fake: FakeDiscord
) -> None:
    async with running_bot(tmp_path, fake) as running:
        await webhook(running, "live_start", **LIVE)
        await fake.wait_for_message(GENERAL_CHANNEL_ID)
        status = await fake.invoke_command("status", channel_id=STREAMS_CHANNEL_ID)
        assert "Quinn" in str(status.embeds) and "Painting a dragon" in str(status.embeds)

        refused = await fake.invoke_command(
            "mute",
            {"streamer": "twitch/quinn"},
            channel_id=STREAMS_CHANNEL_ID,
            check_permissions=False,
        )
        assert "Manage Channels" in (refused.content or "")
        muted = await fake.invoke_command(
            "mute",
            {"streamer": "twitch/quinn", "duration": "2h"},
            channel_id=STREAMS_CHANNEL_ID,
            user_id=MOD_USER_ID,
        )
        assert muted.content == "Muted twitch/quinn here for 2h."

        await webhook(running, "title_change", uname="Quinn", title="Muted title")
        await webhook(running, "error", channel="quinn")
        # Both cards are kept current (an edit notifies nobody); the muted channel gets
        # no new message: neither the error notice nor anything else.
        await fake.wait_for_message(GENERAL_CHANNEL_ID, lambda m: "reported an error" in str(m))
        await fake.wait_for_message(STREAMS_CHANNEL_ID, lambda m: "Muted title" in str(m))
        await asyncio.sleep(0.3)
        assert len(fake.messages[STREAMS_CHANNEL_ID]) == 1
        posts = [
            r
            for r in fake.requests
            if r.method == "POST" and r.path == f"/channels/{STREAMS_CHANNEL_ID}/messages"
        ]
        assert len(posts) == 1  # the card only

        unmuted = await fake.invoke_command(
            "unmute",
            {"streamer": "twitch/quinn"},
            channel_id=STREAMS_CHANNEL_ID,
            user_id=MOD_USER_ID,
        )
        assert unmuted.content == "Unmuted twitch/quinn here."
        await webhook(running, "live_end")
        await fake.wait_for_message(STREAMS_CHANNEL_ID, lambda m: "Streamed for" in str(m))


async def test_subscribe_routes_a_streamer_into_a_channel_across_a_restart(
    tmp_path: Path, fake: FakeDiscord
) -> None:
    async with running_bot(tmp_path, fake) as running:
        await webhook(running, "live_start", channel="bo", uname="Bo")
        await fake.wait_for_message(STREAMS_CHANNEL_ID)
        result = await fake.invoke_command(
            "subscribe",
            {"pattern": "twitch/bo"},
            channel_id=GENERAL_CHANNEL_ID,
            user_id=MOD_USER_ID,
        )
        assert "Subscribed" in (result.content or "")
    async with running_bot(tmp_path, fake) as running:
        await webhook(running, "live_end", channel="bo")
        ended = await fake.wait_for_message(GENERAL_CHANNEL_ID, lambda m: "Bo" in str(m))
    assert "Streamed for" in str(ended["embeds"])


async def test_a_429_delays_the_message_but_it_arrives_once(
    tmp_path: Path, fake: FakeDiscord
) -> None:
    async with running_bot(tmp_path, fake) as running:
        fake.rate_limit_next("POST", f"/channels/{STREAMS_CHANNEL_ID}/messages", retry_after=0.3)
        await webhook(running, "live_start", **LIVE)
        await fake.wait_for_message(STREAMS_CHANNEL_ID)
        await asyncio.sleep(0.5)
    assert len(fake.messages[STREAMS_CHANNEL_ID]) == 1
    statuses = [
        r.status
        for r in fake.requests
        if r.method == "POST" and r.path == f"/channels/{STREAMS_CHANNEL_ID}/messages"
    ]
    assert statuses == [429, 200]


async def test_a_reconnect_mid_run_keeps_commands_and_notifications_working(
    tmp_path: Path, fake: FakeDiscord
) -> None:
    async with running_bot(tmp_path, fake) as running:
        # Discord asks for a reconnect (op 7), then a connection simply drops.
        await fake.request_reconnect()
        async with asyncio.timeout(10):
            while len(fake.gateway_paths) < 2:
                await asyncio.sleep(0.02)
        await fake.drop_connections()
        async with asyncio.timeout(10):
            while len(fake.gateway_paths) < 3:
                await asyncio.sleep(0.02)
        await webhook(running, "live_start", **LIVE)
        await fake.wait_for_message(STREAMS_CHANNEL_ID)
        status = await fake.invoke_command("status", channel_id=GENERAL_CHANNEL_ID)
        assert "Quinn" in str(status.embeds)
    # Both times the session was resumed, not identified afresh.
    assert sum(frame.get("op") == 6 for frame in fake.gateway_frames) == 2
