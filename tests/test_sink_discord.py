"""The Discord sink, driven through the real discord.py against the protocol-level fake."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import warnings
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest

from bot.commands import Chat, Commands, LiveEntry, MuteEntry, StatusReport
from bot.config import Route
from bot.errors import MessageGone, PermanentDeliveryError, TransientDeliveryError
from bot.events import NOTIFIED_KINDS, Event, LiveInfo
from bot.markup import utf16_len
from bot.outbox import OutboxWorker
from bot.pipeline.dispatch import Dispatcher
from bot.registry import message_formats
from bot.render import Renderer
from bot.sinks.discord.client import INVITE_PERMISSIONS
from bot.sinks.discord.commands import status_embed
from bot.sinks.discord.config import DiscordConfig
from bot.sinks.discord.errors import delivery_error
from bot.sinks.discord.format import FORMAT, KIND_COLOURS
from bot.sinks.discord.sink import DiscordSink, delivery_nonce
from bot.store import Delivery, DeliveryInfo, Store
from bot.targets import TargetProblems
from tests.fakes.discord_api import (
    ANNOUNCEMENTS_CHANNEL_ID,
    APPLICATION_ID,
    BOT_ROLE_ID,
    BOT_ROLE_PERMISSIONS,
    CATEGORY_ID,
    EMBED_LINKS,
    FORUM_CHANNEL_ID,
    GENERAL_CHANNEL_ID,
    GUILD_ID,
    MEMBER_USER_ID,
    MENTION_EVERYONE,
    MOD_USER_ID,
    NO_EMBEDS_CHANNEL_ID,
    READONLY_CHANNEL_ID,
    RESTRICTED_CHANNEL_ID,
    STAFF_ROLE_ID,
    STREAMERS_ROLE_ID,
    STREAMS_CHANNEL_ID,
    THREAD_ID,
    TOKEN,
    VOICE_CHANNEL_ID,
    CommandNotAvailable,
    FakeDiscord,
    assert_no_heartbeat_threads,
    default_guild,
    no_identify_delay,
)
from tests.routes import chats
from tests.waiting import Condition, every_delivery, holds, outbox_states

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "'audioop' is deprecated", DeprecationWarning)
    import discord
    import discord.gateway
    import discord.http

URL = "https://twitch.example/quinn"
COVER = "https://img.example/quinn.jpg"
AVATAR = "https://img.example/quinn-avatar.png"
NASTY = f"@everyone <@&{STAFF_ROLE_ID}> **x** @here <@{MEMBER_USER_ID}>"
ROUTE = Route(
    patterns=("twitch/*",),
    events=frozenset(NOTIFIED_KINDS),
    mention_roles=(STREAMERS_ROLE_ID,),
    targets=chats(discord=(STREAMS_CHANNEL_ID,)),
)
MESSAGES = f"/channels/{STREAMS_CHANNEL_ID}/messages"
MANAGE_CHANNELS = str(discord.Permissions(manage_channels=True).value)
FORMATS = message_formats()


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
async def no_leftovers() -> AsyncIterator[None]:
    """Each test leaves no pending tasks and no gateway heartbeat threads behind."""
    yield
    await asyncio.sleep(0)
    current = asyncio.current_task()
    assert [t for t in asyncio.all_tasks() if t is not current and not t.done()] == []
    assert_no_heartbeat_threads()


WRONG_TOKEN = "not-the-bot-token.9f8e7d"


@pytest.fixture(autouse=True)
def no_token_in_logs(caplog: pytest.LogCaptureFixture) -> Any:
    """Every test runs with DEBUG logging, and no record may contain a bot token."""
    caplog.set_level(logging.DEBUG)
    yield
    for record in caplog.records:
        text = record.getMessage() + (record.exc_text or "")
        assert TOKEN not in text
        assert WRONG_TOKEN not in text


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    """The fake Discord, which accepts only TOKEN."""
    async with FakeDiscord(token=TOKEN, heartbeat_interval=200) as server:
        yield server
        assert server.errors == []
        assert [(r.method, r.path) for r in server.unhandled] == []


def make_sink(
    fake: FakeDiscord,
    store: Store,
    routes: Sequence[Route] = (ROUTE,),
    *,
    token: str = TOKEN,
    commands: Commands | None = None,
    renderer: Renderer | None = None,
    api_url: str | None = None,
    ready_timeout: float = 5.0,
    global_limit: int | None = None,
    global_period: float | None = None,
    problems: TargetProblems | None = None,
    login_retry_first: float = 2.0,
    **client_options: Any,
) -> DiscordSink:
    config = DiscordConfig(
        token=token,
        api_url=api_url or fake.api_url,
        gateway_url=fake.gateway_url,
        guild_ids=(GUILD_ID,),
        disabled_reason=None,
    )
    return DiscordSink(
        config=config,
        renderer=renderer or Renderer(formats=FORMATS),
        commands=commands or Commands(store=store, routes=routes),
        client_options={"guild_ready_timeout": 0.1, **client_options},
        before_identify_hook=no_identify_delay,
        ready_timeout=ready_timeout,
        global_limit=global_limit,
        global_period=global_period,
        problems=problems,
        login_retry_first=login_retry_first,
    )


@asynccontextmanager
async def running(sink: DiscordSink) -> AsyncIterator[DiscordSink]:
    await sink.start()
    try:
        assert sink.state == "running"
        yield sink
    finally:
        await sink.stop()
    assert sink.state == "stopped"


def live_start(title: str = "Painting a dragon", *, name: str = "Quinn", n: int = 1) -> Event:
    now = datetime.now(UTC)
    return Event(
        source="rec",
        event_id=f"start-{n}",
        kind="live_start",
        occurred_at=now - timedelta(minutes=5),
        received_at=now,
        platform="twitch",
        channel="quinn",
        display_name=name,
        url=URL,
        live=LiveInfo(title=title, categories=("Art",), cover=COVER, avatar=AVATAR),
    )


def title_change(title: str) -> Event:
    start = live_start()
    return start.with_changes(
        event_id="title-1",
        kind="title_change",
        live=LiveInfo(title=title, categories=("Art",), cover=COVER, avatar=AVATAR),
        old_live=start.live,
        started_at=start.occurred_at,
    )


def delivery(n: int, channel: int = STREAMS_CHANNEL_ID, **options: Any) -> Delivery:
    return Delivery(
        id=n,
        event_row=n,
        sink="discord",
        target=str(channel),
        action="post",
        options=options,
        attempts=1,
        created_at=1_773_206_558.25 + n,
        not_before=0.0,
    )


async def run_worker_until(worker: OutboxWorker, done: Condition, timeout: float = 5.0) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        async with asyncio.timeout(timeout):
            while not await holds(done):
                await asyncio.sleep(0.01)
    finally:
        stop.set()
        await task


def statuses(fake: FakeDiscord, method: str, path: str) -> list[int]:
    return [r.status for r in fake.requests if r.method == method and r.path == path]


def sink_logs(caplog: pytest.LogCaptureFixture, level: int = logging.WARNING) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "bot.sinks.discord" and r.levelno >= level
    ]


# --------------------------------------------------------------------------- notifications


async def test_live_start_through_the_outbox_is_an_embed_that_pings_only_the_route_role(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    dispatcher = Dispatcher(store=store, routes=[ROUTE], sinks=["discord"])
    accepted = await dispatcher.accept(live_start(title=NASTY, name=f"Quinn {NASTY}"))
    assert accepted.deliveries == 1
    # A server that granted the bot Mention Everyone: only allowed_mentions holds the
    # pings back here.
    granted = default_guild(bot_permissions=BOT_ROLE_PERMISSIONS | MENTION_EVERYONE)
    async with FakeDiscord(token=TOKEN, heartbeat_interval=200, guilds=[granted]) as fake:
        sink = make_sink(fake, store)
        async with running(sink):
            await run_worker_until(
                OutboxWorker(store=store, sink=sink),
                outbox_states(store, lambda states: states == {"sent": 1}),
            )
        assert fake.errors == []

    [message] = fake.messages[STREAMS_CHANNEL_ID]
    assert fake.messages[GENERAL_CHANNEL_ID] == []  # not routed there
    # Pinged: exactly the configured role. Not @everyone, not Staff, not the member,
    # although the bot may mention everyone and the text names them all.
    assert message["content"].startswith(f"<@&{STREAMERS_ROLE_ID}> ")
    assert message["mention_roles"] == [str(STREAMERS_ROLE_ID)]
    assert message["mentions"] == []
    assert message["mention_everyone"] is False
    [embed] = message["embeds"]
    assert "\\*\\*x\\*\\*" in embed["title"]  # markdown shown as text
    assert f"<@&{STAFF_ROLE_ID}>" not in embed["title"]
    assert embed["url"] == URL
    assert embed["image"]["url"].startswith(f"{COVER}?v=")
    assert embed["author"]["icon_url"] == AVATAR
    assert embed["color"] == KIND_COLOURS["live_start"]
    assert embed["fields"] == [{"name": "Category", "value": "Art", "inline": True}]
    assert URL in embed["description"]
    assert embed["timestamp"]

    [post] = [r for r in fake.requests if r.method == "POST" and r.path == MESSAGES]
    assert post.json["allowed_mentions"] == {"parse": [], "roles": [STREAMERS_ROLE_ID]}
    assert post.json["enforce_nonce"] is True
    [row] = await every_delivery(store)
    assert row.message_id == message["id"]
    # A derived, stable nonce: what a retry of this delivery would send again.
    assert post.json["nonce"] == delivery_nonce(_delivery_row(row))
    assert len(post.json["nonce"]) <= 25
    # The invite link asks for the sink's permissions, with both scopes.
    invite = next(m for m in sink_logs(caplog, logging.INFO) if "invite" in m)
    assert f"client_id={APPLICATION_ID}" in invite
    assert f"permissions={INVITE_PERMISSIONS.value}" in invite
    assert "scope=bot+applications.commands" in invite


async def test_mentions_a_template_writes_out_literally_still_ping_only_the_route_roles(
    store: Store, tmp_path: Path
) -> None:
    # Template text is not escaped (only the values put into it are), so here the second
    # wall, allowed_mentions, is all that stands between a careless template and a ping
    # (in a server that granted the bot Mention Everyone).
    (tmp_path / "discord").mkdir()
    (tmp_path / "discord" / "live_start.j2").write_text(
        '{% extends "discord/base.j2" %}{% block content %}'
        f"@everyone @here <@&{STAFF_ROLE_ID}> <@{MEMBER_USER_ID}> {{{{ streamer.name }}}} is live"
        "{% endblock %}"
    )
    granted = default_guild(bot_permissions=BOT_ROLE_PERMISSIONS | MENTION_EVERYONE)
    async with FakeDiscord(token=TOKEN, heartbeat_interval=200, guilds=[granted]) as fake:
        sink = make_sink(fake, store, renderer=Renderer(formats=FORMATS, user_dir=tmp_path))
        async with running(sink):
            await sink.deliver(delivery(1, mention_roles=[STREAMERS_ROLE_ID]), live_start())
    [message] = fake.messages[STREAMS_CHANNEL_ID]
    assert "@everyone @here" in message["content"]
    assert message["mention_roles"] == [str(STREAMERS_ROLE_ID)]
    assert message["mentions"] == []
    assert message["mention_everyone"] is False


def _delivery_row(row: DeliveryInfo) -> Delivery:
    return Delivery(
        id=row.id,
        event_row=row.event_row,
        sink=row.sink,
        target=row.target,
        action=row.action,
        options={},
        attempts=row.attempts,
        created_at=row.created_at,
        not_before=row.not_before,
    )


async def test_edit_changes_the_card_in_place_and_a_deleted_card_is_gone(
    fake: FakeDiscord, store: Store
) -> None:
    async with running(make_sink(fake, store)) as sink:
        card = await sink.deliver(
            delivery(1, mention_roles=[STREAMERS_ROLE_ID]), live_start("Old title")
        )
        assert card is not None
        await sink.edit(delivery(2), card, title_change("New title"))

        [message] = fake.messages[STREAMS_CHANNEL_ID]
        assert message["id"] == card
        assert message["edited_timestamp"] is not None
        assert message["embeds"][0]["title"] == "New title"
        assert message["embeds"][0]["color"] == KIND_COLOURS["title_change"]
        assert "changed the stream title" in message["content"]
        patch = next(r for r in fake.requests if r.method == "PATCH")
        assert patch.path == f"{MESSAGES}/{card}"
        assert patch.json["allowed_mentions"] == {"parse": [], "roles": []}

        fake.delete_message(STREAMS_CHANNEL_ID, int(card))
        with pytest.raises(MessageGone, match="10008"):
            await sink.edit(delivery(3), card, title_change("Newer title"))


async def test_delete_takes_the_card_down_and_a_card_already_gone_counts_as_deleted(
    fake: FakeDiscord, store: Store
) -> None:
    async with running(make_sink(fake, store)) as sink:
        first = await sink.deliver(delivery(1), live_start())
        second = await sink.deliver(delivery(2), live_start(n=2))
        assert first is not None
        assert second is not None

        await sink.delete(delivery(3), first)
        assert [m["id"] for m in fake.messages[STREAMS_CHANNEL_ID]] == [second]
        await sink.delete(delivery(4), first)  # again, say after a lost answer: done

        fake.delete_message(STREAMS_CHANNEL_ID, int(second))  # a moderator was quicker
        await sink.delete(delivery(5), second)
        assert fake.messages[STREAMS_CHANNEL_ID] == []
    assert statuses(fake, "DELETE", f"{MESSAGES}/{first}") == [204, 404]
    assert statuses(fake, "DELETE", f"{MESSAGES}/{second}") == [404]


async def test_a_refused_delete_is_permanent_and_the_card_can_still_be_edited(
    fake: FakeDiscord, store: Store
) -> None:
    async with running(make_sink(fake, store, max_ratelimit_timeout=30.0)) as sink:
        card = await sink.deliver(delivery(1), live_start())
        assert card is not None
        fake.fail_next(
            "DELETE",
            f"{MESSAGES}/{card}",
            status=403,
            json={"code": 50013, "message": "Missing Permissions"},
        )
        with pytest.raises(PermanentDeliveryError, match="50013") as refused:
            await sink.delete(delivery(2), card)
        # Not MessageGone: the card is still there, and the caller edits it instead.
        assert not isinstance(refused.value, MessageGone)
        await sink.edit(delivery(3), card, title_change("Over for today"))
        [message] = fake.messages[STREAMS_CHANNEL_ID]
        assert message["embeds"][0]["title"] == "Over for today"

        with pytest.raises(PermanentDeliveryError) as malformed:
            await sink.delete(delivery(4), "not-a-message-id")
        assert not isinstance(malformed.value, MessageGone)

        fake.rate_limit_next("DELETE", f"{MESSAGES}/{card}", retry_after=45)
        with pytest.raises(TransientDeliveryError):
            await sink.delete(delivery(5), card)
        assert len(fake.messages[STREAMS_CHANNEL_ID]) == 1


PACED_CHANNEL_IDS = [1_210_000_000_000_001_000 + k for k in range(12)]


def guild_with_paced_channels() -> dict[str, Any]:
    """The default guild plus twelve plain text channels the bot may post in."""
    guild = default_guild()
    for k, channel_id in enumerate(PACED_CHANNEL_IDS):
        guild["channels"].append(
            {
                "id": str(channel_id),
                "type": 0,
                "name": f"paced-{k}",
                "position": 10 + k,
                "parent_id": None,
                "topic": None,
                "nsfw": False,
                "rate_limit_per_user": 0,
                "last_message_id": None,
                "flags": 0,
                "permission_overwrites": [],
            }
        )
    return guild


@pytest.mark.parametrize(
    ("sink_limit", "expect_429s"),
    [(5, False), (1000, True)],
    ids=["paced-to-discords-limit", "unpaced-control"],
)
async def test_a_fan_out_is_paced_under_the_global_limit_instead_of_riding_429s(
    store: Store, sink_limit: int, expect_429s: bool
) -> None:
    # Discord's 50 requests/s, scaled down: 5 per 0.25 s, 12 channels at once.
    async with FakeDiscord(
        token=TOKEN,
        heartbeat_interval=200,
        guilds=[guild_with_paced_channels()],
        global_rate_limit=(5, 0.25),
    ) as fake:
        sink = make_sink(fake, store, global_limit=sink_limit, global_period=0.25)
        async with running(sink):
            await asyncio.gather(
                *(
                    sink.deliver(delivery(n, channel), live_start(n=n))
                    for n, channel in enumerate(PACED_CHANNEL_IDS, 1)
                )
            )
        assert [len(fake.messages[channel]) for channel in PACED_CHANNEL_IDS] == [1] * 12
        rejected = [r for r in fake.requests if r.status == 429]
        # Paced, nothing is refused: not the sends, nor the login and command sync before.
        assert bool(rejected) is expect_429s


async def test_a_retry_in_a_turn_never_leaves_the_channels_waiting_on_each_other(
    store: Store,
) -> None:
    # Every first send gets a 429 that discord.py waits out and retries: two requests per
    # delivery, with more deliveries at once than the limiter has slots.
    async with FakeDiscord(
        token=TOKEN, heartbeat_interval=200, guilds=[guild_with_paced_channels()]
    ) as fake:
        channels = PACED_CHANNEL_IDS[:4]
        sink = make_sink(fake, store, global_limit=2, global_period=0.05)
        async with running(sink):
            fake.rate_limit_next("POST", "/channels/*/messages", retry_after=0.05, times=4)
            sends = [sink.deliver(delivery(n, c), live_start(n=n)) for n, c in enumerate(channels)]
            async with asyncio.timeout(10):
                await asyncio.gather(*sends)
        assert [len(fake.messages[channel]) for channel in channels] == [1, 1, 1, 1]


async def test_429_is_waited_out_and_5xx_retried_with_the_same_nonce(
    fake: FakeDiscord, store: Store
) -> None:
    async with running(make_sink(fake, store, max_ratelimit_timeout=30.0)) as sink:
        fake.rate_limit_next("POST", MESSAGES, retry_after=0.2)
        started = time.monotonic()
        first = await sink.deliver(delivery(1), live_start())
        assert time.monotonic() - started >= 0.2
        assert statuses(fake, "POST", MESSAGES) == [429, 200]

        # The message is created but the answer is lost; discord.py retries the request,
        # and the enforced nonce makes Discord answer with the same message.
        fake.fail_next(
            "POST", MESSAGES, status=502, json={"message": "Bad Gateway"}, after_processing=True
        )
        second = await sink.deliver(delivery(2), live_start(n=2))
        assert statuses(fake, "POST", MESSAGES) == [429, 200, 502, 200]
        nonces = [r.json["nonce"] for r in fake.requests if r.path == MESSAGES]
        assert nonces[2] == nonces[3] != nonces[0]
        assert [m["id"] for m in fake.messages[STREAMS_CHANNEL_ID]] == [first, second]
        # The outbox retrying a delivery whose answer was lost gets the same message back.
        assert await sink.deliver(delivery(2), live_start(n=2)) == second
        assert len(fake.messages[STREAMS_CHANNEL_ID]) == 2

        # A wait longer than discord.py will sit out becomes a transient error that says
        # when to come back.
        fake.rate_limit_next("POST", f"/channels/{GENERAL_CHANNEL_ID}/messages", retry_after=45)
        with pytest.raises(TransientDeliveryError) as caught:
            await sink.deliver(delivery(3, GENERAL_CHANNEL_ID), live_start(n=3))
        assert caught.value.retry_after == pytest.approx(45)
    assert fake.messages[GENERAL_CHANNEL_ID] == []


class _Response(SimpleNamespace):
    """Just what discord.HTTPException reads from an aiohttp response."""


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (discord.RateLimited(12.5), TransientDeliveryError),
        (
            discord.DiscordServerError(_Response(status=503, reason="Unavailable"), ""),
            TransientDeliveryError,
        ),
        (
            discord.HTTPException(_Response(status=429, reason="Too Many"), ""),
            TransientDeliveryError,
        ),
        (aiohttp.ClientConnectionError("reset"), TransientDeliveryError),
        (TimeoutError(), TransientDeliveryError),
        (
            discord.Forbidden(
                _Response(status=403, reason="Forbidden"),
                {"code": 50001, "message": "Missing Access"},
            ),
            PermanentDeliveryError,
        ),
        (
            discord.NotFound(
                _Response(status=404, reason="Not Found"),
                {"code": 10003, "message": "Unknown Channel"},
            ),
            PermanentDeliveryError,
        ),
        (
            discord.HTTPException(
                _Response(status=400, reason="Bad Request"),
                {"code": 50035, "message": "Invalid Form Body"},
            ),
            PermanentDeliveryError,
        ),
        (
            discord.NotFound(
                _Response(status=404, reason="Not Found"),
                {"code": 10008, "message": "Unknown Message"},
            ),
            MessageGone,
        ),
    ],
)
def test_platform_errors_map_to_retryable_or_not(exc: Exception, expected: type) -> None:
    mapped = delivery_error(exc, "channel 1")
    assert type(mapped) is expected
    assert str(mapped).startswith("channel 1: ")
    assert delivery_error(ValueError("a bug"), "channel 1") is None


async def test_missing_access_and_unknown_channel_are_permanent(
    fake: FakeDiscord, store: Store
) -> None:
    async with running(make_sink(fake, store)) as sink:
        with pytest.raises(PermanentDeliveryError, match="50001"):
            await sink.deliver(delivery(1, RESTRICTED_CHANNEL_ID), live_start())
        with pytest.raises(PermanentDeliveryError, match="50013"):
            await sink.deliver(delivery(2, READONLY_CHANNEL_ID), live_start())
        with pytest.raises(PermanentDeliveryError, match="10003"):
            await sink.deliver(delivery(3, 424242), live_start())
        with pytest.raises(PermanentDeliveryError, match="not a Discord channel id"):
            await sink.deliver(delivery(4, 0), live_start())
        fake.fail_next(
            "POST", MESSAGES, status=403, json={"code": 50001, "message": "Missing Access"}
        )
        with pytest.raises(PermanentDeliveryError, match="Missing Access"):
            await sink.deliver(delivery(5), live_start())
    assert all(messages == [] for messages in fake.messages.values())


async def test_a_failing_channel_fails_visibly_without_blocking_another(
    fake: FakeDiscord, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    route = Route(
        patterns=("*",),
        events=frozenset(NOTIFIED_KINDS),
        targets=chats(discord=(RESTRICTED_CHANNEL_ID, STREAMS_CHANNEL_ID)),
    )
    await Dispatcher(store=store, routes=[route], sinks=["discord"]).accept(live_start())
    async with running(make_sink(fake, store, [route])) as sink:
        await run_worker_until(
            OutboxWorker(store=store, sink=sink),
            outbox_states(store, lambda states: states == {"failed": 1, "sent": 1}),
        )
        rows = {r.target: r for r in await every_delivery(store)}
        assert rows[str(STREAMS_CHANNEL_ID)].state == "sent"
        failed = rows[str(RESTRICTED_CHANNEL_ID)]
        assert failed.state == "failed"
        assert "PermanentDeliveryError" in (failed.last_error or "")
        assert "Missing Access" in (failed.last_error or "")
        assert len(fake.messages[STREAMS_CHANNEL_ID]) == 1
        assert any(
            r.name == "bot.outbox"
            and r.levelno == logging.ERROR
            and "Missing Access" in r.getMessage()
            for r in caplog.records
        )

        # /status there tells a moderator, and only a moderator, that it is failing.
        by_mod = await fake.invoke_command(
            "status", channel_id=RESTRICTED_CHANNEL_ID, user_id=MOD_USER_ID
        )
        assert any("failing" in f["name"] for f in by_mod.embeds[0].get("fields", []))
        by_member = await fake.invoke_command("status", channel_id=RESTRICTED_CHANNEL_ID)
        assert not any("failing" in f["name"] for f in by_member.embeds[0].get("fields", []))


async def test_a_role_that_cannot_be_pinged_is_reported_once(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    # The default guild: the bot has no Mention Everyone (its invite does not ask for it),
    # and Staff is not mentionable.
    async with (
        FakeDiscord(token=TOKEN) as fake,
        running(make_sink(fake, store)) as sink,
    ):
        for n in (1, 2):
            await sink.deliver(
                delivery(n, mention_roles=[STAFF_ROLE_ID, STREAMERS_ROLE_ID]),
                live_start(n=n),
            )
        pinged = [m["mention_roles"] for m in fake.messages[STREAMS_CHANNEL_ID]]
    assert pinged == [[str(STREAMERS_ROLE_ID)]] * 2
    warnings_ = [m for m in sink_logs(caplog) if "was not pinged" in m]
    assert len(warnings_) == 1
    assert str(STAFF_ROLE_ID) in warnings_[0]


# --------------------------------------------------------------------------- commands


async def go_live(store: Store, title: str = "Painting a dragon") -> None:
    await Dispatcher(store=store, routes=[ROUTE], sinks=["console"]).accept(live_start(title))


async def test_commands_are_synced_to_the_guild_only(fake: FakeDiscord, store: Store) -> None:
    async with running(make_sink(fake, store)):
        pass
    expected = {
        "status": [],
        "mute": ["streamer", "duration"],
        "unmute": ["streamer"],
        "mutes": [],
        "follows": [],
        "subscribe": ["pattern"],
        "unsubscribe": ["pattern"],
        "test": [],
        "help": [],
    }
    # Registered in the configured server only: global copies would list them twice there.
    assert fake.commands == []
    for synced in (fake.guild_commands[GUILD_ID],):
        by_name = {c["name"]: c for c in synced}
        assert {n: [o["name"] for o in c.get("options", [])] for n, c in by_name.items()} == (
            expected
        )
        for name, command in by_name.items():
            changing = name in ("mute", "unmute", "subscribe", "unsubscribe", "test")
            assert command["default_member_permissions"] == (MANAGE_CHANNELS if changing else None)
            assert command["contexts"] == [0]  # servers only
            for option in command.get("options", []):
                assert option["type"] == 3  # a string
                assert option.get("autocomplete", False) == (option["name"] != "duration")
        assert [o["required"] for o in by_name["subscribe"]["options"]] == [True]
        assert [o.get("required", False) for o in by_name["mute"]["options"]] == [False, False]


async def test_status_lists_the_live_stream_escaped(fake: FakeDiscord, store: Store) -> None:
    await go_live(store, title=NASTY)
    async with running(make_sink(fake, store)):
        result = await fake.invoke_command("status", channel_id=STREAMS_CHANNEL_ID)
    assert result.ephemeral
    [embed] = result.embeds
    assert embed["title"] == "Live now"
    assert f"[Quinn]({URL})" in embed["description"]
    assert "\\*\\*x\\*\\*" in embed["description"]
    assert f"<@&{STAFF_ROLE_ID}>" not in embed["description"]
    assert "@everyone" not in embed["description"]
    assert "Art" in embed["description"]
    assert "live for 5m" in embed["description"]
    assert result.message["mention_everyone"] is False
    assert result.message["mention_roles"] == []
    callback = next(r for r in fake.requests if r.path.startswith("/interactions/"))
    assert callback.json["data"]["allowed_mentions"] == {"parse": []}
    assert fake.messages[STREAMS_CHANNEL_ID] == []  # nothing public


def test_a_long_status_stays_within_discords_embed_limits() -> None:
    now = datetime.now(UTC)
    live = tuple(
        LiveEntry(
            key=f"twitch/s{n}",
            name="🐉" * 150,
            url=f"https://twitch.example/s{n}",
            title="**t** " * 500,
            categories=("Art",) * 50,
            started_at=now,
            uptime=timedelta(hours=2),
        )
        for n in range(60)
    )
    mutes = tuple(MuteEntry(pattern=f"twitch/*{n}*", until=None) for n in range(100))
    report = StatusReport(live=live, mutes=mutes, scoped=False, failed_deliveries=3, now=now)
    embed = status_embed(Renderer(formats=FORMATS), report, admin=True)
    assert utf16_len(embed.description or "") <= 4096
    assert len(embed) <= 6000
    assert all(utf16_len(f.value or "") <= 1024 for f in embed.fields)
    assert (embed.description or "").endswith("more")
    assert "failing" in embed.fields[-1].name


async def test_mute_needs_manage_channels_and_writes_the_mute(
    fake: FakeDiscord, store: Store
) -> None:
    await go_live(store)
    options = {"streamer": "twitch/quinn", "duration": "2h"}
    here = (str(STREAMS_CHANNEL_ID),)
    async with running(make_sink(fake, store)):
        # Discord's client does not even offer it to a plain member ...
        with pytest.raises(CommandNotAvailable):
            await fake.invoke_command("mute", options, channel_id=STREAMS_CHANNEL_ID)
        # ... and if it did (stale client, changed overrides) the bot checks again.
        refused = await fake.invoke_command(
            "mute", options, channel_id=STREAMS_CHANNEL_ID, check_permissions=False
        )
        assert refused.ephemeral
        assert "Manage Channels" in refused.content
        assert await store.mutes_for("discord", *here, time.time()) == []

        before = time.time()
        muted = await fake.invoke_command(
            "mute", options, channel_id=STREAMS_CHANNEL_ID, user_id=MOD_USER_ID
        )
        assert muted.ephemeral
        assert muted.content == "Muted twitch/quinn here for 2h."
        [mute] = await store.mutes_for("discord", *here, time.time())
        assert mute.pattern == "twitch/quinn"
        assert mute.until == pytest.approx(before + 7200, abs=5)

        bad = await fake.invoke_command(
            "mute", {"duration": "soon"}, channel_id=STREAMS_CHANNEL_ID, user_id=MOD_USER_ID
        )
        assert bad.ephemeral
        assert "30m, 2h or 1d" in bad.content
        unknown = await fake.invoke_command(
            "mute",
            {"streamer": "twitch/nobody"},
            channel_id=STREAMS_CHANNEL_ID,
            user_id=MOD_USER_ID,
        )
        # Not seen yet is no refusal (the streamer may not have streamed since the
        # install): muted, with the typo check in the answer.
        assert unknown.ephemeral
        assert unknown.content == (
            "Muted twitch/nobody here until you unmute it. No streamer seen so far matches it."
        )
        await fake.invoke_command(
            "unmute",
            {"streamer": "twitch/nobody"},
            channel_id=STREAMS_CHANNEL_ID,
            user_id=MOD_USER_ID,
        )

        listed = await fake.invoke_command("mutes", channel_id=STREAMS_CHANNEL_ID)
        assert "twitch/quinn for" in listed.content
        unmuted = await fake.invoke_command(
            "unmute",
            {"streamer": "twitch/quinn"},
            channel_id=STREAMS_CHANNEL_ID,
            user_id=MOD_USER_ID,
        )
        assert unmuted.content == "Unmuted twitch/quinn here."
        assert await store.mutes_for("discord", *here, time.time()) == []

        # "/mute 2h" with the duration typed into the first box mutes everything here.
        everything = await fake.invoke_command(
            "mute", {"streamer": "2h"}, channel_id=GENERAL_CHANNEL_ID, user_id=MOD_USER_ID
        )
        assert everything.content == "Muted every stream here for 2h."
    assert fake.messages[STREAMS_CHANNEL_ID] == []


async def test_subscribe_and_unsubscribe_route_streamers_here(
    fake: FakeDiscord, store: Store
) -> None:
    commands = Commands(store=store, routes=[ROUTE])
    async with running(make_sink(fake, store, commands=commands)):
        added = await fake.invoke_command(
            "subscribe",
            {"pattern": "youtube/*"},
            channel_id=GENERAL_CHANNEL_ID,
            user_id=MOD_USER_ID,
        )
        assert added.ephemeral
        assert "youtube/\\*" in added.content  # a glob, shown as typed
        assert await commands.patterns_for(Chat("discord", str(GENERAL_CHANNEL_ID))) == [
            "youtube/*"
        ]
        removed = await fake.invoke_command(
            "unsubscribe",
            {"pattern": "youtube/*"},
            channel_id=GENERAL_CHANNEL_ID,
            user_id=MOD_USER_ID,
        )
        assert removed.content.startswith("Unsubscribed")
        assert await store.subscriptions() == []


async def test_autocomplete_offers_known_streamers(fake: FakeDiscord, store: Store) -> None:
    await go_live(store)
    async with running(make_sink(fake, store)):
        for command, option in (("mute", "streamer"), ("subscribe", "pattern")):
            choices = await fake.autocomplete(command, {option: "qu"}, option)
            assert choices == [{"name": "twitch/quinn", "value": "twitch/quinn"}]
        assert await fake.autocomplete("unmute", {"streamer": "zz"}, "streamer") == []


async def test_help_names_the_commands_and_this_channel(fake: FakeDiscord, store: Store) -> None:
    async with running(make_sink(fake, store)):
        result = await fake.invoke_command("help", channel_id=STREAMS_CHANNEL_ID)
    assert result.ephemeral
    for usage in ("/status", "/mute [streamer] [duration]", "/subscribe <pattern>", "/help"):
        assert f"`{usage}`" in result.content
    assert str(STREAMS_CHANNEL_ID) in result.content


class BrokenCommands(Commands):
    """Commands whose status has a bug."""

    def status(self, chat: Chat) -> Any:
        raise RuntimeError("a bug in status")


async def test_an_unexpected_error_is_logged_and_answered_politely(
    fake: FakeDiscord, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    commands = BrokenCommands(store=store, routes=[ROUTE])
    async with running(make_sink(fake, store, commands=commands)):
        result = await fake.invoke_command("status", channel_id=STREAMS_CHANNEL_ID)
    assert result.ephemeral
    assert result.content.startswith("Sorry")
    assert "a bug in status" not in result.content
    [record] = [r for r in caplog.records if r.exc_info and r.name == "bot.sinks.discord"]
    assert "/status" in record.getMessage()


# --------------------------------------------------------------------------- lifecycle


async def test_a_wrong_token_fails_the_sink_with_one_line_and_no_crash(
    fake: FakeDiscord, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    route_base = discord.http.Route.BASE
    gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    sink = make_sink(fake, store, token=WRONG_TOKEN)
    await sink.start()  # does not raise
    assert sink.state == "failed"
    problems = sink_logs(caplog)
    assert len(problems) == 1
    assert "refused the bot token" in problems[0]
    with pytest.raises(TransientDeliveryError):
        await sink.deliver(delivery(1), live_start())
    await sink.stop()
    await sink.stop()  # idempotent
    assert sink.state == "stopped"
    assert route_base == discord.http.Route.BASE
    assert gateway == discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    # A refused token is not retried.
    assert [r.path for r in fake.requests] == ["/users/@me"]


async def test_an_unreachable_discord_is_retried_in_the_background_until_stopped(
    fake: FakeDiscord, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    sink = make_sink(
        fake, store, api_url=f"http://127.0.0.1:{closed_port}/api/v10", ready_timeout=0.3
    )
    await sink.start()
    assert sink.state == "starting"
    assert any("cannot log in" in m and "retrying" in m for m in sink_logs(caplog))
    with pytest.raises(TransientDeliveryError, match="not logged in"):
        await sink.deliver(delivery(1), live_start())
    started = time.monotonic()
    await sink.stop()
    assert time.monotonic() - started < 1.0  # the retry wait is cancelled, not sat out
    assert sink.state == "stopped"


async def test_the_token_stays_out_of_logs_and_reprs(
    fake: FakeDiscord, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    sink = make_sink(fake, store)
    assert TOKEN not in repr(sink)
    async with running(sink):
        assert TOKEN not in repr(sink)
        await sink.deliver(delivery(1), live_start())
        await fake.invoke_command("status", channel_id=STREAMS_CHANNEL_ID)
    assert TOKEN not in repr(sink)
    # The fixture checks every record; make sure there were plenty to check.
    assert len(caplog.records) > 20
    assert any(r.name.startswith("discord") for r in caplog.records)


# --------------------------------------------------------------------------- targets (#15)


def live_end(n: int = 1) -> Event:
    start = live_start()
    return start.with_changes(
        event_id=f"end-{n}",
        kind="live_end",
        started_at=start.occurred_at,
        ended_at=start.occurred_at + timedelta(hours=2, minutes=13),
        occurred_at=start.occurred_at + timedelta(hours=2, minutes=13),
    )


def recheck_log(problems: TargetProblems) -> list[tuple[str, str]]:
    """Where the sink asks for a preflight again (the runner's hook, recorded)."""
    asked: list[tuple[str, str]] = []
    problems.on_recheck = lambda sink, target: asked.append((sink, target))
    return asked


def problem_warnings(caplog: pytest.LogCaptureFixture, words: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "bot.targets" and r.levelno == logging.WARNING and words in r.getMessage()
    ]


async def eventually(check: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


NO_EMBEDS = str(NO_EMBEDS_CHANNEL_ID)


async def test_without_embed_links_the_card_is_complete_plain_text_until_the_right_is_back(
    fake: FakeDiscord, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    problems = TargetProblems()
    asked = recheck_log(problems)
    async with running(make_sink(fake, store, problems=problems)) as sink:
        card = await sink.deliver(
            delivery(1, NO_EMBEDS_CHANNEL_ID, mention_roles=[STREAMERS_ROLE_ID]), live_start()
        )
        await sink.deliver(delivery(2, NO_EMBEDS_CHANNEL_ID), live_start(n=2))
        first = fake.messages[NO_EMBEDS_CHANNEL_ID][0]
        # Not a bare "Quinn is live!" line: the whole card, in the content.
        assert first["embeds"] == []
        assert first["content"].startswith(f"<@&{STREAMERS_ROLE_ID}> 🔴 **Quinn** is live!")
        assert "**Painting a dragon**" in first["content"]
        assert "Category: Art" in first["content"]
        assert URL in first["content"]
        assert first["mention_roles"] == [str(STREAMERS_ROLE_ID)]
        # One warning for the channel, however many cards; /status and /healthz get it.
        [warning] = problem_warnings(caplog, "embed links")
        assert NO_EMBEDS in warning and "no-embeds" in warning
        [problem] = problems.all()
        assert (problem.target, problem.kind, problem.blocking, problem.origin) == (
            NO_EMBEDS,
            "no_embed_links",
            False,
            "send",
        )
        assert "allow Embed Links" in problem.detail

        # The end edits the text card, as text: ended, and for how long.
        assert card is not None
        await sink.edit(delivery(3, NO_EMBEDS_CHANNEL_ID), card, live_end())
        ended = fake.messages[NO_EMBEDS_CHANNEL_ID][0]
        assert ended["embeds"] == []
        assert "ended the stream" in ended["content"]
        assert "Streamed for **2h 13m**" in ended["content"]
        assert URL in ended["content"]

        # A moderator lifts the overwrite: the gateway says so, no restart needed.
        await fake.update_channel(NO_EMBEDS_CHANNEL_ID, permission_overwrites=[])
        await eventually(lambda: problems.all() == [])
        assert ("discord", NO_EMBEDS) in asked
        await sink.edit(delivery(4, NO_EMBEDS_CHANNEL_ID), card, live_end())
        [embed] = fake.messages[NO_EMBEDS_CHANNEL_ID][0]["embeds"]
        assert "Streamed for" in embed["description"]
    assert len(problem_warnings(caplog, "embed links")) == 1


async def test_embed_links_lost_through_a_role_is_noticed_before_the_next_card(
    fake: FakeDiscord, store: Store
) -> None:
    problems = TargetProblems()
    async with running(make_sink(fake, store, problems=problems)) as sink:
        await sink.deliver(delivery(1), live_start())
        assert fake.messages[STREAMS_CHANNEL_ID][0]["embeds"]
        # Neither @everyone nor the bot's role has Embed Links any more.
        guild = sink.client.get_guild(GUILD_ID)  # type: ignore[union-attr]
        everyone = guild.default_role.permissions.value & ~EMBED_LINKS
        await fake.update_role(GUILD_ID, permissions=everyone)
        await fake.update_role(BOT_ROLE_ID, permissions=BOT_ROLE_PERMISSIONS & ~EMBED_LINKS)
        await eventually(
            lambda: not guild.get_channel(STREAMS_CHANNEL_ID).permissions_for(guild.me).embed_links
        )
        await sink.deliver(delivery(2), live_start(n=2))
        second = fake.messages[STREAMS_CHANNEL_ID][1]
        assert second["embeds"] == [] and "Painting a dragon" in second["content"]
        assert [p.kind for p in problems.all()] == ["no_embed_links"]

        # A role with Embed Links given to the bot (its own GUILD_MEMBER_UPDATE) fixes it.
        await fake.update_role(STAFF_ROLE_ID, permissions=EMBED_LINKS)
        await fake.update_member(fake.bot_user_id, [BOT_ROLE_ID, STAFF_ROLE_ID])
        await eventually(lambda: problems.all() == [])


def test_the_text_card_is_escaped_mention_safe_and_within_2000() -> None:
    renderer = Renderer(formats=FORMATS)
    nasty = f"@everyone <@&{STAFF_ROLE_ID}> **bold** [x](http://e.vil) " * 200
    event = live_start(title=nasty, name=f"Quinn {NASTY}")
    message = renderer.render(FORMAT, event, mention_roles=[STREAMERS_ROLE_ID])
    text = message.text
    assert utf16_len(text) <= 2000
    assert text.startswith(f"<@&{STREAMERS_ROLE_ID}> ")
    assert "@everyone" not in text  # broken with an invisible character
    assert f"<@&{STAFF_ROLE_ID}>" not in text
    assert "\\*\\*bold\\*\\*" in text
    # The ping list is the same as the embed card's: only the route's role.
    assert message.allowed_mentions["roles"] == [str(STREAMERS_ROLE_ID)]


async def test_non_text_channels_are_refused_with_what_they_are_and_threads_work(
    fake: FakeDiscord, store: Store
) -> None:
    problems = TargetProblems()
    asked = recheck_log(problems)
    async with running(make_sink(fake, store, problems=problems)) as sink:
        with pytest.raises(PermanentDeliveryError, match=r"\('ideas'\) is a forum channel"):
            await sink.deliver(delivery(1, FORUM_CHANNEL_ID), live_start())
        with pytest.raises(PermanentDeliveryError, match="is a category"):
            await sink.deliver(delivery(2, CATEGORY_ID), live_start())
        # Known from the cache: not even a request.
        assert not [r for r in fake.requests if r.path == f"/channels/{FORUM_CHANNEL_ID}/messages"]
        assert ("discord", str(FORUM_CHANNEL_ID)) in asked

        # Announcement channels, threads and a voice channel's text chat are targets.
        for n, channel in enumerate((ANNOUNCEMENTS_CHANNEL_ID, THREAD_ID, VOICE_CHANNEL_ID), 3):
            await sink.deliver(delivery(n, channel), live_start(n=n))
            assert fake.messages[channel][0]["embeds"]

        # Discord's own 50008 (a channel the cache does not hold) says what to do too.
        fake.fail_next(
            "POST",
            MESSAGES,
            status=400,
            json={"code": 50008, "message": "Cannot send messages in a non-text channel"},
        )
        with pytest.raises(PermanentDeliveryError, match="50008") as caught:
            await sink.deliver(delivery(9), live_start(n=9))
        assert "route to a text or announcement channel, or a thread" in str(caught.value)

        # A refusal a permission explains asks for the channel to be checked again.
        with pytest.raises(PermanentDeliveryError, match="50013"):
            await sink.deliver(delivery(10, READONLY_CHANNEL_ID), live_start(n=10))
        with pytest.raises(PermanentDeliveryError, match="50001"):
            await sink.deliver(delivery(11, RESTRICTED_CHANNEL_ID), live_start(n=11))
    assert {("discord", str(c)) for c in (READONLY_CHANNEL_ID, RESTRICTED_CHANNEL_ID)} <= set(
        asked
    )
    assert problems.all() == []  # a send reports no blocking problem: the preflight does


FOREIGN_CHANNEL_ID = 1_210_000_000_000_009_001
FOREIGN_GUILD = {
    "id": 1_210_000_000_000_009_000,
    "channels": [
        {"id": str(FOREIGN_CHANNEL_ID), "type": 0, "name": "elsewhere", "position": 0},
    ],
}


async def test_preflight_says_what_is_wrong_with_each_channel(store: Store) -> None:
    async with FakeDiscord(
        token=TOKEN, heartbeat_interval=200, foreign_guilds=[FOREIGN_GUILD]
    ) as fake:
        sink = make_sink(fake, store)
        assert await sink.preflight([str(STREAMS_CHANNEL_ID)]) is None  # not connected
        async with running(sink):
            targets = [
                str(c)
                for c in (
                    STREAMS_CHANNEL_ID,
                    ANNOUNCEMENTS_CHANNEL_ID,
                    THREAD_ID,
                    VOICE_CHANNEL_ID,
                    NO_EMBEDS_CHANNEL_ID,
                    READONLY_CHANNEL_ID,
                    RESTRICTED_CHANNEL_ID,
                    FORUM_CHANNEL_ID,
                    CATEGORY_ID,
                    424242,
                    FOREIGN_CHANNEL_ID,
                )
            ]
            found = await sink.preflight(targets)
        assert fake.errors == []
    assert found is not None
    by_target = {p.target: p for p in found}
    assert len(by_target) == len(found)  # one problem each here
    kinds = {target: (p.kind, p.blocking) for target, p in by_target.items()}
    assert kinds == {
        str(NO_EMBEDS_CHANNEL_ID): ("no_embed_links", False),
        str(READONLY_CHANNEL_ID): ("cannot_send", True),
        str(RESTRICTED_CHANNEL_ID): ("no_view", True),
        str(FORUM_CHANNEL_ID): ("not_text", True),
        str(CATEGORY_ID): ("not_text", True),
        "424242": ("not_found", True),
        str(FOREIGN_CHANNEL_ID): ("no_access", True),
    }
    assert all(p.origin == "preflight" and p.sink == "discord" for p in found)
    forum = by_target[str(FORUM_CHANNEL_ID)].detail
    assert "('ideas') is a forum channel" in forum and "one of its posts (a thread)" in forum
    assert "allow Send Messages" in by_target[str(READONLY_CHANNEL_ID)].detail
    assert "allow View Channel" in by_target[str(RESTRICTED_CHANNEL_ID)].detail
    assert "does not exist" in by_target["424242"].detail
    assert "not in that channel's server" in by_target[str(FOREIGN_CHANNEL_ID)].detail
    # REST only for what the gateway's cache does not hold.
    lookups = [r.path for r in fake.requests if r.method == "GET" and r.path.startswith("/chan")]
    assert sorted(lookups) == sorted(["/channels/424242", f"/channels/{FOREIGN_CHANNEL_ID}"])


async def test_preflight_checks_the_mention_roles_against_mention_everyone(
    fake: FakeDiscord, store: Store
) -> None:
    streams, general = str(STREAMS_CHANNEL_ID), str(GENERAL_CHANNEL_ID)
    async with running(make_sink(fake, store)) as sink:
        found = await sink.preflight(
            [streams], mention_roles={streams: [STAFF_ROLE_ID, STREAMERS_ROLE_ID, 987654321]}
        )
        assert found is not None
        [problem] = found
        assert (problem.kind, problem.blocking) == ("role_not_pingable", False)
        assert f"Staff ({STAFF_ROLE_ID})" in problem.detail  # not mentionable
        assert "987654321 do not exist" in problem.detail
        assert str(STREAMERS_ROLE_ID) not in problem.detail  # mentionable: fine

        # Without a mapping, the roles its deliveries carried are checked.
        await sink.deliver(
            delivery(1, GENERAL_CHANNEL_ID, mention_roles=[STAFF_ROLE_ID]), live_start()
        )
        found = await sink.preflight([general])
        assert found is not None
        assert [p.kind for p in found] == ["role_not_pingable"]

        # A server that grants the bot Mention Everyone may ping Staff after all.
        await fake.update_role(BOT_ROLE_ID, permissions=BOT_ROLE_PERMISSIONS | MENTION_EVERYONE)
        guild = sink.client.get_guild(GUILD_ID)  # type: ignore[union-attr]
        await eventually(lambda: guild.me.guild_permissions.mention_everyone)
        assert await sink.preflight([general]) == []


async def test_preflight_answers_none_when_discord_cannot_be_asked_now(
    fake: FakeDiscord, store: Store
) -> None:
    async with running(make_sink(fake, store)) as sink:
        # Longer than discord.py waits out itself: RateLimited, which is not an answer.
        fake.rate_limit_next("GET", "/channels/424242", retry_after=120)
        assert await sink.preflight([str(STREAMS_CHANNEL_ID), "424242"]) is None
        found = await sink.preflight(["424242"])
        assert found is not None and [p.kind for p in found] == ["not_found"]


BLOCKED = {"message": "You are being blocked from accessing our API temporarily.", "code": 0}


async def test_a_login_refused_for_the_ip_address_is_retried_until_it_passes(
    fake: FakeDiscord, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    # Cloudflare's answer: 429 without Via, which discord.py raises without retrying.
    fake.fail_next(
        "GET", "/users/@me", status=429, json=BLOCKED, headers={"Retry-After": "1"}, times=2
    )
    sink = make_sink(fake, store, ready_timeout=0.3, login_retry_first=0.05)
    await sink.start()
    try:
        assert sink.state == "blocked"  # not "running": /healthz does not say ok
        with pytest.raises(TransientDeliveryError, match="not logged in"):
            await sink.deliver(delivery(1), live_start())
        await eventually(lambda: sink.state == "running", timeout=10)
        await sink.deliver(delivery(2), live_start(n=2))
    finally:
        await sink.stop()
    assert statuses(fake, "GET", "/users/@me") == [429, 429, 200]
    [explained] = [m for m in sink_logs(caplog) if "refusing this IP address" in m]
    assert "429 without Via" in explained and "retrying in 1s" in explained
    assert any("still refused" in m for m in sink_logs(caplog, logging.INFO))
    assert len(fake.messages[STREAMS_CHANNEL_ID]) == 1


async def test_a_refused_login_waits_what_the_body_says_without_a_header(
    fake: FakeDiscord, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    fake.fail_next("GET", "/users/@me", status=429, json={**BLOCKED, "retry_after": 2.0})
    sink = make_sink(fake, store, ready_timeout=10, login_retry_first=0.05)
    async with running(sink):
        pass
    assert any("retrying in 2s" in m for m in sink_logs(caplog))


async def test_stop_ends_a_login_waiting_out_an_ip_block(fake: FakeDiscord, store: Store) -> None:
    fake.fail_next("GET", "/users/@me", status=429, json=BLOCKED, headers={"Retry-After": "600"})
    sink = make_sink(fake, store, ready_timeout=0.3)
    await sink.start()
    assert sink.state == "blocked"
    await sink.stop()
    assert sink.state == "stopped"


async def test_a_shard_connection_cut_off_is_one_line_not_a_traceback(
    fake: FakeDiscord, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """discord.py logs a shard it could not connect with the traceback, then retries on
    its own. When the connection was the cause (here: closed under the IDENTIFY, as when
    the sink replaces a client while one of its shards connects) the log says so in one
    line; any other cause keeps its traceback, for the bug it is."""
    make_sink(fake, store)  # the sink puts the rewriting on discord.py's shard logger
    shard_log = logging.getLogger("discord.shard")
    for error in (
        aiohttp.ClientConnectionResetError("Cannot write to closing transport"),
        ValueError("a bug"),
    ):
        try:
            raise error
        except Exception:
            shard_log.exception("Failed to connect for shard_id: %s. Retrying...", 2)
    cut_off, bug = [r for r in caplog.records if r.name == "discord.shard"]
    assert cut_off.levelno == logging.WARNING and cut_off.exc_info is None
    assert cut_off.getMessage() == (
        "discord: shard 2 could not connect (ClientConnectionResetError: Cannot write to"
        " closing transport); discord.py tries again in 5s"
    )
    assert bug.levelno == logging.ERROR and bug.exc_info is not None
