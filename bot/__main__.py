"""Command line: `python -m bot init|run|check|render|deliveries`. Signal handling lives here."""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import logging
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bot import events as ev
from bot.config import LOG_LEVELS, Config, SourceConfig, read_config
from bot.errors import (
    ConfigError,
    InstanceLocked,
    SchemaError,
    StoreUnavailable,
    TemplateProblem,
    WebhookError,
)
from bot.events import Event, utcnow
from bot.init import InitOptions, run_init
from bot.logs import setup_logging
from bot.pipeline.routing import moved_route_targets
from bot.registry import KNOWN_KINDS, PLATFORMS, SOURCES, message_formats
from bot.render import Renderer
from bot.samples import sample_event, sample_events
from bot.sources.base import WebhookRequest
from bot.store import DeliveryInfo, Store, create_store

log = logging.getLogger("bot")

DEFAULT_CONFIG = Path("bot.toml")


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments and run one command; returns the process exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    # Until a config is loaded (then its [logging] applies, under the flag).
    setup_logging(args.log_level or "info", "text")
    command: int = args.func(args)
    return command


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bot",
        description="Livestream notifications for "
        + " and ".join(spec.title for spec in PLATFORMS.values())
        + ".",
    )
    parser.add_argument(
        "--log-level",
        choices=sorted(LOG_LEVELS, key=lambda name: logging.getLevelName(name.upper())),
        help="overrides the config's [logging] level (default: info)",
    )
    commands = parser.add_subparsers(dest="command", required=True)

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

    check = commands.add_parser("check", help="validate the config file and every template")
    check.add_argument("-c", "--config", type=Path, default=DEFAULT_CONFIG)
    check.set_defaults(func=_cmd_check)

    render = commands.add_parser("render", help="preview a notification without sending it")
    render.add_argument("kind", nargs="?", help=f"event kind: {', '.join(sorted(KNOWN_KINDS))}")
    render.add_argument("--sink", choices=list(message_formats()), default="console")
    render.add_argument(
        "--event", type=Path, help="a webhook payload (JSON file) to render instead of samples"
    )
    render.add_argument(
        "--source-kind",
        choices=sorted(SOURCES),
        default="onliverec",
        help="which provider the --event payload comes from (default: onliverec)",
    )
    render.add_argument(
        "-c", "--config", type=Path, help="use this config's [templates] dir for overrides"
    )
    render.add_argument(
        "--mention-role",
        type=int,
        action="append",
        default=[],
        help="role id a live_start would ping, where the sink pings roles (repeatable)",
    )
    render.set_defaults(func=_cmd_render)

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
    return parser


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
        return 1
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
    except InstanceLocked as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except StoreUnavailable as exc:
        print(f"error: cannot use the database {config.storage.path}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        # A port in use, a database folder that cannot be written: the system's words.
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    config = _load(args.config, args.log_level)
    if config is None:
        return 1
    renderer = Renderer(formats=message_formats(), user_dir=config.templates.dir)
    problems = renderer.check(sample_events())
    for problem in problems:
        print(f"error: template {problem}", file=sys.stderr)
    if problems:
        return 1
    sinks = ["console"] if config.console.enabled else []
    sinks += [name for name, section in config.platforms.items() if section.enabled]
    sources = ", ".join(f"{s.name} ({s.kind})" for s in config.sources) or "none"
    print(f"{args.config}: OK")
    print(f"  sources: {sources}")
    print(f"  routes: {len(config.routes)}")
    print(f"  sinks: {', '.join(sinks) or 'none'}")
    print(f"  templates: {config.templates.dir or 'built-in'}")
    _warn_moved_routes(config)
    return 0


def _warn_moved_routes(config: Config) -> None:
    """Warn when the database remembers that a chat bot.toml names has moved (a Telegram
    group upgraded to a supergroup): the route still works, but names the old id. The
    database is only read, and only when it exists."""
    if not Path(config.storage.path).exists():
        return

    async def moves() -> dict[tuple[str, str], str]:
        store = create_store(config.storage, read_only=True)
        await store.open()
        try:
            return await store.moved_targets()
        finally:
            await store.close()

    try:
        moved = moved_route_targets(config.routes, asyncio.run(moves()))
    except StoreUnavailable as exc:
        print(f"warning: could not read {config.storage.path}: {exc}", file=sys.stderr)
        return
    for old, new in moved:
        print(
            f"warning: bot.toml names {old.sink} chat {old.target}; it moved to {new.target}"
            " (notifications follow it there): replace it in [[routes]]",
            file=sys.stderr,
        )


def _cmd_render(args: argparse.Namespace) -> int:
    user_dir = None
    if args.config is not None:
        config = _load(args.config, args.log_level)
        if config is None:
            return 1
        user_dir = config.templates.dir
    if args.event is None and args.kind is None:
        print("error: name an event kind or give --event FILE.json", file=sys.stderr)
        return 2
    if args.kind is not None and args.kind not in KNOWN_KINDS:
        known = ", ".join(sorted(KNOWN_KINDS))
        print(f"error: unknown event kind {args.kind!r}; known: {known}", file=sys.stderr)
        return 2
    if args.event is not None:
        event = _event_from_file(args.event, args.source_kind)
        if event is None:
            return 1
        if args.kind is not None and event.kind != args.kind:
            print(f"error: {args.event} is a {event.kind} event, not {args.kind}", file=sys.stderr)
            return 1
    else:
        event = sample_event(args.kind)
    renderer = Renderer(formats=message_formats(), user_dir=user_dir)
    fmt = renderer.formats[args.sink]
    # Only a format that pings roles takes them (its `build` names the option); the
    # others render as they would with no roles configured.
    takes_roles = "mention_roles" in inspect.signature(fmt.build).parameters
    options = {"mention_roles": args.mention_role} if takes_roles else {}
    try:
        message = renderer.render(fmt, event, **options)
    except TemplateProblem as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(fmt.preview(message))
    return 0


def _cmd_deliveries(args: argparse.Namespace) -> int:
    config = _load(args.config, args.log_level)
    if config is None:
        return 1
    path = config.storage.path
    if not Path(path).exists():
        print(f"error: no database at {path} (has the bot run yet?)", file=sys.stderr)
        return 1
    now = time.time()
    rows, retried = asyncio.run(
        _deliveries(create_store(config.storage, tool=True), now, args.retry)
    )
    if retried is not None:
        print(f"re-queued {retried} failed deliveries")
    if not rows:
        print("no pending or failed deliveries")
        return 0
    print(_delivery_table(rows, now=now))
    return 0


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


def _event_from_file(path: Path, source_kind: str) -> Event | None:
    try:
        body = path.read_bytes()
        payload = json.loads(body)
    except OSError as exc:
        print(f"error: cannot read {path}: {exc.strerror}", file=sys.stderr)
        return None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        print(f"error: {path} is not JSON: {exc}", file=sys.stderr)
        return None
    config = SourceConfig(name=source_kind, kind=source_kind, secret="")
    source = SOURCES[source_kind].build(config)
    request = WebhookRequest(query={}, headers={}, body=body, received_at=utcnow())
    try:
        if not isinstance(payload, dict):
            raise SchemaError("body", "expected a JSON object")
        event = source.parse(payload, request)
    except SchemaError as exc:
        print(f"error: {path}: {exc.message}", file=sys.stderr)
        return None
    except WebhookError as exc:
        print(f"error: {path}: {exc.message}", file=sys.stderr)
        return None
    if event is None:
        print(f"error: {path}: not an event type {source_kind} documents", file=sys.stderr)
        return None
    if event.kind == ev.LIVE_END and event.started_at is None:
        log.info("the payload does not say when the stream started; no duration shown")
    return event


if __name__ == "__main__":
    sys.exit(main())
