"""Stream text that tries to ping, reorder or flood, through `python -m bot run` and the fakes.

A title, name, category or error from a webhook is shown (the name stays readable) but
mentions nobody on Telegram or Discord, carries no bidi control or line separator to any
platform, and a megabyte of it prints a bounded notification on the console.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

from tests.fakes.discord_api import STREAMS_CHANNEL_ID, FakeDiscord
from tests.fakes.discord_api import TOKEN as DISCORD_TOKEN
from tests.fakes.telegram_api import FakeTelegram
from tests.test_cli import CONFIG, live_event, running_bot
from tests.test_cli import post as post_onliverec
from tests.test_reliability import GROUP, bot_process, post
from tests.test_reliability import write_config as reliability_config

MEMBER = 3003
# What must not reach a platform from stream text: bidi embeddings, overrides and isolates,
# line and paragraph separators, NEL.
HIDDEN = re.compile("[\u202a-\u202e\u2066-\u2069\u2028\u2029\x85]")
WORD_JOINER = "\u2060"
ZWSP = "\u200b"

NAME = "\u202e@admin_user\u2066"
TITLE = "Ask @admin_user or @everyone1\u2028now \u2067@mod_team\u2069 &#64;sneaky"
CATEGORIES = ["@here_ chat\u2029", "Art\x85Music"]
ERROR = "lost @admin_user\u202e\u2028retrying"


def write_config(
    tmp_path: Path, telegram: FakeTelegram, discord: FakeDiscord | None = None
) -> Path:
    """Telegram's GROUP (and Discord's streams channel) for twitch/*; changes edit at once."""
    return reliability_config(
        tmp_path, telegram, discord, chats=(GROUP,), extra='[behaviour]\nchange_cooldown = "0s"'
    )


def webhook(kind: str, channel: str, url: str, **data: Any) -> dict[str, Any]:
    return {
        "id": f"{kind}-{channel}-{len(json.dumps(data))}",
        "type": kind,
        "data": {"platform": "twitch", "channel": channel, "url": url, **data},
    }


def read_by_a_person(text: str) -> str:
    """What Telegram shows: the word joiners are invisible."""
    return text.replace(WORD_JOINER, "")


def assert_pings_nobody_and_hides_nothing(message: dict[str, Any]) -> None:
    text = message.get("text") or message.get("caption") or ""
    entities = message.get("entities") or message.get("caption_entities") or []
    pings = [e for e in entities if e["type"] in ("mention", "text_mention")]
    assert not pings, (text, pings)
    assert not HIDDEN.search(text), repr(text)


async def test_telegram_stream_text_mentions_nobody_and_carries_no_bidi_or_line_separators(
    tmp_path: Path,
) -> None:
    async with FakeTelegram() as fake:
        fake.add_chat(GROUP, "supergroup", title="Streams")
        config = write_config(tmp_path, fake)
        async with bot_process(config) as bot:
            live = {
                "uname": NAME,
                "title": TITLE,
                "categories": CATEGORIES,
                "cover": "https://cdn.example.com/q.jpg",
            }
            # The title is the link text of <a>, the name bold, in a photo caption.
            start = webhook("live_start", "quinn", "https://twitch.tv/quinn", live_info=live)
            assert (await post(bot.url, start)).status == 202
            card = await fake.wait_for_message(GROUP, lambda m: "photo" in m)
            # An edit of that caption, then a text message with the error in <pre>.
            change = webhook(
                "title_change",
                "quinn",
                "https://twitch.tv/quinn",
                new_live_info={**live, "title": TITLE + " again"},
            )
            assert (await post(bot.url, change)).status == 202
            await fake.wait_for_message(GROUP, lambda m: "again" in m.get("caption", ""))
            error = webhook(
                "error", "quinn", "https://twitch.tv/quinn", live_info={"uname": NAME}, error=ERROR
            )
            assert (await post(bot.url, error)).status == 202
            await fake.wait_for_message(GROUP, lambda m: "retrying" in m.get("text", ""))
            # A link to tg://user would be a text_mention: such a URL is no link at all.
            mallory = webhook(
                "live_start",
                "mallory",
                "tg://user?id=2002",
                live_info={"uname": "@admin_user", "title": "hi @admin_user"},
            )
            assert (await post(bot.url, mallory)).status == 202
            await fake.wait_for_message(GROUP, lambda m: "hi @" in m.get("text", ""))
            # /status lists the same names and titles.
            asked = fake.push_message(
                GROUP, f"/status@{fake.bot_user['username']}", from_user_id=MEMBER
            )
            status = await fake.wait_for_message(
                GROUP, lambda m: m.get("reply_to_message", {}).get("message_id") == asked
            )
            assert await bot.stop() == 0

        messages = fake.messages[str(GROUP)]
        assert len(messages) == 4
        for message in messages:
            assert_pings_nobody_and_hides_nothing(message)
        # Nothing hidden was even sent (Telegram itself drops only U+2028-U+202E).
        sent = [c for c in fake.calls if c.method.lower().startswith(("send", "edit"))]
        assert sent
        for call in sent:
            for field in ("text", "caption"):
                assert not HIDDEN.search(str(call.params.get(field, ""))), call

        # ... and it all still reads as what the stream said.
        caption = read_by_a_person(card["caption"])
        assert "@admin_user is live!" in caption
        assert "Ask @admin_user or @everyone1 now @mod_team &#64;sneaky again" in caption
        assert "@here_ chat" in caption and "Art Music" in caption
        links = [e for e in card["caption_entities"] if e["type"] == "text_link"]
        assert [link["url"] for link in links] == ["https://twitch.tv/quinn"]
        texts = [read_by_a_person(m.get("text", "")) for m in messages]
        assert any("lost @admin_user retrying" in text for text in texts)
        assert any("@admin_user" in text and "hi @admin_user" in text for text in texts)
        shown = read_by_a_person(status["text"])
        assert "@admin_user" in shown and "Ask @admin_user or @everyone1 now" in shown


async def test_discord_stream_text_cannot_ping_everyone_in_any_spelling(tmp_path: Path) -> None:
    async with (
        FakeTelegram() as telegram,
        FakeDiscord(token=DISCORD_TOKEN, heartbeat_interval=200) as discord,
    ):
        telegram.add_chat(GROUP, "supergroup", title="Streams")
        config = write_config(tmp_path, telegram, discord)
        async with bot_process(config) as bot:
            live = {
                "uname": "@everyone1",
                "title": "@here_ \u202eevil\u2028line @EVERYONE",
                "categories": ["a@everyone", "@\u0301here"],
            }
            start = webhook("live_start", "quinn", "https://twitch.tv/quinn", live_info=live)
            assert (await post(bot.url, start)).status == 202
            message = await discord.wait_for_message(STREAMS_CHANNEL_ID)
            assert await bot.stop() == 0

    # The bot may mention everyone in that channel: only the text stands in the way.
    assert message["mention_everyone"] is False
    shown = json.dumps([message["content"], message["embeds"]], ensure_ascii=False)
    assert not re.search(r"@[\u0300-\u036f]*(everyone|here)", shown, re.IGNORECASE), shown
    assert not HIDDEN.search(shown), shown
    # Still readable: the zero-width spaces are invisible, the backslashes escapes.
    content = message["content"].replace(ZWSP, "")
    assert "**@everyone1** is live!" in content
    [embed] = message["embeds"]
    assert embed["title"].replace(ZWSP, "").replace("\\", "") == "@here_ evil line @EVERYONE"


async def test_console_prints_a_megabyte_title_as_a_bounded_notification(tmp_path: Path) -> None:
    config = tmp_path / "bot.toml"
    config.write_text(CONFIG)
    title = "\u202eRTL\u2066 trick\u2028next " + "word " * 180_000
    start = live_event(
        "big-1",
        "live_start",
        "2026-03-11T05:00:00Z",
        uname="Quinn\u2069",
        title=title,
        categories=["Art\u2029Music"],
    )
    async with running_bot(config) as bot:
        # Printing it all once blocked the bot: this test's reader gives up on a line that
        # long, the pipe filled up and the print never returned (nor did the webhook).
        async with asyncio.timeout(30):
            status, body = await post_onliverec(bot.url, start)
            assert status == 202, body
            await bot.wait_for("stderr", r"console live_start: text is longer than \d+")
        assert await bot.stop() == 0

    printed = bot.stdout.strip("\n")
    assert printed.startswith("[live_start] Quinn is live")
    assert "RTL trick next word word" in printed
    assert len(printed) <= 4096
    assert printed.endswith("…")
    assert not HIDDEN.search(printed)
    warnings = re.findall(
        r"console live_start: text is longer than 4096 characters; truncated", bot.stderr
    )
    assert len(warnings) == 1
