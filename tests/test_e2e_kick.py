"""kind = "kick" end to end, against the fake Kick (tests/fakes/kick_api.py).

Through `python -m bot run`: the subscriptions made from config, a title set while
offline, a start by webhook (its card completed from Kick's API), the poll seeing it too
without a second card, a forged and a stale signature refused with nothing stored, a
title change while live, a restart with Kick's API down (the kept key still verifies)
and the end with the right duration; then a start whose delivery is lost (the poll posts
it), its late delivery (no second card), and an end only the poll sees.

Kick posts to one webhook URL per app, set in the app's settings: the fake's is pointed
at the bot's listener, as a tunnel in front of it would pass it on.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.fakes.kick_api import FakeKick
from tests.test_cli import running_bot
from tests.test_e2e_twitch import free_port

EVENTS = ("livestream.status.updated", "livestream.metadata.updated")


def config_text(fake: FakeKick, port: int) -> str:
    return f"""
[server]
host = "127.0.0.1"
port = {port}

[storage]
path = "state/bot.sqlite3"

[behaviour]
end_grace = "0s"

[[sources]]
name = "kick"
kind = "kick"
client_id = "{fake.client_id}"
client_secret_env = "KICK_CLIENT_SECRET"
channels = ["aurora", "bo"]
poll_interval = "1s"
api_url = "{fake.api_url}"
auth_url = "{fake.auth_url}"

[[routes]]
match = "kick/*"
"""


async def health(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/healthz") as response:
        body: dict[str, Any] = await response.json()
        return body


async def subscribed(fake: FakeKick, slug: str) -> None:
    for event in EVENTS:
        await fake.wait_for_subscription(event, fake.channel(slug).user_id, timeout=10)


@pytest.fixture
async def kick() -> Any:
    async with FakeKick() as fake:
        fake.add_channel("aurora", username="Aurora", title="Setting up")
        fake.add_channel("bo", username="Bo")
        yield fake


async def test_the_whole_story_through_python_m_bot_run(tmp_path: Path, kick: FakeKick) -> None:
    port = free_port()
    kick.set_webhook_url(f"http://127.0.0.1:{port}/webhook/kick")
    config = tmp_path / "bot.toml"
    config.write_text(config_text(kick, port))
    env = {"KICK_CLIENT_SECRET": kick.client_secret}
    title = "Any% <b>@everyone</b> <@&123>"

    async with running_bot(config, env=env) as bot:
        await subscribed(kick, "aurora")
        await subscribed(kick, "bo")
        await bot.wait_for("stderr", r"following aurora")

        # A title set while offline: stored, nobody told.
        assert await kick.update_metadata("aurora", title=title, category="Celeste") == [202]
        await asyncio.sleep(0.5)
        assert "Any%" not in bot.stdout

        # The start by webhook: the card at once; Kick's API then adds the thumbnail and
        # category, and the polls that list the stream post no second card.
        assert await kick.go_live("aurora") == [202]
        await bot.wait_for("stdout", r"Aurora is live")
        await kick.wait_for_request("/public/v1/livestreams", count=3, timeout=10)
        await asyncio.sleep(0.5)
        assert bot.stdout.count("Aurora is live") == 1
        online = kick.deliveries[-1]
        assert await kick.resend(online) == 200  # Kick's retry: a duplicate

        # A forged signature and a stale one: 401, and nothing stored (the same message
        # id, properly signed and fresh, is then new).
        metadata = {
            "broadcaster": kick.channel("aurora").broadcaster_json(),
            "metadata": {
                "title": "Forged title",
                "language": "en",
                "has_mature_content": False,
                "category": {"id": 1, "name": "Celeste", "thumbnail": ""},
            },
        }
        forged = await kick.send(
            "livestream.metadata.updated", metadata, message_id="01FORGED", forge=True
        )
        stale = await kick.send(
            "livestream.metadata.updated",
            metadata,
            message_id="01FORGED",
            timestamp=kick.timestamp(seconds_ago=25 * 3600),
        )
        assert (forged, stale) == ([401], [401])
        await asyncio.sleep(0.3)
        assert "Forged title" not in bot.stdout
        assert await kick.send("livestream.metadata.updated", metadata, message_id="01FORGED") == [
            202
        ]
        await bot.wait_for("stdout", r"Forged title")

        # A title change while live notifies.
        assert await kick.update_metadata("aurora", title="Boss fight") == [202]
        await bot.wait_for("stdout", r"Boss fight")
        assert await bot.stop() == 0
    assert kick.client_secret not in bot.stderr
    first_run = bot.stdout
    created = len(kick.requests_to("/public/v1/events/subscriptions", "POST"))
    listed = len(kick.requests_to("/public/v1/events/subscriptions", "GET"))

    # A restart while Kick's API cannot give its key: the key kept in the database checks
    # the end, whose duration counts from the start stored in the first run.
    await asyncio.sleep(1.1)
    kick.fail_next("/public-key", 503, n=1000)
    async with running_bot(config, env=env) as bot:
        # This run's first pass (the kept key is read before it).
        await kick.wait_for_request(
            "/public/v1/events/subscriptions", "GET", count=listed + 1, timeout=10
        )
        assert await kick.go_offline("aurora") == [202]
        found = await bot.wait_for("stdout", r"Aurora ended the stream[\s\S]*?duration: (\S+)")
        assert found.group(1) != "0s"

        # A start whose delivery is lost: the poll posts it.
        assert await kick.go_live("bo", title="Quiet start", deliver=False) == []
        await bot.wait_for("stdout", r"Quiet start", timeout=10)
        # Kick's delivery comes minutes late: the same stream, no second card.
        channel = kick.channel("bo")
        assert channel.stream is not None
        late = {
            "broadcaster": channel.broadcaster_json(),
            "is_live": True,
            "title": channel.title,
            "started_at": channel.stream.started_at.isoformat(),
            "ended_at": None,
        }
        assert await kick.send("livestream.status.updated", late) == [200]
        # Its end is lost too: two polls without the stream end it.
        await kick.go_offline("bo", deliver=False)
        # (Named by its slug: Kick's API does not give the name only webhooks carry.)
        await bot.wait_for("stdout", r"bo ended the stream", timeout=10)
        assert bot.stdout.count("bo is live") == 1
        report = await health(bot.url)
        assert report["ok"] is True
        assert report["sources"] == {}
        assert await bot.stop() == 0
    # The subscriptions were kept across the restart: none made again.
    assert len(kick.requests_to("/public/v1/events/subscriptions", "POST")) == created
    assert "[title_change] Aurora changed the title" in first_run
    assert first_run.count("Aurora is live") == 1
