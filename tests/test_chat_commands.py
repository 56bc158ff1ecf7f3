"""The command catalogue: declared once, offered and answered the same on every platform,
with /status, /mutes and /help rendered from (overridable) reply templates."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot import i18n
from bot.chat.commands import (
    CATALOGUE,
    CommandSpec,
    Invocation,
    Param,
    Reply,
    by_name,
    status_view,
)
from bot.commands import (
    CONFIG,
    SUBSCRIPTION,
    Chat,
    CommandError,
    Commands,
    FollowEntry,
    MuteEntry,
    StatusReport,
)
from bot.config import Route
from bot.events import NOTIFIED_KINDS
from bot.markup import utf16_len
from bot.pipeline.dispatch import Dispatcher
from bot.registry import message_formats
from bot.render import Renderer
from bot.sinks.discord.commands import status_embed
from bot.sinks.discord.config import DiscordConfig
from bot.sinks.discord.sink import DiscordSink
from bot.sinks.telegram.config import TelegramConfig
from bot.sinks.telegram.format import FORMAT as TELEGRAM
from bot.sinks.telegram.sink import TelegramSink
from bot.store import Store
from bot.targets import TargetProblem, TargetProblems
from tests.fakes.discord_api import (
    ANNOUNCEMENTS_CHANNEL_ID,
    GENERAL_CHANNEL_ID,
    GUILD_ID,
    MOD_USER_ID,
    STREAMS_CHANNEL_ID,
    TOKEN,
    FakeDiscord,
    no_identify_delay,
)
from tests.fakes.telegram_api import FakeTelegram
from tests.routes import chats
from tests.test_sink_discord import live_start
from tests.test_sink_telegram import reply_in

USER = 1001  # a private chat on Telegram
GROUP = -100777  # a Telegram group with an admin and a member
ADMIN = 2002
MEMBER = 3003
ROUTE = Route(
    patterns=("twitch/*",),
    events=frozenset(NOTIFIED_KINDS),
    targets=chats(discord=(STREAMS_CHANNEL_ID,), telegram=(str(USER),)),
)


async def _ping(commands: Commands, call: Invocation) -> Reply:
    del commands
    return Reply(text=f"pong {call.args['word']} <b>&</b> @everyone")


PING = CommandSpec("ping", "answers pong", _ping, params=(Param("word", "anything", True),))


@asynccontextmanager
async def both(
    store: Store,
    *,
    user_dir: Path | None = None,
    catalogue: tuple[CommandSpec, ...] = CATALOGUE,
    problems: TargetProblems | None = None,
    routes: tuple[Route, ...] = (ROUTE,),
) -> AsyncIterator[tuple[FakeDiscord, FakeTelegram]]:
    """Both platforms' sinks running against their fakes, sharing one renderer."""
    renderer = Renderer(formats=message_formats(), user_dir=user_dir)
    commands = Commands(store=store, routes=routes, problems=problems)
    async with FakeDiscord(token=TOKEN, heartbeat_interval=200) as dc, FakeTelegram() as tg:
        tg.add_chat(USER, "private", first_name="Alice")
        discord_sink = DiscordSink(
            config=DiscordConfig(
                token=TOKEN,
                api_url=dc.api_url,
                gateway_url=dc.gateway_url,
                guild_ids=(GUILD_ID,),
                disabled_reason=None,
            ),
            renderer=renderer,
            commands=commands,
            catalogue=catalogue,
            client_options={"guild_ready_timeout": 0.1},
            before_identify_hook=no_identify_delay,
            ready_timeout=5.0,
        )
        telegram_sink = TelegramSink(
            config=TelegramConfig(token=tg.token, api_url=tg.api_url, disabled_reason=None),
            renderer=renderer,
            commands=commands,
            catalogue=catalogue,
            poll_timeout=1.0,
        )
        await discord_sink.start()
        await telegram_sink.start()
        try:
            assert discord_sink.state == telegram_sink.state == "running"
            yield dc, tg
        finally:
            await telegram_sink.stop()
            await discord_sink.stop()


async def go_live(store: Store, title: str) -> None:
    await Dispatcher(store=store, routes=[ROUTE], sinks=["console"]).accept(live_start(title))


async def test_one_more_catalogue_entry_is_a_command_on_both_platforms(store: Store) -> None:
    async with both(store, catalogue=(*CATALOGUE, PING)) as (dc, tg):
        synced = {c["name"]: c for c in dc.guild_commands[GUILD_ID]}
        assert [o["name"] for o in synced["ping"]["options"]] == ["word"]
        assert synced["ping"]["description"] == "answers pong"
        [menu] = tg.calls_to("setMyCommands")
        assert "ping" in [c["command"] for c in menu.params["commands"]]

        discord_answer = await dc.invoke_command(
            "ping", {"word": "x"}, channel_id=STREAMS_CHANNEL_ID
        )
        assert discord_answer.content.startswith("pong x")
        assert discord_answer.message["mention_everyone"] is False
        telegram_answer = await reply_in(tg, USER, "/ping x")
        assert telegram_answer["text"].startswith("pong x <b>&</b> @")
        assert not [e for e in telegram_answer.get("entities", []) if e["type"] == "bold"]

        # /help lists it on both, from the same catalogue.
        assert (
            "`/ping <word>`: answers pong"
            in (await dc.invoke_command("help", channel_id=STREAMS_CHANNEL_ID)).content
        )
        assert "/ping word — answers pong" in (await reply_in(tg, USER, "/help"))["text"]
        usage = await reply_in(tg, USER, "/ping")
        assert usage["text"] == "Use: /ping word"


async def test_a_user_status_template_is_used_on_both_platforms(
    store: Store, tmp_path: Path
) -> None:
    for platform in ("discord", "telegram"):
        (tmp_path / platform).mkdir()
        (tmp_path / platform / "status.j2").write_text(
            "{{ sink }} says: {% for entry in live %}{{ entry.name }} is on: {{ entry.title }}"
            "{% endfor %}",
            encoding="utf-8",
        )
    await go_live(store, "<b>bold</b> **x** @everyone @quinn")
    async with both(store, user_dir=tmp_path) as (dc, tg):
        discord_answer = await dc.invoke_command("status", channel_id=STREAMS_CHANNEL_ID)
        telegram_answer = await reply_in(tg, USER, "/status")
    # A text-only status.j2 answers as text on Discord: no embed.
    assert discord_answer.embeds == []
    assert discord_answer.content.startswith("discord says: Quinn is on: ")
    assert "\\*\\*x\\*\\*" in discord_answer.content  # stream text stays literal
    assert discord_answer.message["mention_everyone"] is False
    text = telegram_answer["text"]
    assert text.startswith("telegram says: Quinn is on: <b>bold</b> **x** @")
    assert not [e for e in telegram_answer.get("entities", []) if e["type"] in ("bold", "mention")]


async def test_a_broken_status_template_gets_the_apology_and_a_log_line(
    store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for platform in ("discord", "telegram"):
        (tmp_path / platform).mkdir()
        (tmp_path / platform / "status.j2").write_text(
            "{{ live | no_such_filter }}", encoding="utf-8"
        )
    caplog.set_level(logging.ERROR)
    async with both(store, user_dir=tmp_path) as (dc, tg):
        discord_answer = await dc.invoke_command("status", channel_id=STREAMS_CHANNEL_ID)
        telegram_answer = await reply_in(tg, USER, "/status")
        # The other replies still render from the built-in templates.
        assert "Nothing is muted here." in (await reply_in(tg, USER, "/mutes"))["text"]
    assert discord_answer.content.startswith("Sorry, something went wrong")
    assert telegram_answer["text"].startswith("Sorry, something went wrong")
    logged = [r for r in caplog.records if r.exc_info]
    assert {r.name for r in logged} == {"bot.sinks.discord", "bot.sinks.telegram"}
    assert all("status.j2" in str(r.exc_info[1]) for r in logged if r.exc_info)


def test_positional_words_bind_like_the_named_options() -> None:
    commands = by_name()
    mute = commands["mute"]
    assert mute.bind_words(["2h"]) == {"streamer": None, "duration": "2h"}
    assert mute.tidy_up({"streamer": "2h"}) == {"streamer": None, "duration": "2h"}
    assert mute.bind_words(["twitch/quinn", "30m"]) == mute.tidy_up(
        {"streamer": "twitch/quinn", "duration": "30m"}
    )
    with pytest.raises(CommandError, match="Use: /unmute \\[streamer\\], like: /unmute"):
        commands["unmute"].bind_words(["a/b", "c/d"])
    with pytest.raises(CommandError, match="takes no arguments"):
        commands["mutes"].bind_words(["x"])
    assert commands["status"].bind_words(["x"]) == {}
    assert [spec.name for spec in CATALOGUE if spec.changes_state] == [
        "mute",
        "unmute",
        "subscribe",
        "unsubscribe",
        "test",
    ]


async def test_help_lists_every_command_but_the_greeting(store: Store) -> None:
    reply = await by_name()["help"].handler(
        Commands(store=store, routes=[]), Invocation(chat=Chat("x", "42"), args={})
    )
    names = [line.name for line in reply.view["commands"]]
    assert names == [spec.name for spec in CATALOGUE if not spec.greeting]
    assert "start" not in names and reply.view["chat_id"] == "42"


async def test_status_shows_a_chats_problems_to_its_moderators_only(store: Store) -> None:
    problems = TargetProblems()
    hostile = "Missing <b>Send Messages</b> in **here** @everyone."
    problems.report(
        TargetProblem("discord", str(STREAMS_CHANNEL_ID), "missing_permissions", hostile)
    )
    moved = "This group became the supergroup -100999; put that id in telegram_chats."
    problems.report(TargetProblem("telegram", str(GROUP), "moved", moved, blocking=False))
    problems.report(TargetProblem("telegram", f"{GROUP}/7", "topic_closed", "Topic <7> closed."))
    problems.report(TargetProblem("telegram", "-100555", "not_found", "Another chat's problem."))
    async with both(store, problems=problems) as (dc, tg):
        tg.add_chat(GROUP, "supergroup", title="Streams", admins={ADMIN})
        member = await dc.invoke_command("status", channel_id=STREAMS_CHANNEL_ID)
        moderator = await dc.invoke_command(
            "status", channel_id=STREAMS_CHANNEL_ID, user_id=MOD_USER_ID
        )
        tg_member = await reply_in(tg, GROUP, "/status", from_user_id=MEMBER)
        tg_admin = await reply_in(tg, GROUP, "/status", from_user_id=ADMIN)
    assert "Missing" not in str(member.embeds)
    [embed] = moderator.embeds
    [field] = [f for f in embed["fields"] if "Problems" in f["name"]]
    # Plain text from the platform, shown literally: no markup, nobody pinged.
    assert field["value"].startswith("- Missing <b>Send Messages<")
    assert "in \\*\\*here\\*\\*" in field["value"]
    assert moderator.message["mention_everyone"] is False
    assert "Problems" not in tg_member["text"] and "supergroup" not in tg_member["text"]
    text = tg_admin["text"]
    assert "Problems with this chat" in text
    assert f"{moved} (notifications still go out)" in text
    assert "topic 7: Topic <7> closed." in text
    assert "Another chat" not in text
    assert not [e for e in tg_admin.get("entities", []) if e["type"] == "mention"]


# -- what a chat follows ---------------------------------------------------------------------

FORUM = -100888  # a Telegram forum; a route posts kick/* into its topic 7
FOLLOWING = (
    ROUTE,
    Route(
        patterns=("kick/*",),
        events=frozenset(NOTIFIED_KINDS),
        targets=chats(discord=(GENERAL_CHANNEL_ID,), telegram=(f"{FORUM}/7",)),
    ),
)


async def test_follows_and_status_show_a_config_route_and_a_subscription_on_both(
    store: Store,
) -> None:
    async with both(store, routes=FOLLOWING) as (dc, tg):
        tg.add_chat(FORUM, "supergroup", title="Forum", is_forum=True, admins={ADMIN}, topics=[7])
        await dc.invoke_command(
            "subscribe",
            {"pattern": "youtube/*_live"},
            channel_id=STREAMS_CHANNEL_ID,
            user_id=MOD_USER_ID,
        )
        await reply_in(tg, USER, "/subscribe youtube/*_live")
        dc_follows = await dc.invoke_command("follows", channel_id=STREAMS_CHANNEL_ID)
        dc_status = await dc.invoke_command("status", channel_id=STREAMS_CHANNEL_ID)
        dc_elsewhere = await dc.invoke_command("follows", channel_id=ANNOUNCEMENTS_CHANNEL_ID)
        tg_follows = await reply_in(tg, USER, "/follows")
        tg_status = await reply_in(tg, USER, "/status")
        tg_topic = await reply_in(tg, FORUM, "/follows", from_user_id=MEMBER, message_thread_id=7)

    # Discord: markdown, the patterns' * and _ shown literally, the origin of each.
    assert dc_follows.ephemeral
    assert dc_follows.content == (
        "Follows here:\n- twitch/\\* · bot.toml, route 1\n- youtube/\\*\\_live · /subscribe"
    )
    [embed] = dc_status.embeds
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields["Follows here"] == dc_follows.content.removeprefix("Follows here:\n")
    assert fields["Muted here"] == "Nothing"
    assert "This channel follows nothing yet" in dc_elsewhere.content

    # Telegram: HTML, each pattern in <code>, the topic a route posts to named.
    assert tg_follows["text"] == (
        "Follows here\n• twitch/* · bot.toml, route 1\n• youtube/*_live · /subscribe"
    )
    code = [e for e in tg_follows["entities"] if e["type"] == "code"]
    assert len(code) == 2
    assert tg_follows["text"] in tg_status["text"]
    assert "Nothing is muted here." in tg_status["text"]
    assert tg_topic["text"] == "Follows here\n• kick/* · bot.toml, route 2, topic 7"


async def test_unsubscribe_of_a_config_route_says_bot_toml_owns_it_on_both(
    store: Store,
) -> None:
    async with both(store, routes=FOLLOWING) as (dc, tg):
        tg.add_chat(FORUM, "supergroup", title="Forum", is_forum=True, admins={ADMIN}, topics=[7])
        dc_answer = await dc.invoke_command(
            "unsubscribe",
            {"pattern": "twitch/*"},
            channel_id=STREAMS_CHANNEL_ID,
            user_id=MOD_USER_ID,
        )
        tg_answer = await reply_in(tg, USER, "/unsubscribe twitch/*")
        tg_topic = await reply_in(
            tg, FORUM, "/unsubscribe kick/*", from_user_id=ADMIN, message_thread_id=7
        )
        # The route is still in force: /follows lists it.
        tg_follows = await reply_in(tg, USER, "/follows")
    assert dc_answer.content == (
        "twitch/\\* comes from bot.toml (route 1); remove it there, or /mute it here."
    )
    assert tg_answer["text"] == (
        "twitch/* comes from bot.toml (route 1); remove it there, or /mute it here."
    )
    assert tg_topic["text"] == (
        "kick/* comes from bot.toml (route 2, topic 7); remove it there, or /mute it here."
    )
    assert "twitch/* · bot.toml, route 1" in tg_follows["text"]


async def test_help_and_the_menus_offer_follows_to_everyone(store: Store) -> None:
    async with both(store) as (dc, tg):
        tg.add_chat(GROUP, "supergroup", title="Streams", admins={ADMIN})
        synced = {c["name"]: c for c in dc.guild_commands[GUILD_ID]}
        [menu] = tg.calls_to("setMyCommands")
        dc_help = await dc.invoke_command("help", channel_id=STREAMS_CHANNEL_ID)
        tg_help = await reply_in(tg, GROUP, "/help", from_user_id=MEMBER)
        # A member may ask: it changes nothing.
        member = await reply_in(tg, GROUP, "/follows", from_user_id=MEMBER)
        dc_member = await dc.invoke_command("follows", channel_id=STREAMS_CHANNEL_ID)
    assert synced["follows"]["default_member_permissions"] is None
    assert "follows" in [c["command"] for c in menu.params["commands"]]
    assert "`/follows`: list what this chat follows" in dc_help.content
    assert "/follows — list what this chat follows" in tg_help["text"]
    assert member["text"].startswith("This chat follows nothing yet")
    assert dc_member.content.startswith("Follows here:")


def test_a_status_with_many_follows_points_to_follows_within_the_limits() -> None:
    now = datetime.now(UTC)
    long = [
        FollowEntry(f"twitch/{'x' * 40}{n}", CONFIG, route=n + 1, topic=str(n)) for n in range(40)
    ]
    follows = (*long, FollowEntry("youtube/*", SUBSCRIPTION))
    mutes = tuple(MuteEntry(pattern=f"twitch/*{n}*", until=None) for n in range(30))
    report = StatusReport(
        live=(), mutes=mutes, scoped=True, failed_deliveries=2, now=now, follows=follows
    )
    renderer = Renderer(formats=message_formats())
    embed = status_embed(renderer, report, admin=True)
    assert len(embed) <= 6000
    [follows_field] = [f for f in embed.fields if f.name == "Follows here"]
    assert utf16_len(follows_field.value or "") <= 1024
    lines = (follows_field.value or "").splitlines()
    assert lines[0] == f"- twitch/{'x' * 40}0 · bot.toml, route 1, topic 0"
    assert lines[-1] == "…and 31 more: /follows lists them all"
    assert [f.name for f in embed.fields][1:] == ["Muted here", "⚠️ Notifications are failing here"]

    view = status_view(report, show_failures=False)
    text = renderer.render_reply(TELEGRAM, "status", view)
    assert "…and 21 more: /follows lists them all" in text
    listed = renderer.render_reply(TELEGRAM, "follows", view)
    assert "<code>youtube/*</code> · /subscribe" in listed
    assert listed.count("• ") == 41


async def test_a_hostile_pattern_in_follows_stays_literal_on_both(store: Store) -> None:
    hostile = "<b>tw</b>/@everyone**x**"  # one word: Telegram's arguments are words
    async with both(store) as (dc, tg):
        await dc.invoke_command(
            "subscribe", {"pattern": hostile}, channel_id=STREAMS_CHANNEL_ID, user_id=MOD_USER_ID
        )
        await reply_in(tg, USER, f"/subscribe {hostile}")
        dc_follows = await dc.invoke_command("follows", channel_id=STREAMS_CHANNEL_ID)
        tg_follows = await reply_in(tg, USER, "/follows")
    # Discord: no bold, no ping (the escaper breaks "</" and "@everyone" invisibly).
    assert "/@\u200beveryone\\*\\*x\\*\\* · /subscribe" in dc_follows.content
    assert dc_follows.message["mention_everyone"] is False
    assert "<b>tw</b>/@\u2060everyone**x** · /subscribe" in tg_follows["text"]
    kinds = {e["type"] for e in tg_follows["entities"]}
    # Telegram: the one bold is the template's own heading, nothing from the pattern.
    assert [(e["offset"], e["length"]) for e in tg_follows["entities"] if e["type"] == "bold"] == [
        (0, len("Follows here"))
    ]
    assert "mention" not in kinds


async def test_replies_are_written_in_the_chats_language_on_both(store: Store) -> None:
    """The route naming a chat gives its replies their language, as it does its cards:
    the reply templates, the mute and follow lines and the commands' help."""
    await go_live(store, "Any% speedrun")
    routes = (
        replace(ROUTE, targets=chats(discord=(STREAMS_CHANNEL_ID,)), locale="ja"),
        replace(ROUTE, targets=chats(telegram=(str(USER),)), locale="de"),
    )
    async with both(store, routes=routes) as (dc, tg):
        await dc.invoke_command(
            "mute",
            {"streamer": "twitch/quinn", "duration": "2h"},
            channel_id=STREAMS_CHANNEL_ID,
            user_id=MOD_USER_ID,
        )
        dc_status = await dc.invoke_command("status", channel_id=STREAMS_CHANNEL_ID)
        dc_help = await dc.invoke_command("help", channel_id=STREAMS_CHANNEL_ID)
        dc_elsewhere = await dc.invoke_command("mutes", channel_id=ANNOUNCEMENTS_CHANNEL_ID)
        await reply_in(tg, USER, "/mute twitch/quinn 2h")
        tg_status = await reply_in(tg, USER, "/status")
        tg_help = await reply_in(tg, USER, "/help")

    ja, de = i18n.translations("ja").gettext, i18n.translations("de").gettext
    [embed] = dc_status.embeds
    assert embed["title"] == ja("Live now") != "Live now"
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields[ja("Follows here")] == "- twitch/\\* · " + ja("bot.toml, route %(route)s") % {
        "route": 1
    }
    # Muted for 2h: "1h59m" or "2h" in Japanese units, after ja's own sentence.
    [muted] = fields[ja("Muted here")].splitlines()
    assert re.fullmatch(r"- twitch/quinn\S*(1h59m|2h)\S*", muted), muted
    assert ja("Commands") in dc_help.content
    assert ja("list the mutes in force here") in dc_help.content
    assert "/mute、/unmute、/subscribe、/unsubscribe、/test" in dc_help.content  # CLDR's list
    # A channel no route names is answered in [behaviour]'s language (English here).
    assert dc_elsewhere.content == "Nothing is muted here."

    text = tg_status["text"]
    assert de("Live now") in text and de("Muted here") in text and "Live now" not in text
    assert re.search(r"• twitch/quinn\W.*(1h, 59 Min\.|2h)", text), text
    assert de("Commands") in tg_help["text"]
    assert "mute, unmute, subscribe, unsubscribe oder test" in tg_help["text"]
