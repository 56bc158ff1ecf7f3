"""Route filters, silent sends, quiet hours and @everyone through the whole bot
(`bot.app.run`) against the fake Discord and the fake Telegram."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot import i18n, markup
from bot.app import Running
from tests.conftest import make_config
from tests.fakes.discord_api import (
    ANNOUNCEMENTS_CHANNEL_ID,
    BOT_ROLE_PERMISSIONS,
    BOT_USER_ID,
    CREATE_PUBLIC_THREADS,
    CROSSPOSTED,
    FORUM_CHANNEL_ID,
    GENERAL_CHANNEL_ID,
    MANAGE_THREADS,
    MENTION_EVERYONE,
    STREAMERS_ROLE_ID,
    STREAMS_CHANNEL_ID,
    SUPPRESS_NOTIFICATIONS,
    TOKEN,
    FakeDiscord,
    default_guild,
)
from tests.fakes.telegram_api import FakeTelegram
from tests.test_e2e_discord import running_with, webhook
from tests.test_e2e_telegram import running_with as running_telegram

ALWAYS = ["00:00-24:00"]


def card_text(message: dict[str, Any]) -> str:
    return str(message.get("content")) + str(message.get("embeds"))


@pytest.fixture
async def granted() -> Any:
    """A server that granted the bot Mention Everyone: only the bot decides who is pinged."""
    guild = default_guild(bot_permissions=BOT_ROLE_PERMISSIONS | MENTION_EVERYONE)
    async with FakeDiscord(token=TOKEN, heartbeat_interval=200, guilds=[guild]) as fake:
        yield fake
        assert fake.errors == []


def discord_config(tmp_path: Path, fake: FakeDiscord, *routes: dict[str, Any]) -> Any:
    return make_config(
        tmp_path,
        console={"enabled": False},
        discord={"token": TOKEN, "api_url": fake.api_url, "gateway_url": fake.gateway_url},
        routes=list(routes),
    )


async def test_a_category_filter_posts_the_card_when_the_stream_switches_into_it(
    tmp_path: Path, granted: FakeDiscord
) -> None:
    fake = granted
    celeste = {
        "match": "twitch/*",
        "discord_channels": [str(STREAMS_CHANNEL_ID)],
        "mention_roles": [str(STREAMERS_ROLE_ID)],
        "categories": ["celeste*"],
        "mention_everyone": True,
    }
    everything_quietly = {
        "match": "twitch/*",
        "discord_channels": [str(GENERAL_CHANNEL_ID)],
        "silent": True,
    }
    config = discord_config(tmp_path, fake, celeste, everything_quietly)
    async with running_with(config) as running:
        live = {"uname": "Quinn", "title": "Warm-up @everyone", "categories": ["Art"]}
        assert await webhook(running, "live_start", **live) == 202
        general = await fake.wait_for_message(GENERAL_CHANNEL_ID)
        # The silent route: the card arrives, nobody's phone rings, nobody is pinged.
        assert general["flags"] & SUPPRESS_NOTIFICATIONS
        assert not general["mention_everyone"] and general["mention_roles"] == []
        await asyncio.sleep(0.3)
        assert fake.messages.get(STREAMS_CHANNEL_ID, []) == []  # Art: not for this route

        # Into Celeste: the first message this channel sees of the stream is its card,
        # with the route's pings (@everyone on purpose; the title's never counts).
        assert await webhook(running, "category_change", categories=["Celeste"]) == 202
        card = await fake.wait_for_message(STREAMS_CHANNEL_ID)
        assert card["mention_roles"] == [str(STREAMERS_ROLE_ID)]
        assert card["mention_everyone"] is True
        assert card["content"].startswith("@everyone <@&")
        assert "Celeste" in card_text(card) and "changed" not in card["content"]
        assert not card["flags"] & SUPPRESS_NOTIFICATIONS
        await fake.wait_for_message(GENERAL_CHANNEL_ID, lambda m: "Celeste" in card_text(m))

        # Later changes edit that card, also the one that takes the stream away again.
        assert await webhook(running, "title_change", title="Any% PB") == 202
        await fake.wait_for_message(STREAMS_CHANNEL_ID, lambda m: "Any% PB" in card_text(m))
        assert await webhook(running, "category_change", categories=["Art"]) == 202
        await fake.wait_for_message(
            STREAMS_CHANNEL_ID, lambda m: "Art" in card_text(m) and "Celeste" not in card_text(m)
        )
        assert await webhook(running, "live_end") == 202
        await fake.wait_for_message(STREAMS_CHANNEL_ID, lambda m: "ended" in card_text(m))
        await fake.wait_for_message(GENERAL_CHANNEL_ID, lambda m: "ended" in card_text(m))
    assert len(fake.messages[STREAMS_CHANNEL_ID]) == 1
    assert len(fake.messages[GENERAL_CHANNEL_ID]) == 1


async def test_quiet_hours_send_silently_and_ping_nobody(
    tmp_path: Path, granted: FakeDiscord
) -> None:
    fake = granted
    route = {
        "match": "twitch/*",
        "discord_channels": [str(STREAMS_CHANNEL_ID)],
        "mention_roles": [str(STREAMERS_ROLE_ID)],
        "mention_everyone": True,
        "quiet_hours": ALWAYS,
        "timezone": "Europe/Berlin",
    }
    async with running_with(discord_config(tmp_path, fake, route)) as running:
        assert await webhook(running, "live_start", uname="Quinn", title="Late night") == 202
        card = await fake.wait_for_message(STREAMS_CHANNEL_ID)
    assert card["flags"] & SUPPRESS_NOTIFICATIONS
    assert card["mention_roles"] == [] and not card["mention_everyone"]
    assert "@everyone" not in card["content"] and "<@&" not in card["content"]
    assert "Quinn" in card_text(card)  # the card still says who is live


async def test_telegram_sends_silently_in_quiet_hours_and_filters_by_title(
    tmp_path: Path,
) -> None:
    group = -100777
    async with FakeTelegram() as telegram:
        telegram.add_chat(group, "supergroup", title="Streams")
        config = make_config(
            tmp_path,
            console={"enabled": False},
            telegram={"token": telegram.token, "api_url": telegram.api_url},
            routes=[
                {
                    "match": "twitch/*",
                    "telegram_chats": [str(group)],
                    "title_exclude": "rerun",
                    "quiet_hours": ALWAYS,
                }
            ],
        )
        async with running_telegram(config) as running:
            assert await webhook(running, "live_start", uname="Quinn", title="Rerun: PB") == 202
            await asyncio.sleep(0.5)
            assert not telegram.calls_to("sendMessage") and not telegram.calls_to("sendPhoto")
            assert await webhook(running, "title_change", title="Live: PB attempts") == 202
            await telegram.wait_for_call("sendMessage")
        (sent,) = telegram.calls_to("sendMessage")
    assert sent.params["disable_notification"] is True
    # The card (not a change notice) with the stream as it is now.
    assert "Live: PB attempts" in sent.params["text"]
    assert "changed" not in sent.params["text"]


async def test_everyone_without_the_permission_pings_nobody_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    route = {
        "match": "twitch/*",
        "discord_channels": [str(STREAMS_CHANNEL_ID)],
        "mention_everyone": True,
    }
    async with FakeDiscord(token=TOKEN, heartbeat_interval=200) as fake:
        async with running_with(discord_config(tmp_path, fake, route)) as running:
            assert await webhook(running, "live_start", uname="Quinn", title="Hi") == 202
            card = dict(await fake.wait_for_message(STREAMS_CHANNEL_ID))  # as first sent
            assert await webhook(running, "live_end") == 202
            assert await webhook(running, "live_start", uname="Quinn", title="Again") == 202
            await fake.wait_for_message(STREAMS_CHANNEL_ID, lambda m: "Again" in card_text(m))
        assert fake.errors == []
    assert card["content"].startswith("@everyone")
    assert card["mention_everyone"] is False  # Discord's rule: the bot may not
    warnings = [r for r in caplog.records if "@everyone (mention_everyone = true)" in r.message]
    assert len(warnings) == 1  # once per channel


# -- crosspost -----------------------------------------------------------------------------


def crossposting(tmp_path: Path, fake: FakeDiscord, channel: int) -> Any:
    route = {"match": "twitch/*", "discord_channels": [str(channel)], "crosspost": True}
    return discord_config(tmp_path, fake, route)


async def test_a_card_is_published_in_an_announcement_channel_and_its_edits_follow(
    tmp_path: Path,
) -> None:
    # One edit of a published message per 90 s: the second edit waits out Discord's 429
    # (20028, its Retry-After header wrong as on Discord) in the outbox, then goes out.
    async with FakeDiscord(
        token=TOKEN, heartbeat_interval=200, published_edit_limit=(1, 90.0)
    ) as fake:
        async with running_with(crossposting(tmp_path, fake, ANNOUNCEMENTS_CHANNEL_ID)) as running:
            assert await webhook(running, "live_start", uname="Quinn", title="Day 1") == 202
            await fake.wait_for_message(
                ANNOUNCEMENTS_CHANNEL_ID, lambda m: bool(m["flags"] & CROSSPOSTED)
            )
            assert await webhook(running, "title_change", title="Day 1, part 2") == 202
            await fake.wait_for_message(
                ANNOUNCEMENTS_CHANNEL_ID, lambda m: "part 2" in card_text(m)
            )
            assert await webhook(running, "title_change", title="Day 1, finale") == 202
            await wait_for_429(fake)
            rows = await running.store.outbox_counts()
            assert rows.by_state.get("pending") == 1  # rescheduled, not failed or lost
        assert fake.errors == []
    (card,) = fake.messages[ANNOUNCEMENTS_CHANNEL_ID]
    assert fake.crossposted(ANNOUNCEMENTS_CHANNEL_ID) == [card]
    # Published once: the edits follow by themselves, they are not published again.
    assert len([r for r in fake.requests if r.path.endswith("/crosspost")]) == 1


async def wait_for_429(fake: FakeDiscord) -> Any:
    async with asyncio.timeout(10):
        while True:
            for request in fake.requests:
                if request.method == "PATCH" and request.status == 429:
                    return request
            await asyncio.sleep(0.05)


async def test_crosspost_in_a_plain_channel_posts_and_says_why_it_cannot_publish(
    tmp_path: Path, fake_discord: FakeDiscord
) -> None:
    fake = fake_discord
    async with running_with(crossposting(tmp_path, fake, STREAMS_CHANNEL_ID)) as running:
        assert await webhook(running, "live_start", uname="Quinn", title="Hi") == 202
        await fake.wait_for_message(STREAMS_CHANNEL_ID)
        problems = await wait_for_problem(running, "not_announcement")
    assert "is not an announcement channel" in problems["detail"]
    assert fake.crossposted(STREAMS_CHANNEL_ID) == []
    assert not [r for r in fake.requests if r.path.endswith("/crosspost")]


async def test_over_the_publish_limit_the_card_still_goes_out_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with FakeDiscord(
        token=TOKEN, heartbeat_interval=200, crosspost_limit=(1, 3600.0)
    ) as fake:
        async with running_with(crossposting(tmp_path, fake, ANNOUNCEMENTS_CHANNEL_ID)) as running:
            assert await webhook(running, "live_start", channel="quinn", uname="Quinn") == 202
            assert await webhook(running, "live_start", channel="bo", uname="Bo") == 202
            async with asyncio.timeout(10):
                while len(fake.messages[ANNOUNCEMENTS_CHANNEL_ID]) < 2 or not any(
                    "not published" in r.message for r in caplog.records
                ):
                    await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)
        assert fake.errors == []
    assert len(fake.messages[ANNOUNCEMENTS_CHANNEL_ID]) == 2  # no card posted twice
    assert len(fake.crossposted(ANNOUNCEMENTS_CHANNEL_ID)) == 1
    assert any(
        "10 publishes per announcement channel per hour" in r.message for r in caplog.records
    )


async def wait_for_problem(running: Running, kind: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        async with asyncio.timeout(10):
            while True:
                async with session.get(f"{running.base_url}/healthz") as response:
                    report = await response.json()
                by_target = report["targets"].get("discord", {}).get("problems", {})
                for problems in by_target.values():
                    for problem in problems:
                        if problem["kind"] == kind:
                            return dict(problem)
                await asyncio.sleep(0.1)


@pytest.fixture
async def fake_discord() -> Any:
    async with FakeDiscord(token=TOKEN, heartbeat_interval=200) as fake:
        yield fake
        assert fake.errors == []


# -- a thread per stream -----------------------------------------------------------------


def threaded(tmp_path: Path, fake: FakeDiscord, channel: int, **route: Any) -> Any:
    table = {"match": "twitch/*", "discord_channels": [str(channel)], "thread": "per_stream"}
    return discord_config(tmp_path, fake, {**table, **route})


def guild_with(*extra: int) -> Any:
    permissions = BOT_ROLE_PERMISSIONS
    for bit in extra:
        permissions |= bit
    return default_guild(bot_permissions=permissions)


async def test_a_text_channel_card_opens_the_sessions_thread_and_its_end_archives_it(
    tmp_path: Path,
) -> None:
    guild = guild_with(CREATE_PUBLIC_THREADS, MANAGE_THREADS)
    async with FakeDiscord(token=TOKEN, heartbeat_interval=200, guilds=[guild]) as fake:
        config = threaded(tmp_path, fake, STREAMS_CHANNEL_ID, on_change="both")
        async with running_with(config) as running:
            assert await webhook(running, "live_start", uname="Quinn", title="Any% <@&1>") == 202
            card = await fake.wait_for_message(STREAMS_CHANNEL_ID)
            thread = await wait_for_thread(fake, STREAMS_CHANNEL_ID)
            assert int(thread["id"]) == int(card["id"])
            assert thread["name"] == "Quinn: Any% <@&1>"  # a channel name pings nobody
            # The session's notices go into its thread; the card is edited in place.
            assert await webhook(running, "title_change", title="Boss fight") == 202
            notice = await fake.wait_for_message(int(thread["id"]))
            assert "Boss fight" in card_text(notice)
            assert await webhook(running, "live_end") == 202
            await wait_until_archived(fake, int(thread["id"]))
        assert fake.errors == []
    assert len(fake.messages[STREAMS_CHANNEL_ID]) == 1
    assert "ended" in card_text(fake.messages[STREAMS_CHANNEL_ID][0])


async def test_a_forum_gets_a_post_per_session_that_stays_editable_when_archived(
    tmp_path: Path,
) -> None:
    guild = guild_with(MANAGE_THREADS)
    async with FakeDiscord(token=TOKEN, heartbeat_interval=200, guilds=[guild]) as fake:
        async with running_with(threaded(tmp_path, fake, FORUM_CHANNEL_ID)) as running:
            assert await webhook(running, "live_start", uname="Quinn", title="Day 1") == 202
            post = await wait_for_thread(fake, FORUM_CHANNEL_ID)
            assert post["name"] == "Quinn: Day 1"
            (card,) = fake.messages[int(post["id"])]
            assert card["id"] == post["id"]  # the post's first message is the card
            assert await webhook(running, "title_change", title="Day 1, part 2") == 202
            await fake.wait_for_message(int(post["id"]), lambda m: "part 2" in card_text(m))
            assert await webhook(running, "live_end") == 202
            await wait_until_archived(fake, int(post["id"]))
            # Edited once more after the archive (a replay, hours later, say): the bot
            # reopens the post, edits the card, and archives it again.
            await fake.update_channel(
                int(post["id"]), thread_metadata=dict(post["thread_metadata"], archived=True)
            )
            assert await webhook(running, "live_start", uname="Quinn", title="Day 2") == 202
            await asyncio.sleep(0.5)
        assert fake.errors == []
    # Day 2 (within the rejoin window) reopens the same card: no second post.
    assert len(fake.threads_of(FORUM_CHANNEL_ID)) == 1
    assert "Day 2" in card_text(fake.messages[int(post["id"])][0])


async def test_without_create_public_threads_the_card_goes_out_and_the_channel_is_reported(
    tmp_path: Path,
) -> None:
    async with FakeDiscord(token=TOKEN, heartbeat_interval=200) as fake:
        async with running_with(threaded(tmp_path, fake, STREAMS_CHANNEL_ID)) as running:
            problem = await wait_for_problem(running, "no_threads")  # found by the preflight
            assert await webhook(running, "live_start", uname="Quinn", title="Hi") == 202
            await fake.wait_for_message(STREAMS_CHANNEL_ID)
            await asyncio.sleep(0.3)
        assert fake.errors == []
    assert "Create Public Threads" in problem["detail"]
    made = [t for t in fake.threads_of(STREAMS_CHANNEL_ID) if t["owner_id"] == str(BOT_USER_ID)]
    assert made == []  # the card stands alone


async def wait_for_thread(fake: FakeDiscord, channel: int) -> dict[str, Any]:
    async with asyncio.timeout(10):
        while True:
            mine = [t for t in fake.threads_of(channel) if t["owner_id"] == str(fake.bot_user_id)]
            if mine:
                return mine[-1]
            await asyncio.sleep(0.05)


async def wait_until_archived(fake: FakeDiscord, thread_id: int) -> None:
    async with asyncio.timeout(10):
        while True:
            threads = [
                t
                for t in fake.threads_of(FORUM_CHANNEL_ID) + fake.threads_of(STREAMS_CHANNEL_ID)
                if int(t["id"]) == thread_id
            ]
            if threads and threads[0]["thread_metadata"]["archived"]:
                return
            await asyncio.sleep(0.05)


async def test_each_channel_gets_its_cards_in_its_routes_language(
    tmp_path: Path, granted: FakeDiscord
) -> None:
    """A route's `locale` writes its chats' cards and their edits in that language, with
    CLDR's units; a chat without one gets [behaviour]'s; stream text stays inert."""
    fake = granted
    russian = {"match": "twitch/*", "discord_channels": [str(STREAMS_CHANNEL_ID)], "locale": "ru"}
    default = {"match": "twitch/*", "discord_channels": [str(GENERAL_CHANNEL_ID)]}
    config = make_config(
        tmp_path,
        console={"enabled": False},
        discord={"token": TOKEN, "api_url": fake.api_url, "gateway_url": fake.gateway_url},
        behaviour={"end_grace": "0s", "locale": "fr"},
        routes=[russian, default],
    )
    ru, fr = i18n.translations("ru").gettext, i18n.translations("fr").gettext
    async with running_with(config) as running:
        live = {"uname": "Quinn **@everyone**", "title": "Any% run", "categories": ["Celeste"]}
        assert await webhook(running, "live_start", **live) == 202
        card = await fake.wait_for_message(STREAMS_CHANNEL_ID)
        general = await fake.wait_for_message(GENERAL_CHANNEL_ID)
        name = markup.escape_discord("Quinn **@everyone**")  # literal, mentioning nobody
        assert "**" not in name and "@everyone" not in name
        assert card["content"] == "🔴 " + ru("**%(name)s** is live!") % {"name": name}
        assert general["content"] == "🔴 " + fr("**%(name)s** is live!") % {"name": name}
        assert not card["mention_everyone"] and not general["mention_everyone"]
        [embed] = card["embeds"]
        assert ru("Watch the stream") in embed["description"]

        assert await webhook(running, "live_end") == 202
        ended = await fake.wait_for_message(
            STREAMS_CHANNEL_ID, lambda m: m["content"].startswith("⚫")
        )
        assert ended["content"] == "⚫ " + ru("**%(name)s** ended the stream") % {"name": name}
        # Streamed for a few seconds, in Russian units (CLDR's narrow second).
        seconds = re.escape(i18n.format_duration(1, "ru").removeprefix("1"))
        assert seconds != "s"
        assert re.search(rf"\*\*\d+{seconds}\*\*", ended["embeds"][0]["description"]), ended
    assert len(fake.messages[STREAMS_CHANNEL_ID]) == 1  # one card, edited in place
