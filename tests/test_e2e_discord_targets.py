"""The whole bot against the fake Discord when a channel or the connection is not as it
should be (#15): Embed Links denied, a login refused for the IP address, a non-text
channel in discord_channels."""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.app import Running
from tests.conftest import SECRET, make_config
from tests.fakes.discord_api import (
    FORUM_CHANNEL_ID,
    MOD_USER_ID,
    NO_EMBEDS_CHANNEL_ID,
    STREAMERS_ROLE_ID,
    STREAMS_CHANNEL_ID,
    THREAD_ID,
    TOKEN,
    VOICE_CHANNEL_ID,
    FakeDiscord,
    assert_no_heartbeat_threads,
)
from tests.fakes.discord_api import (
    READONLY_CHANNEL_ID as READONLY,
)
from tests.test_cli import running_bot as bot_process
from tests.test_e2e_discord import LIVE, running_with, webhook
from tests.waiting import every_delivery, holds, outbox_states


@pytest.fixture(autouse=True)
def no_heartbeat_threads_left() -> Any:
    yield
    assert_no_heartbeat_threads()


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(token=TOKEN, heartbeat_interval=200) as server:
        yield server
        assert server.errors == []


@asynccontextmanager
async def running_bot(
    tmp_path: Path, fake: FakeDiscord, routes: list[dict[str, Any]]
) -> AsyncIterator[Running]:
    config = make_config(
        tmp_path,
        console={"enabled": False},
        discord={"token": TOKEN, "api_url": fake.api_url, "gateway_url": fake.gateway_url},
        routes=routes,
    )
    async with running_with(config) as running:
        yield running


async def until(condition: Callable[[], Any], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not await holds(condition):
            await asyncio.sleep(0.02)


async def test_a_channel_without_embed_links_gets_whole_text_cards_and_one_warning(
    tmp_path: Path, fake: FakeDiscord, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    route = {
        "match": "twitch/*",
        "discord_channels": [str(NO_EMBEDS_CHANNEL_ID)],
        "mention_roles": [str(STREAMERS_ROLE_ID)],
    }
    async with running_bot(tmp_path, fake, [route]) as running:
        assert await webhook(running, "live_start", **LIVE) == 202
        card = copy.deepcopy(await fake.wait_for_message(NO_EMBEDS_CHANNEL_ID))
        assert await webhook(running, "live_start", channel="bo", uname="Bo") == 202
        await fake.wait_for_message(NO_EMBEDS_CHANNEL_ID, lambda m: "Bo" in m["content"])
        assert await webhook(running, "live_end") == 202
        ended = await fake.wait_for_message(
            NO_EMBEDS_CHANNEL_ID, lambda m: "Streamed for" in m["content"]
        )
    # Without the embed the card still has it all: who, what, which category, where.
    assert card["embeds"] == []
    assert card["content"].startswith(f"<@&{STREAMERS_ROLE_ID}> ")
    assert card["mention_roles"] == [str(STREAMERS_ROLE_ID)]
    for part in ("**Quinn** is live!", "**Painting a dragon**", "Category: Art"):
        assert part in card["content"]
    assert "https://twitch.tv/quinn" in card["content"]
    # The end edits that same card, as text again.
    assert ended["id"] == card["id"] and ended["embeds"] == []
    assert "ended the stream" in ended["content"]
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "may not embed links" in r.getMessage()
    ]
    assert len(warnings) == 1  # one channel, one warning, however many cards
    assert str(NO_EMBEDS_CHANNEL_ID) in warnings[0]


async def test_a_non_text_channel_fails_saying_what_it_is_and_the_others_still_get_cards(
    tmp_path: Path, fake: FakeDiscord, caplog: pytest.LogCaptureFixture
) -> None:
    route = {
        "match": "twitch/*",
        "discord_channels": [
            str(FORUM_CHANNEL_ID),
            str(STREAMS_CHANNEL_ID),
            str(THREAD_ID),
            str(VOICE_CHANNEL_ID),
        ],
    }
    async with running_bot(tmp_path, fake, [route]) as running:
        assert await webhook(running, "live_start", **LIVE) == 202
        for channel in (STREAMS_CHANNEL_ID, THREAD_ID, VOICE_CHANNEL_ID):
            message = await fake.wait_for_message(channel)
            assert message["embeds"]
        await until(outbox_states(running.store, lambda s: s == {"sent": 3, "failed": 1}))
        rows = {row.target: row for row in await every_delivery(running.store)}
    failed = rows[str(FORUM_CHANNEL_ID)]
    assert "('ideas') is a forum channel" in (failed.last_error or "")
    assert "one of its posts (a thread)" in (failed.last_error or "")
    assert FORUM_CHANNEL_ID not in fake.messages  # a forum holds no messages of its own
    assert not [r for r in fake.requests if r.path == f"/channels/{FORUM_CHANNEL_ID}/messages"]
    assert any(
        r.name == "bot.outbox" and "is a forum channel" in r.getMessage() for r in caplog.records
    )


def process_config(tmp_path: Path, fake: FakeDiscord) -> Path:
    config = tmp_path / "bot.toml"
    config.write_text(f"""
[server]
host = "127.0.0.1"
port = 0

[storage]
path = "{tmp_path / "bot.sqlite3"}"

[console]
enabled = false

[discord]
token = "{TOKEN}"
api_url = "{fake.api_url}"
gateway_url = "{fake.gateway_url}"

[[sources]]
name = "rec"
kind = "onliverec"
secret = "{SECRET}"

[[routes]]
match = "twitch/*"
discord_channels = ["{STREAMS_CHANNEL_ID}"]
""")
    return config


async def health(url: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/healthz") as response:
        return response.status, await response.json()


async def test_a_login_refused_for_the_ip_address_is_retried_and_healthz_says_so(
    tmp_path: Path, fake: FakeDiscord
) -> None:
    # Cloudflare in front of Discord refusing this address: 429 without Via, which
    # discord.py raises at once. The bot waits Retry-After and tries again by itself.
    fake.fail_next(
        "GET",
        "/users/@me",
        status=429,
        json={"message": "You are being blocked from accessing our API temporarily."},
        headers={"Retry-After": "5"},
    )
    async with bot_process(process_config(tmp_path, fake)) as bot:
        await bot.wait_for("stderr", r"Discord is refusing this IP address")
        status, report = await health(bot.url)
        assert (status, report["ok"], report["sinks"]) == (503, False, {"discord": "blocked"})

        async with asyncio.timeout(20):
            while (await health(bot.url))[0] != 200:
                await asyncio.sleep(0.1)
        live = {
            "id": "ip-1",
            "type": "live_start",
            "data": {"platform": "twitch", "channel": "quinn", "live_info": LIVE},
        }
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{bot.url}/webhook/rec?key={SECRET}", json=live) as response,
        ):
            assert response.status == 202
        await fake.wait_for_message(STREAMS_CHANNEL_ID, timeout=10)
        assert await bot.stop() == 0
    [explained] = [line for line in bot.stderr.splitlines() if "refusing this IP" in line]
    assert "429 without Via" in explained and "retrying in 5s" in explained
    logins = [r.status for r in fake.requests if r.path == "/users/@me"]
    assert logins == [429, 200]
    assert TOKEN not in bot.stderr
    # The bot has no voice: discord.py's warnings about voice libraries are not shown.
    assert "voice will NOT be supported" not in bot.stderr


async def test_at_start_each_channel_is_checked_healthz_lists_problems_and_mods_see_them(
    tmp_path: Path, fake: FakeDiscord
) -> None:
    # #15 item 9 through the whole bot: nothing was sent yet, and already the bot knows
    # that one configured channel will refuse its cards.
    route = {"match": "twitch/*", "discord_channels": [str(STREAMS_CHANNEL_ID), str(READONLY)]}
    async with running_bot(tmp_path, fake, [route]) as running:
        url = f"http://{running.host}:{running.port}"

        async def listed() -> bool:
            _status, report = await health(url)
            return bool(report["targets"]["discord"]["problems"])

        await until(listed)
        status, report = await health(url)
        member = await fake.invoke_command("status", channel_id=READONLY)
        moderator = await fake.invoke_command("status", channel_id=READONLY, user_id=MOD_USER_ID)
    # A missing permission is not a reason to restart: /healthz stays 200 and says it.
    assert status == 200 and report["ok"] is True
    problems = report["targets"]["discord"]["problems"]
    assert list(problems) == [str(READONLY)]
    [problem] = problems[str(READONLY)]
    assert problem["kind"] == "cannot_send" and problem["blocking"] is True
    assert isinstance(report["targets"]["discord"]["checked"], str)
    # Moderators of that channel see it in /status; members do not.
    assert "Send Messages" in str(moderator.embeds)
    assert "Send Messages" not in str(member.embeds)
    assert not [r for r in fake.requests if r.method == "POST" and r.path.endswith("/messages")]
