"""The whole bot with `[telegram] updates = "webhook"` (issue 20) against the fake Bot API,
which posts updates to the bot's listener the way Telegram posts them to a public https
URL (the fake plays the TLS proxy in front of it: `route_webhooks`).

What a user would notice: commands are answered without anybody long-polling; an update
Telegram could not post while the bot was down is answered once it is back; restarts and
several sinks starting together do not trip Telegram's one-setWebhook-a-second limit;
going back to polling works with no manual deleteWebhook."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.app import Running
from bot.config import Config
from bot.sinks.telegram.config import TelegramConfig
from bot.sinks.telegram.webhook import SHOWN_PATH, Webhook
from bot.store import Store
from tests.conftest import make_config
from tests.fakes.telegram_api import SECRET_TOKEN_HEADER, FakeTelegram
from tests.test_e2e_telegram import GROUP, USER, fake, reply_in, running_with, webhook
from tests.test_sink_telegram import make_sink

__all__ = ["fake"]  # the fixture, imported for the tests below

PUBLIC = "https://bot.example"


def webhook_config(tmp_path: Path, fake: FakeTelegram, updates: str = "webhook") -> Config:
    return make_config(
        tmp_path,
        server={"host": "127.0.0.1", "port": 0, "public_url": PUBLIC},
        console={"enabled": False},
        telegram={"token": fake.token, "api_url": fake.api_url, "updates": updates},
        routes=[{"match": "twitch/*", "telegram_chats": [str(GROUP)]}],
    )


def calls_of(fake: FakeTelegram, method: str) -> list[Any]:
    return [c for c in fake.calls if c.method.lower() == method.lower()]


def behind_the_proxy(fake: FakeTelegram, running: Running) -> None:
    """Point the public URL at this run's listener (its port is new at every start)."""
    fake.route_webhooks(PUBLIC, [running.base_url])


async def test_commands_come_by_webhook_and_nobody_polls(
    tmp_path: Path, fake: FakeTelegram, caplog: pytest.LogCaptureFixture
) -> None:
    expected = Webhook.for_token(fake.token, PUBLIC)
    async with running_with(webhook_config(tmp_path, fake)) as running:
        behind_the_proxy(fake, running)
        info = await fake_info(fake)
        assert info["url"] == expected.url
        assert set(info["allowed_updates"]) == {"message", "channel_post"}
        answer = await reply_in(fake, USER, "/help")
        assert "/status" in answer["text"]
        assert await webhook(running, "live_start", uname="Quinn", title="Hello") == 202
        await fake.wait_for_message(GROUP, lambda m: "Quinn" in str(m.get("text")))
        status = await reply_in(fake, GROUP, "/status", from_user_id=USER)
        assert "Quinn" in status["text"]

    set_calls = calls_of(fake, "setWebhook")
    assert len(set_calls) == 1
    assert set_calls[0].params["secret_token"] == expected.secret_token
    assert calls_of(fake, "getUpdates") == []  # Telegram would answer it 409 anyway
    posts = fake.webhook_posts
    assert posts, "Telegram never posted an update"
    assert all(p.url.startswith(running.base_url + "/telegram/") for p in posts)
    # Only the updates that were posted before the listener was routed failed.
    assert [p for p in posts if p.ok]
    logs = caplog.text
    assert expected.path not in logs and expected.secret_token not in logs
    assert f"{PUBLIC}{SHOWN_PATH}" in logs


async def fake_info(fake: FakeTelegram) -> dict[str, Any]:
    """getWebhookInfo, as the bot (or its user, with curl) would ask."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{fake.api_url}/bot{fake.token}/getWebhookInfo") as response,
    ):
        body = await response.json()
    assert body["ok"], body
    result: dict[str, Any] = body["result"]
    return result


async def test_an_update_sent_while_the_bot_was_down_is_answered_after_the_restart(
    tmp_path: Path, fake: FakeTelegram
) -> None:
    config = webhook_config(tmp_path, fake)
    async with running_with(config) as running:
        behind_the_proxy(fake, running)
        await reply_in(fake, USER, "/help")
    # Down: the proxy has nothing to pass the update to, and Telegram keeps it.
    fake.route_webhooks(PUBLIC, [])
    sent = fake.push_message(USER, "/help")
    refused = await fake.wait_for_webhook_post(lambda p: not p.ok, start=len(fake.webhook_posts))
    assert refused.error == "Connection refused"
    async with running_with(config) as running:
        behind_the_proxy(fake, running)
        answer = await fake.wait_for_message(
            USER, lambda m: m["message_id"] > sent and "/status" in str(m.get("text")), timeout=10
        )
    assert answer is not None
    # The second start found its webhook already set, so it set nothing (and could not
    # have been refused for setting it again within the second).
    assert len(calls_of(fake, "setWebhook")) == 1
    answers = [m for m in fake.messages[str(USER)] if m["message_id"] > sent]
    assert len(answers) == 1, answers


async def test_a_post_without_the_secret_is_refused_and_changes_nothing(
    tmp_path: Path, fake: FakeTelegram
) -> None:
    hook = Webhook.for_token(fake.token, PUBLIC)
    update = {
        "update_id": 99,
        "message": {
            "message_id": 1,
            "date": 0,
            "chat": {"id": USER, "type": "private"},
            "from": {"id": USER, "is_bot": False, "first_name": "Mallory"},
            "text": "/help",
        },
    }
    async with running_with(webhook_config(tmp_path, fake)) as running:
        url = running.base_url + hook.path
        async with aiohttp.ClientSession() as session:
            async with session.post(url, json=update) as response:
                assert response.status == 401
                assert "error" in await response.json()
            forged = {SECRET_TOKEN_HEADER: "not-the-secret"}
            async with session.post(url, json=update, headers=forged) as response:
                assert response.status == 401
        await asyncio.sleep(0.3)
    assert calls_of(fake, "sendMessage") == []


async def test_sinks_starting_together_all_run_without_tripping_the_set_webhook_limit(
    fake: FakeTelegram, store: Store
) -> None:
    """Three processes' sinks start at once on a bot whose webhook points elsewhere (an
    old public URL): Telegram takes one setWebhook a second and answers the others 429,
    and still every sink runs, with this bot's webhook set once."""
    assert await set_webhook(fake, Webhook.for_token(fake.token, "https://old.example").url)
    await asyncio.sleep(1.1)  # past the one-a-second window that call opened
    config = TelegramConfig(
        token=fake.token, api_url=fake.api_url, disabled_reason=None, updates="webhook"
    )
    sinks = [make_sink(fake, store, config=config, public_url=PUBLIC) for _ in range(3)]
    try:
        await asyncio.gather(*(sink.start() for sink in sinks))
        assert [sink.state for sink in sinks] == ["running"] * 3
    finally:
        await asyncio.gather(*(sink.stop() for sink in sinks))
    assert (await fake_info(fake))["url"] == Webhook.for_token(fake.token, PUBLIC).url
    set_calls = calls_of(fake, "setWebhook")
    assert len([c for c in set_calls if c.status == 200]) == 2  # the old URL, then ours once
    assert [c for c in set_calls if c.status == 429], "the sinks did not start together"


async def set_webhook(fake: FakeTelegram, url: str) -> bool:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{fake.api_url}/bot{fake.token}/setWebhook", data={"url": url}) as response,
    ):
        body = await response.json()
    return bool(body["ok"])


async def test_going_back_to_polling_needs_no_manual_delete_webhook(
    tmp_path: Path, fake: FakeTelegram
) -> None:
    async with running_with(webhook_config(tmp_path, fake)) as running:
        behind_the_proxy(fake, running)
        await reply_in(fake, USER, "/help")
    async with running_with(webhook_config(tmp_path, fake, updates="polling")):
        answer = await reply_in(fake, USER, "/help")
        assert "/status" in answer["text"]
    assert (await fake_info(fake))["url"] == ""
