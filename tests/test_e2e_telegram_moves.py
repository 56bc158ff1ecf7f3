"""Issue 15 item 1 end to end: a Telegram group that becomes a supergroup, through the real
`python -m bot run` process and the fake Bot API.

bot.toml keeps naming the old group. Whether the bot learns of the upgrade from a send's
error or from the group's service message, it follows the chat once: the card goes to the
supergroup, the chat's /subscribe and /mute rows apply there, later changes edit that
card, one warning says what to change, and a restart keeps it all.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SECRET
from tests.fakes.telegram_api import FakeTelegram, RecordedCall
from tests.test_cli import BotProcess
from tests.test_reliability import bot_process, post

ADMIN = 2002
OLD = -4242
NEW = -1004242
_ids = itertools.count(1)


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as tg:
        tg.add_chat(OLD, "group", title="Friends", admins={ADMIN}, owner_id=ADMIN)
        yield tg


def write_config(tmp_path: Path, fake: FakeTelegram) -> Path:
    config = tmp_path / "bot.toml"
    config.write_text(f"""
[server]
host = "127.0.0.1"
port = 0

[storage]
path = "{tmp_path / "bot.sqlite3"}"

[console]
enabled = false

[behaviour]
end_grace = "0s"
change_cooldown = "0s"

[telegram]
token = "{fake.token}"
api_url = "{fake.api_url}"

[[sources]]
name = "rec"
kind = "onliverec"
secret = "{SECRET}"

[[routes]]
match = "twitch/quinn"
telegram_chats = ["{OLD}"]
""")
    return config


def event(kind: str, channel: str = "quinn", **live: Any) -> dict[str, Any]:
    """A OneLiveRec webhook (a change carries the new state as `new_live_info`)."""
    info_key = "new_live_info" if kind.endswith("_change") else "live_info"
    return {
        "id": f"m{next(_ids)}",
        "type": kind,
        "data": {
            "platform": "twitch",
            "channel": channel,
            "url": f"https://twitch.tv/{channel}",
            info_key: {"uname": channel.title(), **live},
        },
    }


async def command(fake: FakeTelegram, chat: int, text: str) -> str:
    """An admin's command in a group, and the bot's answer."""
    sent = fake.push_message(chat, text, from_user_id=ADMIN)
    answer = await fake.wait_for_message(
        chat, lambda m: m.get("reply_to_message", {}).get("message_id") == sent
    )
    return str(answer["text"])


def cards(fake: FakeTelegram, chat: int) -> list[dict[str, Any]]:
    """The bot's notifications in a chat (not its answers to commands)."""
    return [m for m in fake.messages.get(str(chat), []) if "reply_to_message" not in m]


def naming(fake: FakeTelegram, chat: int, start: int = 0) -> list[RecordedCall]:
    return [c for c in fake.calls[start:] if c.params.get("chat_id") == chat]


def warnings_about_the_move(bot: BotProcess) -> list[str]:
    return [
        line
        for line in bot.stderr.splitlines()
        if re.search(r" (WARNING|ERROR) ", line) and str(OLD) in line
    ]


async def prepare_old_group(fake: FakeTelegram) -> None:
    """The group's admins subscribe it to alice and mute bob (both also followed)."""
    assert "Subscribed" in await command(fake, OLD, "/subscribe@streambot_test twitch/alice")
    assert "Subscribed" in await command(fake, OLD, "/subscribe@streambot_test twitch/bob")
    assert "Muted" in await command(fake, OLD, "/mute@streambot_test twitch/bo*")


async def test_the_send_error_comes_first_then_the_service_message(
    tmp_path: Path, fake: FakeTelegram
) -> None:
    config = write_config(tmp_path, fake)
    async with bot_process(config) as bot:
        await prepare_old_group(fake)
        fake.migrate_chat(OLD, NEW, service_messages=False)

        assert (await post(bot.url, event("live_start", title="Ranked"))).status == 202
        card = await fake.wait_for_message(NEW, lambda m: "Ranked" in m.get("text", ""))
        # Its subscriptions and mutes came along: alice reaches the new chat, bob is muted.
        assert (await post(bot.url, event("live_start", "alice", title="Alice's"))).status == 202
        await fake.wait_for_message(NEW, lambda m: "Alice's" in m.get("text", ""))
        assert (await post(bot.url, event("live_start", "bob", title="Bob's"))).status == 202
        mutes = await command(fake, NEW, "/mutes@streambot_test")
        assert "twitch/bo*" in mutes
        # A change edits the card in the supergroup.
        assert (await post(bot.url, event("title_change", title="Finals"))).status == 202
        edited = await fake.wait_for_message(
            NEW,
            lambda m: m["message_id"] == card["message_id"] and "Finals" in m.get("text", ""),
        )
        assert "edit_date" in edited

        # Then the service messages arrive: the move is done already.
        fake.announce_migration(OLD)
        assert "Nothing" not in await command(fake, NEW, "/mutes@streambot_test")
        assert await bot.stop() == 0
    assert len(cards(fake, NEW)) == 2, "quinn's card and alice's; bob's was muted"
    assert all("Bob's" not in str(m) for m in fake.messages[str(NEW)])
    assert cards(fake, OLD) == []
    # One refused send, and nothing else ever addressed to the old id after the migration.
    refused = [c for c in naming(fake, OLD) if c.status == 400]
    assert [c.method for c in refused] == ["sendMessage"]
    assert len(warnings_about_the_move(bot)) == 1, bot.stderr
    assert bot.stderr.count(f"telegram chat {OLD} moved to {NEW}") == 1

    # After a restart the mapping holds: straight to the supergroup, one start warning.
    async with bot_process(config) as bot:
        calls = len(fake.calls)
        assert (await post(bot.url, event("live_end"))).status == 202
        await fake.wait_for_message(
            NEW, lambda m: m["message_id"] == card["message_id"] and "Ranked" not in str(m)
        )
        assert (await post(bot.url, event("live_start", title="Again"))).status == 202
        await fake.wait_for_message(NEW, lambda m: "Again" in m.get("text", ""))
        assert naming(fake, OLD, calls) == []
        assert await bot.stop() == 0
    # Once per start, by the preflight of the route's old id, and for admins in /status.
    [warning] = warnings_about_the_move(bot)
    assert f"telegram {NEW}: This chat was the group {OLD}" in warning
    assert f"Where bot.toml names {OLD} in telegram_chats, replace it with {NEW}" in warning


async def test_the_service_message_comes_first(tmp_path: Path, fake: FakeTelegram) -> None:
    config = write_config(tmp_path, fake)
    async with bot_process(config) as bot:
        await prepare_old_group(fake)
        fake.migrate_chat(OLD, NEW, by_user_id=ADMIN)
        await bot.wait_for("stderr", f"telegram chat {OLD} moved to {NEW}")
        calls = len(fake.calls)

        assert (await post(bot.url, event("live_start", title="Ranked"))).status == 202
        await fake.wait_for_message(NEW, lambda m: "Ranked" in m.get("text", ""))
        assert (await post(bot.url, event("live_start", "alice", title="Alice's"))).status == 202
        await fake.wait_for_message(NEW, lambda m: "Alice's" in m.get("text", ""))
        assert "twitch/bo*" in await command(fake, NEW, "/mutes@streambot_test")
        # The running dispatcher routed the old id to the new one: no send tried the old.
        assert naming(fake, OLD, calls) == []
        assert await bot.stop() == 0
    assert len(warnings_about_the_move(bot)) == 1, bot.stderr
    assert bot.stderr.count(f"telegram chat {OLD} moved to {NEW}") == 1
