"""`/test`: a moderator posts a test card into a chat through the whole bot; it pings
nobody and is deleted a minute later, even across a restart."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.store import Store
from bot.store.sqlite import SQLiteStore
from bot.testcard import TEST_CARD_SECONDS
from tests.fakes.discord_api import (
    GENERAL_CHANNEL_ID,
    MOD_USER_ID,
    STREAMS_CHANNEL_ID,
    TOKEN,
    FakeDiscord,
    assert_no_heartbeat_threads,
)
from tests.fakes.telegram_api import FakeTelegram
from tests.test_e2e_discord import LIVE
from tests.test_e2e_discord import running_bot as discord_bot
from tests.test_e2e_discord import webhook as discord_webhook
from tests.test_e2e_telegram import ADMIN, GROUP, MEMBER, OTHER, reply_in
from tests.test_e2e_telegram import running_bot as telegram_bot
from tests.waiting import every_delivery

REPLY = "A test card was posted here; it is deleted in a minute."


@pytest.fixture(autouse=True)
def no_heartbeat_threads_left() -> Any:
    yield
    assert_no_heartbeat_threads()


@pytest.fixture
async def discord_fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(token=TOKEN, heartbeat_interval=200) as server:
        yield server
        assert server.errors == []


@pytest.fixture
async def telegram_fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as tg:
        tg.add_chat(GROUP, "supergroup", title="Streams", admins={ADMIN})
        tg.add_chat(OTHER, "group", title="Friends")
        yield tg


async def the_deletion(store: Store) -> Any:
    """The test card's post and its deletion, as queued."""
    rows = await every_delivery(store)
    [post] = [r for r in rows if r.action == "post" and r.event_row == rows[-1].event_row]
    [delete] = [r for r in rows if r.action == "delete"]
    assert delete.options == {"card": post.id}
    return post, delete


async def release_the_deletion(tmp_path: Path, event_row: int) -> None:
    """What a minute does, while the bot is down: the deletion becomes due."""
    store = SQLiteStore(tmp_path / "bot.sqlite3")
    await store.open()
    try:
        assert await store.release_held(event_row, now=time.time()) == 1
    finally:
        await store.close()


async def test_discord_test_card_pings_nobody_and_is_deleted_after_a_restart(
    tmp_path: Path, discord_fake: FakeDiscord
) -> None:
    async with discord_bot(tmp_path, discord_fake) as running:
        # A real session first: the test card shows the last real live_start.
        assert await discord_webhook(running, "live_start", **LIVE) == 202
        await discord_fake.wait_for_message(STREAMS_CHANNEL_ID)
        refused = await discord_fake.invoke_command(
            "test", channel_id=STREAMS_CHANNEL_ID, check_permissions=False
        )
        assert "Manage Channels" in (refused.content or "")
        answer = await discord_fake.invoke_command(
            "test", channel_id=STREAMS_CHANNEL_ID, user_id=MOD_USER_ID
        )
        assert answer.content == REPLY
        await discord_fake.wait_for_message(
            STREAMS_CHANNEL_ID, lambda m: m is not discord_fake.messages[STREAMS_CHANNEL_ID][0]
        )
        live_card, test_card = discord_fake.messages[STREAMS_CHANNEL_ID]
        # The route pings the Streamers role on live_start; the test card pings nobody.
        assert live_card["mention_roles"] != []
        assert test_card["mention_roles"] == [] and test_card["mentions"] == []
        assert not test_card["mention_everyone"]
        assert "Painting a dragon" in str(test_card["embeds"])
        post, delete = await the_deletion(running.store)
        assert delete.state == "pending"
        assert delete.not_before == pytest.approx(post.created_at + TEST_CARD_SECONDS)
    # Only the channel asked in got it.
    assert len(discord_fake.messages[GENERAL_CHANNEL_ID]) == 1

    await release_the_deletion(tmp_path, delete.event_row)
    async with discord_bot(tmp_path, discord_fake):
        async with asyncio.timeout(10):
            while len(discord_fake.messages[STREAMS_CHANNEL_ID]) > 1:
                await asyncio.sleep(0.02)
    assert discord_fake.messages[STREAMS_CHANNEL_ID] == [live_card]


async def test_telegram_test_card_is_for_admins_and_is_deleted(
    tmp_path: Path, telegram_fake: FakeTelegram
) -> None:
    async with telegram_bot(tmp_path, telegram_fake) as running:
        refused = await reply_in(telegram_fake, GROUP, "/test", from_user_id=MEMBER)
        assert "only this chat's admins" in refused["text"]
        assert await every_delivery(running.store) == []
        answer = await reply_in(telegram_fake, GROUP, "/test", from_user_id=ADMIN)
        assert answer["text"] == REPLY
        # No real event yet: the built-in sample, the one `render` shows.
        card = await telegram_fake.wait_for_message(
            GROUP, lambda m: "Aurora Vale" in str(m.get("caption") or m.get("text"))
        )
        _post, delete = await the_deletion(running.store)
    assert telegram_fake.messages.get(str(OTHER), []) == []

    await release_the_deletion(tmp_path, delete.event_row)
    async with telegram_bot(tmp_path, telegram_fake):
        async with asyncio.timeout(10):
            while any(
                m["message_id"] == card["message_id"] for m in telegram_fake.messages[str(GROUP)]
            ):
                await asyncio.sleep(0.02)


async def test_test_in_a_muted_chat_says_why_nothing_comes(
    tmp_path: Path, telegram_fake: FakeTelegram
) -> None:
    async with telegram_bot(tmp_path, telegram_fake) as running:
        await reply_in(telegram_fake, GROUP, "/mute", from_user_id=ADMIN)
        answer = await reply_in(telegram_fake, GROUP, "/test", from_user_id=ADMIN)
        assert "muted here" in answer["text"] and "/unmute" in answer["text"]
        assert await every_delivery(running.store) == []
