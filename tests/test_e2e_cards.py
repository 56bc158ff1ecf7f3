"""Session cards end to end: the whole bot against the fake Discord and fake Telegram.

One card per live session and chat, edited as the stream changes and ends; a stream that
drops and comes back within `rejoin_window` pings nobody; a delayed end survives a
restart; a card someone deleted is posted anew.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import time
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.app import Running, run
from tests.conftest import SECRET, make_config
from tests.fakes.discord_api import (
    GENERAL_CHANNEL_ID,
    STREAMERS_ROLE_ID,
    STREAMS_CHANNEL_ID,
    TOKEN,
    FakeDiscord,
    assert_no_heartbeat_threads,
    no_identify_delay,
)
from tests.fakes.telegram_api import FakeTelegram
from tests.waiting import every_delivery

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "'audioop' is deprecated", DeprecationWarning)
    import discord  # noqa: F401  (imported under the filter before bot.sinks.discord is)

GROUP = -100777
ADMIN = 2002
T0 = datetime(2026, 3, 11, 5, 0, tzinfo=UTC)
LIVE = {
    "uname": "Quinn",
    "title": "Painting a dragon",
    "categories": ["Art"],
    "cover": "https://img.example/quinn.jpg",
}
_ids = itertools.count(1)


@pytest.fixture(autouse=True)
def no_heartbeat_threads_left() -> Any:
    yield
    assert_no_heartbeat_threads()


@pytest.fixture
async def dc() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(token=TOKEN, heartbeat_interval=200) as server:
        yield server
        assert server.errors == []


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as server:
        server.add_chat(GROUP, "supergroup", title="Streams", admins={ADMIN})
        yield server


class Bot:
    """A running bot plus what its console printed."""

    def __init__(self, running: Running, console: io.StringIO) -> None:
        self.running = running
        self.console = console

    async def send(self, kind: str, minutes: float, **live: Any) -> None:
        """POST one OneLiveRec event for twitch/quinn that happened `minutes` after T0."""
        info_key = "new_live_info" if kind.endswith("_change") else "live_info"
        payload = {
            "id": f"c{next(_ids)}",
            "type": kind,
            "ts": (T0 + timedelta(minutes=minutes)).isoformat(),
            "data": {
                "platform": "twitch",
                "channel": "quinn",
                "url": "https://twitch.tv/quinn",
                info_key: live,
            },
        }
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{self.running.base_url}/webhook/rec?key={SECRET}", json=payload
            ) as response,
        ):
            assert response.status == 202, await response.text()

    async def outbox_idle(self) -> bool:
        """Nothing due is waiting or being sent."""
        counts = (await self.running.store.outbox_counts()).by_state
        due = await self.running.store.oldest_due(["console", "discord", "telegram"])
        return counts.get("sending", 0) == 0 and (due is None or due > time.time())

    async def settle(self) -> None:
        """Wait until every due delivery went out."""
        async with asyncio.timeout(10):
            while not await self.outbox_idle():
                await asyncio.sleep(0.02)


@asynccontextmanager
async def running_bot(
    tmp_path: Path,
    dc: FakeDiscord,
    tg: FakeTelegram,
    *,
    routes: list[dict[str, Any]] | None = None,
    **behaviour: str,
) -> AsyncIterator[Bot]:
    config = make_config(
        tmp_path,
        discord={"token": TOKEN, "api_url": dc.api_url, "gateway_url": dc.gateway_url},
        telegram={"token": tg.token, "api_url": tg.api_url},
        behaviour={"end_grace": "0s", **behaviour},
        routes=routes
        or [
            {
                "match": "twitch/*",
                "discord_channels": [str(STREAMS_CHANNEL_ID)],
                "telegram_chats": [str(GROUP)],
                "mention_roles": [str(STREAMERS_ROLE_ID)],
            }
        ],
    )
    console = io.StringIO()
    stop = asyncio.Event()
    ready: asyncio.Future[Running] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        run(
            config,
            stop,
            on_ready=ready.set_result,
            console_stream=console,
            sink_options={
                "discord": {
                    "client_options": {"guild_ready_timeout": 0.1},
                    "before_identify_hook": no_identify_delay,
                    "ready_timeout": 5.0,
                },
                "telegram": {"poll_timeout": 1.0},
            },
        )
    )
    try:
        running = await asyncio.wait_for(ready, 10)
        yield Bot(running, console)
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


def discord_posts(dc: FakeDiscord, channel: int = STREAMS_CHANNEL_ID) -> list[dict[str, Any]]:
    return [
        r.json
        for r in dc.requests
        if r.method == "POST" and r.path == f"/channels/{channel}/messages"
    ]


def discord_edits(dc: FakeDiscord, message_id: str) -> list[dict[str, Any]]:
    return [
        r.json
        for r in dc.requests
        if r.method == "PATCH" and r.path.endswith(f"/messages/{message_id}")
    ]


def telegram_posts(tg: FakeTelegram) -> list[dict[str, Any]]:
    return [
        c.params for c in tg.calls if c.method in ("sendPhoto", "sendMessage") and c.status == 200
    ]


def telegram_edits(tg: FakeTelegram, message_id: int) -> list[dict[str, Any]]:
    return [
        c.params
        for c in tg.calls
        if c.method in ("editMessageCaption", "editMessageText")
        and c.status == 200
        and int(c.params["message_id"]) == message_id
    ]


def card_text(message: dict[str, Any]) -> str:
    """Everything a Discord message shows: content and embed text."""
    return f"{message.get('content')} {message.get('embeds')}"


@pytest.mark.parametrize(
    ("on_change", "on_end", "change_posts", "end_posts"),
    [("edit", "edit", 0, 0), ("both", "both", 2, 1), ("post", "post", 2, 1)],
)
async def test_one_card_per_chat_edited_through_the_session(
    tmp_path: Path,
    dc: FakeDiscord,
    tg: FakeTelegram,
    on_change: str,
    on_end: str,
    change_posts: int,
    end_posts: int,
) -> None:
    async with running_bot(
        tmp_path, dc, tg, on_change=on_change, on_end=on_end, change_cooldown="0s"
    ) as bot:
        await bot.send("live_start", 0, **LIVE)
        await bot.settle()
        await bot.send("title_change", 10, title="Inking the dragon")
        await bot.settle()
        await bot.send("category_change", 20, categories=["Just Chatting"])
        await bot.settle()
        await bot.send("live_end", 95)
        await bot.settle()

    card = dc.messages[STREAMS_CHANNEL_ID][0]
    edits = 2 if on_change != "post" else 0
    edits += 1 if on_end != "post" else 0
    assert len(discord_edits(dc, card["id"])) == edits
    assert len(discord_posts(dc)) == 1 + change_posts + end_posts
    # Only the card pinged; change and end notices never do, and neither do edits.
    assert [p["allowed_mentions"]["roles"] for p in discord_posts(dc)] == [[STREAMERS_ROLE_ID]] + [
        []
    ] * (change_posts + end_posts)
    assert all(e["allowed_mentions"]["roles"] == [] for e in discord_edits(dc, card["id"]))
    # The cover URL is new in the card and in each edit of it, so Discord fetches the
    # stream's current frame instead of showing the one it cached (render.fresh_cover).
    shown = [discord_posts(dc)[0], *discord_edits(dc, card["id"])]
    covers = [m["embeds"][0]["image"]["url"] for m in shown if "image" in m["embeds"][0]]
    assert len(covers) == len(set(covers)) >= 1 + (2 if on_change != "post" else 0)
    assert all(c.startswith(LIVE["cover"] + "?v=") for c in covers)

    tg_card = tg.messages[str(GROUP)][0]
    assert len(telegram_edits(tg, tg_card["message_id"])) == edits
    assert len(telegram_posts(tg)) == 1 + change_posts + end_posts

    if on_end != "post":
        # The card now says the stream ended, with its final title and how long it ran.
        assert "ended" in card_text(card) and "Inking the dragon" in card_text(card)
        assert "1h 35m" in card_text(card)
        assert "ended" in tg_card["caption"] and "1h 35m" in tg_card["caption"]
    else:
        assert "is live" in card_text(card)  # left as it was; the end is its own post
    # The console has no cards: it prints every step.
    for text in ("Painting a dragon", "Inking the dragon", "Just Chatting", "1h 35m"):
        assert text in bot.console.getvalue()


async def test_route_overrides_apply_to_their_chats_only(
    tmp_path: Path, dc: FakeDiscord, tg: FakeTelegram
) -> None:
    routes = [
        {"match": "twitch/*", "discord_channels": [str(STREAMS_CHANNEL_ID)]},
        {
            "match": "twitch/quinn",
            "discord_channels": [str(GENERAL_CHANNEL_ID)],
            "on_change": "post",
            "on_end": "delete",
        },
    ]
    async with running_bot(tmp_path, dc, tg, routes=routes) as bot:
        await bot.send("live_start", 0, **LIVE)
        await bot.settle()
        general_card = dc.messages[GENERAL_CHANNEL_ID][0]["id"]
        await bot.send("title_change", 10, title="Inking the dragon")
        await bot.settle()
        await bot.send("live_end", 30)
        await bot.settle()

    # #streams follows [behaviour]: one card, edited twice, still there.
    [streams_card] = dc.messages[STREAMS_CHANNEL_ID]
    assert len(discord_edits(dc, streams_card["id"])) == 2
    assert "ended" in card_text(streams_card)
    # #general posts changes and deletes its card at the end: only the change notice is left.
    assert discord_edits(dc, general_card) == []
    [left] = dc.messages[GENERAL_CHANNEL_ID]
    assert left["id"] != general_card and "Inking the dragon" in card_text(left)


async def test_a_comeback_within_rejoin_window_reopens_the_card_and_pings_nobody(
    tmp_path: Path, dc: FakeDiscord, tg: FakeTelegram
) -> None:
    async with running_bot(tmp_path, dc, tg, rejoin_window="5m") as bot:
        await bot.send("live_start", 0, **LIVE)
        await bot.settle()
        await bot.send("live_end", 60)
        await bot.settle()
        card = dc.messages[STREAMS_CHANNEL_ID][0]
        tg_card = tg.messages[str(GROUP)][0]
        assert "ended" in card_text(card) and "ended" in tg_card["caption"]

        await bot.send("live_start", 62, **LIVE)  # two minutes later
        await bot.settle()
        # No new message anywhere (so no ping); the same card is live again.
        assert len(discord_posts(dc)) == 1 and len(telegram_posts(tg)) == 1
        assert "is live" in card_text(card) and "ended" not in card_text(card)
        assert "is live" in tg_card["caption"]

        # The session goes on: the final end counts from the first start.
        await bot.send("live_end", 90)
        await bot.settle()
        assert "1h 30m" in card_text(card)

        await bot.send("live_start", 120, **LIVE)  # 30 minutes after: a new session
        await bot.settle()
    posts = discord_posts(dc)
    assert len(posts) == 2 and len(telegram_posts(tg)) == 2
    new_card = dc.messages[STREAMS_CHANNEL_ID][1]
    assert new_card["mention_roles"] == [str(STREAMERS_ROLE_ID)]
    assert "ended" in card_text(card)  # the old session's card stays ended


async def test_a_comeback_during_end_grace_never_announces_the_end(
    tmp_path: Path, dc: FakeDiscord, tg: FakeTelegram
) -> None:
    async with running_bot(tmp_path, dc, tg, end_grace="1h", rejoin_window="5m") as bot:
        await bot.send("live_start", 0, **LIVE)
        await bot.settle()
        await bot.send("live_end", 60)
        await bot.send("live_start", 61, **LIVE)
        await bot.settle()
        store = bot.running.store
        ends = [r.state for r in await every_delivery(store) if r.kind == "live_end"]
    # The end notices were called off for every sink, not left to fire later.
    assert ends == ["cancelled"] * 3
    card = dc.messages[STREAMS_CHANNEL_ID][0]
    assert discord_edits(dc, card["id"]) == [] and len(discord_posts(dc)) == 1
    assert telegram_edits(tg, tg.messages[str(GROUP)][0]["message_id"]) == []
    assert "ended" not in bot.console.getvalue()


async def test_a_restart_during_end_grace_announces_the_end_once_when_due(
    tmp_path: Path, dc: FakeDiscord, tg: FakeTelegram
) -> None:
    async with running_bot(tmp_path, dc, tg, end_grace="2s") as bot:
        await bot.send("live_start", 0, **LIVE)
        await bot.settle()
        await bot.send("live_end", 45)
        ended_at = time.monotonic()
    card = dc.messages[STREAMS_CHANNEL_ID][0]
    tg_card = tg.messages[str(GROUP)][0]
    assert "ended" not in card_text(card)  # stopped before the grace was over

    async with running_bot(tmp_path, dc, tg, end_grace="2s") as bot:
        await dc.wait_for_message(STREAMS_CHANNEL_ID, lambda m: "ended" in card_text(m))
        assert time.monotonic() - ended_at >= 2.0
        await tg.wait_for_message(GROUP, lambda m: "ended" in m.get("caption", ""))
        await bot.settle()
    assert len(discord_edits(dc, card["id"])) == 1
    assert len(telegram_edits(tg, tg_card["message_id"])) == 1
    assert bot.console.getvalue().count("45m") == 1


async def test_a_card_deleted_in_the_chat_is_posted_anew_and_then_edited(
    tmp_path: Path, dc: FakeDiscord, tg: FakeTelegram
) -> None:
    async with running_bot(tmp_path, dc, tg, change_cooldown="0s") as bot:
        await bot.send("live_start", 0, **LIVE)
        await bot.settle()
        old_card = dc.messages[STREAMS_CHANNEL_ID][0]["id"]
        old_tg_card = tg.messages[str(GROUP)][0]["message_id"]
        dc.delete_message(STREAMS_CHANNEL_ID, int(old_card))
        tg.delete_message(GROUP, old_tg_card)

        await bot.send("title_change", 5, title="Inking the dragon")
        await bot.settle()
        [card] = dc.messages[STREAMS_CHANNEL_ID]
        [tg_card] = tg.messages[str(GROUP)]
        assert card["id"] != old_card and tg_card["message_id"] != old_tg_card
        assert "Inking the dragon" in card_text(card) and "is live" in card_text(card)
        assert card["mention_roles"] == []  # a replacement card pings nobody

        await bot.send("category_change", 6, categories=["Just Chatting"])
        await bot.settle()
    assert len(discord_edits(dc, card["id"])) == 1 and len(discord_posts(dc)) == 2
    assert "Just Chatting" in card_text(dc.messages[STREAMS_CHANNEL_ID][0])
    assert len(telegram_edits(tg, tg_card["message_id"])) == 1
    assert len(telegram_posts(tg)) == 2


async def test_change_cooldown_limits_notices_but_cards_keep_up(
    tmp_path: Path, dc: FakeDiscord, tg: FakeTelegram
) -> None:
    async with running_bot(tmp_path, dc, tg, on_change="both", change_cooldown="1h") as bot:
        await bot.send("live_start", 0, **LIVE)
        await bot.settle()
        for minute, title in enumerate(["One", "Two", "Three"], start=1):
            await bot.send("title_change", minute, title=title)
            await bot.settle()
    card = dc.messages[STREAMS_CHANNEL_ID][0]
    assert len(discord_posts(dc)) == 2  # the card and the first notice only
    assert len(discord_edits(dc, card["id"])) == 3
    assert "Three" in card_text(card)
    assert len(telegram_posts(tg)) == 2
