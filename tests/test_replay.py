"""Replay links: an ended stream's recording or archive edits its ended cards to link it.

The dispatch stage's plan (which cards, when, and never a post in a chat), the sources
that bring a replay (Livepeer's recording.ready, Twitch's archive after stream.offline),
and the whole bot against the fake Discord and the fake Telegram.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from bot import events as ev
from bot.config import load_config
from bot.events import Event, LiveInfo
from bot.pipeline.dispatch import Dispatcher
from bot.samples import parse_sample
from bot.sources import livepeer
from bot.store import DeliveryInfo, Store
from tests.conftest import make_config
from tests.fakes.discord_api import STREAMS_CHANNEL_ID, TOKEN, FakeDiscord
from tests.fakes.telegram_api import FakeTelegram
from tests.test_e2e_discord import running_with
from tests.test_e2e_telegram import running_with as running_telegram

NOON = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
REPLAY = "https://livepeercdn.studio/recordings/s-1/source.mp4"
CHANNEL = "111111111111111111"


def dispatcher(store: Store, *, at: datetime = NOON, **route: Any) -> Dispatcher:
    data = {
        "discord": {"token": "x" * 59},
        "routes": [{"match": "*", "discord_channels": [CHANNEL], **route}],
        "behaviour": {"end_grace": "0s"},
    }
    config = load_config(data, environ={}, base_dir=Path("."))
    return Dispatcher(
        store=store,
        routes=config.routes,
        sinks=["console", "discord"],
        behaviour=config.behaviour,
        clock=at.timestamp,
    )


def event(kind: str, event_id: str, minutes: float = 0, **fields: Any) -> Event:
    moment = NOON + timedelta(minutes=minutes)
    return Event(
        source="lp",
        event_id=event_id,
        kind=kind,
        occurred_at=moment,
        received_at=moment,
        platform="livepeer",
        channel="s-1",
        **fields,
    )


async def rows(store: Store, row: int | None, sink: str = "discord") -> list[DeliveryInfo]:
    assert row is not None
    return [r for r in await store.deliveries_for_event(row) if r.sink == sink]


async def test_a_recording_edits_the_ended_card_and_posts_nothing(store: Store) -> None:
    d = dispatcher(store)
    start = await d.accept(event("live_start", "s", live=LiveInfo(title="Friday")))
    (card,) = await rows(store, start.event_row)
    await d.accept(event("live_end", "e", 90))
    ready = await d.accept(event("recording_ready", "r", 120, replay_url=REPLAY))
    # The source's own kind is recorded; the replay is derived from it, for the cards.
    assert [e.kind for e in ready.notified] == [ev.REPLAY_READY]
    replay = ready.notified[0]
    assert replay.replay_url == REPLAY
    assert replay.duration == timedelta(minutes=90)  # the ended card's, from the state
    assert replay.live is not None and replay.live.title == "Friday"
    assert ready.event_row is not None
    (edit,) = await rows(store, ready.event_row + 1)
    assert (edit.action, edit.options["card"]) == ("edit", card.id)
    # The console, which has no cards, prints it.
    assert [r.action for r in await rows(store, ready.event_row + 1, "console")] == ["post"]


async def test_a_replay_before_the_end_or_of_a_stream_live_again_changes_no_card(
    store: Store,
) -> None:
    d = dispatcher(store)
    await d.accept(event("live_start", "s", live=LiveInfo(title="Friday")))
    early = await d.accept(event("recording_ready", "r0", 5, replay_url=REPLAY))
    assert [e.kind for e in early.notified] == []  # recorded only: no ended card yet
    await d.accept(event("live_end", "e", 60))
    # Back after the rejoin window: a new session; the old one's replay edits nothing.
    await d.accept(event("live_start", "s2", 120, live=LiveInfo(title="Saturday")))
    late = await d.accept(event(ev.REPLAY_READY, "r1", 130, replay_url=REPLAY))
    assert late.notified == [] and late.deliveries == 0


async def test_cards_left_as_they_were_or_taken_down_stay_so(store: Store) -> None:
    for on_end in ("post", "delete"):
        d = dispatcher(store, on_end=on_end)
        channel = f"s-{on_end}"
        start = event("live_start", f"s-{on_end}", live=LiveInfo(title="x"))
        await d.accept(start.with_changes(channel=channel))
        await d.accept(event("live_end", f"e-{on_end}", 60).with_changes(channel=channel))
        ready = event(ev.REPLAY_READY, f"r-{on_end}", 90, replay_url=REPLAY)
        result = await d.accept(ready.with_changes(channel=channel))
        assert await rows(store, result.event_row) == [], on_end


async def test_the_replay_waits_for_the_end_to_be_announced(store: Store) -> None:
    data = {
        "discord": {"token": "x" * 59},
        "routes": [{"match": "*", "discord_channels": [CHANNEL]}],
        "behaviour": {"end_grace": "10m"},
    }
    config = load_config(data, environ={}, base_dir=Path("."))
    at = NOON + timedelta(minutes=62)
    d = Dispatcher(
        store=store,
        routes=config.routes,
        sinks=["discord"],
        behaviour=config.behaviour,
        clock=at.timestamp,
    )
    await d.accept(event("live_start", "s", live=LiveInfo(title="x")))
    await d.accept(event("live_end", "e", 60))
    result = await d.accept(event(ev.REPLAY_READY, "r", 62, replay_url=REPLAY))
    (edit,) = await rows(store, result.event_row)
    due = await store.claim_due(sink="discord", now=at.timestamp() + 1, limit=10)
    assert edit.id not in [delivery.id for delivery in due]  # due with the end, at +10m


def test_livepeer_recording_ready_links_the_mp4() -> None:
    parsed = parse_sample(livepeer.SPEC, "recording.ready")
    assert parsed.kind == "recording_ready"
    assert parsed.replay_url is not None and parsed.replay_url.endswith("/source.mp4")


# -- end to end ----------------------------------------------------------------------------

LP_SECRET = "livepeer-replay-secret-1"


def livepeer_body(event_type: str, event_id: str, at_ms: int, **payload: Any) -> bytes:
    return json.dumps(
        {
            "id": event_id,
            "webhookId": "wh",
            "createdAt": at_ms,
            "timestamp": at_ms,
            "event": event_type,
            "stream": {"id": "stream-1", "name": "Friday jam", "playbackId": "pb123"},
            "payload": payload,
        }
    ).encode()


async def post_livepeer(url: str, body: bytes) -> int:
    digest = hmac.new(LP_SECRET.encode(), body, hashlib.sha256).hexdigest()
    at = json.loads(body)["timestamp"]
    headers = {"Content-Type": "application/json", "Livepeer-Signature": f"t={at},v1={digest}"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/webhook/lp", data=body, headers=headers) as response,
    ):
        return response.status


def now_ms(offset: float = 0) -> int:
    return int((datetime.now(UTC).timestamp() + offset) * 1000)


async def stream_story(base_url: str) -> None:
    """A Livepeer stream that starts, ends, and whose recording is ready after."""
    assert await post_livepeer(base_url, livepeer_body("stream.started", "a", now_ms(-2))) == 202
    await asyncio.sleep(0.3)
    assert await post_livepeer(base_url, livepeer_body("stream.idle", "b", now_ms(-1))) == 202
    await asyncio.sleep(0.3)
    ready = livepeer_body(
        "recording.ready",
        "c",
        now_ms(),
        recordingUrl="https://livepeercdn.studio/recordings/x/index.m3u8",
        mp4Url=REPLAY,
    )
    assert await post_livepeer(base_url, ready) == 202


def config_for(tmp_path: Path, **sections: Any) -> Any:
    return make_config(
        tmp_path,
        console={"enabled": False},
        sources=[{"name": "lp", "kind": "livepeer", "secret": LP_SECRET}],
        **sections,
    )


async def test_the_discord_card_gains_a_replay_link_and_button(tmp_path: Path) -> None:
    async with FakeDiscord(token=TOKEN, heartbeat_interval=200) as fake:
        config = config_for(
            tmp_path,
            discord={"token": TOKEN, "api_url": fake.api_url, "gateway_url": fake.gateway_url},
            routes=[{"match": "livepeer/*", "discord_channels": [str(STREAMS_CHANNEL_ID)]}],
        )
        async with running_with(config) as running:
            await stream_story(running.base_url)
            card = await fake.wait_for_message(
                STREAMS_CHANNEL_ID, lambda m: REPLAY in json.dumps(m["components"]), timeout=10
            )
        assert fake.errors == []
    assert len(fake.messages[STREAMS_CHANNEL_ID]) == 1  # edited, not posted
    assert "ended the stream" in card["content"]
    assert f"[Watch the replay]({REPLAY})" in card["embeds"][0]["description"]
    (row,) = card["components"]
    (button,) = row["components"]
    assert (button["style"], button["label"], button["url"]) == (5, "Watch the replay", REPLAY)


async def test_the_telegram_card_button_opens_the_replay(tmp_path: Path) -> None:
    group = -100777
    async with FakeTelegram() as telegram:
        telegram.add_chat(group, "supergroup", title="Streams")
        config = config_for(
            tmp_path,
            telegram={"token": telegram.token, "api_url": telegram.api_url},
            routes=[{"match": "livepeer/*", "telegram_chats": [str(group)]}],
        )
        async with running_telegram(config) as running:
            await stream_story(running.base_url)
            edit = await telegram.wait_for_call(
                "editMessageText", lambda c: REPLAY in json.dumps(c.params), timeout=10
            )
        assert len(telegram.calls_to("sendMessage")) == 1
    assert "Watch the replay" in edit.params["text"]
    (row,) = edit.params["reply_markup"]["inline_keyboard"]
    assert row[0]["url"] == REPLAY and "replay" in row[0]["text"]
