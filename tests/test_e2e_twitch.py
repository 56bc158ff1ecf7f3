"""kind = "twitch" end to end, against the fake Twitch (tests/fakes/twitch_api.py).

Through `python -m bot run`: the subscriptions made from config (each challenge answered),
a title set while offline, an online with Helix lagging, a duplicate online, a title
change while live, an offline after a restart with the right duration, a forged and a
stale signature refused with nothing stored, a revocation shown and healed. Through the
whole app with the fake Telegram: /subscribe and /unsubscribe of a login from chat.

The fake keeps Twitch's rule that a callback is https on port 443: the bot's
`callback_url` is `https://bot.example.com/webhook/twitch`, and the fake hands those
deliveries to the bot's listener, as a TLS proxy in front of it would.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.app import Running, run
from tests.conftest import make_config
from tests.fakes.telegram_api import FakeTelegram
from tests.fakes.twitch_api import FakeTwitch
from tests.test_cli import running_bot
from tests.test_e2e_telegram import reply_in

PUBLIC = "https://bot.example.com"
CALLBACK = f"{PUBLIC}/webhook/twitch"
SECRET = "eventsub-e2e-secret-5f1d2"
TYPES = ("stream.online", "stream.offline", "channel.update")


def free_port() -> int:
    """A port nothing listens on now (the bot's, known before it starts: Twitch must be
    told the callback before the bot's first subscription)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def config_text(fake: FakeTwitch, port: int, channels: str = '["quinn"]') -> str:
    return f"""
[server]
host = "127.0.0.1"
port = {port}

[storage]
path = "state/bot.sqlite3"

[behaviour]
end_grace = "0s"

[[sources]]
name = "twitch"
kind = "twitch"
secret = "{SECRET}"
client_id = "{fake.client_id}"
client_secret_env = "TWITCH_CLIENT_SECRET"
callback_url = "{CALLBACK}"
channels = {channels}
api_url = "{fake.api_url}"
auth_url = "{fake.auth_url}"

[[routes]]
match = "twitch/*"
"""


async def health(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/healthz") as response:
        body: dict[str, Any] = await response.json()
        return body


async def wait_until(check: Any, timeout: float = 10.0) -> Any:
    async with asyncio.timeout(timeout):
        while not (found := await check()):
            await asyncio.sleep(0.05)
        return found


async def enabled(fake: FakeTwitch, login: str) -> None:
    user = fake.user(login)
    for sub_type in TYPES:
        await fake.wait_for_subscription(sub_type, user.id, status="enabled", timeout=10)


@pytest.fixture
async def twitch() -> AsyncIterator[FakeTwitch]:
    async with FakeTwitch() as fake:
        fake.add_user("quinn", display_name="Quinn", title="Setting up", game="Just Chatting")
        fake.add_user("mika", display_name="Mika")
        yield fake


async def test_the_whole_story_through_python_m_bot_run(
    tmp_path: Path, twitch: FakeTwitch
) -> None:
    port = free_port()
    twitch.route_callback(PUBLIC, f"http://127.0.0.1:{port}")
    config = tmp_path / "bot.toml"
    config.write_text(config_text(twitch, port))
    env = {"TWITCH_CLIENT_SECRET": twitch.client_secret}
    quinn = twitch.user("quinn")

    async with running_bot(config, env=env) as bot:
        # Subscribed from config: each of the three, each challenge answered by the bot.
        await enabled(twitch, "quinn")
        await bot.wait_for("stderr", r"following quinn")
        challenges = [d for d in twitch.deliveries if d.message_type.endswith("verification")]
        assert len(challenges) == 3
        assert all(d.status == 200 for d in challenges)
        assert not twitch.late_deliveries()
        # mika is not in channels and nobody subscribed to it: not followed.
        assert all(
            s.broadcaster_user_id != twitch.user("mika").id for s in twitch.subscriptions.values()
        )

        # A title set while offline: stored, nobody told.
        assert await twitch.update_channel("quinn", title="Any% <b>@everyone</b>") == [202]
        await asyncio.sleep(0.5)
        assert "Any%" not in bot.stdout

        # Online, with Helix not listing the stream at the first call: the card comes at
        # once with the title known from channel.update; Helix's answer (a new category)
        # then edits it.
        statuses = await twitch.go_live("quinn", game="Celeste", helix_delay_calls=1)
        assert statuses == [202]
        await bot.wait_for("stdout", r"Any% <b>@everyone</b>")
        await bot.wait_for("stdout", r"Celeste", timeout=20)
        online = next(
            d
            for d in reversed(twitch.deliveries)
            if d.payload.get("event", {}).get("type") == "live"
        )
        cards = bot.stdout.count("Any% <b>@everyone</b>")

        # The same stream's online again under a new message id, and Twitch's resend of
        # the first: neither posts a second card.
        again = await twitch.notify("stream.online", online.payload["event"])
        assert again == [200]
        assert await twitch.resend(online) == 200
        await asyncio.sleep(0.5)
        assert bot.stdout.count("Any% <b>@everyone</b>") == cards

        # A title change while live notifies.
        assert await twitch.update_channel("quinn", title="Boss fight") == [202]
        await bot.wait_for("stdout", r"Boss fight")

        # A forged signature and a stale timestamp: 401, and nothing stored (the same
        # message id, properly signed, is then new).
        event = {
            "broadcaster_user_id": quinn.id,
            "broadcaster_user_login": "quinn",
            "broadcaster_user_name": "Quinn",
            "title": "Forged title",
            "language": "en",
            "category_id": "1",
            "category_name": "Celeste",
        }
        forged = await twitch.notify(
            "channel.update", event, message_id="m-x", forge_signature=True
        )
        stale = await twitch.notify(
            "channel.update", event, message_id="m-x", timestamp=twitch.timestamp(seconds_ago=601)
        )
        assert (forged, stale) == ([401], [401])
        await asyncio.sleep(0.3)
        assert "Forged title" not in bot.stdout
        assert await twitch.notify("channel.update", event, message_id="m-x") == [202]
        await bot.wait_for("stdout", r"Forged title")
        assert await bot.stop() == 0
    assert SECRET not in bot.stderr and twitch.client_secret not in bot.stderr
    first_run = bot.stdout
    created_first = len(twitch.requests_to("/helix/eventsub/subscriptions", "POST"))

    # A restart: the subscriptions are kept (none made again), the offline then says how
    # long the whole stream lasted, from the start stored before the restart.
    await asyncio.sleep(1.1)
    listed = len(twitch.requests)
    async with running_bot(config, env=env) as bot:
        await twitch.wait_for_request(
            "/helix/eventsub/subscriptions", lambda r: r.method == "GET", start=listed
        )
        assert await twitch.go_offline("quinn") == [202]
        found = await bot.wait_for("stdout", r"Quinn ended the stream[\s\S]*?duration: (\S+)")
        # The stream began in the first run: at least the second the restart waited.
        assert found.group(1) != "0s"

        # A revocation Twitch can be asked to undo: answered, shown, and healed.
        sub = next(
            s
            for s in twitch.subscriptions.values()
            if s.type == "stream.online" and s.status == "enabled"
        )
        assert await twitch.revoke(sub.id, "notification_failures_exceeded") == 204
        await bot.wait_for("stderr", r"stream.online subscription was revoked")
        fresh = await twitch.wait_for_subscription("stream.online", quinn.id, status="enabled")
        assert fresh.id != sub.id
        report = await wait_until(lambda: _no_source_problems(bot.url))
        assert report["ok"] is True
        # A revocation that cannot be healed stays on show.
        offline_sub = next(
            s
            for s in twitch.subscriptions.values()
            if s.type == "stream.offline" and s.status == "enabled"
        )
        assert await twitch.revoke(offline_sub.id, "authorization_revoked") == 204
        shown = await wait_until(lambda: _source_problems(bot.url))
        (problem,) = shown["twitch"]
        assert problem["streamer"] == "twitch/quinn"
        assert problem["kind"] == "revoked"
        assert "authorization was revoked" in problem["detail"]
        assert await bot.stop() == 0
    # Only the healed subscription was made again.
    assert len(twitch.requests_to("/helix/eventsub/subscriptions", "POST")) == created_first + 1
    assert "[title_change] Quinn changed the title" in first_run


async def _source_problems(url: str) -> dict[str, Any] | None:
    report = await health(url)
    return report["sources"] or None


async def _no_source_problems(url: str) -> dict[str, Any] | None:
    report = await health(url)
    return None if report["sources"] else report


# -- from chat -----------------------------------------------------------------------------

USER = 1001


@contextlib.asynccontextmanager
async def whole_bot(
    tmp_path: Path, twitch: FakeTwitch, telegram: FakeTelegram, channels: list[str]
) -> AsyncIterator[Running]:
    port = free_port()
    twitch.route_callback(PUBLIC, f"http://127.0.0.1:{port}")
    config = make_config(
        tmp_path,
        server={"host": "127.0.0.1", "port": port},
        console={"enabled": False},
        telegram={"token": telegram.token, "api_url": telegram.api_url},
        sources=[
            {
                "name": "twitch",
                "kind": "twitch",
                "secret": SECRET,
                "client_id": twitch.client_id,
                "client_secret": twitch.client_secret,
                "callback_url": CALLBACK,
                "channels": channels,
                "api_url": twitch.api_url,
                "auth_url": twitch.auth_url,
            }
        ],
        routes=[],
    )
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
        yield await asyncio.wait_for(ready, 10)
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def test_subscribe_and_unsubscribe_a_login_from_chat(
    tmp_path: Path, twitch: FakeTwitch
) -> None:
    async with FakeTelegram() as telegram:
        telegram.add_chat(USER, "private", first_name="Alice")
        async with whole_bot(tmp_path, twitch, telegram, channels=[]):
            answer = await reply_in(telegram, USER, "/subscribe twitch/mika")
            assert "Subscribed" in answer["text"]
            assert "Twitch will tell the bot when mika goes live" in answer["text"]
            await enabled(twitch, "mika")

            typo = await reply_in(telegram, USER, "/subscribe twitch/mikka")
            assert "Twitch has no user mikka" in typo["text"]

            glob = await reply_in(telegram, USER, "/subscribe twitch/*")
            assert "exact logins only" in glob["text"]

            assert await twitch.go_live("mika", title="First stream", game="Art") == [202]
            card = await telegram.wait_for_message(USER, lambda m: "First stream" in str(m))
            assert "Mika" in str(card)

            gone = await reply_in(telegram, USER, "/unsubscribe twitch/mika")
            assert "no longer asks Twitch about mika" in gone["text"]
            mika = twitch.user("mika").id
            assert not [s for s in twitch.subscriptions.values() if s.broadcaster_user_id == mika]

            # The typo's problem is on show to whoever may change this chat (anyone, in a
            # private chat), next to what the chat follows.
            status = await reply_in(telegram, USER, "/status")
            assert "twitch/*" in status["text"]
            assert "Problems with the streams followed here" in status["text"]
            assert "twitch/mikka: Twitch has no user mikka" in status["text"]
