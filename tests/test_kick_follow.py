"""The Kick source's own work against the fake Kick: its public key, the subscriptions it
keeps, the problems it reports, and the poll that backs lost or late deliveries up.

Each test runs the real web layer (`bot.web.create_app`, storing into SQLite) on
127.0.0.1, the fake's webhook URL pointing at it, and one Kick source's `run` beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bot import events as ev
from bot.config import Route, load_config
from bot.events import NOTIFIED_KINDS, Event
from bot.pipeline.dispatch import Dispatcher
from bot.pipeline.ingest import Intake
from bot.sources.kick import KickSource
from bot.sources.problems import SourceProblems
from bot.sources.service import SourceHost
from bot.store import Store
from bot.web import create_app
from tests.fakes.kick_api import FakeKick
from tests.test_twitch_follow import RecordingIntake

EVENTS = ("livestream.status.updated", "livestream.metadata.updated")
EVERYTHING = Route(patterns=("*",), events=frozenset(NOTIFIED_KINDS))


@dataclass
class Harness:
    """One running Kick source, its web layer, and what it recorded."""

    source: KickSource
    problems: SourceProblems
    events: list[Event] = field(default_factory=list)
    patterns: list[str] = field(default_factory=list)

    def kinds(self, kind: str) -> list[Event]:
        return [event for event in self.events if event.kind == kind]

    def problem_kinds(self, streamer: str = "") -> set[str]:
        return self.problems.kinds("kick", streamer)


def source_for(fake: FakeKick, **changes: Any) -> KickSource:
    table: dict[str, Any] = {
        "name": "kick",
        "kind": "kick",
        "client_id": fake.client_id,
        "client_secret": fake.client_secret,
        "channels": ["aurora"],
        "api_url": fake.api_url,
        "auth_url": fake.auth_url,
        "poll_interval": "1h",  # a test that wants the poll sets it
    }
    table.update(changes)
    table = {k: v for k, v in table.items() if v is not None}
    config = load_config({"sources": [table]}, environ={}, base_dir=Path("."))
    return KickSource(config.sources[0])


@contextlib.asynccontextmanager
async def running(
    fake: FakeKick,
    store: Store,
    *,
    lookup_delays: tuple[float, ...] = (0.05, 0.1, 0.2),
    **changes: Any,
) -> AsyncIterator[Harness]:
    source = source_for(fake, **changes)
    source.follower._lookup_delays = lookup_delays
    harness = Harness(source=source, problems=SourceProblems())
    intake = RecordingIntake(store, harness.events)

    async def emit(event: Event) -> bool:
        return not (await intake.accept(event)).duplicate

    async def patterns() -> list[str]:
        return list(harness.patterns)

    async def report() -> dict[str, Any]:
        return {"ok": True}

    app = create_app(
        sources={"kick": source}, intake=intake, max_body_bytes=1 << 20, health=report
    )
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    fake.set_webhook_url(f"http://127.0.0.1:{port}/webhook/kick")
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
async def fake() -> AsyncIterator[FakeKick]:
    async with FakeKick() as kick:
        kick.add_channel("aurora", username="Aurora", title="Setting up", category="Celeste")
        kick.add_channel("bo", username="Bo")
        yield kick


async def until(check: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)


async def subscribed(fake: FakeKick, slug: str) -> None:
    for event in EVENTS:
        await fake.wait_for_subscription(event, fake.channel(slug).user_id)


def ours(fake: FakeKick, slug: str) -> list[Any]:
    user_id = fake.channel(slug).user_id
    return [s for s in fake.subscriptions.values() if s.broadcaster_user_id == user_id]


def cards(harness: Harness) -> list[Event]:
    """The starts the intake stored (a duplicate is refused by the store, not here)."""
    return harness.kinds(ev.LIVE_START)


async def test_subscribes_each_channel_to_both_events_once(fake: FakeKick, store: Store) -> None:
    async with running(fake, store) as harness:
        await subscribed(fake, "aurora")
        assert sorted((s.event, s.version) for s in ours(fake, "aurora")) == [
            ("livestream.metadata.updated", 1),
            ("livestream.status.updated", 1),
        ]
        assert not ours(fake, "bo")
        # A second pass changes nothing.
        made = len(fake.requests_to("/public/v1/events/subscriptions", "POST"))
        await harness.source.follower.reconcile_and_wait()
        assert len(fake.requests_to("/public/v1/events/subscriptions", "POST")) == made
        assert not fake.requests_to("/public/v1/events/subscriptions", "DELETE")
        assert not harness.problems.all()


async def test_deletes_its_own_leftovers_and_leaves_the_apps_other_events(
    fake: FakeKick, store: Store
) -> None:
    async with running(fake, store, channels=["aurora", "bo"]):
        await subscribed(fake, "bo")
    # The app also follows bo's chat (another use of the same app): kept.
    token = next(iter(fake.tokens))
    body = {
        "broadcaster_user_id": fake.channel("bo").user_id,
        "events": [{"name": "chat.message.sent", "version": 1}],
        "method": "webhook",
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{fake.api_url}/events/subscriptions",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
        ) as response,
    ):
        assert response.status == 200
    async with running(fake, store, channels=["aurora"]):
        await until(lambda: [s.event for s in ours(fake, "bo")] == ["chat.message.sent"])
        assert len(ours(fake, "aurora")) == 2


async def test_a_subscription_kick_dropped_is_made_again_at_the_next_pass(
    fake: FakeKick, store: Store
) -> None:
    # Kick unsubscribes an app whose webhook kept failing for a day.
    async with running(fake, store) as harness:
        await subscribed(fake, "aurora")
        fake.subscriptions.clear()
        await harness.source.follower.reconcile_and_wait()
        await subscribed(fake, "aurora")


async def test_a_slug_kick_does_not_know_is_reported(fake: FakeKick, store: Store) -> None:
    async with running(fake, store, channels=["aurora", "nobody_here"]) as harness:
        await subscribed(fake, "aurora")
        await until(lambda: "unknown_channel" in harness.problem_kinds("kick/nobody_here"))


async def test_refused_credentials_are_reported_and_never_shown(
    fake: FakeKick, store: Store
) -> None:
    async with running(fake, store, client_secret="wrong-secret-123") as harness:
        await until(lambda: "credentials" in harness.problem_kinds())
        (problem,) = harness.problems.all()
        assert "client_id / client_secret" in problem.detail
        assert "wrong-secret-123" not in problem.detail


async def test_the_public_key_is_kept_so_a_restart_without_kicks_api_verifies(
    fake: FakeKick, store: Store
) -> None:
    async with running(fake, store) as harness:
        await subscribed(fake, "aurora")
        assert await fake.go_live("aurora", title="First") == [202]
    assert await store.source_value("kick", "public_key") == fake.public_key_pem
    # Kick's API is down at the next start: the kept key still checks deliveries.
    fake.fail_next("/public-key", 503, n=100)
    async with running(fake, store) as harness:
        await until(lambda: bool(fake.requests_to("/public/v1/public-key")))
        assert await fake.update_metadata("aurora", title="Second") == [202]
        await until(lambda: bool(harness.kinds(ev.STREAM_UPDATE)))
        assert "public_key" not in harness.problem_kinds()


async def test_with_no_key_known_deliveries_are_refused_and_that_is_reported(
    fake: FakeKick, store: Store
) -> None:
    fake.fail_next("/public-key", 503, n=100)
    async with running(fake, store) as harness:
        await until(lambda: "public_key" in harness.problem_kinds())
        await subscribed(fake, "aurora")  # subscribing does not wait for the key
        assert await fake.go_live("aurora", title="Unchecked") == [401]
        assert not harness.events


async def test_a_rotated_key_is_fetched_and_used(fake: FakeKick, store: Store) -> None:
    async with running(fake, store) as harness:
        await subscribed(fake, "aurora")
        fake.rotate_key()
        assert await fake.go_live("aurora") == [401]  # not known yet
        await harness.source.follower.reconcile_and_wait()
        assert await fake.update_metadata("aurora", title="After rotation") == [202]
    assert await store.source_value("kick", "public_key") == fake.public_key_pem


async def test_a_pinned_key_is_never_fetched(fake: FakeKick, store: Store) -> None:
    async with running(fake, store, public_key=fake.public_key_pem):
        await subscribed(fake, "aurora")
        assert await fake.go_live("aurora") == [202]
    assert not fake.requests_to("/public/v1/public-key")


async def test_a_webhook_start_gets_the_thumbnail_and_category_from_the_api(
    fake: FakeKick, store: Store
) -> None:
    async with running(fake, store) as harness:
        await subscribed(fake, "aurora")
        # The listing lags the start: the first look does not find it.
        assert await fake.go_live("aurora", category="Celeste", listing_delay_polls=1) == [202]
        await until(lambda: bool(harness.kinds(ev.STREAM_UPDATE)))
        (start,) = cards(harness)
        assert start.live is not None and start.live.cover is None  # the webhook has none
        (update,) = harness.kinds(ev.STREAM_UPDATE)
        assert update.live is not None
        assert update.live.cover and "video_thumbnails/aurora" in update.live.cover
        assert update.live.categories == ("Celeste",)
        assert update.live.title is None  # the webhook's own title stands
        # Dated as Kick's start, on Kick's clock: a metadata webhook Kick sends after it
        # (its timestamp to the second) must not look older than this answer.
        assert update.occurred_at == start.occurred_at


async def test_the_poll_posts_a_start_the_webhook_lost_and_ends_it(
    fake: FakeKick, store: Store
) -> None:
    async with running(fake, store, poll_interval="1s") as harness:
        await subscribed(fake, "aurora")
        await fake.go_live("aurora", title="Lost delivery", deliver=False)
        await until(lambda: bool(cards(harness)), timeout=8)
        (start,) = cards(harness)
        assert start.live is not None and start.live.title == "Lost delivery"
        assert start.live.cover is not None  # the listing has a thumbnail
        await fake.go_offline("aurora", deliver=False)
        # Two polls in a row without it: ended.
        await until(lambda: bool(harness.kinds(ev.LIVE_END)), timeout=8)
        (end,) = harness.kinds(ev.LIVE_END)
        assert end.started_at == start.live.start_time


async def test_poll_and_webhook_name_one_stream_alike_even_seconds_apart(
    fake: FakeKick, store: Store
) -> None:
    async with running(fake, store, poll_interval="1s") as harness:
        await subscribed(fake, "aurora")
        started = datetime.now(UTC) - timedelta(seconds=30)
        await fake.go_live(
            "aurora",
            started_at=started,
            listed_started_at=started - timedelta(seconds=2),
            deliver=False,
        )
        await until(lambda: bool(cards(harness)), timeout=8)
        # The late webhook, two seconds off the poll's start: the same event, a duplicate.
        channel = fake.channel("aurora")
        late = {
            "broadcaster": channel.broadcaster_json(),
            "is_live": True,
            "title": channel.title,
            "started_at": started.isoformat(),
            "ended_at": None,
        }
        assert await fake.send("livestream.status.updated", late) == [200]
        ids = {event.event_id for event in cards(harness)}
        assert len(ids) == 1, ids


async def test_what_was_seen_live_outlives_a_restart(fake: FakeKick, store: Store) -> None:
    async with running(fake, store, poll_interval="1s") as harness:
        await subscribed(fake, "aurora")
        assert await fake.go_live("aurora") == [202]
        await until(lambda: bool(cards(harness)))
    # It ended while the bot was down, and Kick's delivery of that was lost.
    await fake.go_offline("aurora", deliver=False)
    async with running(fake, store, poll_interval="1s") as harness:
        await until(lambda: bool(harness.kinds(ev.LIVE_END)), timeout=8)


async def test_subscribing_from_chat_and_a_glob(fake: FakeKick, store: Store) -> None:
    async with running(fake, store) as harness:
        await subscribed(fake, "aurora")
        follower = harness.source.follower
        harness.patterns += ["kick/bo", "kick/nobody_here"]
        reply = await follower.followed("kick/bo", added=True)
        assert reply == "Kick will tell the bot when bo goes live."
        assert len(ours(fake, "bo")) == 2
        assert "exact channels only" in (await follower.followed("kick/*", added=True) or "")
        reply = await follower.followed("kick/nobody_here", added=True)
        assert reply == "Kick has no channel nobody_here: check the spelling."
        assert await follower.followed("twitch/bo", added=True) is None  # not Kick's
        harness.patterns[:] = []
        assert await follower.followed("kick/bo", added=False) == (
            "Kick: the bot no longer asks Kick about bo."
        )
        assert not ours(fake, "bo")
        assert len(ours(fake, "aurora")) == 2  # still in channels


async def test_a_rate_limited_pass_waits_and_then_subscribes(fake: FakeKick, store: Store) -> None:
    fake.rate_limit_next(2, retry_after=1.0)
    async with running(fake, store) as harness:
        await subscribed(fake, "aurora")
        assert not harness.problems.all()
    assert any(r.status == 429 for r in fake.requests)


async def test_a_delivery_before_the_source_runs_gets_503_and_retry_after(
    fake: FakeKick, store: Store
) -> None:
    async with running(fake, store):
        await subscribed(fake, "aurora")
    # The listener serves while the source has not read its kept key yet (a restart).
    source = source_for(fake)
    app = create_app(
        sources={"kick": source},
        intake=Intake(store),
        max_body_bytes=1 << 20,
        health=lambda: asyncio.sleep(0, {"ok": True}),
    )
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    fake.set_webhook_url(f"http://127.0.0.1:{runner.addresses[0][1]}/webhook/kick")
    try:
        assert await fake.go_live("aurora") == [503]
        (answer,) = fake.deliveries[-1:]
        assert answer.response_headers["Retry-After"] == "5"
        assert await store.count_events() == 0
    finally:
        await runner.cleanup()


async def test_a_title_change_right_after_the_look_up_is_not_taken_for_an_old_one(
    fake: FakeKick, store: Store
) -> None:
    """Kick's timestamps are to the second: a change sent within the second after the
    bot's look-up must still reach the chats."""
    dispatcher = Dispatcher(store=store, routes=[EVERYTHING], sinks=["console"])
    async with running(fake, store, lookup_delays=(0.0,)) as harness:
        await subscribed(fake, "aurora")
        channel = fake.channel("aurora")
        await fake.go_live("aurora", title="Warm-up")
        await until(lambda: bool(harness.kinds(ev.STREAM_UPDATE)))
        sent = fake.deliveries[-1].timestamp  # the start's own second
        metadata = {
            "broadcaster": channel.broadcaster_json(),
            "metadata": {
                "title": "Now the real run",
                "language": "en",
                "has_mature_content": False,
                "category": {"id": 1, "name": "Celeste", "thumbnail": ""},
            },
        }
        assert await fake.send("livestream.metadata.updated", metadata, timestamp=sent) == [202]
        while await dispatcher.dispatch_pending():
            pass
    state = await store.get_stream("kick/aurora")
    assert state is not None and state.info.title == "Now the real run"
