"""The Twitch source's own work against the fake Twitch: the subscriptions it keeps, the
problems it reports, and what it records after stream.online and at start.

Each test runs the real web layer (`bot.web.create_app`, storing into SQLite) on
127.0.0.1, so Twitch's challenges are answered as in the running bot, and one Twitch
source's `run` beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bot import events as ev
from bot.config import load_config
from bot.events import Event
from bot.pipeline.ingest import Ingested, Intake
from bot.sources.problems import SourceProblems
from bot.sources.service import SourceHost
from bot.sources.twitch import TwitchSource
from bot.store import Store
from bot.web import create_app
from tests.fakes.twitch_api import FakeTwitch

PUBLIC = "https://bot.example.com"
CALLBACK = f"{PUBLIC}/webhook/twitch"
SECRET = "eventsub-follow-secret-77"
TYPES = ("stream.online", "stream.offline", "channel.update")


@dataclass
class Harness:
    """One running Twitch source, its web layer, and what it recorded."""

    source: TwitchSource
    problems: SourceProblems
    events: list[Event] = field(default_factory=list)
    patterns: list[str] = field(default_factory=list)

    def kinds(self, kind: str) -> list[Event]:
        return [event for event in self.events if event.kind == kind]

    def problem_kinds(self, streamer: str = "") -> set[str]:
        return self.problems.kinds("twitch", streamer)


def source_for(fake: FakeTwitch, **changes: Any) -> TwitchSource:
    table: dict[str, Any] = {
        "name": "twitch",
        "kind": "twitch",
        "secret": SECRET,
        "client_id": fake.client_id,
        "client_secret": fake.client_secret,
        "callback_url": CALLBACK,
        "channels": ["quinn"],
        "api_url": fake.api_url,
        "auth_url": fake.auth_url,
    }
    table.update(changes)
    table = {k: v for k, v in table.items() if v is not None}
    config = load_config({"sources": [table]}, environ={}, base_dir=Path("."))
    return TwitchSource(config.sources[0])


class RecordingIntake(Intake):
    """The real intake, keeping a list of every event it was handed (webhook or source)."""

    def __init__(self, store: Store, events: list[Event]) -> None:
        super().__init__(store)
        self.events = events

    async def accept(self, event: Event, *, raw: bytes | None = None) -> Ingested:
        self.events.append(event)
        return await super().accept(event, raw=raw)


@contextlib.asynccontextmanager
async def running(
    fake: FakeTwitch,
    store: Store,
    *,
    route: bool = True,
    lookup_delays: tuple[float, ...] = (0.05, 0.1, 0.2),
    **changes: Any,
) -> AsyncIterator[Harness]:
    source = source_for(fake, **changes)
    follower = source.follower
    follower._lookup_delays = lookup_delays
    follower._replay_delays = (0.05, 0.1, 0.2)
    follower._verify_wait = 1.0
    harness = Harness(source=source, problems=SourceProblems())
    intake = RecordingIntake(store, harness.events)

    async def emit(event: Event) -> bool:
        return not (await intake.accept(event)).duplicate

    async def patterns() -> list[str]:
        return list(harness.patterns)

    async def report() -> dict[str, Any]:
        return {"ok": True}

    app = create_app(
        sources={"twitch": source},
        intake=intake,
        max_body_bytes=1 << 20,
        health=report,
    )
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    if route:
        fake.route_callback(PUBLIC, f"http://127.0.0.1:{port}")
    stop = asyncio.Event()
    host = SourceHost(
        emit=emit,
        subscription_patterns=patterns,
        problems=harness.problems,
        load=store.source_value,
        save=lambda source, key, value: store.set_source_value(source, key, value, now=0.0),
    )
    task = asyncio.create_task(source.run(host, stop))
    try:
        yield harness
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await runner.cleanup()


@pytest.fixture
async def fake() -> AsyncIterator[FakeTwitch]:
    async with FakeTwitch() as twitch:
        twitch.add_user("quinn", display_name="Quinn", title="Chill", game="Just Chatting")
        twitch.add_user("mika", display_name="Mika")
        yield twitch


async def until(check: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)


async def all_enabled(fake: FakeTwitch, login: str) -> None:
    for sub_type in TYPES:
        await fake.wait_for_subscription(sub_type, fake.user(login).id)


def ours(fake: FakeTwitch, login: str) -> list[Any]:
    user_id = fake.user(login).id
    return [s for s in fake.subscriptions.values() if s.broadcaster_user_id == user_id]


async def test_subscribes_each_channel_once_with_v2_channel_update(
    fake: FakeTwitch, store: Store
) -> None:
    async with running(fake, store) as harness:
        await all_enabled(fake, "quinn")
        versions = sorted((s.type, s.version) for s in ours(fake, "quinn"))
        assert versions == [
            ("channel.update", "2"),
            ("stream.offline", "1"),
            ("stream.online", "1"),
        ]
        assert all(s.callback == CALLBACK and s.secret == SECRET for s in ours(fake, "quinn"))
        # A second pass changes nothing: no new subscription, none deleted.
        made = len(fake.requests_to("/helix/eventsub/subscriptions", "POST"))
        harness.source.follower.reconcile_soon()
        await fake.wait_for_request(
            "/helix/eventsub/subscriptions", lambda r: r.method == "GET", start=len(fake.requests)
        )
        await asyncio.sleep(0.2)
        assert len(fake.requests_to("/helix/eventsub/subscriptions", "POST")) == made
        assert not fake.requests_to("/helix/eventsub/subscriptions", "DELETE")
        assert not harness.problems.all()


async def test_deletes_what_is_not_wanted_and_leaves_another_callbacks_alone(
    fake: FakeTwitch, store: Store
) -> None:
    mika = fake.user("mika").id
    # A leftover of ours for mika (not wanted), and another bot's subscription on the same
    # app (another callback): only ours goes.
    async with running(fake, store) as harness:
        await all_enabled(fake, "quinn")
    token = next(iter(fake.tokens))
    headers = {"Authorization": f"Bearer {token}", "Client-Id": fake.client_id}
    async with aiohttp.ClientSession() as session:
        for callback in (CALLBACK, "https://other-bot.example.net/hook"):
            body = {
                "type": "stream.online",
                "version": "1",
                "condition": {"broadcaster_user_id": mika},
                "transport": {"method": "webhook", "callback": callback, "secret": SECRET},
            }
            async with session.post(
                f"{fake.api_url}/eventsub/subscriptions", json=body, headers=headers
            ) as response:
                assert response.status == 202
    async with running(fake, store) as harness:
        await until(lambda: len(ours(fake, "mika")) == 1)
        (left,) = ours(fake, "mika")
        assert left.callback == "https://other-bot.example.net/hook"
        assert len(ours(fake, "quinn")) == 3
        del harness


async def test_a_subscription_that_exists_already_counts_as_made(
    fake: FakeTwitch, store: Store
) -> None:
    async with running(fake, store):
        await all_enabled(fake, "quinn")
    # The next start creates nothing, even if its list of subscriptions misses them
    # (Twitch's list is eventually consistent): a 409 is success.
    fake.subscriptions_page_size = 1
    async with running(fake, store) as harness:
        await asyncio.sleep(0.5)
        assert len(ours(fake, "quinn")) == 3
        assert not harness.problems.all()


async def test_a_callback_twitch_cannot_reach_is_reported_within_seconds(
    fake: FakeTwitch, store: Store
) -> None:
    async with running(fake, store, route=False) as harness:
        await until(lambda: "verification_failed" in harness.problem_kinds("twitch/quinn"))
        (problem,) = [p for p in harness.problems.all() if p.kind == "verification_failed"]
        assert "never reached the bot" in problem.detail
        assert CALLBACK in problem.detail


async def test_a_mangled_challenge_answer_is_told_apart(fake: FakeTwitch, store: Store) -> None:
    # The challenge reaches the bot but its answer is not what Twitch wants (here: the
    # fake wants a content type the bot does not send), as a rewriting proxy would do.
    fake.strict_challenge = True
    original = fake._challenge_answered
    fake._challenge_answered = lambda delivery, challenge: False  # type: ignore[method-assign]
    try:
        async with running(fake, store) as harness:
            await until(lambda: "verification_failed" in harness.problem_kinds("twitch/quinn"))
            (problem,) = [p for p in harness.problems.all() if p.kind == "verification_failed"]
            assert "the answer arrived changed" in problem.detail
    finally:
        fake._challenge_answered = original  # type: ignore[method-assign]


async def test_a_login_twitch_does_not_know_is_reported(fake: FakeTwitch, store: Store) -> None:
    async with running(fake, store, channels=["quinn", "nobody_here"]) as harness:
        await all_enabled(fake, "quinn")
        await until(lambda: "unknown_user" in harness.problem_kinds("twitch/nobody_here"))


async def test_refused_credentials_are_reported_and_never_shown(
    fake: FakeTwitch, store: Store
) -> None:
    async with running(fake, store, client_secret="not-the-client-secret") as harness:
        await until(lambda: "credentials" in harness.problem_kinds())
        (problem,) = harness.problems.all()
        assert "invalid client secret" in problem.detail
        assert "not-the-client-secret" not in problem.detail


async def test_after_online_helix_is_asked_until_it_lists_the_stream(
    fake: FakeTwitch, store: Store
) -> None:
    async with running(fake, store) as harness:
        await all_enabled(fake, "quinn")
        assert await fake.go_live("quinn", title="Any%", game="Celeste", helix_delay_calls=2)
        await until(lambda: any(e.event_id.startswith("helix-streams/") for e in harness.events))
        (update,) = [e for e in harness.events if e.event_id.startswith("helix-streams/")]
        assert update.kind == ev.STREAM_UPDATE
        assert update.live is not None
        assert (update.live.title, update.live.categories) == ("Any%", ("Celeste",))
        assert update.live.cover == (
            "https://static-cdn.jtvnw.net/previews-ttv/live_user_quinn-1280x720.jpg"
        )
        assert update.live.avatar and "quinn-profile_image" in update.live.avatar
        streams = fake.requests_to("/helix/streams")
        assert len(streams) >= 3  # the start's check, then two misses and a hit


async def test_a_stream_helix_never_lists_gets_the_channels_information(
    fake: FakeTwitch, store: Store
) -> None:
    async with running(fake, store) as harness:
        await all_enabled(fake, "quinn")
        assert await fake.go_live("quinn", title="Never listed", helix_delay_calls=100)
        await until(lambda: any(e.event_id.startswith("helix-channels/4") for e in harness.events))
        (update,) = [e for e in harness.events if e.event_id.startswith("helix-channels/4")]
        assert update.live is not None and update.live.title == "Never listed"


async def test_a_stream_live_while_the_bot_was_down_gets_its_start(
    fake: FakeTwitch, store: Store
) -> None:
    async with running(fake, store):
        await all_enabled(fake, "quinn")
    # Live while no bot listened (the fake's online found no enabled subscription? it
    # did: it answered with nothing listening, so nothing was stored).
    fake.route_callback(PUBLIC, "http://127.0.0.1:9")
    await fake.go_live("quinn", title="Started while down", game="Celeste")
    async with running(fake, store) as harness:
        await until(lambda: bool(harness.kinds(ev.LIVE_START)))
        (start,) = harness.kinds(ev.LIVE_START)
        assert start.streamer_key == "twitch/quinn"
        assert start.live is not None and start.live.title == "Started while down"
        # Its id is the stream's, as a webhook's would be: one card whichever comes first.
        stream_id = start.live.live_id
        assert start.event_id == f"stream.online/{stream_id}"


async def test_subscribing_from_chat_and_a_glob(fake: FakeTwitch, store: Store) -> None:
    async with running(fake, store, channels=[]) as harness:
        follower = harness.source.follower
        await fake.wait_for_request("/helix/eventsub/subscriptions")  # the first pass ran
        harness.patterns.append("twitch/mika")
        note = await follower.followed("twitch/mika", added=True)
        assert note == "Twitch will tell the bot when mika goes live."
        await all_enabled(fake, "mika")
        assert "exact logins only" in (await follower.followed("twitch/*", added=True) or "")
        assert await follower.followed("youtube/mika", added=True) is None
        harness.patterns.remove("twitch/mika")
        note = await follower.followed("twitch/mika", added=False)
        assert note == "Twitch: the bot no longer asks Twitch about mika."
        assert ours(fake, "mika") == []


async def test_revocation_that_can_heal_subscribes_again(fake: FakeTwitch, store: Store) -> None:
    async with running(fake, store) as harness:
        await all_enabled(fake, "quinn")
        sub = next(s for s in ours(fake, "quinn") if s.type == "stream.online")
        assert await fake.revoke(sub.id, "notification_failures_exceeded") == 204
        fresh = await fake.wait_for_subscription("stream.online", fake.user("quinn").id)
        assert fresh.id != sub.id
        await until(lambda: not harness.problems.all())


async def test_revocation_of_a_removed_user_stays_reported(fake: FakeTwitch, store: Store) -> None:
    async with running(fake, store) as harness:
        await all_enabled(fake, "quinn")
        sub = next(s for s in ours(fake, "quinn") if s.type == "stream.online")
        assert await fake.revoke(sub.id, "user_removed") == 204
        await until(lambda: "revoked" in harness.problem_kinds("twitch/quinn"))
        (problem,) = harness.problems.all()
        assert "removed" in problem.detail
        # Nothing subscribes again on its own after user_removed.
        await asyncio.sleep(0.3)
        assert fake.subscriptions[sub.id].status == "user_removed"


async def test_a_cached_helix_answer_does_not_undo_a_channel_update(
    fake: FakeTwitch, store: Store
) -> None:
    async with running(fake, store, lookup_delays=(0.3, 0.3, 0.3)) as harness:
        await all_enabled(fake, "quinn")
        assert await fake.go_live("quinn", title="Old title", helix_delay_calls=1)
        assert await fake.update_channel("quinn", title="New title") == [202]
        # Helix still serving what it cached before the change:
        fake.user("quinn").title = "Old title"
        await until(lambda: any(e.event_id.startswith("helix-streams/") for e in harness.events))
        (update,) = [e for e in harness.events if e.event_id.startswith("helix-streams/")]
        assert update.live is not None
        assert update.live.title is None and update.live.categories == ()
        assert update.live.cover is not None  # what only Helix knows still comes


async def test_after_offline_the_streams_archive_is_the_replay(
    fake: FakeTwitch, store: Store
) -> None:
    async with running(fake, store) as harness:
        await all_enabled(fake, "quinn")
        assert await fake.go_live("quinn", title="Any%") == [202]
        assert await fake.go_offline("quinn") == [202]
        await until(lambda: bool(harness.kinds(ev.REPLAY_READY)))
        (replay,) = harness.kinds(ev.REPLAY_READY)
        videos = fake.requests_to("/helix/videos")
        assert videos and videos[-1].query["type"] == ["archive"]
        assert replay.replay_url is not None
        assert replay.replay_url.startswith("https://www.twitch.tv/videos/")
        assert replay.event_id == "replay/" + replay.replay_url.rsplit("/", 1)[1]
        assert replay.streamer_key == "twitch/quinn"
