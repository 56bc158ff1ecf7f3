"""Command logic shared by Discord and Telegram: status, mutes, subscriptions, arguments."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.commands import Chat, CommandError, Commands, split_mute_arguments
from bot.config import Route
from bot.events import NOTIFIED_KINDS, Event, LiveInfo
from bot.pipeline.dispatch import Dispatcher
from bot.store import Store
from tests.routes import chats

T0 = datetime(2026, 3, 11, 5, 0, tzinfo=UTC)
HERE = Chat("discord", "111")
ROUTES = (
    Route(patterns=("twitch/*",), events=frozenset(NOTIFIED_KINDS), targets=chats(discord=(111,))),
    Route(patterns=("*",), events=frozenset(NOTIFIED_KINDS), targets=chats(telegram=("-100",))),
)


class Clock:
    def __init__(self) -> None:
        self.now = T0.timestamp()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def commands(store: Store, clock: Clock) -> Commands:
    return Commands(store=store, routes=ROUTES, clock=clock)


async def go_live(
    store: Store, platform: str, channel: str, title: str, minutes_ago: float
) -> None:
    at = T0 - timedelta(minutes=minutes_ago)
    await Dispatcher(store=store, routes=ROUTES, sinks=["console"]).accept(
        Event(
            source="rec",
            event_id=f"{platform}/{channel}/{title}",
            kind="live_start",
            occurred_at=at,
            received_at=at,
            platform=platform,
            channel=channel,
            display_name=channel.title(),
            url=f"https://{platform}.example/{channel}",
            live=LiveInfo(title=title, categories=("Art",)),
        )
    )


async def test_status_lists_streams_routed_here_with_uptime(
    store: Store, commands: Commands
) -> None:
    await go_live(store, "twitch", "quinn", "Painting", minutes_ago=133)
    await go_live(store, "youtube", "ada", "Compilers", minutes_ago=5)
    report = await commands.status(HERE)
    assert report.scoped
    assert [e.key for e in report.live] == ["twitch/quinn"]
    entry = report.live[0]
    assert (entry.name, entry.title, entry.categories) == ("Quinn", "Painting", ("Art",))
    assert entry.uptime == timedelta(hours=2, minutes=13)
    # A chat every stream is routed to sees both, longest-running first.
    assert [e.key for e in (await commands.status(Chat("telegram", "-100"))).live] == [
        "twitch/quinn",
        "youtube/ada",
    ]


async def test_status_in_a_chat_with_no_routes_shows_every_live_stream(
    store: Store, commands: Commands
) -> None:
    await go_live(store, "youtube", "ada", "Compilers", minutes_ago=5)
    report = await commands.status(Chat("telegram", "555"))  # e.g. someone's DM
    assert not report.scoped
    assert [e.key for e in report.live] == ["youtube/ada"]


async def test_subscriptions_scope_status_too(store: Store, commands: Commands) -> None:
    await go_live(store, "youtube", "ada", "Compilers", minutes_ago=5)
    await go_live(store, "kick", "bo", "Chess", minutes_ago=5)
    dm = Chat("telegram", "555")
    await commands.subscribe(dm, "youtube/*")
    assert [e.key for e in (await commands.status(dm)).live] == ["youtube/ada"]


async def test_mute_for_a_while_then_it_expires(
    store: Store, commands: Commands, clock: Clock
) -> None:
    await go_live(store, "twitch", "quinn", "Painting", minutes_ago=1)
    assert await commands.mute(HERE, "twitch/quinn", "2h") == "Muted twitch/quinn here for 2h."
    (mute,) = await commands.mutes(HERE)
    assert mute.pattern == "twitch/quinn" and mute.until == T0 + timedelta(hours=2)
    assert (await commands.status(HERE)).mutes == (mute,)
    clock.now += 2 * 3600 + 1
    assert await commands.mutes(HERE) == ()


async def test_mute_everything_until_unmuted(commands: Commands) -> None:
    assert await commands.mute(HERE, None, None) == "Muted every stream here until you unmute it."
    assert (await commands.mutes(HERE))[0].pattern == "*"
    assert await commands.mutes(Chat("telegram", "-100")) == ()  # other chats are untouched


async def test_mute_matches_a_known_streamer_case_insensitively(
    store: Store, commands: Commands
) -> None:
    await go_live(store, "twitch", "quinn", "Painting", minutes_ago=1)
    await commands.mute(HERE, "Twitch/Quinn", "30m")
    assert (await commands.mutes(HERE))[0].pattern == "twitch/quinn"


@pytest.mark.parametrize(
    ("streamer", "duration", "message"),
    [
        ("quinn", None, "platform/channel"),
        ("twitch/", None, "platform/channel"),
        ("/quinn", None, "platform/channel"),
        ("twitch/quinn", "soon", "'soon' is not a duration"),
        ("twitch/quinn", "0m", "longer than 0"),
        ("twitch/quinn", "400d", "at most 365d"),
        ("x/" + "y" * 200, None, "too long"),
    ],
)
async def test_bad_mute_arguments_get_a_helpful_message_and_change_nothing(
    store: Store, commands: Commands, streamer: str, duration: str | None, message: str
) -> None:
    await go_live(store, "twitch", "quinn", "Painting", minutes_ago=1)
    with pytest.raises(CommandError, match=message):
        await commands.mute(HERE, streamer, duration)
    assert await commands.mutes(HERE) == ()


async def test_a_glob_may_mute_streamers_not_seen_yet(commands: Commands) -> None:
    assert await commands.mute(HERE, "kick/*", "1d") == (
        "Muted kick/* here for 1d. No streamer seen so far matches it."
    )
    assert (await commands.mutes(HERE))[0].pattern == "kick/*"


@pytest.mark.parametrize(
    ("typed", "hint"),
    [
        # A prefix of a streamer seen so far, a misspelling, and one with no likeness.
        ("twitch/quin", " No streamer seen so far matches it: did you mean twitch/quinn?"),
        ("kick/qiunn", " No streamer seen so far matches it: did you mean twitch/quinn?"),
        ("twitch/zed", " No streamer seen so far matches it."),
    ],
)
async def test_a_streamer_not_seen_yet_is_muted_with_a_typo_check(
    store: Store, commands: Commands, typed: str, hint: str
) -> None:
    await go_live(store, "twitch", "quinn", "Painting", minutes_ago=1)
    await go_live(store, "twitch", "bo", "Chess", minutes_ago=1)
    assert await commands.mute(HERE, typed, "2h") == f"Muted {typed} here for 2h.{hint}"
    # Muted all the same: the streamer may simply not have streamed since the install.
    assert [m.pattern for m in await commands.mutes(HERE)] == [typed]


async def test_a_streamer_seen_so_far_is_muted_without_a_hint(
    store: Store, commands: Commands
) -> None:
    await go_live(store, "twitch", "quinn", "Painting", minutes_ago=1)
    assert await commands.mute(HERE, "twitch/*", None) == (
        "Muted twitch/* here until you unmute it."
    )


async def test_unmute_one_or_all(store: Store, commands: Commands) -> None:
    await go_live(store, "twitch", "quinn", "Painting", minutes_ago=1)
    await commands.mute(HERE, "twitch/quinn", None)
    await commands.mute(HERE, "kick/*", None)
    assert await commands.unmute(HERE, "twitch/quinn") == "Unmuted twitch/quinn here."
    assert await commands.unmute(HERE, "twitch/quinn") == (
        "twitch/quinn is not muted here on its own. Muted here: kick/*."
    )
    await commands.mute(HERE, None, None)
    assert await commands.unmute(HERE, None) == "Unmuted everything here (2 mutes lifted)."
    assert await commands.unmute(HERE, None) == "Nothing is muted here."


async def test_subscribe_and_unsubscribe(commands: Commands, store: Store) -> None:
    chat = Chat("telegram", "42")
    assert await commands.subscribe(chat, "youtube/*") == (
        "Subscribed: notifications for youtube/* will come here. "
        "No streamer seen so far matches it."
    )
    assert await commands.subscribe(chat, "youtube/*") == "This chat already follows youtube/*."
    assert [(s.sink, s.target, s.pattern) for s in await store.subscriptions()] == [
        ("telegram", "42", "youtube/*")
    ]
    assert await commands.unsubscribe(chat, "twitch/*") == (
        "This chat does not follow twitch/*. It follows: youtube/*."
    )
    assert await commands.unsubscribe(chat, "youtube/*") == "Unsubscribed from youtube/*."
    assert await store.subscriptions() == []
    with pytest.raises(CommandError):
        await commands.subscribe(chat, "   ")


async def test_autocomplete_prefers_prefix_matches(store: Store, commands: Commands) -> None:
    for platform, channel in [("twitch", "quinn"), ("youtube", "twitchfan"), ("kick", "bo")]:
        await go_live(store, platform, channel, "x", minutes_ago=1)
    assert await commands.complete_streamers("twi") == ["twitch/quinn", "youtube/twitchfan"]
    assert await commands.complete_streamers("") == [
        "kick/bo",
        "twitch/quinn",
        "youtube/twitchfan",
    ]


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ([], (None, None)),
        (["2h"], (None, "2h")),
        (["twitch/quinn"], ("twitch/quinn", None)),
        (["twitch/quinn", "30m"], ("twitch/quinn", "30m")),
    ],
)
def test_mute_arguments_split_like_on_both_platforms(
    words: list[str], expected: tuple[str | None, str | None]
) -> None:
    assert split_mute_arguments(words) == expected


def test_too_many_mute_arguments() -> None:
    with pytest.raises(CommandError, match="Use: mute"):
        split_mute_arguments(["a/b", "2h", "extra"])


async def test_subscribe_says_how_many_streamers_seen_so_far_match(
    store: Store, commands: Commands
) -> None:
    await go_live(store, "twitch", "quinn", "Painting", minutes_ago=1)
    await go_live(store, "twitch", "bo", "Chess", minutes_ago=1)
    dm = Chat("telegram", "555")
    assert (await commands.subscribe(dm, "twitch/*")).endswith(
        " It matches 2 streamers seen so far."
    )
    assert (await commands.subscribe(dm, "twitch/quinn")).endswith(
        " It matches 1 streamer seen so far."
    )
    assert (await commands.subscribe(dm, "twitch/qinn")).endswith(
        " No streamer seen so far matches it: did you mean twitch/quinn?"
    )


# -- what a chat follows, and where from ----------------------------------------------------

FORUM = "-100123"
FOLLOWING = (
    Route(patterns=("twitch/*",), events=frozenset(NOTIFIED_KINDS), targets=chats(discord=(111,))),
    Route(
        patterns=("kick/bo", "kick/ada"),
        events=frozenset(NOTIFIED_KINDS),
        targets=chats(discord=(222, 111), telegram=(f"{FORUM}/42",)),
    ),
    Route(patterns=("*",), events=frozenset(NOTIFIED_KINDS), targets=chats(telegram=("-100",))),
)


@pytest.fixture
def following(store: Store, clock: Clock) -> Commands:
    return Commands(store=store, routes=FOLLOWING, clock=clock)


async def test_follows_lists_routes_then_subscriptions_with_their_origin(
    following: Commands,
) -> None:
    await following.subscribe(HERE, "youtube/*")
    await following.subscribe(Chat("discord", "222"), "kick/*")  # another channel's
    follows = await following.follows(HERE)
    assert [(f.pattern, f.origin) for f in follows] == [
        ("twitch/*", "bot.toml, route 1"),
        ("kick/bo", "bot.toml, route 2"),
        ("kick/ada", "bot.toml, route 2"),
        ("youtube/*", "/subscribe"),
    ]
    assert (await following.status(HERE)).follows == follows
    assert await following.follows(Chat("discord", "333")) == ()


async def test_a_route_to_a_forum_topic_counts_for_its_chat_and_names_the_topic(
    following: Commands,
) -> None:
    forum = Chat("telegram", FORUM)
    assert [(f.pattern, f.topic, f.origin) for f in await following.follows(forum)] == [
        ("kick/bo", "42", "bot.toml, route 2, topic 42"),
        ("kick/ada", "42", "bot.toml, route 2, topic 42"),
    ]
    assert await following.patterns_for(forum) == ["kick/bo", "kick/ada"]
    assert await following.unsubscribe(forum, "kick/bo") == (
        "kick/bo comes from bot.toml (route 2, topic 42); remove it there, or /mute it here."
    )


@pytest.mark.parametrize(
    ("pattern", "answer"),
    [
        (
            "twitch/*",
            "twitch/* comes from bot.toml (route 1); remove it there, or /mute it here.",
        ),
        (
            "Kick/BO",  # patterns match regardless of case, so this is route 2's too
            "Kick/BO comes from bot.toml (route 2); remove it there, or /mute it here.",
        ),
        (
            "twitch/quinn",
            "This chat does not follow twitch/quinn on its own: it comes here through "
            "twitch/* from bot.toml (route 1). /mute twitch/quinn stops it here.",
        ),
        ("youtube/*", "This chat does not follow youtube/* (it has no subscriptions)."),
    ],
)
async def test_unsubscribe_of_a_config_route_says_bot_toml_owns_it(
    following: Commands, store: Store, pattern: str, answer: str
) -> None:
    assert await following.unsubscribe(HERE, pattern) == answer
    assert [f.pattern for f in await following.follows(HERE)] == [
        "twitch/*",
        "kick/bo",
        "kick/ada",
    ]
    assert await store.subscriptions() == []


async def test_unsubscribe_of_a_pattern_bot_toml_routes_too_says_it_still_comes(
    following: Commands, store: Store
) -> None:
    await following.subscribe(HERE, "twitch/*")
    assert await following.unsubscribe(HERE, "twitch/*") == (
        "Unsubscribed from twitch/*, but bot.toml (route 1) still routes it here."
    )
    assert await store.subscriptions() == []
    await following.subscribe(HERE, "youtube/*")
    assert await following.unsubscribe(HERE, "kick/*") == (
        "This chat does not follow kick/*. It follows: youtube/*."
    )
