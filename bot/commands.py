"""The logic behind the chat commands, over the store, without platform code.

The commands themselves are declared once in `bot.chat.commands` (the catalogue), whose
handlers call these. Answers are plain text with no markup; the platform escapes them.
Mistakes a user can make (a bad duration, a pattern that names no streamer) raise
CommandError with a message meant to be shown as is.
"""

from __future__ import annotations

import asyncio
import difflib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from bot import i18n
from bot.config import Route
from bot.durations import format_duration, looks_like_duration, parse_duration
from bot.errors import BotError
from bot.events import glob_match
from bot.pipeline.muting import is_muted
from bot.pipeline.routing import follow_move
from bot.sources.problems import SourceProblem, SourceProblems
from bot.sources.service import RunningSource
from bot.store import Mute, Store, StreamState, Subscription
from bot.targets import TargetProblem, TargetProblems
from bot.testcard import card_event, latest_live_start, queue_test_card

log = logging.getLogger(__name__)

MAX_MUTE: Final = timedelta(days=365)
MAX_PATTERN_LENGTH: Final = 100
_GLOB_CHARS: Final = frozenset("*?[")
#: How many "did you mean" streamers a typo check names.
_SUGGESTIONS: Final = 3
#: How alike two channel names must be to suggest one for the other (difflib's ratio).
_ALIKE: Final = 0.75


class CommandError(BotError):
    """A mistake in a command's arguments; the message is shown to the user as is."""


@dataclass(frozen=True, slots=True)
class Chat:
    """Where a command was sent: a platform (`sink`) and its channel or chat there."""

    sink: str
    target: str


@dataclass(frozen=True, slots=True)
class LiveEntry:
    """One live stream in a /status answer."""

    key: str
    name: str
    url: str | None
    title: str | None
    categories: tuple[str, ...]
    started_at: datetime | None
    uptime: timedelta | None


@dataclass(frozen=True, slots=True)
class MuteEntry:
    """One mute in force in a chat."""

    pattern: str
    until: datetime | None

    def describe(self, now: datetime, locale: str = i18n.DEFAULT_LOCALE) -> str:
        """ "twitch/quinn for 1h 59m more" or "everything until unmuted", in `locale`."""
        _ = i18n.translations(locale).gettext
        what = _("everything") if self.pattern == "*" else self.pattern
        if self.until is None:
            return _("%(what)s until unmuted") % {"what": what}
        left = i18n.format_duration(self.until - now, locale)
        return _("%(what)s for %(left)s more") % {"what": what, "left": left}


CONFIG: Final = "config"
SUBSCRIPTION: Final = "subscription"


@dataclass(frozen=True, slots=True)
class FollowEntry:
    """One pattern routed to a chat, and where it comes from."""

    pattern: str
    #: CONFIG (a `[[routes]]` entry of bot.toml) or SUBSCRIPTION (/subscribe in this chat).
    source: str
    #: The route's number in bot.toml, counting its `[[routes]]` from 1 (CONFIG only).
    route: int | None = None
    #: The forum topic of this chat the route posts to ("42" for "-100123/42"), else None.
    topic: str | None = None

    @property
    def origin(self) -> str:
        """ "bot.toml, route 2, topic 42" or "/subscribe"."""
        return self.origin_in(i18n.DEFAULT_LOCALE)

    def origin_in(self, locale: str) -> str:
        """`origin` in `locale`."""
        if self.source != CONFIG:
            return "/subscribe"
        _ = i18n.translations(locale).gettext
        if self.topic:
            return _("bot.toml, route %(route)s, topic %(topic)s") % {
                "route": self.route,
                "topic": self.topic,
            }
        return _("bot.toml, route %(route)s") % {"route": self.route}


@dataclass(frozen=True, slots=True)
class StatusReport:
    """What /status shows: live streams for this chat, mutes here, failing deliveries."""

    live: tuple[LiveEntry, ...]
    mutes: tuple[MuteEntry, ...]
    #: True when `live` is limited to the streams routed to this chat.
    scoped: bool
    #: Deliveries to this chat that failed for good (shown to admins).
    failed_deliveries: int
    now: datetime
    #: What is known to be wrong with this chat and its topics (shown to admins).
    problems: tuple[TargetProblem, ...] = ()
    #: The patterns routed to this chat, by bot.toml and by /subscribe.
    follows: tuple[FollowEntry, ...] = ()
    #: What is known to be wrong with the sources of the streams this chat follows
    #: (a revoked Twitch subscription), and with any source as a whole (shown to admins).
    source_problems: tuple[SourceProblem, ...] = ()


class Commands:
    """The command logic over the store; one instance serves every sink."""

    def __init__(
        self,
        *,
        store: Store,
        routes: Sequence[Route],
        clock: Callable[[], float] = time.time,
        problems: TargetProblems | None = None,
        on_queued: Callable[[set[str]], None] | None = None,
        source_problems: SourceProblems | None = None,
        followers: Sequence[RunningSource] = (),
        locale: str = i18n.DEFAULT_LOCALE,
    ) -> None:
        self._store = store
        self._routes = tuple(routes)
        # The language of replies in chats no route names one for ([behaviour] locale).
        self._locale = locale
        self._clock = clock
        # What the preflight and the sends found wrong with chats (/status for admins).
        self._problems = problems
        # Wakes the outbox workers of these sinks after a command queued deliveries.
        self._on_queued = on_queued
        self._source_problems = source_problems
        # Sources that act on /subscribe and /unsubscribe (Twitch subscribes at Twitch).
        self._followers = tuple(followers)

    def reconfigure(
        self,
        *,
        routes: Sequence[Route],
        followers: Sequence[RunningSource] | None = None,
        locale: str | None = None,
    ) -> None:
        """Answer from these routes (and tell these sources), in this language, from now on
        (SIGHUP)."""
        self._routes = tuple(routes)
        if followers is not None:
            self._followers = tuple(followers)
        if locale is not None:
            self._locale = locale

    def set_followers(self, followers: Sequence[RunningSource]) -> None:
        """Tell these sources of /subscribe and /unsubscribe from now on (the ones this
        process runs changed: it took over their role, or gave it up)."""
        self._followers = tuple(followers)

    def locale_for(self, chat: Chat) -> str:
        """The language replies in `chat` are written in: that of the first route naming
        the chat (or one of its topics) that sets one, as its notifications are, else
        [behaviour]'s."""
        for route in self._routes:
            if route.locale is None:
                continue
            if any(t.partition("/")[0] == chat.target for t in route.targets_on(chat.sink)):
                return route.locale
        return self._locale

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    # -- reading -------------------------------------------------------------------

    async def status(self, chat: Chat) -> StatusReport:
        """Live streams routed to this chat (every live stream if none is), and mutes."""
        now = self._now()
        follows = await self.follows(chat)
        patterns = [f.pattern for f in follows]
        live = []
        for stream in await self._store.live_streams():
            if patterns and not self._told_about(stream, follows):
                continue
            started = stream.started_at
            live.append(
                LiveEntry(
                    key=stream.streamer_key,
                    name=stream.display_name or stream.info.uname or stream.streamer_key,
                    url=stream.url,
                    title=stream.info.title,
                    categories=stream.info.categories,
                    started_at=started,
                    uptime=max(now - started, timedelta(0)) if started else None,
                )
            )
        return StatusReport(
            live=tuple(live),
            mutes=await self.mutes(chat),
            scoped=bool(patterns),
            failed_deliveries=await self._store.failed_count(chat.sink, chat.target),
            now=now,
            problems=tuple(self._problems.for_chat(chat.sink, chat.target))
            if self._problems is not None
            else (),
            follows=follows,
            source_problems=tuple(self._source_problems.for_patterns(patterns))
            if self._source_problems is not None
            else (),
        )

    def _told_about(self, stream: StreamState, follows: Sequence[FollowEntry]) -> bool:
        """Whether a chat that follows these is told about this stream: some pattern
        matches it, from /subscribe or from a route whose filters (categories, title)
        pass the stream as it is now."""
        for follow in follows:
            if not glob_match(stream.streamer_key, follow.pattern):
                continue
            if follow.route is None or not 0 < follow.route <= len(self._routes):
                return True
            if self._routes[follow.route - 1].wants(stream.info):
                return True
        return False

    async def mutes(self, chat: Chat) -> tuple[MuteEntry, ...]:
        """The mutes in force in this chat."""
        rows = await self._store.mutes_for(chat.sink, chat.target, self._clock())
        return tuple(
            MuteEntry(
                pattern=row.pattern,
                until=datetime.fromtimestamp(row.until, UTC) if row.until is not None else None,
            )
            for row in rows
        )

    async def follows(self, chat: Chat) -> tuple[FollowEntry, ...]:
        """The patterns routed to this chat: bot.toml's routes in order, then /subscribe's."""
        entries: list[FollowEntry] = []
        for number, route in enumerate(self._routes, start=1):
            for target in route.targets_on(chat.sink):
                # A forum topic of this chat ("-100123/42") counts as this chat.
                where, _slash, topic = target.partition("/")
                if where != chat.target:
                    continue
                entries.extend(
                    FollowEntry(pattern, CONFIG, route=number, topic=topic or None)
                    for pattern in route.patterns
                )
        entries.extend(
            FollowEntry(sub.pattern, SUBSCRIPTION)
            for sub in await self._store.subscriptions()
            if (sub.sink, sub.target) == (chat.sink, chat.target)
        )
        return tuple(entries)

    async def patterns_for(self, chat: Chat) -> list[str]:
        """The streamer patterns routed to this chat by config and by /subscribe."""
        # One pattern routed to the chat and to a topic of it is one pattern here.
        return list(dict.fromkeys(f.pattern for f in await self.follows(chat)))

    async def complete_streamers(self, typed: str, *, limit: int = 25) -> list[str]:
        """Known streamer keys containing what the user typed so far (for autocomplete)."""
        needle = typed.strip().casefold()
        keys = await self._store.known_streamers()
        starts = [k for k in keys if k.casefold().startswith(needle)]
        contains = [k for k in keys if needle in k.casefold() and k not in starts]
        return (starts + contains)[:limit]

    # -- changing ------------------------------------------------------------------

    async def mute(
        self, chat: Chat, streamer: str | None, duration: str | None, *, by: str | None = None
    ) -> str:
        """Mute one streamer or pattern (or all) here, for a duration or until unmuted."""
        pattern = await self._known_spelling(self._pattern(streamer)) if streamer else "*"
        length = self._duration(duration) if duration else None
        until = self._clock() + length.total_seconds() if length is not None else None
        async with self._store.transaction():
            await self._store.add_mute(
                Mute(chat.sink, chat.target, pattern, until), created_by=by, now=self._clock()
            )
        what = "every stream" if pattern == "*" else pattern
        if length is None:
            done = f"Muted {what} here until you unmute it."
        else:
            done = f"Muted {what} here for {format_duration(length)}."
        # A streamer who has not streamed since the bot was installed may be muted ahead;
        # the answer is the typo check.
        if pattern == "*" or await self._seen(pattern):
            return done
        return f"{done} {await self._nothing_seen(pattern)}"

    async def unmute(self, chat: Chat, streamer: str | None) -> str:
        """Lift one mute, or every mute here when no streamer is given."""
        pattern = streamer.strip() if streamer else None
        async with self._store.transaction():
            removed = await self._store.remove_mute(chat.sink, chat.target, pattern)
        if removed:
            if pattern is None:
                return f"Unmuted everything here ({removed} mute{'s' * (removed != 1)} lifted)."
            return f"Unmuted {pattern} here."
        if pattern is None:
            return "Nothing is muted here."
        others = [m.pattern for m in await self.mutes(chat)]
        if others:
            return f"{pattern} is not muted here on its own. Muted here: {', '.join(others)}."
        return f"{pattern} is not muted here."

    async def subscribe(self, chat: Chat, pattern: str, *, by: str | None = None) -> str:
        """Route streamers matching `pattern` to this chat."""
        pattern = self._pattern(pattern)
        async with self._store.transaction():
            added = await self._store.add_subscription(
                Subscription(chat.sink, chat.target, pattern), created_by=by, now=self._clock()
            )
        if not added:
            return f"This chat already follows {pattern}."
        done = f"Subscribed: notifications for {pattern} will come here."
        notes = await self._tell_followers(pattern, added=True)
        if notes:
            # A source that follows streams itself (Twitch) says whether it can follow
            # this one; that answer is better than the bot's own typo check.
            return f"{done} {notes}"
        seen = await self._seen(pattern)
        if not seen:
            return f"{done} {await self._nothing_seen(pattern)}"
        return f"{done} It matches {len(seen)} streamer{'s' * (len(seen) != 1)} seen so far."

    async def unsubscribe(self, chat: Chat, pattern: str) -> str:
        """Undo a subscription made in this chat; bot.toml's routes are not undone here."""
        pattern = pattern.strip()
        async with self._store.transaction():
            removed = await self._store.remove_subscription(
                Subscription(chat.sink, chat.target, pattern)
            )
        follows = await self.follows(chat)
        owned = [
            f for f in follows if f.source == CONFIG and f.pattern.casefold() == pattern.casefold()
        ]
        if removed:
            notes = await self._tell_followers(pattern, added=False)
            tail = f" {notes}" if notes else ""
            if owned:
                return (
                    f"Unsubscribed from {pattern}, but {_where(owned)} still routes it here.{tail}"
                )
            return f"Unsubscribed from {pattern}.{tail}"
        if owned:
            return f"{pattern} comes from {_where(owned)}; remove it there, or /mute it here."
        covering = [f for f in follows if f.source == CONFIG and glob_match(pattern, f.pattern)]
        if covering and not _GLOB_CHARS & set(pattern):
            return (
                f"This chat does not follow {pattern} on its own: it comes here through "
                f"{covering[0].pattern} from {_where(covering)}. /mute {pattern} stops it here."
            )
        mine = [f.pattern for f in follows if f.source == SUBSCRIPTION]
        if mine:
            return f"This chat does not follow {pattern}. It follows: {', '.join(mine)}."
        return f"This chat does not follow {pattern} (it has no subscriptions)."

    async def test_card(self, chat: Chat) -> str:
        """Post a test card here that pings nobody (via the outbox), deleted a minute later."""
        real = await latest_live_start(self._store, await self.patterns_for(chat))
        event = card_event(real, self._now())
        mutes = await self._store.mutes_for(chat.sink, chat.target, self._clock())
        if is_muted(mutes, event.streamer_key):
            # The outbox would hold the card back, and the reply would be untrue.
            raise CommandError(
                "Notifications are muted here, so a test card would be held back too. "
                "Use /mutes to see the mutes and /unmute to lift them."
            )
        await queue_test_card(self._store, chat.sink, chat.target, event, now=self._clock())
        if self._on_queued is not None:
            self._on_queued({chat.sink})
        return "A test card was posted here; it is deleted in a minute."

    async def _tell_followers(self, pattern: str, *, added: bool) -> str:
        """What the sources that follow streams themselves did about `pattern`."""
        notes = await asyncio.gather(
            *(follower.followed(pattern, added=added) for follower in self._followers),
            return_exceptions=True,
        )
        said: list[str] = []
        for note in notes:
            if isinstance(note, BaseException):
                if not isinstance(note, Exception):
                    raise note
                # The subscription is stored either way; the source retries on its own.
                log.error("a source failed to act on /subscribe %s", pattern, exc_info=note)
            elif note:
                said.append(note)
        return " ".join(said)

    # -- told by the platform ------------------------------------------------------

    async def target_moved(self, sink: str, old: str, new: str) -> bool:
        """The platform says chat `old` is `new` now (a Telegram group's service message
        on becoming a supergroup): its subscriptions, mutes and cards follow it, once.
        True when this call moved it (False: it had moved already)."""
        return await follow_move(self._store, sink, old, new, now=self._clock())

    # -- argument checks -----------------------------------------------------------

    def _duration(self, text: str) -> timedelta:
        try:
            length = parse_duration(text)
        except ValueError:
            raise CommandError(
                f"{text!r} is not a duration. Use forms like 30m, 2h or 1d."
            ) from None
        if length <= timedelta(0):
            raise CommandError("A mute must last longer than 0 seconds.")
        if length > MAX_MUTE:
            raise CommandError(
                "A timed mute lasts at most 365d; leave out the duration to mute until you unmute."
            )
        return length

    def _pattern(self, text: str) -> str:
        pattern = text.strip()
        if not pattern:
            raise CommandError("Name a streamer as platform/channel, or a pattern like twitch/*.")
        if len(pattern) > MAX_PATTERN_LENGTH:
            raise CommandError(f"That pattern is too long (at most {MAX_PATTERN_LENGTH}).")
        platform, _slash, channel = pattern.partition("/")
        if pattern != "*" and not (platform.strip() and channel.strip()):
            raise CommandError(
                f"{pattern!r} is not a streamer. Name it as platform/channel "
                "(like twitch/quinn), or use a pattern like twitch/*."
            )
        return pattern

    async def _known_spelling(self, pattern: str) -> str:
        """A streamer key as the bot knows it ("Twitch/Quinn" -> "twitch/quinn")."""
        if _GLOB_CHARS & set(pattern):
            return pattern
        for key in await self._store.known_streamers():
            if key.casefold() == pattern.casefold():
                return key
        return pattern

    async def _seen(self, pattern: str) -> list[str]:
        """The streamers seen so far that `pattern` matches."""
        return [k for k in await self._store.known_streamers() if glob_match(k, pattern)]

    async def _nothing_seen(self, pattern: str) -> str:
        """The typo check for a pattern that matches no streamer seen so far."""
        if _GLOB_CHARS & set(pattern):
            return "No streamer seen so far matches it."
        channel = pattern.rpartition("/")[2]
        close = await self.complete_streamers(channel, limit=_SUGGESTIONS)
        # Then the channels spelt nearly alike ("qiunn" for "quinn"), closest first.
        alike = sorted(
            (-_likeness(channel, key.rpartition("/")[2]), key)
            for key in await self._store.known_streamers()
            if key not in close
        )
        close += [key for minus, key in alike if -minus >= _ALIKE]
        if not close:
            return "No streamer seen so far matches it."
        return f"No streamer seen so far matches it: did you mean {_either(close[:_SUGGESTIONS])}?"


def _where(owned: Sequence[FollowEntry]) -> str:
    """ "bot.toml (route 2)", "bot.toml (routes 1 and 3, topic 42)"."""
    routes = list(dict.fromkeys(f"{f.route}" for f in owned))
    # Name topics only when the route posts to topics alone, not to the chat itself.
    topics = (
        []
        if any(f.topic is None for f in owned)
        else list(dict.fromkeys(f.topic for f in owned if f.topic))
    )
    what = f"route {routes[0]}" if len(routes) == 1 else f"routes {_both(routes)}"
    if topics:
        what += f", topic{'s' * (len(topics) != 1)} {_both(topics)}"
    return f"bot.toml ({what})"


def _likeness(typed: str, channel: str) -> float:
    """How alike two channel names are, from 0 to 1, ignoring case."""
    return difflib.SequenceMatcher(None, typed.casefold(), channel.casefold()).ratio()


def _both(words: Sequence[str]) -> str:
    """ "1", "1 and 3", "1, 2 and 3"."""
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def _either(words: Sequence[str]) -> str:
    """ "a", "a or b", "a, b or c"."""
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def split_mute_arguments(args: Sequence[str]) -> tuple[str | None, str | None]:
    """`[streamer] [duration]` from positional words; a lone duration is the duration."""
    if not args:
        return None, None
    if len(args) == 1:
        return (None, args[0]) if looks_like_duration(args[0]) else (args[0], None)
    if len(args) == 2:
        return args[0], args[1]
    raise CommandError("Use: mute [streamer] [duration], like: mute twitch/quinn 2h")
