"""bot.toml as frozen dataclasses: `load_config` checks a mapping, `read_config` reads a file.

Every problem is collected and raised once as a ConfigError, each prefixed by its key path
(`sources[1].kind: ...`) so a user can fix the whole file in one go. Secrets and tokens
are never echoed: not in problems, not in reprs.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

from bot import i18n
from bot.durations import format_duration, parse_duration
from bot.errors import ConfigError
from bot.events import NOTIFIED_KINDS, LiveInfo, glob_match
from bot.matching import PatternError, TitlePattern, category_matches
from bot.quiet import QuietWindow, WindowError, is_quiet, load_zone, parse_window
from bot.registry import PLATFORMS, SOURCES, known_kinds
from bot.sinks.base import PlatformConfig, PlatformSpec
from bot.sources.spec import SourceSpec, entry_key
from bot.store import DEFAULT_DATABASE, redacted
from bot.tomltypes import parse_snowflake
from bot.tomltypes import show as _show
from bot.tomltypes import type_name as _type_name

ON_CHANGE_CHOICES: Final = frozenset({"edit", "post", "both"})
ON_END_CHOICES: Final = frozenset({"edit", "post", "both", "delete"})
#: `[[routes]] thread`: a thread per stream session (Discord).
THREAD_CHOICES: Final = ("per_stream",)
LOG_LEVELS: Final = frozenset({"debug", "info", "warning", "error"})
LOG_FORMATS: Final = frozenset({"text", "json"})

_MAX_BODY_LIMIT: Final = 64 * 1024 * 1024

# The single source of truth for which keys exist (with each source's `options` and each
# platform's section keys in bot.registry); CONFIG_KEYS and the unknown-key checks are
# both derived from these, so the docs test cannot drift from the loader.
_SECTION_KEYS: Final[Mapping[str, tuple[str, ...]]] = {
    "server": ("host", "port", "max_body_bytes", "public_url"),
    "storage": ("path", "url", "password_env", "retention", "lease"),
    "console": ("enabled",),
    "templates": ("dir",),
    "behaviour": (
        "on_change",
        "on_end",
        "end_grace",
        "rejoin_window",
        "change_cooldown",
        "quiet_hours",
        "timezone",
        "locale",
    ),
    "delivery": ("max_age",),
    "logging": ("level", "format"),
    "metrics": ("enabled", "token", "token_env"),
}
_SOURCE_KEYS: Final = ("name", "kind", "secret", "secret_env")
_ROUTE_KEYS: Final = (
    "match",
    "events",
    # ...and each platform's key naming its chats (PLATFORMS: discord_channels, ...).
    "mention_roles",
    # Per-route overrides of [behaviour]: how this route's chats see changes and ends.
    "on_change",
    "on_end",
    "end_grace",
    # Which streams this route's chats are told about (issue 19: filters).
    "categories",
    "exclude_categories",
    "title_match",
    "title_exclude",
    # How its sends notify: silently, or silently in quiet hours (then without pings).
    "silent",
    "quiet_hours",
    "timezone",
    # @everyone on live_start, on purpose (never from stream text).
    "mention_everyone",
    # Publish cards in Discord announcement channels to the servers following them.
    "crosspost",
    # A Discord thread (or forum post) per stream session.
    "thread",
    # This route's chats' own template folder, over [templates] dir.
    "templates",
    # The built-in language its messages are written in, over [behaviour] locale.
    "locale",
)


def _route_keys() -> tuple[str, ...]:
    """A `[[routes]]` entry's keys: the core ones and each platform's chats key."""
    return (*_ROUTE_KEYS, *(spec.target_key for spec in PLATFORMS.values()))


def config_keys(
    registry: Mapping[str, SourceSpec] = SOURCES,
    platforms: Mapping[str, PlatformSpec] = PLATFORMS,
) -> frozenset[str]:
    """Every dotted key the loader accepts; array-of-table keys are spelled `sources[].name`."""
    return frozenset(
        [f"{section}.{key}" for section, keys in _SECTION_KEYS.items() for key in keys]
        + [f"{name}.{key}" for name, spec in platforms.items() for key in spec.config_keys]
        + [f"sources[].{key}" for key in _SOURCE_KEYS]
        + [f"sources[].{key}" for spec in registry.values() for key in spec.option_keys]
        + [f"routes[].{key}" for key in _ROUTE_KEYS]
        + [f"routes[].{spec.target_key}" for spec in platforms.values()]
    )


#: The keys of the registered sources' and platforms' config: what README and
#: bot.toml.example document.
CONFIG_KEYS: Final = config_keys(SOURCES, PLATFORMS)

_SOURCE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Where the webhook listener binds, the largest body it reads, and the address the
    world reaches it at."""

    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 1_048_576
    #: The listener's public base URL (behind a TLS proxy, say), no trailing slash: where
    #: a platform that posts its updates to the bot is told to post them.
    public_url: str | None = None


#: How long events and finished deliveries are kept by default ([storage] retention).
DEFAULT_RETENTION: Final = timedelta(days=30)
#: The shortest retention accepted. Pruning an event forgets its id, so a webhook sent
#: again after that would be notified twice: the retention must outlast every window a
#: sender may repeat a webhook in (a day for OneLiveRec's id-less bodies, the
#: DIGEST_WINDOW of bot.pipeline.ingest; 48 h for Kick's redeliveries).
MIN_RETENTION: Final = timedelta(days=2)
#: [storage] lease: a dead process's deliveries are taken over within this (issue 20).
DEFAULT_LEASE: Final = timedelta(seconds=60)
#: Shorter, and a slow heartbeat (a busy database) could hand a live process's sends to
#: another: three heartbeats per lease must fit with room to spare.
MIN_LEASE: Final = timedelta(seconds=10)


@dataclass(frozen=True, slots=True)
class StorageConfig:
    """Where the state is: the SQLite database file (absolute once loaded), or with `url`
    a PostgreSQL database several processes share; and how long history is kept."""

    path: Path
    retention: timedelta = DEFAULT_RETENTION
    #: postgresql://user@host/db: PostgreSQL instead of the file. Never shown as given:
    #: it may hold a password (`location` is what messages show).
    url: str | None = field(default=None, repr=False)
    #: The password from `password_env`, when the URL has none.
    password: str | None = field(default=None, repr=False)
    #: How long a process's claims (deliveries it sends) outlive its last heartbeat: a
    #: dead process's work moves to another within this.
    lease: timedelta = DEFAULT_LEASE

    @property
    def location(self) -> str:
        """The database, as messages name it: the file, or the URL without its password."""
        return redacted(self.url) if self.url is not None else str(self.path)

    def __repr__(self) -> str:
        return f"StorageConfig(location={self.location!r}, retention={self.retention!r})"


@dataclass(frozen=True, slots=True)
class ConsoleConfig:
    """Whether rendered notifications are printed to stdout."""

    enabled: bool = True


@dataclass(frozen=True, slots=True)
class TemplatesConfig:
    """A directory of user templates that override the built-in ones, if any."""

    dir: Path | None = None


@dataclass(frozen=True, slots=True)
class BehaviourConfig:
    """Session-card policy: how changes and ends are posted, and the timing windows."""

    on_change: str = "edit"
    on_end: str = "edit"
    end_grace: timedelta = timedelta(seconds=60)
    rejoin_window: timedelta = timedelta(minutes=5)
    change_cooldown: timedelta = timedelta(minutes=1)
    #: When sends are silent and leave role pings out, for routes that set none.
    quiet_hours: tuple[QuietWindow, ...] = ()
    #: The IANA zone quiet hours are read in.
    timezone: tzinfo = field(default_factory=lambda: load_zone("UTC"))
    #: The built-in language of messages and replies, for routes that name none.
    locale: str = i18n.DEFAULT_LOCALE


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    """How much the bot logs, and whether as text lines or one JSON object per line."""

    level: str = "info"
    format: str = "text"


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """`GET /metrics` (Prometheus); with a token it wants `Authorization: Bearer <token>`."""

    enabled: bool = True
    token: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    """Outbox policy: how long a failing delivery is retried before it is given up."""

    max_age: timedelta = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class SourceConfig:
    """One webhook endpoint, `/webhook/<name>`, of one provider kind.

    `options` holds the kind's own keys (its `SourceSpec.options`), checked, by key; a
    source reads them back through the option (`TOLERANCE.get(config)`). Left out of the
    repr because a future option may be a credential.
    """

    name: str
    kind: str
    secret: str = field(repr=False)
    options: Mapping[str, object] = field(default_factory=dict, repr=False)


@dataclass(frozen=True, slots=True)
class Target:
    """One place a delivery goes: a sink and, for chat platforms, the platform's own
    address of a channel or chat (a Discord channel id, a Telegram chat id or topic)."""

    sink: str
    target: str


@dataclass(frozen=True, slots=True)
class Route:
    """Which streamers' events go where: one `[[routes]]` entry (the only route type)."""

    patterns: tuple[str, ...]
    events: frozenset[str]
    targets: tuple[Target, ...] = ()
    #: Role ids to ping on live_start, on the platforms that have roles.
    mention_roles: tuple[int, ...] = ()
    # None: the [behaviour] setting applies.
    on_change: str | None = None
    on_end: str | None = None
    end_grace: timedelta | None = None
    #: Category globs a stream must (not) be in, and title regexes it must (not) match.
    categories: tuple[str, ...] = ()
    exclude_categories: tuple[str, ...] = ()
    title_match: TitlePattern | None = None
    title_exclude: TitlePattern | None = None
    #: Every send notifies silently (Discord SUPPRESS_NOTIFICATIONS, Telegram
    #: disable_notification).
    silent: bool = False
    # None: [behaviour]'s quiet hours and time zone.
    quiet_hours: tuple[QuietWindow, ...] | None = None
    timezone: tzinfo | None = None
    #: @everyone on live_start.
    mention_everyone: bool = False
    #: Publish the cards in announcement channels (Discord's Crosspost Message).
    crosspost: bool = False
    #: "per_stream": each session's card opens a thread (a forum post in a forum).
    thread: str | None = None
    #: The route's own template folder: its files win over `[templates] dir`'s.
    templates: Path | None = None
    #: The built-in language of its chats' messages; None: [behaviour]'s.
    locale: str | None = None

    def matches(self, streamer_key: str | None, kind: str) -> bool:
        """True when this route wants events of `kind` for this stream."""
        return kind in self.events and any(
            glob_match(streamer_key or "", pattern) for pattern in self.patterns
        )

    @property
    def filters(self) -> bool:
        """Whether the route tells its chats about some streams only."""
        return bool(
            self.categories
            or self.exclude_categories
            or self.title_match is not None
            or self.title_exclude is not None
        )

    def wants(self, info: LiveInfo | None) -> bool:
        """Whether a stream with these details (its title and categories now) passes the
        route's filters."""
        categories = info.categories if info is not None else ()
        title = (info.title or "") if info is not None else ""
        if self.categories and not category_matches(categories, self.categories):
            return False
        if self.exclude_categories and category_matches(categories, self.exclude_categories):
            return False
        if self.title_match is not None and not self.title_match.search(title):
            return False
        return self.title_exclude is None or not self.title_exclude.search(title)

    def quiet(self, at: datetime, default: BehaviourConfig) -> bool:
        """Whether `at` falls in this route's quiet hours ([behaviour]'s if it sets none)."""
        windows = default.quiet_hours if self.quiet_hours is None else self.quiet_hours
        zone = self.timezone or default.timezone
        return bool(windows) and is_quiet(windows, zone, at)

    def targets_on(self, sink: str) -> tuple[str, ...]:
        """This route's addresses on one sink, in the order bot.toml lists them."""
        return tuple(t.target for t in self.targets if t.sink == sink)


@dataclass(frozen=True, slots=True)
class Config:
    """The whole bot.toml, validated."""

    server: ServerConfig
    storage: StorageConfig
    console: ConsoleConfig
    #: Each registered chat platform's section by name (bot.registry.PLATFORMS), loaded
    #: by its package: `platforms["discord"]` is a DiscordConfig.
    platforms: Mapping[str, PlatformConfig]
    templates: TemplatesConfig
    behaviour: BehaviourConfig
    sources: tuple[SourceConfig, ...]
    routes: tuple[Route, ...]
    delivery: DeliveryConfig = DeliveryConfig()
    logging: LoggingConfig = LoggingConfig()
    metrics: MetricsConfig = MetricsConfig()
    #: Things that are allowed but probably not meant ("discord_channels while Discord is
    #: off"), each prefixed by its key path: `check` prints them (and fails on them with
    #: --strict), `run` logs them once at start.
    warnings: tuple[str, ...] = ()

    @property
    def locales_in_use(self) -> tuple[str, ...]:
        """The built-in languages its messages are written in: `[behaviour] locale`,
        the routes' own, and English (what stays English, and the first checked)."""
        used = {i18n.DEFAULT_LOCALE, self.behaviour.locale}
        used.update(r.locale for r in self.routes if r.locale is not None)
        return tuple(tag for tag in i18n.LOCALES if tag in used)

    @property
    def route_template_dirs(self) -> tuple[Path, ...]:
        """The routes' own template folders, each once, in bot.toml order."""
        return tuple(dict.fromkeys(r.templates for r in self.routes if r.templates is not None))


def read_config(
    path: Path,
    environ: Mapping[str, str] | None = None,
    *,
    registry: Mapping[str, SourceSpec] = SOURCES,
    platforms: Mapping[str, PlatformSpec] = PLATFORMS,
) -> Config:
    """Read and check a bot.toml file; relative paths in it are relative to its folder."""
    try:
        with path.open("rb") as file:
            data = tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError([f"{path}: file not found"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: invalid TOML: {exc}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 text (byte {exc.start})"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    return load_config(
        data,
        environ=os.environ if environ is None else environ,
        base_dir=path.absolute().parent,
        registry=registry,
        platforms=platforms,
    )


def load_config(
    data: Mapping[str, Any],
    *,
    environ: Mapping[str, str],
    base_dir: Path,
    registry: Mapping[str, SourceSpec] = SOURCES,
    platforms: Mapping[str, PlatformSpec] = PLATFORMS,
) -> Config:
    """Check a parsed bot.toml mapping; raise ConfigError listing every problem.

    `registry` holds the source kinds `[[sources]] kind` may name (`bot.registry.SOURCES`),
    `platforms` the chat platforms whose sections it may have (`bot.registry.PLATFORMS`).
    """
    problems: list[str] = []
    warnings: list[str] = []
    root = _Table(data, "", problems, (*_SECTION_KEYS, *platforms, "sources", "routes"), warnings)
    root.check_unknown()
    known = known_kinds(registry)
    route_tables = root.tables("routes")
    config = Config(
        server=_server(root.section("server")),
        storage=_storage(root.section("storage"), base_dir, environ),
        console=ConsoleConfig(enabled=root.section("console").flag("enabled", True)),
        platforms={name: _platform(root, spec, environ) for name, spec in platforms.items()},
        templates=_templates(root.section("templates"), base_dir),
        behaviour=_behaviour(root.section("behaviour")),
        delivery=DeliveryConfig(
            max_age=root.section("delivery").duration(
                "max_age", DeliveryConfig().max_age, positive=True
            )
        ),
        sources=_sources(root.tables("sources"), environ, registry),
        routes=tuple(_route(table, known, registry, base_dir) for table in route_tables),
        logging=_logging(root.section("logging")),
        metrics=_metrics(root.section("metrics"), environ),
    )
    for name, spec in platforms.items():
        section = config.platforms[name]
        if spec.public_url_problems is not None and section.enabled:
            problems.extend(spec.public_url_problems(section, config.server.public_url))
    if problems:
        raise ConfigError(problems)
    _warn_unreachable_targets(route_tables, config, platforms)
    return replace(config, warnings=tuple(warnings))


def _warn_unreachable_targets(
    tables: list[_Table], config: Config, platforms: Mapping[str, PlatformSpec]
) -> None:
    """A route naming chats on a platform that is off posts nothing there: say so."""
    for table, route in zip(tables, config.routes, strict=True):
        for name, spec in platforms.items():
            section = config.platforms[name]
            if route.targets_on(name) and not section.enabled:
                table.warn(
                    spec.target_key,
                    f"{spec.title} is off ({section.disabled_reason}), so nothing is posted"
                    " to these; set its token, or remove them",
                )


class _Table:
    """Typed reads from one TOML table that record problems by key path and never raise.

    A getter given a missing or wrong value returns the default (or None), so the loader
    keeps going and reports every problem in the file at once.
    """

    def __init__(
        self,
        data: Mapping[str, Any],
        path: str,
        problems: list[str],
        keys: Collection[str],
        warnings: list[str] | None = None,
    ) -> None:
        self.data = data
        self.path = path
        self.problems = problems
        self.keys = frozenset(keys)
        self.warnings: list[str] = warnings if warnings is not None else []
        #: The environment credentials are read from (`secret`); set for source tables.
        self.environ: Mapping[str, str] = {}

    def at(self, key: str) -> str:
        """The full path of `key` in this table."""
        return f"{self.path}.{key}" if self.path else key

    def problem(self, key: str, message: str) -> None:
        """Record a problem with `key`, or with the table itself when `key` is empty."""
        self.problems.append(f"{self.at(key) if key else self.path}: {message}")

    def warn(self, key: str, message: str) -> None:
        """Record a warning about `key`: allowed, but probably not what was meant."""
        self.warnings.append(f"{self.at(key) if key else self.path}: {message}")

    def has(self, key: str) -> bool:
        """True when the table sets `key` (to anything)."""
        return key in self.data

    def check_unknown(self, *, also_known: Mapping[str, str] | None = None) -> None:
        """Report each key this table does not accept; `also_known` maps key -> why not."""
        for key in self.data:
            if key in self.keys:
                continue
            if also_known and key in also_known:
                self.problem(key, f"unknown key ({also_known[key]})")
                continue
            close = difflib.get_close_matches(key, self.keys, n=1)
            hint = (
                f"did you mean {close[0]!r}?"
                if close
                else "known: " + ", ".join(sorted(self.keys))
            )
            self.problem(key, f"unknown key; {hint}")

    def _get(self, key: str, types: tuple[type, ...], label: str, required: bool) -> Any:
        assert key in self.keys, f"{self.at(key)} is not a declared key"
        if key not in self.data:
            if required:
                self.problem(key, "is required")
            return None
        value = self.data[key]
        if not _is_a(value, types):
            self.problem(key, f"expected {label}, got {_type_name(value)}")
            return None
        return value

    def opt_text(self, key: str, *, required: bool = False) -> str | None:
        """A string, None when absent or wrong (the problem is recorded)."""
        value: str | None = self._get(key, (str,), "a string", required)
        return value

    def text(self, key: str, default: str) -> str:
        """A non-empty string, or `default`."""
        value = self.opt_text(key)
        if value is None:
            return default
        if not value.strip():
            self.problem(key, "must not be empty")
            return default
        return value

    def integer(self, key: str, default: int, *, low: int, high: int) -> int:
        """An integer in `low..high`, or `default`."""
        value: int | None = self._get(key, (int,), "an integer", False)
        if value is None:
            return default
        if not low <= value <= high:
            self.problem(key, f"must be between {low} and {high}, got {value}")
            return default
        return value

    def flag(self, key: str, default: bool) -> bool:
        """A boolean, or `default`."""
        value: bool | None = self._get(key, (bool,), "a boolean (true or false)", False)
        return default if value is None else value

    def choice(
        self, key: str, default: str, choices: Collection[str], *, required: bool = False
    ) -> str:
        """One of `choices`, or `default`."""
        value = self.opt_text(key, required=required)
        if value is None:
            return default
        if value not in choices:
            self.problem(key, f"must be one of {', '.join(sorted(choices))}, got {_show(value)}")
            return default
        return value

    def duration(self, key: str, default: timedelta, *, positive: bool = False) -> timedelta:
        """A duration string such as "90s", "5m" or "1h30m", or `default`."""
        raw: str | None = self._get(key, (str,), 'a duration string like "90s" or "5m"', False)
        if raw is None:
            return default
        try:
            value = parse_duration(raw)
        except ValueError as exc:
            self.problem(key, str(exc))
            return default
        except OverflowError:
            self.problem(key, f"{_show(raw)} is too long a duration")
            return default
        if positive and value <= timedelta(0):
            self.problem(key, "must be longer than 0s")
            return default
        return value

    def url(self, key: str, schemes: tuple[str, ...]) -> str | None:
        """An absolute URL with one of `schemes`, or None."""
        value = self.opt_text(key)
        if value is None:
            return None
        # Only the scheme is echoed: a proxy URL may carry credentials.
        parts = urlsplit(value)
        if parts.scheme.lower() not in schemes or not parts.netloc:
            wanted = " or ".join(f"{scheme}://" for scheme in schemes)
            self.problem(key, f"expected an absolute {wanted} URL")
            return None
        return value

    def mapping(self, key: str) -> dict[str, str] | None:
        """A table of strings (a source's `[sources.fields]`), None when absent or wrong;
        each entry that is not a string is a problem naming that entry."""
        value: Mapping[str, Any] | None = self._get(key, (Mapping,), "a table", False)
        if value is None:
            return None
        out: dict[str, str] = {}
        for name, item in value.items():
            if isinstance(item, str):
                out[name] = item
            else:
                self.problem(entry_key(key, name), f"expected a string, got {_type_name(item)}")
        return out

    def secret(self, key: str, *, required: bool) -> str | None:
        """A credential given as `key` or by the variable `<key>_env` names; never echoed."""
        return _secret(self, self.environ, key, required=required)

    def strings(self, key: str) -> list[str] | None:
        """A list of non-empty strings, None when absent; wrong items are problems."""
        items = self.items(key)
        if items is None:
            return None
        out: list[str] = []
        for path, item in items:
            if not isinstance(item, str):
                self.problems.append(f"{path}: expected a string, got {_type_name(item)}")
            elif not item.strip():
                self.problems.append(f"{path}: must not be empty")
            else:
                out.append(item.strip())
        return out

    def path_value(self, key: str, base_dir: Path) -> Path | None:
        """A filesystem path; a relative one is taken relative to `base_dir`."""
        value = self.opt_text(key)
        if value is None:
            return None
        if not value.strip():
            self.problem(key, "must not be empty")
            return None
        # "~/bot.sqlite3" means the home folder, as in a shell; taken literally it would
        # make a folder named "~" next to bot.toml.
        try:
            path = Path(value).expanduser()
        except RuntimeError:
            self.problem(key, f"{_show(value)} starts with ~ but the home folder is unknown")
            return None
        return base_dir / path

    def items(self, key: str) -> list[tuple[str, Any]] | None:
        """A list as (item path, item) pairs, or None when absent or not a list."""
        value: list[Any] | None = self._get(key, (list,), "a list", False)
        if value is None:
            return None
        return [(f"{self.at(key)}[{index}]", item) for index, item in enumerate(value)]

    def section(self, key: str, keys: Collection[str] | None = None) -> _Table:
        """A sub-table (empty when absent or wrong) with its unknown keys already reported;
        `keys` are its keys when it is not one of the core sections."""
        value: Mapping[str, Any] | None = self._get(key, (Mapping,), "a table", False)
        known = _SECTION_KEYS[key] if keys is None else keys
        table = _Table(value or {}, self.at(key), self.problems, known, self.warnings)
        table.check_unknown()
        return table

    def chat_token(self, environ: Mapping[str, str]) -> tuple[str | None, str | None]:
        """(token, disabled_reason) for a chat sink; an unset token_env disables, not errors."""
        if self.has("token") and self.has("token_env"):
            self.problem("", "set token or token_env, not both")
            return None, "invalid token configuration"
        env_name = _env_name(self, "token_env")
        if env_name is not None:
            # Tokens never contain whitespace; a stray newline from a secrets file would
            # otherwise end up in the Authorization header.
            token = environ.get(env_name, "").strip()
            return (token, None) if token else (None, f"token_env {env_name} is not set")
        token = (self.opt_text("token") or "").strip()
        if _literal_variable(self, "token", token, "token_env"):
            return None, "invalid token configuration"
        return (token, None) if token else (None, "no token configured")

    def tables(self, key: str) -> list[_Table]:
        """An array of tables (`[[key]]`); the caller checks each one's keys."""
        entries = self.items(key) or []
        keys = _SOURCE_KEYS if key == "sources" else _route_keys()
        out: list[_Table] = []
        for path, entry in entries:
            if not isinstance(entry, Mapping):
                self.problems.append(f"{path}: expected a table, got {_type_name(entry)}")
                continue
            out.append(_Table(entry, path, self.problems, keys, self.warnings))
        return out


def _server(table: _Table) -> ServerConfig:
    return ServerConfig(
        host=table.text("host", "127.0.0.1"),
        port=table.integer("port", 8080, low=0, high=65535),
        max_body_bytes=table.integer("max_body_bytes", 1_048_576, low=1024, high=_MAX_BODY_LIMIT),
        public_url=_public_url(table),
    )


def _public_url(table: _Table) -> str | None:
    """`[server] public_url`: an absolute http(s) base URL, without query or fragment."""
    url = table.url("public_url", ("http", "https"))
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.query or parts.fragment:
        table.problem("public_url", "expected a base URL without ?query or #fragment")
        return None
    return url.rstrip("/")


#: The URL schemes that mean PostgreSQL (libpq accepts both).
POSTGRES_SCHEMES: Final = frozenset({"postgresql", "postgres"})


def _storage(table: _Table, base_dir: Path, environ: Mapping[str, str]) -> StorageConfig:
    path = table.path_value("path", base_dir)
    url = _database_url(table)
    if url is not None and table.has("path"):
        table.problem("", "set path (an SQLite file) or url (PostgreSQL), not both")
    password = _database_password(table, url, environ)
    # "0" might mean "keep nothing" or "keep everything"; neither guess is safe, so a
    # zero, unit or not, gets the same answer as any other too short a time.
    raw = table.data.get("retention")
    zero = (type(raw) is int and raw == 0) or (isinstance(raw, str) and raw.strip() == "0")
    retention = timedelta(0) if zero else table.duration("retention", DEFAULT_RETENTION)
    if retention < MIN_RETENTION:
        table.problem(
            "retention",
            f"must be at least {format_duration(MIN_RETENTION)}, got {_show(raw)}"
            " (a sender repeating a webhook after its event was pruned would be notified"
            ' twice); to keep history for good, give a long time such as "3650d"',
        )
        retention = DEFAULT_RETENTION
    lease = table.duration("lease", DEFAULT_LEASE)
    if lease < MIN_LEASE:
        table.problem("lease", f"must be at least {format_duration(MIN_LEASE)}")
        lease = DEFAULT_LEASE
    return StorageConfig(
        path=path if path is not None else base_dir / DEFAULT_DATABASE,
        retention=retention,
        url=url,
        password=password,
        lease=lease,
    )


def _database_url(table: _Table) -> str | None:
    """`url = "postgresql://user@host:5432/db"`; its problems never echo it (a password
    may be in it)."""
    url = table.opt_text("url")
    if url is None:
        return None
    url = url.strip()
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (a port that is not a number raises here)
    except ValueError:
        table.problem("url", "is not a URL; write it like postgresql://user@host:5432/dbname")
        return None
    if parts.scheme.lower() not in POSTGRES_SCHEMES:
        shown = f"{parts.scheme}://" if parts.scheme else "none"
        table.problem(
            "url",
            f"must be a postgresql:// URL (scheme {shown}); an SQLite file is `path`",
        )
        return None
    if not parts.path.strip("/"):
        table.problem("url", "names no database: end it with /dbname")
        return None
    return url


def _database_password(table: _Table, url: str | None, environ: Mapping[str, str]) -> str | None:
    """The password `password_env` names, for a URL that carries none."""
    if not table.has("password_env"):
        return None
    if url is None:
        table.problem("password_env", "is for url (PostgreSQL); an SQLite file has no password")
        return None
    if urlsplit(url).password is not None:
        table.problem("", "the url has a password and password_env names one: keep one")
        return None
    env_name = _env_name(table, "password_env")
    if env_name is None:
        return None
    value = environ.get(env_name)
    if not value:
        table.problem("password_env", f"environment variable {env_name} is not set")
        return None
    return value


def _templates(table: _Table, base_dir: Path) -> TemplatesConfig:
    return TemplatesConfig(dir=_template_dir(table, "dir", base_dir))


def _template_dir(table: _Table, key: str, base_dir: Path) -> Path | None:
    """A template folder (relative to bot.toml's); one that is not there is a problem."""
    path = table.path_value(key, base_dir)
    if path is None:
        return None
    if not path.exists():
        table.problem(key, f"directory {path} does not exist")
    elif not path.is_dir():
        table.problem(key, f"{path} is not a directory")
    return path


def _behaviour(table: _Table) -> BehaviourConfig:
    default = BehaviourConfig()
    return BehaviourConfig(
        on_change=table.choice("on_change", default.on_change, ON_CHANGE_CHOICES),
        on_end=table.choice("on_end", default.on_end, ON_END_CHOICES),
        end_grace=table.duration("end_grace", default.end_grace),
        rejoin_window=table.duration("rejoin_window", default.rejoin_window),
        change_cooldown=table.duration("change_cooldown", default.change_cooldown),
        quiet_hours=_quiet_hours(table) or (),
        timezone=_timezone(table) or default.timezone,
        locale=_locale(table) or default.locale,
    )


def _quiet_hours(table: _Table) -> tuple[QuietWindow, ...] | None:
    """`quiet_hours = ["22:00-08:00", "sat,sun 00:00-10:00"]`; None when absent."""
    items = table.items("quiet_hours")
    if items is None:
        return None
    windows: list[QuietWindow] = []
    for path, value in items:
        if not isinstance(value, str):
            table.problems.append(f"{path}: expected a string, got {_type_name(value)}")
            continue
        try:
            windows.append(parse_window(value))
        except WindowError as exc:
            table.problems.append(f"{path}: {exc}")
    return tuple(windows)


def _locale(table: _Table) -> str | None:
    """`locale = "pt-BR"`: one of the built-in languages (bot.i18n.LOCALES)."""
    name = table.opt_text("locale")
    if name is None:
        return None
    try:
        return i18n.parse_locale(name)
    except ValueError as exc:
        table.problem("locale", str(exc))
        return None


def _timezone(table: _Table) -> tzinfo | None:
    name = table.opt_text("timezone")
    if name is None:
        return None
    try:
        return load_zone(name)
    except WindowError as exc:
        table.problem("timezone", str(exc))
        return None


def _title_pattern(table: _Table, key: str) -> TitlePattern | None:
    source = table.opt_text(key)
    if source is None:
        return None
    if not source:
        table.problem(key, "must not be empty (leave it out to match every title)")
        return None
    try:
        return TitlePattern(source)
    except PatternError as exc:
        table.problem(key, f"is not a pattern the bot can match in linear time: {exc}")
        return None


def _category_globs(table: _Table, key: str) -> tuple[str, ...]:
    globs = table.strings(key)
    if globs == []:
        table.problem(key, "must not be empty (leave it out for every category)")
    return _unique(globs or ())


def _logging(table: _Table) -> LoggingConfig:
    default = LoggingConfig()
    return LoggingConfig(
        level=table.choice("level", default.level, LOG_LEVELS),
        format=table.choice("format", default.format, LOG_FORMATS),
    )


def _metrics(table: _Table, environ: Mapping[str, str]) -> MetricsConfig:
    enabled = table.flag("enabled", True)
    if table.has("token") and table.has("token_env"):
        table.problem("", "set token or token_env, not both")
        return MetricsConfig(enabled=enabled)
    token: str | None = None
    if table.has("token_env"):
        env_name = _env_name(table, "token_env")
        if env_name is not None:
            # Unlike a chat token, a missing metrics token must not quietly open /metrics.
            token = environ.get(env_name, "").strip() or None
            if token is None:
                table.problem("token_env", f"environment variable {env_name} is not set")
    elif table.has("token"):
        token = (table.opt_text("token") or "").strip() or None
        if token is None:
            table.problem("token", "must not be empty")
        elif _literal_variable(table, "token", token, "token_env"):
            token = None
    return MetricsConfig(enabled=enabled, token=token)


def _platform(root: _Table, spec: PlatformSpec, environ: Mapping[str, str]) -> PlatformConfig:
    """A chat platform's section, read by its package; its default when bot.toml has none."""
    present = root.has(spec.name)
    table = root.section(spec.name, spec.config_keys)
    config = spec.read_config(table, environ)
    return config if present else spec.default_config


def _sources(
    tables: list[_Table], environ: Mapping[str, str], specs: Mapping[str, SourceSpec]
) -> tuple[SourceConfig, ...]:
    # Which kinds take each kind-specific key, to say so when another kind's entry has it.
    takers: dict[str, list[str]] = {}
    for taker, taker_spec in specs.items():
        for key in taker_spec.option_keys:
            takers.setdefault(key, []).append(taker)
    out: list[SourceConfig] = []
    first_seen: dict[str, str] = {}
    for table in tables:
        name = table.opt_text("name", required=True)
        if name is not None and not _SOURCE_NAME.fullmatch(name):
            table.problem(
                "name", f"{_show(name)} must be 1-64 letters, digits, '_' or '-' (a URL segment)"
            )
        elif name is not None and name in first_seen:
            table.problem("name", f"duplicate source name {name!r} (also {first_seen[name]})")
        elif name is not None:
            first_seen[name] = table.path
        kind = table.choice("kind", "", specs.keys(), required=True)
        spec = specs.get(kind)

        own_keys = spec.option_keys if spec is not None else ()
        others = {
            key: f"only {' or '.join(sorted(kinds))} sources take it"
            for key, kinds in takers.items()
            if key not in own_keys
        }
        if spec is not None:
            common = _SOURCE_KEYS if spec.credential.uses_secret else _SOURCE_KEYS[:2]
            if not spec.credential.uses_secret:
                why = f"{spec.title} signs with its own key pair; there is no shared secret"
                others = {**others, "secret": why, "secret_env": why}
            table.keys = frozenset((*common, *own_keys))
            table.check_unknown(also_known=others)
        else:
            # With a bad or missing kind we cannot tell which extra keys are valid; the
            # kind's own problem is enough, so accept them all rather than pile on.
            table.keys = frozenset((*_SOURCE_KEYS, *others))
            table.check_unknown()

        table.environ = environ
        secret = (
            _secret(table, environ, "secret", required=True)
            if spec is None or spec.credential.uses_secret
            else ""
        )
        if secret is not None and spec is not None and spec.secret_rule is not None:
            broken = spec.secret_rule(secret)
            if broken is not None:
                # Never the secret itself: only what is wrong with it.
                table.problem("secret_env" if table.has("secret_env") else "secret", broken)
                secret = None
        options = spec.read_options(table) if spec is not None else {}
        if name is not None and spec is not None and secret is not None:
            out.append(SourceConfig(name=name, kind=kind, secret=secret, options=options))
    return tuple(out)


def _secret(table: _Table, environ: Mapping[str, str], key: str, *, required: bool) -> str | None:
    """A secret given inline as `key` or through the variable `<key>_env` names, which
    must be set (a source's webhook secret, Twitch's client secret)."""
    env_key = f"{key}_env"
    if table.has(key) and table.has(env_key):
        table.problem("", f"set {key} or {env_key}, not both")
        return None
    if table.has(env_key):
        env_name = _env_name(table, env_key)
        if env_name is None:
            return None
        if env_name not in environ:
            table.problem(env_key, f"environment variable {env_name} is not set")
            return None
        from_env = environ[env_name]
        if not from_env.strip():
            table.problem(env_key, f"environment variable {env_name} is empty")
            return None
        return from_env
    inline = table.opt_text(key)
    if not table.has(key):
        if required:
            table.problem(key, f"is required (set {key} or {env_key})")
    elif inline is not None and not inline.strip():
        table.problem(key, "must not be empty")
        return None
    elif inline is not None and _literal_variable(table, key, inline, env_key):
        return None
    return inline


def _route(
    table: _Table, known: frozenset[str], specs: Mapping[str, SourceSpec], base_dir: Path
) -> Route:
    table.check_unknown()
    match: list[str] = []
    raw_match = table.data.get("match")
    match_items: list[tuple[str, Any]] = []
    if not table.has("match"):
        table.problem("match", "is required")
    elif isinstance(raw_match, str):
        # A single glob is common enough to allow without list brackets.
        match_items = [(table.at("match"), raw_match)]
    elif isinstance(raw_match, list):
        if not raw_match:
            table.problem("match", "must not be empty")
        match_items = table.items("match") or []
    else:
        table.problem(
            "match", f"expected a glob string or a list of them, got {_type_name(raw_match)}"
        )
    for path, glob in match_items:
        if not isinstance(glob, str):
            table.problems.append(f"{path}: expected a glob string, got {_type_name(glob)}")
        elif not glob:
            table.problems.append(f"{path}: must not be empty")
        elif (why := _not_a_streamer_pattern(glob)) is not None:
            table.problems.append(f"{path}: {why}; {_key_examples(specs)}")
        else:
            match.append(glob)
            if (hint := _channel_hint(glob, specs)) is not None:
                table.warnings.append(f"{path}: {hint}")

    events: set[str] = set()
    event_items = table.items("events")
    if event_items == []:
        table.problem("events", "must not be empty (leave it out for the default kinds)")
    for path, kind in event_items or []:
        if not isinstance(kind, str):
            table.problems.append(f"{path}: expected a string, got {_type_name(kind)}")
        elif kind not in known:
            close = difflib.get_close_matches(kind, known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else "known: " + ", ".join(sorted(known))
            table.problems.append(f"{path}: unknown event kind {_show(kind)}; {hint}")
        else:
            events.add(kind)

    targets: list[Target] = []
    # The route keys that name chats, each with its sink and how an entry is checked.
    # Each platform names its chats under a key of its own, by its own address grammar.
    for sink, spec in PLATFORMS.items():
        key, parse = spec.target_key, spec.parse_target
        addresses = _unique(
            parse(value, path, table.problems) for path, value in table.items(key) or []
        )
        targets.extend(Target(sink, str(address)) for address in addresses)
    return Route(
        patterns=_unique(match),
        events=frozenset(events) if event_items else frozenset(NOTIFIED_KINDS),
        targets=tuple(targets),
        mention_roles=_unique(
            parse_snowflake(value, path, table.problems)
            for path, value in table.items("mention_roles") or []
        ),
        on_change=table.choice("on_change", "", ON_CHANGE_CHOICES) or None,
        on_end=table.choice("on_end", "", ON_END_CHOICES) or None,
        end_grace=table.duration("end_grace", timedelta(0)) if table.has("end_grace") else None,
        categories=_category_globs(table, "categories"),
        exclude_categories=_category_globs(table, "exclude_categories"),
        title_match=_title_pattern(table, "title_match"),
        title_exclude=_title_pattern(table, "title_exclude"),
        silent=table.flag("silent", False),
        quiet_hours=_quiet_hours(table),
        timezone=_timezone(table),
        mention_everyone=table.flag("mention_everyone", False),
        crosspost=table.flag("crosspost", False),
        thread=table.choice("thread", "", THREAD_CHOICES) or None,
        templates=_template_dir(table, "templates", base_dir),
        locale=_locale(table),
    )


_GLOB_CHARS: Final = frozenset("*?[")


def _not_a_streamer_pattern(glob: str) -> str | None:
    """Why `glob` can never match a streamer key (always `<platform>/<channel>`), if so."""
    if "://" in glob or glob.lower().startswith("www."):
        return f"{_show(glob)} is a URL, not a streamer key"
    if "/" not in glob and not _GLOB_CHARS & set(glob):
        return f"{_show(glob)} has no platform part, so it matches no streamer"
    return None


def _channel_hint(glob: str, specs: Mapping[str, SourceSpec]) -> str | None:
    """A warning when `glob` names one channel of a source kind whose keys carry an id
    (SourceSpec.channel_shape) and the channel does not look like one."""
    platform, _, channel = glob.partition("/")
    if _GLOB_CHARS & set(channel) or not any(spec.channel_shape for spec in specs.values()):
        return None
    from bot.samples import streamer_keys  # noqa: PLC0415 - samples imports this module

    for kind, keys in streamer_keys(specs).items():
        shape = specs[kind].channel_shape
        if shape is None or not any(k.partition("/")[0] == platform.casefold() for k in keys):
            continue
        regex, what = shape
        if not re.fullmatch(regex, channel, re.IGNORECASE):
            return (
                f"{_show(glob)} matches no {kind} stream: the part after {platform}/ is"
                f" {what}, as in {keys[0]}"
            )
    return None


def _key_examples(specs: Mapping[str, SourceSpec]) -> str:
    """What streamer keys look like, from each source kind's sample payloads."""
    from bot.samples import streamer_keys  # noqa: PLC0415 - samples imports this module

    shown = [f"{', '.join(keys)} ({kind})" for kind, keys in streamer_keys(specs).items() if keys]
    examples = "; ".join(shown) if shown else "twitch/quinn"
    return f'keys are "<platform>/<channel>", such as {examples}; "twitch/*" matches a platform'


def _env_name(table: _Table, key: str) -> str | None:
    """The variable a `*_env` key names. Any other value is never shown: the usual
    mistake is pasting the secret itself here."""
    name = table.opt_text(key)
    if name is None or _ENV_NAME.fullmatch(name):
        return name
    inline = key.removesuffix("_env")
    stripped = name.strip()
    if stripped.startswith("$") and _ENV_NAME.fullmatch(stripped[1:].strip("{}")):
        variable = stripped[1:].strip("{}")
        table.problem(key, f"write the variable's name without the $: {key} = {variable!r}")
    else:
        table.problem(
            key,
            f"must name an environment variable (letters, digits and _); the value looks"
            f" like a {_secret_word(inline)} (not shown): set {inline} instead, or put it in"
            f" the environment and name the variable here",
        )
    return None


def _secret_word(key: str) -> str:
    return "token" if key == "token" else "secret"


def _literal_variable(table: _Table, key: str, value: str, env_key: str) -> bool:
    """True (and a problem recorded) when `key`'s value is a shell variable written
    literally, like token = "$DISCORD_TOKEN": bot.toml expands no variables."""
    stripped = value.strip()
    variable = stripped[1:].strip("{}") if stripped.startswith("$") else ""
    if not variable or not _ENV_NAME.fullmatch(variable):
        return False
    table.problem(
        key,
        f"{_show(stripped)} is a shell variable written literally (bot.toml expands no"
        f" variables): use {env_key} = {variable!r} instead",
    )
    return True


def _unique(values: Iterable[_T | None]) -> tuple[_T, ...]:
    """The values that were valid, duplicates dropped, first occurrence order kept."""
    return tuple(dict.fromkeys(value for value in values if value is not None))


def _is_a(value: Any, types: tuple[type, ...]) -> bool:
    # TOML keeps booleans and integers apart even though Python's bool is an int.
    if isinstance(value, bool):
        return bool in types
    return isinstance(value, types)
