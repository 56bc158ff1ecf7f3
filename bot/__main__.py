"""Command line: `python -m bot init|run|check|render|deliveries|test-send`. Signal handling
lives here."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import difflib
import errno
import importlib.metadata
import inspect
import json
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from bot import events as ev
from bot import i18n
from bot.commands import Commands
from bot.config import (
    LOG_LEVELS,
    POSTGRES_SCHEMES,
    Config,
    Route,
    SourceConfig,
    StorageConfig,
    Target,
    read_config,
)
from bot.errors import (
    ConfigError,
    DatabaseTooNew,
    InstanceLocked,
    SchemaError,
    StoreUnavailable,
    TemplateProblem,
    WebhookError,
)
from bot.events import Event, utcnow
from bot.init import InitOptions, run_init
from bot.instance import InstanceLock
from bot.logs import setup_logging
from bot.pipeline.routing import moved_route_targets
from bot.preflight import CONSOLE_TARGET, TargetStatus, check_targets, configured_targets
from bot.registry import KNOWN_KINDS, PLATFORMS, SOURCES, message_formats
from bot.render import Renderer
from bot.samples import sample_event, sample_events
from bot.sources.base import Ignored, WebhookRequest
from bot.store import DeliveryInfo, Store, Subscription, create_store
from bot.testcard import (
    TEST_CARD_SECONDS,
    TEST_EVENT_PREFIX,
    Sent,
    card_event,
    delete_card,
    latest_live_start,
    post_card,
)

if TYPE_CHECKING:
    from bot.store.postgres import PostgresStore
    from bot.store.transfer import Copied

log = logging.getLogger("bot")

DEFAULT_CONFIG = Path("bot.toml")
#: How long `check --online` and `test-send` wait for a platform to connect by default
#: (bot.app.TOOL_CONNECT_TIMEOUT_SECONDS; not imported, so `check` loads no client).
TOOL_CONNECT_TIMEOUT = 30.0


#: Exit codes: 1 for a runtime failure, 2 for a mistake in the config or the command line
#: (argparse's own code for a usage error).
EXIT_RUNTIME = 1
EXIT_CONFIG = 2


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments and run one command; returns the process exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    # Until a config is loaded (then its [logging] applies, under the flag).
    setup_logging(args.log_level or "info", "text")
    command: int = args.func(args)
    return command


def _add_database_commands(commands: Any) -> None:
    """`deliveries`, and `store migrate`: the database moved to PostgreSQL."""
    deliveries = commands.add_parser(
        "deliveries", help="list pending and failed deliveries with their last error"
    )
    deliveries.add_argument("-c", "--config", type=Path, default=DEFAULT_CONFIG)
    deliveries.add_argument(
        "--retry",
        action="store_true",
        help="re-queue every failed delivery (a running bot sends them within 30s)",
    )
    deliveries.set_defaults(func=_cmd_deliveries)
    store = commands.add_parser("store", help="move the database to PostgreSQL")
    store_commands = store.add_subparsers(dest="store_command", metavar="COMMAND", required=True)
    migrate = store_commands.add_parser(
        "migrate",
        help="copy the SQLite database into an empty PostgreSQL database",
        description="Copy everything the SQLite database of the config holds (events, live"
        " state, mutes, subscriptions, pending and sent deliveries, so cards stay editable)"
        " into an empty PostgreSQL database, in one transaction. Stop the bot first; then"
        " point [storage] url at the new database.",
    )
    migrate.add_argument("-c", "--config", type=Path, default=DEFAULT_CONFIG)
    migrate.add_argument(
        "--to", required=True, metavar="URL", help="postgresql://user@host:5432/dbname"
    )
    migrate.add_argument(
        "--password-env",
        metavar="VAR",
        help="the environment variable holding the PostgreSQL password (else the URL's)",
    )
    migrate.set_defaults(func=_cmd_store_migrate)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bot",
        description="Livestream notifications for "
        + " and ".join(spec.title for spec in PLATFORMS.values())
        + ".",
    )
    parser.add_argument("--version", action="version", version=f"streambot {_version()}")
    levels = sorted(LOG_LEVELS, key=lambda name: logging.getLevelName(name.upper()))
    level_help = "overrides the config's [logging] level (default: info)"
    parser.add_argument("--log-level", choices=levels, help=level_help)
    # Also after the command (`python -m bot run --log-level debug`); SUPPRESS keeps a
    # value given before it when none comes after.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--log-level", choices=levels, default=argparse.SUPPRESS, help=level_help)
    commands = _Subcommands(parser.add_subparsers(dest="command", required=True), common)

    init = commands.add_parser(
        "init",
        help="write a new bot.toml with fresh webhook secrets",
        description="Write a new config. In a terminal, with none of the answer flags, it"
        " asks; otherwise the flags and defaults decide (one onliverec source, no chats,"
        " 127.0.0.1:8080).",
    )
    init.add_argument("-c", "--config", type=Path, default=DEFAULT_CONFIG)
    init.add_argument(
        "--source",
        action="append",
        metavar="KIND",
        help="onliverec, livepeer or fastpix; repeat it or give a comma list",
    )
    for name, spec in PLATFORMS.items():
        init.add_argument(
            f"--{name}", action=argparse.BooleanOptionalAction, help=f"post to {spec.title}"
        )
    init.add_argument(
        "--public-url",
        metavar="URL",
        help="base URL the providers reach the bot at (default: http://<host>:<port>)",
    )
    init.add_argument("--host", help="address to listen on (0.0.0.0 in a container)")
    init.add_argument("--port", type=int)
    init.add_argument("--force", action="store_true", help="replace an existing file")
    init.set_defaults(func=_cmd_init)

    run = commands.add_parser("run", help="run the webhook listener and every enabled sink")
    run.add_argument("-c", "--config", type=Path, default=DEFAULT_CONFIG)
    run.set_defaults(func=_cmd_run)

    check = commands.add_parser(
        "check",
        help="validate the config file and every template",
        description="Validate the config and every template. With --online, also connect to"
        " each chat platform and check that every configured channel or chat can be posted"
        " to (nothing is posted; a running bot is not disturbed).",
    )
    check.add_argument("-c", "--config", type=Path, default=DEFAULT_CONFIG)
    check.add_argument(
        "--online",
        action="store_true",
        help="connect to the platforms and check every target's permissions",
    )
    check.add_argument("--strict", action="store_true", help="fail on warnings too (exit code 2)")
    check.add_argument(
        "--timeout",
        type=_seconds,
        default=TOOL_CONNECT_TIMEOUT,
        metavar="SECONDS",
        help=f"how long a platform may take to connect (default: {TOOL_CONNECT_TIMEOUT:.0f})",
    )
    check.set_defaults(func=_cmd_check)

    render = commands.add_parser("render", help="preview a notification without sending it")
    render.add_argument("kind", nargs="?", help=f"event kind: {', '.join(sorted(KNOWN_KINDS))}")
    render.add_argument("--sink", choices=list(message_formats()), default="console")
    render.add_argument(
        "--event",
        type=Path,
        metavar="FILE|last",
        help="a webhook payload (JSON file) to render instead of samples; `last` renders the"
        " last real event of that kind from the database",
    )
    render.add_argument(
        "--source-kind",
        choices=sorted(SOURCES),
        default="onliverec",
        help="which provider the --event payload comes from (default: onliverec)",
    )
    render.add_argument(
        "--source",
        metavar="NAME",
        help="parse the --event payload as the [[sources]] entry of this name in the config"
        " does (its kind and options: a custom webhook's field map)",
    )
    render.add_argument(
        "-c",
        "--config",
        type=Path,
        help="use this config's [templates] dir for overrides (default: ./bot.toml if there"
        " is one)",
    )
    render.add_argument(
        "--mention-role",
        type=int,
        action="append",
        default=[],
        help="role id a live_start would ping, where the sink pings roles (repeatable)",
    )
    render.add_argument(
        "--locale",
        metavar="LANG",
        help=f"write it in this built-in language ({', '.join(i18n.LOCALES)}; default: the"
        " config's [behaviour] locale, else en)",
    )
    render.set_defaults(func=_cmd_render)

    _add_database_commands(commands)

    test_send = commands.add_parser(
        "test-send",
        help="post a test card that pings nobody to the targets, and delete it again",
        description="Post a sample card (the last real live_start the database holds, else"
        " the built-in sample) to every configured target, one route's or one chat's, with"
        " every mention suppressed; delete it again after a minute. Talks to the platforms"
        " directly, so it works whether or not the bot runs, and writes nothing to the"
        " database.",
    )
    test_send.add_argument("-c", "--config", type=Path, default=DEFAULT_CONFIG)
    which = test_send.add_mutually_exclusive_group()
    which.add_argument(
        "--route", type=int, metavar="N", help="only the targets of the N-th [[routes]] (from 1)"
    )
    which.add_argument(
        "--chat",
        metavar="ID",
        help="only this channel or chat id (as in discord_channels / telegram_chats)",
    )
    keep = test_send.add_mutually_exclusive_group()
    keep.add_argument("--keep", action="store_true", help="leave the test cards up")
    keep.add_argument(
        "--delete-after",
        type=_seconds,
        default=TEST_CARD_SECONDS,
        metavar="SECONDS",
        help=f"delete the cards after this long (default: {TEST_CARD_SECONDS:.0f})",
    )
    test_send.add_argument(
        "--timeout",
        type=_seconds,
        default=TOOL_CONNECT_TIMEOUT,
        metavar="SECONDS",
        help=f"how long a platform may take to connect (default: {TOOL_CONNECT_TIMEOUT:.0f})",
    )
    test_send.set_defaults(func=_cmd_test_send)
    return parser


class _Subcommands:
    """add_parser with the options every command takes (`--log-level`)."""

    def __init__(self, actions: Any, common: argparse.ArgumentParser) -> None:
        self._actions = actions
        self._common = common

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = self._actions.add_parser(
            name, parents=[self._common], **kwargs
        )
        return parser


def _version() -> str:
    try:
        return importlib.metadata.version("streambot")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout, not installed
        return "unknown (not installed)"


def _seconds(text: str) -> float:
    """A non-negative number of seconds, for argparse."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds")
    return value


def _load(path: Path, log_level: str | None) -> Config | None:
    """The config, with its [logging] applied (a --log-level flag wins); None if invalid."""
    try:
        config = read_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return None
    setup_logging(log_level or config.logging.level, config.logging.format)
    return config


def _cmd_init(args: argparse.Namespace) -> int:
    options = InitOptions(
        config=args.config,
        sources=args.source,
        **{name: getattr(args, name) for name in PLATFORMS},
        public_url=args.public_url,
        host=args.host,
        port=args.port,
        force=args.force,
    )
    # Never read a pipe or /dev/null for answers: without a terminal, flags decide.
    interactive = sys.stdin is not None and sys.stdin.isatty()
    return run_init(options, ask=input if interactive else None)


def _cmd_run(args: argparse.Namespace) -> int:
    config = _load(args.config, args.log_level)
    if config is None:
        return EXIT_CONFIG
    # Every mistake a look at the files can find, before anything connects: a broken
    # template override would otherwise show only at the first notification.
    found = _look_at_the_files(config, every_language=False)
    if found is None:
        return EXIT_CONFIG
    for warning in found:
        log.warning("%s", warning)
    from bot.app import run  # noqa: PLC0415 - `check` and `render` skip the clients

    async def serve() -> None:
        stop = asyncio.Event()
        reload = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        # SIGHUP's default action ends the process with no drain; here it reloads.
        loop.add_signal_handler(signal.SIGHUP, reload.set)
        await run(
            config,
            stop,
            reload=reload,
            load_config=lambda: read_config(args.config),
            log_level=args.log_level,
        )

    try:
        asyncio.run(serve())
    except (InstanceLocked, DatabaseTooNew) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    except StoreUnavailable as exc:
        print(f"error: cannot use the database {config.storage.location}: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    except OSError as exc:
        print(f"error: {_os_error(exc, config)}", file=sys.stderr)
        return EXIT_RUNTIME
    return 0


def _look_at_the_files(config: Config, *, every_language: bool = True) -> list[str] | None:
    """What `run` and `check` find before connecting anything: None after printing each
    error (a broken template, an unusable [storage] path), else the warnings (config
    warnings and template files nothing uses). `check` renders the templates in every
    built-in language; `run` (`every_language=False`) in those the config uses."""
    renderer = Renderer(
        formats=message_formats(),
        user_dir=config.templates.dir,
        route_dirs=config.route_template_dirs,
        locale=config.behaviour.locale,
    )
    languages = i18n.LOCALES if every_language else config.locales_in_use
    errors = [f"template {problem}" for problem in renderer.check(sample_events(), languages)]
    storage = _storage_problem(config.storage)
    if storage is not None:
        errors.append(storage)
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    if errors:
        return None
    unused = [f"templates: {problem}" for problem in renderer.unused_overrides(KNOWN_KINDS)]
    return [*config.warnings, *unused]


def _database_exists(config: Config) -> bool:
    """Whether there is a database to read: the SQLite file, or (a server the tools ask,
    not look at) any PostgreSQL URL."""
    return config.storage.url is not None or Path(config.storage.path).exists()


def _storage_problem(storage: StorageConfig) -> str | None:
    """Why the database file cannot be where [storage] path says, seen before opening
    (PostgreSQL: the server says so when the bot connects)."""
    path = Path(storage.path)
    if str(path) == ":memory:" or storage.url is not None:
        return None
    if path.is_dir():
        return (
            f"storage.path: {path} is a folder; name a file in it, such as {path / 'bot.sqlite3'}"
        )
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent  # missing folders are made at start: look at the first one
    if not folder.is_dir():
        return f"storage.path: {folder} is not a folder, so {path} cannot be made"
    if not path.exists() and not os.access(folder, os.W_OK | os.X_OK):
        return (
            f"storage.path: cannot create {path}: {folder} is not writable by this user"
            " (give it to the bot's user, or choose another path)"
        )
    return None


def _os_error(exc: OSError, config: Config) -> str:
    """An OSError from start-up in words that say what to change."""
    where = f"{config.server.host}:{config.server.port}"
    if exc.errno == errno.EADDRINUSE:
        return (
            f"cannot listen on {where}: the address is in use (another program, or another"
            " bot, listens there); stop it, or set another [server] port"
        )
    if exc.errno == errno.EACCES and config.server.port < 1024:
        return (
            f"cannot listen on {where}: ports below 1024 need privileges; use a port such"
            " as 8080 behind a proxy"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {where}: no interface of this machine has that address"
    name = f" {exc.filename}" if exc.filename else ""
    return f"{exc.strerror or exc}{name}"


def _cmd_check(args: argparse.Namespace) -> int:
    config = _load(args.config, args.log_level)
    if config is None:
        return EXIT_CONFIG
    found = _look_at_the_files(config)
    if found is None:
        return EXIT_CONFIG
    warnings = [*found, *_moved_route_warnings(config)]
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    sinks = ["console"] if config.console.enabled else []
    sinks += [name for name, section in config.platforms.items() if section.enabled]
    sources = ", ".join(f"{s.name} ({s.kind})" for s in config.sources) or "none"
    verdict = "OK" if not warnings else f"OK with {len(warnings)} warning(s)"
    print(f"{args.config}: {verdict}")
    print(f"  sources: {sources}")
    print(f"  routes: {len(config.routes)}")
    for number, route in enumerate(config.routes, start=1):
        print(f"    {number}. {', '.join(route.patterns)} -> {_destinations(config, route)}")
    print(f"  sinks: {', '.join(sinks) or 'none'}")
    print(f"  templates: {config.templates.dir or 'built-in'}")
    if warnings and args.strict:
        print("--strict: failing on the warnings above", file=sys.stderr)
        return EXIT_CONFIG
    if args.online:
        database = _database_exists(config)
        try:
            return asyncio.run(
                _check_online(config, connect_within=args.timeout, database=database)
            )
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
    return 0


def _destinations(config: Config, route: Route) -> str:
    """Where a route posts: "console; discord 123, 456; telegram: off (no token)"."""
    parts = ["console"] if config.console.enabled else []
    for name, spec in PLATFORMS.items():
        targets = route.targets_on(name)
        if not targets:
            continue
        section = config.platforms[name]
        listed = ", ".join(targets)
        if section.enabled:
            parts.append(f"{name} {listed}")
        else:
            parts.append(f"{spec.title} {listed}: NOT POSTED ({section.disabled_reason})")
    return "; ".join(parts) or "nowhere (no console, no chats): events are only recorded"


async def _check_online(config: Config, *, connect_within: float, database: bool) -> int:
    """Connect to every enabled platform, preflight every target, print the table."""
    from bot.app import connected_sinks  # noqa: PLC0415 - only --online loads the clients

    rows: list[TargetStatus] = []
    async with _tool_store(config, exists=database) as (store, real):
        subscriptions = await store.subscriptions() if real else []
        commands = Commands(store=store, routes=config.routes)
        enabled = [name for name, section in config.platforms.items() if section.enabled]
        print(
            f"connecting to {', '.join(enabled) or 'no chat platform'}"
            f" (up to {connect_within:.0f}s)...",
            flush=True,
        )
        async with connected_sinks(config, commands, connect_within=connect_within) as sinks:
            targets = configured_targets(sinks, config.routes, subscriptions)
            rows = await check_targets(sinks, targets, config.routes)
    for name, section in config.platforms.items():
        unposted = [t for route in config.routes for t in route.targets_on(name)]
        if not section.enabled and unposted:
            reason = f"not posting to {name}: {section.disabled_reason}"
            rows += [TargetStatus(name, t, "off", reason, False) for t in dict.fromkeys(unposted)]
    if not rows:
        print("no targets to check (no sink is enabled)")
        return 0
    print(
        _columns(
            ("PLATFORM", "TARGET", "STATUS", "DETAIL"),
            [(r.sink, r.target, r.status, r.detail) for r in rows],
        )
    )
    failing = sum(row.failing for row in rows)
    if failing:
        print(f"{failing} target(s) cannot be posted to as configured, or were not checked")
        return 1
    return 0


@contextlib.asynccontextmanager
async def _tool_store(config: Config, *, exists: bool) -> AsyncIterator[tuple[Store, bool]]:
    """The bot's database when it `exists`, opened as a tool (never created), else an
    empty one in memory; and whether it is the real one."""
    store: Store | None = None
    if exists:
        store = create_store(config.storage, tool=True)
        try:
            await store.open()
        except StoreUnavailable as exc:
            print(
                f"warning: cannot read the database {config.storage.location} ({exc});"
                " going by bot.toml alone",
                file=sys.stderr,
            )
            store = None
    real = store is not None
    if store is None:
        store = create_store(StorageConfig(path=Path(":memory:")), tool=True)
        # Its migrations' log lines would only puzzle: this database is gone at exit.
        migrations = logging.getLogger("bot.store")
        level = migrations.level
        migrations.setLevel(logging.WARNING)
        try:
            await store.open()
        finally:
            migrations.setLevel(level)
    try:
        yield store, real
    finally:
        await store.close()


def _columns(header: tuple[str, ...], lines: Sequence[tuple[str, ...]]) -> str:
    """Lines as left-aligned columns; the last one is not padded."""
    table = [header, *lines]
    widths = [max(len(line[i]) for line in table) for i in range(len(header) - 1)]
    return "\n".join(
        (
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=False))
            + "  "
            + line[-1]
        ).rstrip()
        for line in table
    )


def _cmd_test_send(args: argparse.Namespace) -> int:
    config = _load(args.config, args.log_level)
    if config is None:
        return EXIT_CONFIG
    if args.route is not None and not 1 <= args.route <= len(config.routes):
        print(
            f"error: --route {args.route}: bot.toml has {len(config.routes)} [[routes]]"
            f" (number them from 1)",
            file=sys.stderr,
        )
        return 2
    delete_after = None if args.keep else args.delete_after
    try:
        return asyncio.run(
            _test_send(
                config,
                route=args.route,
                chat=args.chat,
                delete_after=delete_after,
                connect_within=args.timeout,
                database=_database_exists(config),
            )
        )
    except KeyboardInterrupt:
        # Before the wait for the deletion (that wait takes Ctrl-C as "delete now").
        print("interrupted; a card already posted stays up", file=sys.stderr)
        return 130


def _test_targets(
    config: Config, route: int | None, chat: str | None, subscriptions: Sequence[Subscription]
) -> list[Target]:
    """The targets `test-send` posts to: a route's, a chat's (a forum topic counts as its
    chat; /subscribe'd chats too), or every route's; the console when it is on."""
    routes = [config.routes[route - 1]] if route is not None else list(config.routes)
    found = [target for r in routes for target in r.targets]
    if chat is not None:
        found += [Target(sub.sink, sub.target) for sub in subscriptions]
        found = [t for t in found if chat in (t.target, t.target.partition("/")[0])]
    elif config.console.enabled and routes:
        found.insert(0, Target("console", CONSOLE_TARGET))
    return list(dict.fromkeys(found))


async def _test_send(
    config: Config,
    *,
    route: int | None,
    chat: str | None,
    delete_after: float | None,
    connect_within: float,
    database: bool,
) -> int:
    """Post the test card to each target, wait, delete it; one line per target."""
    from bot.app import connected_sinks  # noqa: PLC0415 - only here the clients load

    async with _tool_store(config, exists=database) as (store, real):
        subscriptions = await store.subscriptions() if real else []
        targets = _test_targets(config, route, chat, subscriptions)
        if not targets:
            where = f"--chat {chat}" if chat is not None else "the config"
            print(
                f"error: {where} names no target; add discord_channels or telegram_chats"
                " to a [[routes]] entry",
                file=sys.stderr,
            )
            return 1
        patterns = config.routes[route - 1].patterns if route is not None else ()
        real_event = await latest_live_start(store, patterns) if real else None
        event = card_event(real_event, utcnow())
        what = f"the last live_start of {event.streamer_key}" if real_event else "a sample card"
        commands = Commands(store=store, routes=config.routes)
        outcomes: list[Sent] = []
        names = {t.sink for t in targets}
        enabled = {"console"} if config.console.enabled else set()
        enabled |= {name for name, section in config.platforms.items() if section.enabled}
        for target in targets:
            if target.sink not in enabled:
                section = config.platforms[target.sink]
                error = f"not posting to {target.sink}: {section.disabled_reason}"
                outcomes.append(Sent(target.sink, target.target, error=error))
        print(f"posting {what} (no mentions) to {len(targets)} target(s)...", flush=True)
        async with connected_sinks(
            config, commands, names=names & enabled, connect_within=connect_within
        ) as sinks:
            for sent in outcomes:  # the platforms that are off
                _say(sent, "failed")
            for target in targets:
                if target.sink in sinks:
                    sent = await post_card(sinks[target.sink], target.target, event)
                    outcomes.append(sent)
                    if sent.error is not None:
                        _say(sent, "failed")
                    else:
                        _say(sent, "posted" if sent.message_id else "printed")
            posted = [s for s in outcomes if s.message_id]
            if posted and delete_after is None:
                print("--keep: the test cards stay up (delete them by hand)")
            elif posted and delete_after is not None:
                print(
                    f"waiting {delete_after:.0f}s, then deleting the test cards"
                    " (Ctrl-C deletes them now)",
                    flush=True,
                )
                await _wait_interruptibly(delete_after)
                for sent in posted:
                    await delete_card(sinks[sent.sink], sent)
                    _say(sent, "deleted" if sent.deleted else "failed")
    failed = [s for s in outcomes if s.error is not None]
    if failed:
        print(f"{len(failed)} of {len(outcomes)} target(s) failed")
        return 1
    print(f"all {len(outcomes)} target(s) OK")
    return 0


def _say(sent: Sent, what: str) -> None:
    where = "stdout" if sent.sink == "console" else sent.target
    line = f"{what:<8} {sent.sink} {where}"
    if what == "posted":
        line += f" (message {sent.message_id})"
    elif what == "failed":
        line += f": {sent.error}"
    print(line, flush=True)


async def _wait_interruptibly(seconds: float) -> None:
    """Sleep `seconds`, or less when SIGINT or SIGTERM comes (the cards go now then)."""
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, done.set)
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), seconds)
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


def _moved_route_warnings(config: Config) -> list[str]:
    """A warning for each chat bot.toml names that the database remembers has moved (a
    Telegram group upgraded to a supergroup): the route still works, but names the old
    id. The database is only read, and only when it exists."""
    if not _database_exists(config):
        return []

    async def moves() -> dict[tuple[str, str], str]:
        store = create_store(config.storage, read_only=True)
        await store.open()
        try:
            return await store.moved_targets()
        finally:
            await store.close()

    try:
        moved = moved_route_targets(config.routes, asyncio.run(moves()))
    except (StoreUnavailable, DatabaseTooNew) as exc:
        return [f"could not read {config.storage.location} for moved chats: {exc}"]
    return [
        f"bot.toml names {old.sink} chat {old.target}; it moved to {new.target}"
        " (notifications follow it there): replace it in [[routes]]"
        for old, new in moved
    ]


#: `render --event last`: the last real event of the kind, from the database.
LAST_EVENT = "last"


async def _last_event(config: Config, kind: str) -> Event | str:
    """The last event of `kind` the bot stored (test cards aside), or why there is none."""
    try:
        async with _tool_store(config, exists=True) as (store, real):
            recent = await store.recent_events(kind, limit=50) if real else []
    except DatabaseTooNew as exc:
        return str(exc)
    for event in recent:
        if not event.event_id.startswith(TEST_EVENT_PREFIX):
            return event
    return f"{config.storage.location} holds no {kind} event yet; leave out --event for a sample"


def _render_locale(given: str | None, config: Config | None) -> str | None:
    """`render --locale`, else the config's [behaviour] locale; None after saying why not."""
    if given is None:
        return config.behaviour.locale if config is not None else i18n.DEFAULT_LOCALE
    try:
        return i18n.parse_locale(given)
    except ValueError as exc:
        print(f"error: --locale: {exc}", file=sys.stderr)
        return None


def _cmd_render(args: argparse.Namespace) -> int:
    user_dir = None
    config: Config | None = None
    # Like every other command, ./bot.toml unless told otherwise (its templates are what
    # the bot would use); without one, the built-in templates.
    path = args.config if args.config is not None else DEFAULT_CONFIG
    if args.config is not None or DEFAULT_CONFIG.is_file():
        config = _load(path, args.log_level)
        if config is None:
            return EXIT_CONFIG
        user_dir = config.templates.dir
    if args.event is None and args.kind is None:
        print("error: name an event kind or give --event FILE.json", file=sys.stderr)
        return 2
    if args.kind is not None and args.kind not in KNOWN_KINDS:
        close = difflib.get_close_matches(args.kind, KNOWN_KINDS, n=1)
        hint = (
            f"did you mean {close[0]!r}?" if close else "known: " + ", ".join(sorted(KNOWN_KINDS))
        )
        print(f"error: unknown event kind {args.kind!r}; {hint}", file=sys.stderr)
        return 2
    if args.event == Path(LAST_EVENT):
        if args.kind is None:
            print(
                "error: --event last needs an event kind, like: render live_start --event last",
                file=sys.stderr,
            )
            return 2
        if config is None:
            print(
                f"error: --event last reads the database: no {DEFAULT_CONFIG} here (give -c)",
                file=sys.stderr,
            )
            return 2
        if not _database_exists(config):
            print(
                f"error: no database at {config.storage.location} yet (has the bot run?);"
                " leave out --event for a sample",
                file=sys.stderr,
            )
            return 1
        found = asyncio.run(_last_event(config, args.kind))
        if isinstance(found, str):
            print(f"error: {found}", file=sys.stderr)
            return 1
        event = found
    elif args.event is not None:
        source_config = None
        if args.source is not None:
            named = [s for s in config.sources if s.name == args.source] if config else []
            if not named:
                known = ", ".join(s.name for s in config.sources) if config else ""
                print(
                    f"error: --source {args.source}: no [[sources]] entry of that name"
                    + (f" (there are: {known})" if known else " (no config read)"),
                    file=sys.stderr,
                )
                return 2
            source_config = named[0]
        parsed = _event_from_file(args.event, args.source_kind, source_config)
        if parsed is None:
            return 1
        if args.kind is not None and parsed.kind != args.kind:
            print(
                f"error: {args.event} is a {parsed.kind} event, not {args.kind}", file=sys.stderr
            )
            return 1
        event = parsed
    else:
        event = sample_event(args.kind)
    locale = _render_locale(args.locale, config)
    if locale is None:
        return 2
    # Strict: a broken override is an error here, not the built-in output in its place.
    renderer = Renderer(formats=message_formats(), user_dir=user_dir, strict=True, locale=locale)
    fmt = renderer.formats[args.sink]
    # Only a format that pings roles takes them (its `build` names the option); the
    # others render as they would with no roles configured.
    takes_roles = "mention_roles" in inspect.signature(fmt.build).parameters
    options = {"mention_roles": args.mention_role} if takes_roles else {}
    try:
        message = renderer.render(fmt, event, **options)
    except TemplateProblem as exc:
        print(f"error: template {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(fmt.preview(message))
    return 0


def _cmd_deliveries(args: argparse.Namespace) -> int:
    config = _load(args.config, args.log_level)
    if config is None:
        return EXIT_CONFIG
    if not _database_exists(config):
        print(
            f"error: no database at {config.storage.location} (has the bot run yet?)",
            file=sys.stderr,
        )
        return 1
    now = time.time()
    try:
        rows, retried = asyncio.run(
            _deliveries(create_store(config.storage, tool=True), now, args.retry)
        )
    except DatabaseTooNew as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    except StoreUnavailable as exc:
        print(f"error: cannot use the database {config.storage.location}: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    if retried is not None:
        print(f"re-queued {retried} failed deliveries")
    if not rows:
        print("no pending or failed deliveries")
        return 0
    print(_delivery_table(rows, now=now))
    return 0


def _cmd_store_migrate(args: argparse.Namespace) -> int:
    config = _load(args.config, args.log_level)
    if config is None:
        return EXIT_CONFIG
    if config.storage.url is not None:
        print(f"error: {args.config} is on PostgreSQL already", file=sys.stderr)
        return 2
    # The backends are imported here only, as by create_store: each imports its driver.
    from bot.store.transfer import TargetNotEmpty  # noqa: PLC0415

    path = Path(config.storage.path)
    target = _migration_target(args)
    if target is None:
        return 2
    if not path.is_file():
        print(f"error: no database at {path} to copy (has the bot run yet?)", file=sys.stderr)
        return 1
    try:
        # The bot's own lock: nothing writes to the file while it is copied.
        with InstanceLock(path):
            copied = asyncio.run(_copy_database(path, target))
    except InstanceLocked as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    except (StoreUnavailable, DatabaseTooNew, TargetNotEmpty) as exc:
        print(f"error: {target.location}: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    rows = ", ".join(f"{count} {table}" for table, count in copied.rows.items())
    print(f"copied {path} (schema {copied.schema}) to {target.location}: {rows}")
    print(
        "next: in bot.toml's [storage], replace path with url (and password_env), then start"
        f" the bot; {path} stays as it was"
    )
    return 0


def _migration_target(args: argparse.Namespace) -> PostgresStore | None:
    """The PostgreSQL store `--to` names (None after saying what is wrong with it)."""
    from bot.store.postgres import PostgresStore  # noqa: PLC0415

    url = args.to.strip()
    if urlsplit(url).scheme.lower() not in POSTGRES_SCHEMES:
        print("error: --to must be a postgresql:// URL", file=sys.stderr)
        return None
    password = None
    if args.password_env is not None:
        password = os.environ.get(args.password_env)
        if not password:
            print(f"error: --password-env: {args.password_env} is not set", file=sys.stderr)
            return None
    return PostgresStore(url, password=password)


async def _copy_database(path: Path, target: PostgresStore) -> Copied:
    from bot.store.sqlite import TOOL_BUSY_TIMEOUT_MS, SQLiteStore  # noqa: PLC0415
    from bot.store.transfer import copy_sqlite_to_postgres  # noqa: PLC0415

    source = SQLiteStore(path, busy_timeout_ms=TOOL_BUSY_TIMEOUT_MS)
    await source.open()
    try:
        await target.open()
        try:
            return await copy_sqlite_to_postgres(source, target)
        finally:
            await target.close()
    finally:
        await source.close()


async def _deliveries(
    store: Store, now: float, retry: bool
) -> tuple[list[DeliveryInfo], int | None]:
    """The outbox rows to list, after re-queueing the failed ones when asked to."""
    await store.open()
    try:
        retried = await store.retry_failed(now=now) if retry else None
        return await store.list_deliveries(), retried
    finally:
        await store.close()


def _delivery_table(rows: list[DeliveryInfo], *, now: float) -> str:
    header = ("ID", "STATE", "SINK", "TARGET", "EVENT", "ATTEMPTS", "AGE", "NEXT", "LAST ERROR")
    lines = [header]
    for row in rows:
        event = f"{row.kind} {row.streamer_key or '-'}"
        if row.action != "post":
            event += f" ({row.action})"
        error = " ".join((row.last_error or "-").split())
        # When a pending row goes out: a retry's backoff, or an end held for end_grace.
        next_try = "-"
        if row.state == "pending":
            next_try = _age(row.not_before - now) if row.not_before > now else "now"
        lines.append(
            (
                str(row.id),
                row.state,
                row.sink,
                row.target,
                event,
                str(row.attempts),
                _age(now - row.created_at),
                next_try,
                error[:120],
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=False))
        + "  "
        + line[-1]
        for line in lines
    )


def _age(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    if seconds < 60:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    return f"{hours // 24}d{hours % 24}h"


def _event_from_file(
    path: Path, source_kind: str, source_config: SourceConfig | None = None
) -> Event | None:
    try:
        body = path.read_bytes()
        payload = json.loads(body)
    except OSError as exc:
        print(f"error: cannot read {path}: {exc.strerror}", file=sys.stderr)
        return None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        print(f"error: {path} is not JSON: {exc}", file=sys.stderr)
        return None
    # A configured source (--source) parses with its own options (a custom webhook's
    # field map); otherwise a bare one of the kind. Parsed, never verified.
    config = source_config or SourceConfig(name=source_kind, kind=source_kind, secret="")
    source = SOURCES[config.kind].build(config)
    source_kind = config.kind
    request = WebhookRequest(query={}, headers={}, body=body, received_at=utcnow())
    try:
        if not isinstance(payload, dict):
            raise SchemaError("body", "expected a JSON object")
        parsed = source.parse(payload, request)
    except SchemaError as exc:
        print(f"error: {path}: {exc.message}", file=sys.stderr)
        return None
    except WebhookError as exc:
        print(f"error: {path}: {exc.message}", file=sys.stderr)
        return None
    if isinstance(parsed, Ignored):
        print(f"error: {path}: {parsed.reason}", file=sys.stderr)
        return None
    if not isinstance(parsed, Event):
        print(f"error: {path}: not an event type {source_kind} documents", file=sys.stderr)
        return None
    event = parsed
    if event.kind == ev.LIVE_END and event.started_at is None:
        log.info("the payload does not say when the stream started; no duration shown")
    return event


if __name__ == "__main__":
    sys.exit(main())
