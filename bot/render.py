"""Events into per-sink messages: the one sandboxed Jinja environment, the documented
template context (docs/templates.md), and the seam each sink's message format plugs into.

A sink's `MessageFormat` (in its own package: `bot/sinks/<platform>/format.py`) names its
template folder, escapes every `{{ value }}` its way, adds its own helpers and builds its
message from the rendered blocks within its limits. This module knows no platform.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, Protocol, TypeVar, overload
from urllib.parse import urlsplit, urlunsplit

from jinja2 import (
    BaseLoader,
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    StrictUndefined,
    Template,
    TemplateError,
    TemplateNotFound,
    TemplateSyntaxError,
    meta,
    pass_context,
)
from jinja2.runtime import Context, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup

import bot
from bot import i18n, markup
from bot.errors import TemplateProblem
from bot.events import LIVE_END, Event, LiveInfo, utcnow

log = logging.getLogger("bot.render")

_KIND_NAME = re.compile(r"[a-z0-9_]+(?:\.[a-z0-9_]+)*")
# Set in the template context while a format's plain-text blocks (say author, footer) render:
# those are shown without markdown, so the finalizer must not add backslashes to them.
_PLAIN_TEXT: Final = "__plain_text__"


# --- the template context --------------------------------------------------------------


class SafeUrl(str):
    """An http(s) URL checked and encoded by `markup.safe_url`; finalizers leave it as is."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class EventView:
    """`event` in templates: what happened and when."""

    kind: str
    id: str
    source: str
    occurred_at: datetime
    received_at: datetime


@dataclass(frozen=True, slots=True)
class StreamerView:
    """`streamer` in templates: who it happened to. Any field but `name` may be None."""

    key: str | None
    platform: str | None
    channel: str | None
    name: str
    url: SafeUrl | None
    avatar: SafeUrl | None


@dataclass(frozen=True, slots=True)
class LiveView:
    """`live` and `old` in templates: a stream's state; every field may be None or empty."""

    title: str | None = None
    categories: tuple[str, ...] = ()
    category: str | None = None
    cover: SafeUrl | None = None
    start_time: datetime | None = None
    live_id: str | None = None
    # Which variable this is, for error messages ("'old' has no attribute 'titel'").
    _label: str = field(default="live", repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class TemplateContext:
    """Everything a template sees; documented field by field in docs/templates.md."""

    event: EventView
    streamer: StreamerView
    live: LiveView
    old: LiveView | None
    started_at: datetime | None
    ended_at: datetime | None
    duration: timedelta | None
    error: str | None
    details: dict[str, Any]
    now: datetime
    sink: str
    #: Where the ended session's recording or replay can be watched (checked http(s)).
    replay_url: SafeUrl | None = None
    #: The language the message is written in (`[behaviour]` or the route's `locale`).
    locale: str = i18n.DEFAULT_LOCALE

    def as_vars(self) -> dict[str, Any]:
        """The context as template variables."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def build_context(
    event: Event, *, sink: str, now: datetime, locale: str = i18n.DEFAULT_LOCALE
) -> TemplateContext:
    """The template context for `event` as seen by `sink` at time `now`, in `locale`."""
    live = event.live or LiveInfo()
    avatar = _url(live.avatar) or (_url(event.old_live.avatar) if event.old_live else None)
    occurred = _utc(event.occurred_at)
    started = _utc(event.started_at) or _utc(live.start_time)
    ended = _utc(event.ended_at) or (occurred if event.kind == LIVE_END else None)
    duration = max((ended or occurred) - started, timedelta(0)) if started else None
    return TemplateContext(
        event=EventView(
            kind=event.kind,
            id=event.event_id,
            source=event.source,
            occurred_at=occurred,
            received_at=_utc(event.received_at),
        ),
        streamer=StreamerView(
            key=event.streamer_key,
            platform=event.platform,
            channel=event.channel,
            name=event.name,
            url=_url(event.url),
            avatar=avatar,
        ),
        live=_live_view(live, "live", fresh=_freshness(event)),
        old=_live_view(event.old_live, "old") if event.old_live is not None else None,
        started_at=started,
        ended_at=ended,
        duration=duration,
        error=event.error,
        details=dict(event.details),
        now=_utc(now),
        sink=sink,
        replay_url=_url(event.replay_url),
        locale=locale,
    )


def _live_view(info: LiveInfo, label: str, *, fresh: str | None = None) -> LiveView:
    categories = tuple(c for c in info.categories if c)
    cover = _url(info.cover)
    return LiveView(
        title=info.title,
        categories=categories,
        category=categories[0] if categories else None,
        cover=fresh_cover(cover, fresh) if cover is not None and fresh else cover,
        start_time=_utc(info.start_time),
        live_id=info.live_id,
        _label=label,
    )


#: The query parameter that makes a cover URL new for each card and each edit.
COVER_FRESHNESS_PARAM: Final = "v"


def _freshness(event: Event) -> str:
    """A short value unique to this event: the same for every retry of one message (a
    resend is the same request), another for the next card or edit."""
    seed = f"{event.source}\x00{event.event_id}".encode()
    return hashlib.blake2s(seed, digest_size=4).hexdigest()


def fresh_cover(cover: SafeUrl, value: str) -> SafeUrl:
    """`cover` with `?v=<value>`, so Discord and Telegram fetch it anew.

    Both cache an image by its URL, so a cover whose URL never changes (Twitch previews,
    many recorders' "latest frame" URL) shows a frame from weeks ago; Red-DiscordBot's
    streams cog adds a random query parameter for the same reason. A URL that already
    has a query or a fragment is left as it is: a signed URL (S3, CloudFront) signs its
    query, and a server that reads a query may not ignore another parameter.
    """
    parts = urlsplit(str(cover))
    if parts.query or parts.fragment or str(cover).endswith(("?", "#")):
        return cover
    return SafeUrl(urlunsplit(parts._replace(query=f"{COVER_FRESHNESS_PARAM}={value}")))


def _stems(names: Iterable[str], sink: str) -> set[str]:
    """The file names (without .j2) in one sink's folder."""
    return {
        n.removeprefix(f"{sink}/").removesuffix(".j2") for n in names if n.startswith(f"{sink}/")
    }


def _url(value: str | None) -> SafeUrl | None:
    checked = markup.safe_url(value)
    return SafeUrl(checked) if checked is not None else None


@overload
def _utc(value: datetime) -> datetime: ...
@overload
def _utc(value: datetime | None) -> datetime | None: ...
def _utc(value: datetime | None) -> datetime | None:
    """The same instant in UTC; a naive datetime is taken to be UTC already."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


# --- filters and globals ---------------------------------------------------------------


def as_datetime(value: object) -> datetime | None:
    """A datetime (UTC), a Unix time or an ISO 8601 string as a UTC datetime; None for none."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return _utc(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        return _utc(datetime.fromisoformat(value.strip().replace("Z", "+00:00")))
    raise TypeError(f"expected a datetime, got {type(value).__name__}")


def duration_filter(value: object, locale: str = i18n.DEFAULT_LOCALE) -> str:
    """`duration`: a timedelta or a number of seconds as "2h 13m" (in `locale`); None as ""."""
    if value is None or value == "":
        return ""
    if isinstance(value, timedelta) or (
        isinstance(value, int | float) and not isinstance(value, bool)
    ):
        return i18n.format_duration(value, locale)
    raise TypeError(f"expected a timedelta or seconds, got {type(value).__name__}")


def datetime_filter(
    value: object, fmt: str | None = None, locale: str = i18n.DEFAULT_LOCALE
) -> str:
    """`datetime`: an absolute UTC time as the locale writes it ("Mar 11, 2026, 5:22 AM
    UTC"), or `fmt` (strftime)."""
    moment = as_datetime(value)
    if moment is None:
        return ""
    return moment.strftime(fmt) if fmt is not None else i18n.format_moment(moment, locale)


def reltime(value: object, now: datetime, locale: str = i18n.DEFAULT_LOCALE) -> str:
    """ "5 minutes ago", "in 3 hours", "just now": `value` relative to `now`."""
    moment = as_datetime(value)
    if moment is None:
        return ""
    return i18n.relative_time(moment, _utc(now), locale)


def _locale_of(context: Context) -> str:
    locale = context.get("locale")
    return locale if isinstance(locale, str) and locale in i18n.LOCALES else i18n.DEFAULT_LOCALE


@pass_context
def _duration_in_locale(context: Context, value: object) -> str:
    return duration_filter(value, _locale_of(context))


@pass_context
def _datetime_in_locale(context: Context, value: object, fmt: str | None = None) -> str:
    return datetime_filter(value, fmt, _locale_of(context))


@pass_context
def _reltime_filter(context: Context, value: object) -> str:
    """`reltime`: relative to the context's `now`."""
    now = context.get("now")
    return reltime(value, now if isinstance(now, datetime) else utcnow(), _locale_of(context))


def join_categories(value: object, separator: str = " · ") -> str:
    """`join_categories`: ["Just Chatting", "Music"] as "Just Chatting · Music"."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, Sequence):
        return separator.join(str(item) for item in value if item)
    raise TypeError(f"expected a list of categories, got {type(value).__name__}")


def _listing(style: Literal["standard", "or"]) -> Callable[..., str]:
    @pass_context
    def listing(context: Context, value: Iterable[object], prefix: str = "") -> str:
        """`and_list` / `or_list`: ["a", "b", "c"] as "a, b and c" in the context's
        language; `prefix` goes before each item ("/" for command names)."""
        items = [f"{prefix}{item}" for item in value if item is not None and item != ""]
        return i18n.join_list(items, _locale_of(context), style=style)

    return listing


def cut_filter(value: object, limit: int) -> str:
    """`cut(n)`: the text cut to `n` characters with an ellipsis (before any escaping)."""
    return "" if value is None else markup.truncate_plain(str(value), limit)


# --- environments ----------------------------------------------------------------------


class _Environment(ImmutableSandboxedEnvironment):
    """The sandbox, with undefined-attribute errors that name the template variable."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        value = super().getattr(obj, attribute)
        label = _label_of(obj)
        if label is not None and isinstance(value, Undefined) and not attribute.startswith("_"):
            return self.undefined(
                f"{label!r} has no attribute {attribute!r}", obj=obj, name=attribute
            )
        return value


def _label_of(obj: object) -> str | None:
    if isinstance(obj, LiveView):
        return obj._label
    if isinstance(obj, StreamerView):
        return "streamer"
    if isinstance(obj, EventView):
        return "event"
    return None


def _environment(fmt: MessageFormat[Any], loader: BaseLoader) -> _Environment:
    @pass_context
    def finalize(context: Context, value: object) -> object:
        return fmt.finalize(value, plain=bool(context.get(_PLAIN_TEXT)))

    def fill(context: Context, text: str, variables: dict[str, Any]) -> Markup:
        # The translation is the bot's own text (its markup stays markup); each value in
        # it is escaped as a `{{ value }}` would be, so a streamer's name in a German
        # sentence is as harmless as in the English one.
        plain = bool(context.get(_PLAIN_TEXT))
        values = {name: fmt.finalize(value, plain=plain) for name, value in variables.items()}
        if fmt.autoescape:
            return Markup(text) % values  # escapes each value that is not markup already
        return Markup(text % values)

    @pass_context
    def gettext(context: Context, message: str, /, **variables: Any) -> Markup:
        translated = i18n.translations(_locale_of(context)).gettext(message)
        return fill(context, translated, variables)

    @pass_context
    def ngettext(
        context: Context, singular: str, plural: str, num: int, /, **variables: Any
    ) -> Markup:
        variables.setdefault("num", num)
        translated = i18n.translations(_locale_of(context)).ngettext(singular, plural, num)
        return fill(context, translated, variables)

    env = _Environment(
        loader=loader,
        undefined=StrictUndefined,
        autoescape=fmt.autoescape,
        finalize=finalize,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        extensions=["jinja2.ext.i18n"],
    )
    # {% trans %} compiles to gettext(text, **values) ("new style"), so the values reach
    # `fill` to be escaped rather than being pasted in unescaped; trimmed: a translator
    # sees one line, not the template's indentation.
    env.newstyle_gettext = True  # type: ignore[attr-defined]
    env.policies["ext.i18n.trimmed"] = True
    env.globals.update(gettext=gettext, _=gettext, ngettext=ngettext)
    env.filters["duration"] = _duration_in_locale
    env.filters["reltime"] = _reltime_filter
    env.filters["datetime"] = _datetime_in_locale
    env.filters["join_categories"] = join_categories
    env.filters["and_list"] = _listing("standard")
    env.filters["or_list"] = _listing("or")
    env.filters["cut"] = cut_filter
    fmt.install(env)
    return env


def builtin_templates_dir() -> Path:
    """Where the built-in templates are: inside the package in a wheel, else the checkout."""
    package = Path(bot.__file__).parent
    installed = package / "_templates"
    return installed if installed.is_dir() else package.parent / "templates"


@dataclass(frozen=True, slots=True)
class _SinkEnvironments:
    main: _Environment  # user dir first, then built-ins
    builtin: _Environment  # built-ins only: the fallback
    has_user: bool


@dataclass(frozen=True, slots=True)
class Rendered:
    """A notification template's output: its file name, each block's text, the context."""

    name: str
    blocks: dict[str, str]
    context: TemplateContext


M = TypeVar("M")


class MessageFormat(Protocol[M]):
    """How one sink's messages are made: its template folder (`name`), the escaping of
    every `{{ value }}`, its own helpers, and the message built from the rendered blocks
    within its limits (declared on the format as class attributes)."""

    @property
    def name(self) -> str:
        """The sink's name: its template folder, and `sink` in the context."""
        ...

    @property
    def autoescape(self) -> bool:
        """Whether templates are HTML (autoescaped) rather than text."""
        ...

    @property
    def blocks(self) -> tuple[str, ...]:
        """The blocks a notification is built from; the first is a blockless file's text."""
        ...

    @property
    def plain_blocks(self) -> tuple[str, ...]:
        """Blocks shown without markup: their values are finalized with `plain=True`."""
        ...

    @property
    def sample_options(self) -> Mapping[str, Any]:
        """The `build` options `check` tries every kind with."""
        ...

    def finalize(self, value: object, *, plain: bool) -> object:
        """One `{{ value }}` as this sink shows it safely."""
        ...

    def install(self, env: Environment) -> None:
        """Add this sink's own filters and globals."""
        ...

    @property
    def build(self) -> Callable[..., M]:
        """(rendered: Rendered, **options) -> the message for the rendered blocks;
        TemplateProblem when they make none. Each format names the options it takes."""
        ...

    def preview(self, message: M, /) -> str:
        """What would be sent, as text for a terminal."""
        ...


@dataclass(frozen=True, slots=True)
class RenderedReply:
    """A command reply template's output: its file name and each reply block's text."""

    name: str
    blocks: dict[str, str]


R_co = TypeVar("R_co", covariant=True)


class ReplyFormat(Protocol[R_co]):
    """How one platform's command replies are made from `<name>/<reply>.j2`."""

    @property
    def name(self) -> str:
        """The platform's name: its template folder."""
        ...

    @property
    def reply_blocks(self) -> tuple[str, ...]:
        """The blocks a reply is built from; a file without any gives its text as "text"."""
        ...

    @property
    def plain_blocks(self) -> tuple[str, ...]:
        """Blocks shown without markup."""
        ...

    def build_reply(self, rendered: RenderedReply, /) -> R_co:
        """The reply for the rendered blocks; TemplateProblem when they make none."""
        ...


class Renderer:
    """Renders events with the user's templates, falling back to the built-in ones.

    `formats` holds every sink's message format by name (`bot.registry.message_formats`).
    With `strict` a failing user template raises TemplateProblem instead of falling back
    (`render` previews what the user wrote, not what the bot would fall back to).
    """

    def __init__(
        self,
        *,
        formats: Mapping[str, MessageFormat[Any]],
        user_dir: Path | None = None,
        clock: Callable[[], datetime] = utcnow,
        builtin_dir: Path | None = None,
        strict: bool = False,
        route_dirs: Iterable[Path] = (),
        locale: str = i18n.DEFAULT_LOCALE,
    ) -> None:
        self._strict = strict
        #: The language of a message whose route names none (`[behaviour] locale`).
        self.locale = locale
        self._builtin_dir = (builtin_dir or builtin_templates_dir()).resolve()
        self._clock = clock
        self._formats = dict(formats)
        self._envs: dict[str, _SinkEnvironments] = {}
        #: A route's own template folder (`[[routes]] templates`) -> its environments:
        #: that folder first, then `[templates] dir`, then the built-ins.
        self._route_envs: dict[Path, dict[str, _SinkEnvironments]] = {}
        self._user_dir: Path | None = None
        self.reload(user_dir, route_dirs)

    @property
    def formats(self) -> Mapping[str, MessageFormat[Any]]:
        """The message formats this renderer knows, by sink name."""
        return self._formats

    def reload(
        self, user_dir: Path | None, route_dirs: Iterable[Path] = (), locale: str | None = None
    ) -> None:
        """Read the templates afresh from `user_dir`, each route's own folder in
        `route_dirs`, and the built-in ones, e.g. on SIGHUP; `locale`: the bot's language
        from now on."""
        if locale is not None:
            self.locale = locale
        self._user_dir = user_dir.resolve() if user_dir is not None else None
        if self._user_dir == self._builtin_dir:
            self._user_dir = None  # a checkout run with [templates] dir = "templates"
        self._envs = self._environments([self._user_dir] if self._user_dir else [])
        self._route_envs = {}
        for route_dir in route_dirs:
            folder = route_dir.resolve()
            chain = [folder, *([self._user_dir] if self._user_dir else [])]
            self._route_envs[folder] = self._environments(chain)

    def _environments(self, folders: Sequence[Path]) -> dict[str, _SinkEnvironments]:
        """Each sink's environments for these user folders (first wins) over the
        built-ins."""
        envs: dict[str, _SinkEnvironments] = {}
        for sink, fmt in self._formats.items():
            builtin = _environment(fmt, FileSystemLoader(self._builtin_dir))
            if not folders:
                envs[sink] = _SinkEnvironments(builtin, builtin, has_user=False)
            else:
                loader = ChoiceLoader(
                    [*(FileSystemLoader(f) for f in folders), FileSystemLoader(self._builtin_dir)]
                )
                envs[sink] = _SinkEnvironments(_environment(fmt, loader), builtin, has_user=True)
        return envs

    # -- public API ---------------------------------------------------------------------

    def render(
        self,
        fmt: MessageFormat[M],
        event: Event,
        *,
        templates: object = None,
        locale: object = None,
        **options: Any,
    ) -> M:
        """The message `fmt` makes of `event`; `options` go to its `build`. `templates` is
        the route's own template folder and `locale` its language (a delivery's options of
        those names), if it has them."""
        language = self._language(locale)
        return self._render(
            fmt.name,
            event,
            lambda env: fmt.build(self._blocks(env, fmt, event, language), **options),
            templates=templates,
        )

    def _language(self, locale: object) -> str:
        """A delivery's language: its own, else the bot's. One that is no longer built in
        (a row queued by another version) is written in the bot's rather than failing."""
        return locale if isinstance(locale, str) and locale in i18n.LOCALES else self.locale

    def render_reply(
        self,
        fmt: ReplyFormat[R_co],
        template: str,
        view: Mapping[str, Any],
        *,
        locale: str | None = None,
    ) -> R_co:
        """The command reply `<fmt.name>/<template>.j2` makes of `view` (plus `sink`, `now`
        and `locale`: the chat's language, else the bot's).

        Unlike a notification, a reply whose user template fails is not rendered from the
        built-in one: TemplateProblem names the file and line, and the platform's error
        handler logs it and apologises, so whoever restyled it sees that it is broken.
        """
        env = self._envs[fmt.name].main
        names, plain = fmt.reply_blocks, [n for n in fmt.reply_blocks if n in fmt.plain_blocks]
        try:
            try:
                tmpl = env.get_template(f"{fmt.name}/{template}.j2")
                ctx = tmpl.new_context(
                    {
                        **view,
                        "sink": fmt.name,
                        "now": self._clock(),
                        "locale": self._language(locale),
                    }
                )
                whole = "".join(tmpl.root_render_func(ctx)).strip()
                blocks = {name: _render_block(ctx, name) for name in names if name not in plain}
                ctx.vars[_PLAIN_TEXT] = True
                blocks.update({name: _render_block(ctx, name) for name in plain})
                if not any(name in ctx.blocks for name in names):
                    blocks["text"] = whole
            except Exception:
                env.handle_exception()  # re-raises with the template's file and line
            return fmt.build_reply(RenderedReply(tmpl.name or template, blocks))
        except TemplateProblem:
            raise
        except Exception as exc:
            raise TemplateProblem(self._describe(exc)) from exc

    def check(
        self, samples: Iterable[Event], languages: Iterable[str] = i18n.LOCALES
    ) -> list[str]:
        """Every problem with the templates: syntax errors in any file, and failures to
        render each sample event (`bot.samples.sample_events`) for each sink, from full
        and from sparse data, in each of `languages` (every built-in one by default, as
        `check` does; a running bot checks those its config uses: each language's CLDR
        data stays in memory once loaded)."""
        wanted = set(languages)
        checked = [tag for tag in i18n.LOCALES if tag in wanted]
        problems: list[str] = []

        def add(problem: str) -> None:
            if problem not in problems:
                problems.append(problem)

        fallback = next(iter(self._envs.values())).builtin
        for root in (self._user_dir, *self._route_envs, self._builtin_dir):
            if root is None or not root.is_dir():
                continue
            loader = FileSystemLoader(root)
            for name in loader.list_templates():
                if not name.endswith(".j2"):
                    continue
                sink = name.split("/", 1)[0]
                env = self._envs[sink].builtin if sink in self._envs else fallback
                try:
                    source, filename, _ = loader.get_source(env, name)
                    env.compile(source, name, filename)
                except TemplateSyntaxError as exc:
                    add(self._describe(exc))
                except (OSError, UnicodeDecodeError) as exc:
                    add(f"{self._label(str(root / name))}: cannot read: {exc}")
        events = list(samples)
        seen = set(problems)
        # The bot's templates, and each route's own folder over them, in every language.
        sets = [self._envs, *self._route_envs.values()]
        for fmt, env in [(f, e[k].main) for e in sets for k, f in self._formats.items()]:
            for language in checked:
                for sample in self._samples_for(env, fmt, events, language):
                    for event, note in ((sample, ""), (_sparse(sample), _SPARSE_NOTE)):
                        try:
                            rendered = self._blocks(env, fmt, event, language)
                            fmt.build(rendered, **fmt.sample_options)
                        except Exception as exc:  # a template can fail in any way
                            problem = self._describe(exc)
                            # Said once: where it shows first (English and full data
                            # are tried first), the language and sparse notes only for
                            # what those did not show.
                            if problem not in seen:
                                seen.add(problem)
                                where = "" if language == i18n.DEFAULT_LOCALE else language
                                add(problem + _notes(where, note))
        return problems

    def _samples_for(
        self, env: _Environment, fmt: MessageFormat[Any], events: list[Event], language: str
    ) -> list[Event]:
        """The samples `check` renders in `language`: every one in English; in the others
        one per template file they select, so each template is still rendered in every
        language while the dozens of kinds default.j2 draws are not rendered seven times
        (which made `check`, and so each start and SIGHUP, several times slower)."""
        if language == i18n.DEFAULT_LOCALE:
            return events
        first: dict[str, Event] = {}
        for event in events:
            with contextlib.suppress(TemplateError):
                first.setdefault(self._template(env, fmt.name, event).name or "", event)
        return list(first.values())

    def unused_overrides(self, kinds: Iterable[str]) -> list[str]:
        """The files in the user's template folder that nothing will ever use, each with
        what it should be called: a sink folder that does not exist, or a file that is
        named after no event kind (`kinds`), no built-in template and that no other
        template includes, imports or extends (a typo such as live_started.j2)."""
        root = self._user_dir
        if root is None or not root.is_dir():
            return []
        loader = FileSystemLoader(root)
        names = [name for name in loader.list_templates() if name.endswith(".j2")]
        builtin = set(FileSystemLoader(self._builtin_dir).list_templates())
        referenced: set[str] = set()
        env = next(iter(self._envs.values())).builtin
        for name in names:
            with contextlib.suppress(TemplateError, OSError, UnicodeDecodeError):
                source, _filename, _ = loader.get_source(env, name)
                found = meta.find_referenced_templates(env.parse(source))
                referenced.update(ref for ref in found if ref is not None)
        wanted = {f"{kind}.j2" for kind in kinds} | {"default.j2"}
        problems = []
        for name in names:
            sink, _, file = name.rpartition("/")
            label = self._label(str(root / name))
            if sink not in self._formats:
                sinks = ", ".join(sorted(self._formats))
                problems.append(f"{label}: unused: there is no sink {sink!r} (folders: {sinks})")
            elif file not in wanted and name not in builtin and name not in referenced:
                stems = sorted({w.removesuffix(".j2") for w in wanted} | _stems(builtin, sink))
                close = difflib.get_close_matches(file.removesuffix(".j2"), stems, n=1)
                hint = f"did you mean {close[0]}.j2?" if close else "names: " + ", ".join(stems)
                problems.append(
                    f"{label}: unused: no event kind or template is called that, and no"
                    f" template includes it; {hint}"
                )
        return problems

    # -- rendering ----------------------------------------------------------------------

    def _render(
        self,
        sink: str,
        event: Event,
        build: Callable[[_Environment], M],
        *,
        templates: object = None,
    ) -> M:
        envs = self._envs[sink]
        if isinstance(templates, str) and templates:
            # A folder the running config no longer names (a delivery queued before a
            # reload): the bot's other templates draw it.
            envs = self._route_envs.get(Path(templates).resolve(), self._envs)[sink]
        if envs.has_user:
            try:
                return build(envs.main)
            except Exception as exc:  # a bad user template must not lose a notification
                if self._strict:
                    raise TemplateProblem(self._describe(exc)) from exc
                log.error(
                    "%s; rendering %s for %s with the built-in template instead",
                    self._describe(exc),
                    event.kind,
                    sink,
                )
        try:
            return build(envs.builtin)
        except TemplateProblem:
            raise
        except Exception as exc:
            raise TemplateProblem(self._describe(exc)) from exc

    def _blocks(
        self, env: _Environment, fmt: MessageFormat[Any], event: Event, locale: str
    ) -> Rendered:
        """Render the format's blocks of the event's template (its plain ones without markup).

        A template that defines none of them (no `{% block %}` at all, say) gives its whole
        output as the first one, so a plain file works as a template too.
        """
        sink, names, plain = fmt.name, fmt.blocks, fmt.plain_blocks
        template = self._template(env, sink, event)
        context = build_context(event, sink=sink, now=self._clock(), locale=locale)
        try:
            ctx = template.new_context(context.as_vars())
            # Running the whole template registers the blocks it inherits; its output is
            # only used by a template without any of the message's blocks.
            whole = "".join(template.root_render_func(ctx)).strip()
            blocks = {name: _render_block(ctx, name) for name in names}
            ctx.vars[_PLAIN_TEXT] = True
            blocks.update({name: _render_block(ctx, name) for name in plain})
            if not any(name in ctx.blocks for name in (*names, *plain)):
                blocks[names[0]] = whole
        except Exception:
            env.handle_exception()  # re-raises with the template's file and line
        return Rendered(template.name or f"{sink}/default.j2", blocks, context)

    @staticmethod
    def _template(env: _Environment, sink: str, event: Event) -> Template:
        """The template an event renders with: `<sink>/<kind>.j2`, else `default.j2`."""
        candidates = [f"{sink}/default.j2"]
        if _KIND_NAME.fullmatch(event.kind):
            candidates.insert(0, f"{sink}/{event.kind}.j2")
        return env.select_template(candidates)

    # -- error reports ------------------------------------------------------------------

    def _describe(self, exc: BaseException) -> str:
        """ "<sink>/live_start.j2 line 3: unexpected '}'" for a template failure."""
        if isinstance(exc, TemplateProblem):
            return str(exc)
        if isinstance(exc, TemplateSyntaxError):
            where = self._label(exc.filename or exc.name or "<template>")
            return f"{where} line {exc.lineno}: {exc.message}"
        if isinstance(exc, TemplateNotFound):
            message = f"template {exc.message} not found"
        elif isinstance(exc, TemplateError):
            message = exc.message or type(exc).__name__
        else:
            message = f"{type(exc).__name__}: {exc}"
        frame = _template_frame(exc.__traceback__)
        if frame is None:
            return message
        filename, line = frame
        return f"{self._label(filename)} line {line}: {message}"

    def _label(self, filename: str) -> str:
        """A template's name relative to its directory; built-ins marked when a user dir
        is in use, so the user knows which file to look at."""
        path = Path(filename)
        for root, prefix in ((self._user_dir, ""), (self._builtin_dir, "built-in ")):
            if root is None:
                continue
            try:
                relative = path.resolve().relative_to(root).as_posix()
            except ValueError:
                continue
            return (prefix if self._user_dir is not None else "") + relative
        return filename


@dataclass(frozen=True, slots=True)
class Cutter:
    """Truncates a message part to its limit, logging a warning when it has to."""

    sink: str
    kind: str

    def __call__(
        self, truncate: Callable[[str, int], str], text: str, limit: int, part: str
    ) -> str:
        cut = truncate(text, limit)
        if cut != text:
            log.warning(
                "%s %s: %s is longer than %d characters; truncated",
                self.sink,
                self.kind,
                part,
                limit,
            )
        return cut


_SPARSE_NOTE: Final = "with an event that has no stream details"


def _notes(language: str, sparse: str) -> str:
    """ " (in de, with an event that has no stream details)": what a problem showed with."""
    said = [f"in {language}" if language else "", sparse]
    notes = ", ".join(part for part in said if part)
    return f" ({notes})" if notes else ""


def _sparse(event: Event) -> Event:
    """`event` as a terse source sends it: no names, URLs, live info, error or details."""
    return event.with_changes(
        display_name=None,
        url=None,
        live=None,
        old_live=None,
        error=None,
        started_at=None,
        ended_at=None,
        details={},
    )


def _render_block(ctx: Context, name: str) -> str:
    chain = ctx.blocks.get(name)
    if not chain:
        return ""
    return "".join(chain[0](ctx)).strip()


def _template_frame(tb: TracebackType | None) -> tuple[str, int] | None:
    """The innermost template file and line in a traceback Jinja has rewritten."""
    found = None
    while tb is not None:
        if "__jinja_exception__" in tb.tb_frame.f_globals:
            found = (tb.tb_frame.f_code.co_filename, tb.tb_lineno)
        tb = tb.tb_next
    return found


_YES: Final = frozenset({"yes", "true", "on", "1"})
_NO: Final = frozenset({"no", "false", "off", "0"})


def flag(text: str, *, default: bool, block: str, name: str) -> bool:
    """A yes/no block's value (`default` when empty); TemplateProblem for anything else."""
    word = text.strip().lower()
    if not word:
        return default
    if word in _YES:
        return True
    if word in _NO:
        return False
    raise TemplateProblem(f"{name}: block {block!r} must be yes or no, not {text!r}")


def colour(text: str, default: int, name: str) -> int:
    """A colour block's value (#E5312B, 0xE5312B or decimal; `default` when empty)."""
    word = text.strip().lower()
    if not word:
        return default
    try:
        if word.startswith("#"):
            value = int(word[1:], 16)
        elif word.startswith("0x"):
            value = int(word[2:], 16)
        else:
            value = int(word)
    except ValueError:
        value = -1
    if not 0 <= value <= 0xFFFFFF:
        raise TemplateProblem(
            f"{name}: block 'colour' must be a colour like #E5312B, not {text!r}"
        )
    return value
