"""The one catalogue of chat commands: each declared once, with a platform-neutral handler.

An entry names the command, its parameters, whether it changes state (so platforms put it
behind their permission gate) and its help text. Its handler runs the logic in
`bot.commands.Commands` and returns a `Reply`: plain text, which the platform escapes, or
a reply template (`templates/<platform>/<name>.j2`) with its view, which the platform
renders through the same sandboxed renderer as notifications. Each platform package
builds its slash commands or bot commands from `CATALOGUE` and wraps them in one
permission gate and one error handler; adding an entry here adds the command everywhere.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from bot import i18n, markup
from bot.commands import (
    Chat,
    CommandError,
    Commands,
    FollowEntry,
    StatusReport,
    split_mute_arguments,
)
from bot.durations import looks_like_duration
from bot.i18n import N_
from bot.render import SafeUrl

Arguments = Mapping[str, str | None]


@dataclass(frozen=True, slots=True)
class Param:
    """One parameter of a command, in the order positional words fill them."""

    name: str
    help: str
    required: bool = False
    #: Offer the known streamer keys while the user types (where the platform can).
    complete: bool = False


@dataclass(frozen=True, slots=True)
class Invocation:
    """One command as a platform received it: where, who, and the bound arguments."""

    chat: Chat
    args: Arguments
    #: Who sent it, for the store's created_by column.
    by: str | None = None
    #: Whether the sender may change this chat; asked only when an answer depends on it.
    is_admin: Callable[[], Awaitable[bool]] | None = None
    #: The commands the platform offers (what /help lists).
    catalogue: Sequence[CommandSpec] = ()

    async def admin(self) -> bool:
        """The platform's answer to "may the sender change this chat?" (False if unknown)."""
        return await self.is_admin() if self.is_admin is not None else False


@dataclass(frozen=True, slots=True)
class Reply:
    """A command's answer: plain `text` (the platform escapes it), or the reply template
    `template` rendered with `view` (see docs/templates.md, "Command replies")."""

    text: str = ""
    template: str | None = None
    view: Mapping[str, Any] = field(default_factory=dict)
    #: The language the template writes in (the chat's; the bot's when None).
    locale: str | None = None


Handler = Callable[[Commands, Invocation], Awaitable[Reply]]


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """One command, for every platform."""

    name: str
    help: str
    handler: Handler
    params: tuple[Param, ...] = ()
    #: Needs the platform's moderator permission in group chats (the permission gate).
    changes_state: bool = False
    #: What a platform sends when someone first opens a chat with the bot (/start, where
    #: that is a convention); platforms without such a thing leave it out, and help does
    #: not list it.
    greeting: bool = False
    #: What extra words do: refused with a usage hint, or ignored.
    refuse_extra: bool = True
    #: Example arguments for the usage hint ("twitch/quinn 2h").
    examples: tuple[str, ...] = ()
    #: Positional words -> arguments, for commands with a grammar of their own.
    words: Callable[[Sequence[str]], Arguments] | None = None
    #: Arguments as typed into separate fields, tidied (say a duration in the wrong one).
    tidy: Callable[[Arguments], Arguments] | None = None

    def bind_words(self, words: Sequence[str]) -> Arguments:
        """Arguments from positional words (platforms without named options)."""
        if self.words is not None:
            return self.tidy_up(self.words(words))
        if not self.params:
            if words and self.refuse_extra:
                raise CommandError(f"/{self.name} takes no arguments.")
            return {}
        required = sum(p.required for p in self.params)
        if not required <= len(words) <= len(self.params):
            raise CommandError(self.usage_hint())
        return self.tidy_up({p.name: w for p, w in zip(self.params, words, strict=False)})

    def tidy_up(self, args: Arguments) -> Arguments:
        """Every declared parameter present (None when not given), tidied."""
        full = {p.name: args.get(p.name) for p in self.params}
        return self.tidy(full) if self.tidy is not None else full

    def usage_hint(self) -> str:
        """ "Use: /subscribe pattern, like: /subscribe twitch/quinn or /subscribe twitch/*"."""
        words = " ".join(p.name if p.required else f"[{p.name}]" for p in self.params)
        shown = f"/{self.name} {words}".rstrip()
        if not self.examples:
            return f"Use: {shown}"
        like = " or ".join(f"/{self.name} {example}" for example in self.examples)
        return f"Use: {shown}, like: {like}"


# -- views: what the reply templates see ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class LiveLine:
    """One live stream in /status (`live` in status.j2)."""

    key: str
    name: str
    url: SafeUrl | None
    title: str | None
    categories: tuple[str, ...]
    started_at: datetime | None
    uptime: timedelta | None


@dataclass(frozen=True, slots=True)
class MuteLine:
    """One mute in force (`mutes` in status.j2 and mutes.j2)."""

    pattern: str
    until: datetime | None
    #: "twitch/quinn for 1h 59m more", "everything until unmuted".
    text: str


@dataclass(frozen=True, slots=True)
class FollowLine:
    """One pattern this chat follows (`follows` in status.j2 and follows.j2)."""

    pattern: str
    #: "config" (a route in bot.toml) or "subscription" (/subscribe in this chat).
    source: str
    #: The route's number in bot.toml (from 1) for "config", else None.
    route: int | None
    #: The forum topic the route posts to ("42"), None for the chat itself.
    topic: str | None
    #: Where it comes from, plain text: "bot.toml, route 2, topic 42" or "/subscribe".
    origin: str


@dataclass(frozen=True, slots=True)
class ProblemLine:
    """One thing wrong with this chat or one of its topics (`problems` in status.j2)."""

    target: str
    #: The forum topic's id when the problem is a topic's ("-100123/42"), else None.
    topic: str | None
    #: A stable word: not_found, missing_permissions, no_embed_links, moved, ...
    kind: str
    #: What is wrong and what to do, plain text.
    detail: str
    #: True when nothing can be posted there; False when posts go out degraded.
    blocking: bool


@dataclass(frozen=True, slots=True)
class SourceProblemLine:
    """One thing wrong with a source of the streams this chat follows (`source_problems`
    in status.j2): a revoked Twitch subscription, a login Twitch does not know."""

    #: The source's name in bot.toml.
    source: str
    #: The streamer key it is about ("twitch/quinn"), None for the whole source.
    streamer: str | None
    kind: str
    #: What is wrong and what to do, plain text.
    detail: str


@dataclass(frozen=True, slots=True)
class HelpLine:
    """One command in /help (`commands` in help.j2)."""

    name: str
    help: str
    params: tuple[Param, ...]
    changes_state: bool


def follow_lines(
    follows: Sequence[FollowEntry], locale: str = i18n.DEFAULT_LOCALE
) -> list[FollowLine]:
    """`follows` of status.j2 and follows.j2, their `origin` in `locale`."""
    return [
        FollowLine(
            pattern=f.pattern,
            source=f.source,
            route=f.route,
            topic=f.topic,
            origin=f.origin_in(locale),
        )
        for f in follows
    ]


def status_view(
    report: StatusReport, *, show_failures: bool, locale: str = i18n.DEFAULT_LOCALE
) -> dict[str, Any]:
    """The variables of status.j2, mutes.j2 and follows.j2, their text in `locale`;
    `show_failures`: the asker may change this chat, so the failing deliveries and the
    chat's problems are shown."""
    live = []
    for entry in report.live:
        checked = markup.safe_url(entry.url)
        live.append(
            LiveLine(
                key=entry.key,
                name=entry.name,
                url=SafeUrl(checked) if checked else None,
                title=entry.title,
                categories=tuple(c for c in entry.categories if c),
                started_at=entry.started_at,
                uptime=entry.uptime,
            )
        )
    return {
        "live": live,
        "more": 0,
        "mutes": [
            MuteLine(m.pattern, m.until, m.describe(report.now, locale)) for m in report.mutes
        ],
        "scoped": report.scoped,
        "follows": follow_lines(report.follows, locale),
        "failed_deliveries": report.failed_deliveries,
        "show_failures": show_failures and report.failed_deliveries > 0,
        "problems": [
            ProblemLine(
                target=p.target,
                topic=p.target.partition("/")[2] or None,
                kind=p.kind,
                detail=p.detail,
                blocking=p.blocking,
            )
            for p in report.problems
        ]
        if show_failures
        else [],
        "source_problems": [
            SourceProblemLine(
                source=p.source, streamer=p.streamer or None, kind=p.kind, detail=p.detail
            )
            for p in report.source_problems
        ]
        if show_failures
        else [],
    }


# -- handlers ------------------------------------------------------------------------------


async def _status(commands: Commands, call: Invocation) -> Reply:
    report = await commands.status(call.chat)
    # The admin check may cost the platform a request: only when it matters.
    worth_showing = report.failed_deliveries > 0 or report.problems or report.source_problems
    show = bool(worth_showing) and await call.admin()
    return _report_reply(commands, call, "status", report, show_failures=show)


async def _mutes(commands: Commands, call: Invocation) -> Reply:
    # The status report carries the mutes and the `now` they are described against.
    report = await commands.status(call.chat)
    return _report_reply(commands, call, "mutes", report, show_failures=False)


async def _follows(commands: Commands, call: Invocation) -> Reply:
    # The whole report, so follows.j2 sees what status.j2 sees (`live`, `mutes`, ...).
    report = await commands.status(call.chat)
    return _report_reply(commands, call, "follows", report, show_failures=False)


def _report_reply(
    commands: Commands, call: Invocation, template: str, report: StatusReport, **how: bool
) -> Reply:
    locale = commands.locale_for(call.chat)
    view = status_view(report, locale=locale, **how)
    return Reply(template=template, view=view, locale=locale)


async def _help(commands: Commands, call: Invocation) -> Reply:
    locale = commands.locale_for(call.chat)
    _ = i18n.translations(locale).gettext
    listed = [
        HelpLine(spec.name, _(spec.help), spec.params, spec.changes_state)
        for spec in call.catalogue or CATALOGUE
        if not spec.greeting
    ]
    view = {"commands": listed, "chat_id": call.chat.target}
    return Reply(template="help", view=view, locale=locale)


async def _mute(commands: Commands, call: Invocation) -> Reply:
    args = call.args
    text = await commands.mute(call.chat, args.get("streamer"), args.get("duration"), by=call.by)
    return Reply(text=text)


async def _unmute(commands: Commands, call: Invocation) -> Reply:
    return Reply(text=await commands.unmute(call.chat, call.args.get("streamer")))


async def _subscribe(commands: Commands, call: Invocation) -> Reply:
    pattern = call.args.get("pattern") or ""
    return Reply(text=await commands.subscribe(call.chat, pattern, by=call.by))


async def _unsubscribe(commands: Commands, call: Invocation) -> Reply:
    return Reply(text=await commands.unsubscribe(call.chat, call.args.get("pattern") or ""))


async def _test(commands: Commands, call: Invocation) -> Reply:
    return Reply(text=await commands.test_card(call.chat))


def _mute_words(words: Sequence[str]) -> Arguments:
    streamer, duration = split_mute_arguments(words)
    return {"streamer": streamer, "duration": duration}


def _tidy_mute(args: Arguments) -> Arguments:
    streamer, duration = args.get("streamer"), args.get("duration")
    if streamer and not duration and "/" not in streamer and looks_like_duration(streamer):
        streamer, duration = None, streamer  # "/mute 2h": the duration in the first place
    return {"streamer": streamer, "duration": duration}


_STREAMER: Final = Param(
    "streamer", "platform/channel like twitch/quinn, or a pattern like twitch/*", complete=True
)
_PATTERN: Final = Param(
    "pattern",
    "platform/channel like twitch/quinn, or a pattern like twitch/*",
    required=True,
    complete=True,
)
_DURATION: Final = Param(
    "duration", "how long, like 30m, 2h or 1d; leave out to mute until /unmute"
)

#: Every command, in the order menus and /help list them.
CATALOGUE: Final[tuple[CommandSpec, ...]] = (
    CommandSpec(
        "start",
        N_("what this bot does, this chat's id and how to subscribe"),
        _help,
        greeting=True,
        refuse_extra=False,
    ),
    CommandSpec(
        "status",
        N_("who is live, what this chat follows, and what is muted here"),
        _status,
        refuse_extra=False,
    ),
    CommandSpec(
        "mute",
        N_("mute notifications here: all, or one streamer, for a while or until unmuted"),
        _mute,
        params=(_STREAMER, _DURATION),
        changes_state=True,
        examples=("twitch/quinn 2h",),
        words=_mute_words,
        tidy=_tidy_mute,
    ),
    CommandSpec(
        "unmute",
        N_("lift a mute here (all mutes when no streamer is given)"),
        _unmute,
        params=(_STREAMER,),
        changes_state=True,
        examples=("twitch/quinn",),
    ),
    CommandSpec("mutes", N_("list the mutes in force here"), _mutes),
    CommandSpec(
        "follows",
        N_("list what this chat follows, and whether bot.toml or /subscribe routes each here"),
        _follows,
    ),
    CommandSpec(
        "subscribe",
        N_("send notifications for streamers matching a pattern here"),
        _subscribe,
        params=(_PATTERN,),
        changes_state=True,
        examples=("twitch/quinn", "twitch/*"),
    ),
    CommandSpec(
        "unsubscribe",
        N_("stop a subscription made with subscribe"),
        _unsubscribe,
        params=(_PATTERN,),
        changes_state=True,
        examples=("twitch/quinn", "twitch/*"),
    ),
    CommandSpec(
        "test",
        N_("post a test card here that pings nobody, and delete it a minute later"),
        _test,
        changes_state=True,
    ),
    CommandSpec("help", N_("what this bot does and how to use it"), _help, refuse_extra=False),
)


def by_name(catalogue: Sequence[CommandSpec] = CATALOGUE) -> dict[str, CommandSpec]:
    """The catalogue by command name."""
    return {spec.name: spec for spec in catalogue}
