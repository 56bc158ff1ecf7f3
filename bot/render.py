"""Events into per-sink messages: one sandboxed Jinja environment per sink, the documented
template context (docs/templates.md), per-sink escaping and limit-aware truncation."""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Final, TypeVar, overload

from jinja2 import (
    BaseLoader,
    ChoiceLoader,
    FileSystemLoader,
    StrictUndefined,
    TemplateError,
    TemplateNotFound,
    TemplateSyntaxError,
    pass_context,
)
from jinja2.runtime import Context, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup

import bot
from bot import markup
from bot.durations import format_duration
from bot.errors import TemplateProblem
from bot.events import LIVE_END, LIVE_START, Event, LiveInfo, utcnow
from bot.registry import KNOWN_KINDS
from bot.samples import sample_event

log = logging.getLogger("bot.render")

SINKS: Final = ("console", "discord", "telegram")

# Discord's documented limits (platform-notes.md).
DISCORD_CONTENT_MAX: Final = 2000
DISCORD_TITLE_MAX: Final = 256
DISCORD_DESCRIPTION_MAX: Final = 4096
DISCORD_FIELD_NAME_MAX: Final = 256
DISCORD_FIELD_VALUE_MAX: Final = 1024
DISCORD_FOOTER_MAX: Final = 2048
DISCORD_AUTHOR_MAX: Final = 256
DISCORD_EMBED_TOTAL_MAX: Final = 6000
#: Discord refuses more than 100 ids in allowed_mentions.roles.
DISCORD_MAX_ROLE_MENTIONS: Final = 100
# Telegram's: visible characters after entity parsing.
TELEGRAM_TEXT_MAX: Final = 4096
TELEGRAM_CAPTION_MAX: Final = 1024
#: The console has no limit of its own; a megabyte of title should still not fill the
#: terminal (or the journal it goes to), so a notification is cut like a Telegram one.
CONSOLE_TEXT_MAX: Final = 4096

#: Embed colour per event kind (templates may override with the `colour` block).
KIND_COLOURS: Final[Mapping[str, int]] = {
    "live_start": 0xE5312B,  # live red
    "title_change": 0x5865F2,  # Discord blurple
    "category_change": 0x9B59B6,  # purple
    "live_end": 0x4F545C,  # muted grey: it is over
    "error": 0xF0A020,  # amber
}
DEFAULT_COLOUR: Final = 0x95A5A6  # recorded kinds rendered by default.j2

_CATEGORY_FIELD: Final = "Category"
_KIND_NAME = re.compile(r"[a-z0-9_]+(?:\.[a-z0-9_]+)*")
# Set in the template context while the plain-text Discord blocks (author, footer) render:
# those are shown without markdown, so the finalizer must not add backslashes to them.
_PLAIN_TEXT: Final = "__plain_text__"


# --- messages --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConsoleMessage:
    """One notification as text for a terminal or a log."""

    text: str


@dataclass(frozen=True, slots=True)
class DiscordMessage:
    """One Discord message in API shape: content, one embed (or {}), allowed_mentions."""

    content: str
    embed: dict[str, Any]
    allowed_mentions: dict[str, Any]


@dataclass(frozen=True, slots=True)
class TelegramMessage:
    """One Telegram notification: HTML text, optional cover photo and one link button.

    `caption` is set only when there is a photo and the text fits a caption; otherwise
    the sink sends `text` with sendMessage.
    """

    text: str
    photo_url: str | None = None
    caption: str | None = None
    button_text: str | None = None
    button_url: str | None = None
    disable_preview: bool = True


Message = ConsoleMessage | DiscordMessage | TelegramMessage


# --- the template context --------------------------------------------------------------


class SafeUrl(str):
    """An http(s) URL checked and encoded by `markup.safe_url`; Discord leaves it unescaped."""

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

    def as_vars(self) -> dict[str, Any]:
        """The context as template variables."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def build_context(event: Event, *, sink: str, now: datetime) -> TemplateContext:
    """The template context for `event` as seen by `sink` at time `now`."""
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
        live=_live_view(live, "live"),
        old=_live_view(event.old_live, "old") if event.old_live is not None else None,
        started_at=started,
        ended_at=ended,
        duration=duration,
        error=event.error,
        details=dict(event.details),
        now=_utc(now),
        sink=sink,
    )


def _live_view(info: LiveInfo, label: str) -> LiveView:
    categories = tuple(c for c in info.categories if c)
    return LiveView(
        title=info.title,
        categories=categories,
        category=categories[0] if categories else None,
        cover=_url(info.cover),
        start_time=_utc(info.start_time),
        live_id=info.live_id,
        _label=label,
    )


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


def _as_datetime(value: object) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return _utc(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        return _utc(datetime.fromisoformat(value.strip().replace("Z", "+00:00")))
    raise TypeError(f"expected a datetime, got {type(value).__name__}")


def duration_filter(value: object) -> str:
    """`duration`: a timedelta or a number of seconds as "2h 13m"; None as ""."""
    if value is None or value == "":
        return ""
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return format_duration(value)
    raise TypeError(f"expected a timedelta or seconds, got {type(value).__name__}")


def datetime_filter(value: object, fmt: str | None = None) -> str:
    """`datetime`: an absolute UTC time, "2026-03-11 05:22 UTC" or `fmt` (strftime)."""
    moment = _as_datetime(value)
    if moment is None:
        return ""
    return moment.strftime(fmt if fmt is not None else "%Y-%m-%d %H:%M UTC")


def reltime(value: object, now: datetime) -> str:
    """ "5 minutes ago", "in 3 hours", "just now": `value` relative to `now`."""
    moment = _as_datetime(value)
    if moment is None:
        return ""
    seconds = (_utc(now) - moment).total_seconds()
    ahead, seconds = seconds < 0, abs(seconds)
    if seconds < 45:
        return "just now"
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size or unit == "minute":
            amount = max(1, int(seconds // size))
            break
    text = f"{amount} {unit}{'' if amount == 1 else 's'}"
    return f"in {text}" if ahead else f"{text} ago"


@pass_context
def _reltime_filter(context: Context, value: object) -> str:
    """`reltime`: relative to the context's `now`."""
    now = context.get("now")
    return reltime(value, now if isinstance(now, datetime) else utcnow())


def join_categories(value: object, separator: str = " · ") -> str:
    """`join_categories`: ["Just Chatting", "Music"] as "Just Chatting · Music"."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, Sequence):
        return separator.join(str(item) for item in value if item)
    raise TypeError(f"expected a list of categories, got {type(value).__name__}")


_DISCORD_TIME_STYLES: Final = frozenset("tTdDfFR")


def discord_time(value: object, style: str = "R") -> Markup:
    """`discord_time(dt, style="R")`: a Discord timestamp `<t:UNIX:R>`, shown in each
    reader's own time zone and language; "" for None."""
    moment = _as_datetime(value)
    if moment is None:
        return Markup("")
    if style not in _DISCORD_TIME_STYLES:
        raise ValueError(f"discord_time style must be one of t T d D f F R, not {style!r}")
    return Markup(f"<t:{int(moment.timestamp())}:{style}>")


def _codeblock_filter(value: object) -> Markup:
    """`codeblock` (Discord): the value in a ``` block, which nothing in it can close."""
    text = "" if value is None else markup.strip_controls(str(value))
    return Markup(markup.discord_code_block(markup.neutralise_mentions(text)))


# --- finalizers: the per-sink escaping of every {{ }} ------------------------------------


def _console_finalize(value: object) -> str:
    return "" if value is None else markup.sanitize_console(str(value))


@pass_context
def _discord_finalize(context: Context, value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, SafeUrl):
        return str(value)
    if isinstance(value, Markup):
        # Markdown already (discord_time, |codeblock, |e); what it holds may still be
        # stream text, and neither a bidi control nor @everyone is markup anyone needs.
        return markup.neutralise_everyone(markup.strip_controls(str(value)))
    text = markup.strip_controls(str(value))
    if context.get(_PLAIN_TEXT):
        # Not markdown, so no backslashes; the invisible mention breaks cost nothing.
        return markup.neutralise_mentions(text)
    return markup.escape_discord(text)


def _telegram_finalize(value: object) -> object:
    # Autoescaping runs after this, on what it returns.
    if value is None:
        return ""
    if isinstance(value, SafeUrl):
        # Usually an href, where a word joiner would break the link; shown as text,
        # Telegram makes the whole URL one link, with no mention inside it.
        return value
    if isinstance(value, Markup):
        # HTML already (|e, |join and other filters give Markup): stream text may be in
        # it, so its text gets the same treatment, its tags are left alone.
        return Markup(markup.break_telegram_html_mentions(markup.strip_controls(str(value))))
    return markup.break_telegram_mentions(markup.strip_controls(str(value)))


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


_FINALIZERS: Final[Mapping[str, Callable[..., object]]] = {
    "console": _console_finalize,
    "discord": _discord_finalize,
    "telegram": _telegram_finalize,
}


def _environment(sink: str, loader: BaseLoader) -> _Environment:
    env = _Environment(
        loader=loader,
        undefined=StrictUndefined,
        autoescape=sink == "telegram",
        finalize=_FINALIZERS[sink],
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )
    env.filters["duration"] = duration_filter
    env.filters["reltime"] = _reltime_filter
    env.filters["datetime"] = datetime_filter
    env.filters["join_categories"] = join_categories
    if sink == "discord":
        env.globals["discord_time"] = discord_time
        env.filters["codeblock"] = _codeblock_filter
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
class _Rendered:
    name: str
    blocks: dict[str, str]
    context: TemplateContext


M = TypeVar("M", ConsoleMessage, DiscordMessage, TelegramMessage)


class Renderer:
    """Renders events with the user's templates, falling back to the built-in ones."""

    def __init__(
        self,
        *,
        user_dir: Path | None = None,
        clock: Callable[[], datetime] = utcnow,
        builtin_dir: Path | None = None,
    ) -> None:
        self._builtin_dir = (builtin_dir or builtin_templates_dir()).resolve()
        self._clock = clock
        self._envs: dict[str, _SinkEnvironments] = {}
        self._user_dir: Path | None = None
        self.reload(user_dir)

    def reload(self, user_dir: Path | None) -> None:
        """Read the templates afresh from `user_dir` (and the built-in ones), e.g. on SIGHUP."""
        self._user_dir = user_dir.resolve() if user_dir is not None else None
        if self._user_dir == self._builtin_dir:
            self._user_dir = None  # a checkout run with [templates] dir = "templates"
        self._envs = {}
        for sink in SINKS:
            builtin = _environment(sink, FileSystemLoader(self._builtin_dir))
            if self._user_dir is None:
                self._envs[sink] = _SinkEnvironments(builtin, builtin, has_user=False)
            else:
                loader = ChoiceLoader(
                    [FileSystemLoader(self._user_dir), FileSystemLoader(self._builtin_dir)]
                )
                self._envs[sink] = _SinkEnvironments(
                    _environment(sink, loader), builtin, has_user=True
                )

    # -- public API ---------------------------------------------------------------------

    def render_console(self, event: Event) -> ConsoleMessage:
        """The console text for `event`."""
        return self._render("console", event, lambda env: self._console(env, event))

    def render_discord(self, event: Event, *, mention_roles: Sequence[int] = ()) -> DiscordMessage:
        """The Discord message for `event`; `mention_roles` are pinged on live_start only."""
        roles: list[int] = []
        if event.kind == LIVE_START:
            for role in mention_roles:
                role_id = int(role)
                if role_id > 0 and role_id not in roles:
                    roles.append(role_id)
        roles = roles[:DISCORD_MAX_ROLE_MENTIONS]
        return self._render("discord", event, lambda env: self._discord(env, event, roles))

    def render_telegram(self, event: Event) -> TelegramMessage:
        """The Telegram message for `event`."""
        return self._render("telegram", event, lambda env: self._telegram(env, event))

    def check(self) -> list[str]:
        """Every problem with the templates: syntax errors in any file, and failures to
        render each known kind for each sink from sample data (full and sparse)."""
        problems: list[str] = []

        def add(problem: str) -> None:
            if problem not in problems:
                problems.append(problem)

        for root in (self._user_dir, self._builtin_dir):
            if root is None or not root.is_dir():
                continue
            loader = FileSystemLoader(root)
            for name in loader.list_templates():
                if not name.endswith(".j2"):
                    continue
                sink = name.split("/", 1)[0]
                env = self._envs[sink if sink in SINKS else "console"].builtin
                try:
                    source, filename, _ = loader.get_source(env, name)
                    env.compile(source, name, filename)
                except TemplateSyntaxError as exc:
                    add(self._describe(exc))
                except (OSError, UnicodeDecodeError) as exc:
                    add(f"{self._label(str(root / name))}: cannot read: {exc}")
        builders: dict[str, Callable[[_Environment, Event], object]] = {
            "console": self._console,
            "discord": lambda env, event: self._discord(env, event, (1,)),
            "telegram": self._telegram,
        }
        for sink in SINKS:
            for kind in sorted(KNOWN_KINDS):
                sample = sample_event(kind)
                for event, note in ((sample, ""), (_sparse(sample), _SPARSE_NOTE)):
                    try:
                        builders[sink](self._envs[sink].main, event)
                    except Exception as exc:  # a template can fail in any way
                        problem = self._describe(exc)
                        # Said once: the sparse note only for what full data did not show.
                        add(problem if problem in problems else problem + note)
        return problems

    # -- rendering ----------------------------------------------------------------------

    def _render(self, sink: str, event: Event, build: Callable[[_Environment], M]) -> M:
        envs = self._envs[sink]
        if envs.has_user:
            try:
                return build(envs.main)
            except Exception as exc:  # a bad user template must not lose a notification
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
        self,
        env: _Environment,
        sink: str,
        event: Event,
        names: Sequence[str],
        plain: Sequence[str] = (),
    ) -> _Rendered:
        """Render the named blocks of the event's template (`plain` ones without markup).

        A template that defines none of them (no `{% block %}` at all, say) gives its whole
        output as the first one, so a plain file works as a template too.
        """
        candidates = [f"{sink}/default.j2"]
        if _KIND_NAME.fullmatch(event.kind):
            candidates.insert(0, f"{sink}/{event.kind}.j2")
        template = env.select_template(candidates)
        context = build_context(event, sink=sink, now=self._clock())
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
        return _Rendered(template.name or candidates[-1], blocks, context)

    def _console(self, env: _Environment, event: Event) -> ConsoleMessage:
        rendered = self._blocks(env, "console", event, ("text",))
        text = rendered.blocks["text"]
        if not text:
            raise TemplateProblem(f"{rendered.name}: block 'text' is empty")
        text = _Cutter("console", event.kind)(
            markup.truncate_plain, text, CONSOLE_TEXT_MAX, "text"
        )
        return ConsoleMessage(text=text)

    def _discord(
        self, env: _Environment, event: Event, mention_roles: Sequence[int]
    ) -> DiscordMessage:
        rendered = self._blocks(
            env,
            "discord",
            event,
            ("content", "title", "description", "category", "image", "colour"),
            plain=("author", "footer"),
        )
        blocks, ctx, kind = rendered.blocks, rendered.context, event.kind
        colour = _colour(blocks["colour"], KIND_COLOURS.get(kind, DEFAULT_COLOUR), rendered.name)
        show_image = _flag(blocks["image"], default=True, block="image", name=rendered.name)

        md, plain = markup.truncate_discord, markup.truncate_plain
        cut = _Cutter("discord", kind)
        roles = list(mention_roles)
        prefix = " ".join(f"<@&{role}>" for role in roles)
        room = DISCORD_CONTENT_MAX - (len(prefix) + 1 if prefix else 0)
        content = cut(md, blocks["content"], room, "content")
        content = f"{prefix} {content}" if prefix and content else prefix or content
        title = cut(md, blocks["title"], DISCORD_TITLE_MAX, "embed.title")
        description = cut(md, blocks["description"], DISCORD_DESCRIPTION_MAX, "embed.description")
        category = cut(md, blocks["category"], DISCORD_FIELD_VALUE_MAX, "embed Category field")
        author = cut(plain, blocks["author"], DISCORD_AUTHOR_MAX, "embed.author.name")
        footer = cut(plain, blocks["footer"], DISCORD_FOOTER_MAX, "embed.footer.text")
        others = sum(
            markup.utf16_len(part)
            for part in (title, author, footer, category, _CATEGORY_FIELD if category else "")
        )
        # The others come to at most 256 + 256 + 2048 + 1024 + 8 units, so trimming the
        # description alone always brings the embed within its total.
        description = cut(
            md, description, DISCORD_EMBED_TOTAL_MAX - others, "embed.description (embed total)"
        )

        url = ctx.streamer.url
        embed: dict[str, Any] = {}
        if author:
            embed["author"] = {"name": author}
            if ctx.streamer.avatar:
                embed["author"]["icon_url"] = str(ctx.streamer.avatar)
            if url:
                embed["author"]["url"] = str(url)
        if title:
            embed["title"] = title
            if url:
                embed["url"] = str(url)
        if description:
            embed["description"] = description
        if category:
            embed["fields"] = [{"name": _CATEGORY_FIELD, "value": category, "inline": True}]
        if show_image and ctx.live.cover:
            embed["image"] = {"url": str(ctx.live.cover)}
        if footer:
            embed["footer"] = {"text": footer}
        if embed:
            embed["color"] = colour
            embed["timestamp"] = ctx.event.occurred_at.isoformat()
        if not content and not embed:
            raise TemplateProblem(f"{rendered.name}: every block is empty")
        return DiscordMessage(
            content=content,
            embed=embed,
            allowed_mentions={
                "parse": [],
                "roles": [str(role) for role in roles],
                "users": [],
                "replied_user": False,
            },
        )

    def _telegram(self, env: _Environment, event: Event) -> TelegramMessage:
        rendered = self._blocks(
            env, "telegram", event, ("text", "button", "photo", "link_preview")
        )
        blocks, ctx, name = rendered.blocks, rendered.context, rendered.name
        text = blocks["text"]
        if not text:
            raise TemplateProblem(f"{name}: block 'text' is empty")
        problems = markup.telegram_html_problems(text)
        if problems:
            raise TemplateProblem(f"{name}: block 'text' is not Telegram HTML: {problems[0]}")
        text = _Cutter("telegram", event.kind)(
            markup.truncate_telegram, text, TELEGRAM_TEXT_MAX, "text"
        )
        photo = _flag(blocks["photo"], default=True, block="photo", name=name)
        preview_links = _flag(
            blocks["link_preview"], default=False, block="link_preview", name=name
        )
        photo_url = str(ctx.live.cover) if photo and ctx.live.cover else None
        caption = None
        if photo_url and markup.telegram_visible_len(text) <= TELEGRAM_CAPTION_MAX:
            caption = text
        # The button label is plain text: undo the HTML escaping of the values in it.
        label = " ".join(html.unescape(blocks["button"]).split())
        has_button = bool(label and ctx.streamer.url)
        return TelegramMessage(
            text=text,
            photo_url=photo_url,
            caption=caption,
            button_text=label if has_button else None,
            button_url=str(ctx.streamer.url) if has_button else None,
            disable_preview=not preview_links,
        )

    # -- error reports ------------------------------------------------------------------

    def _describe(self, exc: BaseException) -> str:
        """ "discord/live_start.j2 line 3: unexpected '}'" for a template failure."""
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
class _Cutter:
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


_SPARSE_NOTE: Final = " (with an event that has no stream details)"


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


def _flag(text: str, *, default: bool, block: str, name: str) -> bool:
    word = text.strip().lower()
    if not word:
        return default
    if word in _YES:
        return True
    if word in _NO:
        return False
    raise TemplateProblem(f"{name}: block {block!r} must be yes or no, not {text!r}")


def _colour(text: str, default: int, name: str) -> int:
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


# --- preview ---------------------------------------------------------------------------


def preview(message: ConsoleMessage | DiscordMessage | TelegramMessage) -> str:
    """What would be sent, as text for a terminal (`python -m bot render`)."""
    if isinstance(message, ConsoleMessage):
        return message.text
    if isinstance(message, TelegramMessage):
        lines = []
        if message.photo_url:
            how = "with the text as caption" if message.caption else "then the text"
            lines.append(f"[photo {message.photo_url}, {how}]")
        lines.append(message.text)
        if message.button_text:
            lines.append(f"[button {message.button_text!r} -> {message.button_url}]")
        lines.append(f"[link preview {'off' if message.disable_preview else 'on'}]")
        return "\n".join(lines)
    lines = [message.content] if message.content else []
    embed = message.embed
    if embed:
        bar = "│ "
        lines.append(f"[embed, colour #{embed.get('color', 0):06X}]")
        if "author" in embed:
            lines.append(bar + embed["author"]["name"])
        if "title" in embed:
            link = f"  <{embed['url']}>" if "url" in embed else ""
            lines.append(f"{bar}{embed['title']}{link}")
        if "description" in embed:
            lines.extend(bar + line for line in embed["description"].splitlines())
        for item in embed.get("fields", ()):
            lines.append(f"{bar}{item['name']}: {item['value']}")
        if "image" in embed:
            lines.append(f"{bar}[image {embed['image']['url']}]")
        footer = embed.get("footer", {}).get("text", "")
        lines.append(
            f"{bar}{footer} · {embed['timestamp']}" if footer else bar + embed["timestamp"]
        )
    roles = message.allowed_mentions.get("roles") or []
    lines.append(f"[pings roles {', '.join(roles)}]" if roles else "[pings nobody]")
    return "\n".join(lines)
