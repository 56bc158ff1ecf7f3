"""The whole bot (`bot.app.run`) against the fake Telegram Bot API."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.app import Running, run
from bot.config import Config
from tests.conftest import SECRET, make_config
from tests.fakes.telegram_api import FakeTelegram
from tests.waiting import every_delivery

USER = 1001
ADMIN = 2002
MEMBER = 3003
GROUP = -100777
OTHER = -100555
MISSING = -100404
COVER = "https://cdn.example.com/quinn.jpg"
_ids = itertools.count(1)


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as tg:
        tg.add_chat(USER, "private", first_name="Alice")
        tg.add_chat(GROUP, "supergroup", title="Streams", admins={ADMIN})
        tg.add_chat(OTHER, "group", title="Friends")
        yield tg


@asynccontextmanager
async def running_bot(
    tmp_path: Path, fake: FakeTelegram, chats: tuple[int, ...] = (GROUP, OTHER)
) -> AsyncIterator[Running]:
    config = make_config(
        tmp_path,
        console={"enabled": False},
        telegram={"token": fake.token, "api_url": fake.api_url},
        routes=[{"match": "twitch/*", "telegram_chats": [str(c) for c in chats]}],
    )
    async with running_with(config) as running:
        yield running


@asynccontextmanager
async def running_with(config: Config) -> AsyncIterator[Running]:
    """The whole bot (bot.app.run) on `config`, its Telegram poller tuned for the fake."""
    stop = asyncio.Event()
    ready: asyncio.Future[Running] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        run(
            config,
            stop,
            on_ready=ready.set_result,
            sink_options={"telegram": {"poll_timeout": 1.0}},
        )
    )
    try:
        running = await asyncio.wait_for(ready, 10)
        assert running.sinks["telegram"].state == "running"
        yield running
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def webhook(
    running: Running, kind: str, channel: str = "quinn", error: str | None = None, **live: Any
) -> int:
    data: dict[str, Any] = {
        "platform": "twitch",
        "channel": channel,
        "url": f"https://twitch.tv/{channel}",
        "live_info": live,
    }
    if error is not None:
        data["error"] = error
    payload = {"id": f"t{next(_ids)}", "type": kind, "data": data}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{running.base_url}/webhook/rec?key={SECRET}", json=payload) as response,
    ):
        return response.status


async def reply_in(fake: FakeTelegram, chat: int, text: str, **kwargs: Any) -> dict[str, Any]:
    """Push a user's command and wait for the bot's answer."""
    sent = fake.push_message(chat, text, **kwargs)

    def answers(message: dict[str, Any]) -> bool:
        if chat > 0:
            return bool(message["message_id"] > sent)
        return bool(message.get("reply_to_message", {}).get("message_id") == sent)

    return await fake.wait_for_message(chat, answers)


async def test_live_start_is_a_photo_with_escaped_caption_and_watch_button(
    tmp_path: Path, fake: FakeTelegram
) -> None:
    hostile = "<b>not bold</b> & </a> 🎮"
    async with running_bot(tmp_path, fake) as running:
        assert (
            await webhook(
                running,
                "live_start",
                uname="Quinn",
                title=hostile,
                categories=["Art"],
                cover=COVER,
            )
            == 202
        )
        for chat in (GROUP, OTHER):
            message = await fake.wait_for_message(chat)
            assert message["photo"]
            assert hostile in message["caption"]  # literal text, not markup
            assert not any(
                e["type"] == "bold"
                and "not bold" in message["caption"][e["offset"] : e["offset"] + e["length"]]
                for e in message.get("caption_entities", [])
            )
            [[button]] = message["reply_markup"]["inline_keyboard"]
            assert button["url"] == "https://twitch.tv/quinn"
    assert fake.messages.get(str(USER), []) == []


async def test_status_in_private_and_mute_rules_in_a_group(
    tmp_path: Path, fake: FakeTelegram
) -> None:
    async with running_bot(tmp_path, fake) as running:
        await webhook(running, "live_start", uname="Quinn", title="Ranked grind")
        await fake.wait_for_message(GROUP)
        status = await reply_in(fake, USER, "/status")
        assert "Quinn" in status["text"] and "Ranked grind" in status["text"]

        refused = await reply_in(fake, GROUP, "/mute 2h", from_user_id=MEMBER)
        assert "admin" in refused["text"]
        muted = await reply_in(fake, GROUP, "/mute 2h", from_user_id=ADMIN)
        assert muted["text"] == "Muted every stream here for 2h."

        await webhook(running, "error", error="recorder lost the stream")
        await fake.wait_for_message(OTHER, lambda m: "recorder lost" in m.get("text", ""))
        await asyncio.sleep(0.3)
        assert all("recorder lost" not in str(m) for m in fake.messages[str(GROUP)])

        unmuted = await reply_in(fake, GROUP, "/unmute", from_user_id=ADMIN)
        assert unmuted["text"].startswith("Unmuted everything here")
        await webhook(running, "error", error="second failure")
        await fake.wait_for_message(GROUP, lambda m: "second failure" in m.get("text", ""))


async def test_subscribe_in_a_private_chat_survives_a_restart(
    tmp_path: Path, fake: FakeTelegram
) -> None:
    async with running_bot(tmp_path, fake) as running:
        answer = await reply_in(fake, USER, "/subscribe twitch/quinn")
        assert "Subscribed" in answer["text"]
    async with running_bot(tmp_path, fake) as running:
        await webhook(running, "live_start", uname="Quinn", title="For Alice")
        message = await fake.wait_for_message(USER, lambda m: "For Alice" in str(m))
    assert "Quinn" in str(message)


async def test_a_429_delays_a_notification_but_it_arrives_once(
    tmp_path: Path, fake: FakeTelegram
) -> None:
    fake.fail_next("sendMessage", error_code=429, retry_after=0.2)
    async with running_bot(tmp_path, fake, chats=(GROUP,)) as running:
        await webhook(running, "live_start", uname="Quinn", title="Once only")
        await fake.wait_for_message(GROUP, lambda m: "Once only" in str(m))
        await asyncio.sleep(0.3)
    assert len(fake.messages[str(GROUP)]) == 1
    assert [c.status for c in fake.calls_to("sendMessage")] == [429, 200]


async def test_a_missing_chat_does_not_stop_the_others(tmp_path: Path, fake: FakeTelegram) -> None:
    async with running_bot(tmp_path, fake, chats=(MISSING, GROUP)) as running:
        await webhook(running, "live_start", uname="Quinn", title="Still delivered")
        await fake.wait_for_message(GROUP, lambda m: "Still delivered" in str(m))
        async with asyncio.timeout(5):
            while "failed" not in (await running.store.outbox_counts()).by_state:
                await asyncio.sleep(0.02)
        failed = [r for r in await every_delivery(running.store) if r.state == "failed"]
    assert [
        (row.target, "chat not found" in (row.last_error or "").lower()) for row in failed
    ] == [(str(MISSING), True)]
