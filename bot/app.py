"""Builds the bot's parts from config and runs them together until a stop event is set.

No signal handling here (that lives in `__main__`), so tests drive `run(config, stop)`
directly and the whole process can be embedded.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from aiohttp import web

from bot.commands import Commands
from bot.config import Config, ConsoleConfig, Route
from bot.errors import StoreUnavailable
from bot.events import Event
from bot.heartbeat import Heartbeat
from bot.instance import InstanceLock
from bot.listener import HEADER_TIMEOUT_SECONDS, ListenerRunner
from bot.maintenance import Pruner
from bot.metrics import Metrics
from bot.outbox import OutboxWorker
from bot.pipeline.dispatch import Dispatcher, DispatchStage
from bot.pipeline.ingest import Intake
from bot.preflight import Preflight
from bot.registry import PLATFORMS, SOURCES, message_formats
from bot.reload import Reloader
from bot.render import Renderer
from bot.sinks.base import HoldsRole, PlatformSpec, ReleasesRole, Sink, TakesTurn
from bot.sinks.console import ConsoleSink
from bot.sources import Source
from bot.sources.problems import SourceProblems
from bot.sources.service import SourceHost, SourceRunner
from bot.store import Store, create_store
from bot.store.process import PROCESS_ID
from bot.targets import TargetProblems
from bot.web import (
    BODY_READ_TIMEOUT_SECONDS,
    SOURCES_KEY,
    RedactingAccessLogger,
    create_app,
    start_draining,
)

log = logging.getLogger(__name__)

# How long in-flight webhook requests get to finish when the bot stops.
SHUTDOWN_GRACE_SECONDS = 5.0
# An idle keep-alive connection is closed after this long (aiohttp's default is an hour,
# which lets idle connections pile up). Longer than the 60 s reverse proxies keep idle
# upstream connections (nginx, HAProxy defaults), so the proxy is the side that closes.
KEEPALIVE_TIMEOUT_SECONDS = 75.0
# /healthz fails when a due delivery has waited this long for a running worker.
STUCK_AFTER_SECONDS = 300.0


@dataclass(slots=True)
class Running:
    """What a started bot exposes to its caller: the address it listens on, its parts."""

    host: str
    port: int
    store: Store
    sinks: dict[str, Sink] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        """`http://host:port` of the webhook listener."""
        return f"http://{self.host}:{self.port}"


# The secret bot.toml.example ships with; fine on 127.0.0.1, not once exposed.
EXAMPLE_SECRET = "example-secret-change-me"


def build_sources(config: Config) -> dict[str, Source]:
    """One Source per `[[sources]]` entry, keyed by its name (the URL path segment)."""
    for entry in config.sources:
        if entry.secret == EXAMPLE_SECRET:
            log.warning(
                "source %s still uses the example secret; change it before exposing the bot",
                entry.name,
            )
    return {entry.name: SOURCES[entry.kind].build(entry) for entry in config.sources}


def build_sinks(
    config: Config,
    renderer: Renderer,
    commands: Commands,
    *,
    console_stream: TextIO | None = None,
    sink_options: Mapping[str, Mapping[str, Any]] | None = None,
    platforms: Mapping[str, PlatformSpec] = PLATFORMS,
    problems: TargetProblems | None = None,
    holds_role: HoldsRole | None = None,
    releases_role: ReleasesRole | None = None,
    takes_turn: TakesTurn | None = None,
) -> dict[str, Sink]:
    """The enabled sinks; each disabled one says why in one log line.

    `problems` is where the sinks report what they find wrong with a target.

    `sink_options` passes extra constructor keywords per sink name (tests use it to
    make a platform's client connect faster to its fake).
    """
    options = sink_options or {}
    problems = problems if problems is not None else TargetProblems()
    sinks: dict[str, Sink] = {}
    if config.console.enabled:
        sinks["console"] = ConsoleSink(renderer=renderer, stream=console_stream)
    for name, spec in platforms.items():
        section = config.platforms[name]
        if not section.enabled:
            log.info("%s: not posting there (%s)", name, section.disabled_reason)
            continue
        extras: dict[str, Any] = {}
        if spec.takes_roles and holds_role and releases_role:
            extras["holds_role"] = holds_role
            extras["releases_role"] = releases_role
        if spec.takes_turns and takes_turn:
            extras["takes_turn"] = takes_turn
        if spec.public_url_problems is not None:
            extras["public_url"] = config.server.public_url
        sinks[name] = spec.build_sink(
            section,
            renderer=renderer,
            commands=commands,
            problems=problems,
            **extras,
            **options.get(name, {}),
        )
    return sinks


#: How long `check --online` and `test-send` wait for a platform to connect by default.
TOOL_CONNECT_TIMEOUT_SECONDS = 30.0


@contextlib.asynccontextmanager
async def connected_sinks(
    config: Config,
    commands: Commands,
    *,
    names: Collection[str] | None = None,
    connect_within: float = TOOL_CONNECT_TIMEOUT_SECONDS,
    console_stream: TextIO | None = None,
    platforms: Mapping[str, PlatformSpec] = PLATFORMS,
) -> AsyncIterator[dict[str, Sink]]:
    """The enabled sinks (those among `names`, when given) for a command-line tool: started
    together, given up to `connect_within` seconds to be running, stopped on leaving.

    One that is not running by then is still handed over: the caller says so. Nothing
    here posts, and no instance lock is taken, so it works beside a running bot.
    """
    if names is not None:
        platforms = {name: spec for name, spec in platforms.items() if name in names}
        if "console" not in names:
            config = dataclasses.replace(config, console=ConsoleConfig(enabled=False))
    renderer = Renderer(
        formats=message_formats(),
        user_dir=config.templates.dir,
        route_dirs=config.route_template_dirs,
        locale=config.behaviour.locale,
    )
    sinks = build_sinks(
        config, renderer, commands, console_stream=console_stream, platforms=platforms
    )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + connect_within
    starts = [
        asyncio.create_task(sink.start(), name=f"start-{name}") for name, sink in sinks.items()
    ]
    try:
        if starts:
            await asyncio.wait(starts, timeout=connect_within)
        # A sink whose start() returned early may still be connecting in the background;
        # the Sink protocol has only its state to tell when it is done.
        while loop.time() < deadline:
            if all(sink.state == "running" for sink in sinks.values()):
                break
            await asyncio.sleep(0.1)
        yield sinks
    finally:
        for task in starts:
            task.cancel()
        outcomes = await asyncio.gather(*starts, return_exceptions=True)
        for name, outcome in zip(sinks, outcomes, strict=True):
            # A sink's start never raises for a platform problem: this is a bug.
            if isinstance(outcome, Exception):
                log.error("%s: could not start", name, exc_info=outcome)
        for sink in sinks.values():
            await sink.stop()


async def run(
    config: Config,
    stop: asyncio.Event,
    *,
    on_ready: Callable[[Running], None] | None = None,
    console_stream: TextIO | None = None,
    sink_options: Mapping[str, Mapping[str, Any]] | None = None,
    stuck_after: float = STUCK_AFTER_SECONDS,
    body_timeout: float = BODY_READ_TIMEOUT_SECONDS,
    header_timeout: float = HEADER_TIMEOUT_SECONDS,
    reload: asyncio.Event | None = None,
    load_config: Callable[[], Config] | None = None,
    log_level: str | None = None,
) -> None:
    """Run listener, sinks and outbox workers until `stop` is set; then shut down cleanly.

    Raises InstanceLocked when another process runs on the same database. On stop:
    webhooks are answered 503 with Retry-After, each send in flight is waited for until
    it answers (up to its sink's `drain_timeout`), then the listener and the clients
    close. Whatever was not sent stays in the outbox for the next start. Each time
    `reload` is set, `load_config()` is applied (bot.reload); `log_level` is the
    command line's override of [logging] level, kept across reloads.
    """
    # SQLite's lock file; a PostgreSQL store holds a lock in the database instead.
    sqlite = config.storage.url is None and not _in_memory(config)
    lock = InstanceLock(Path(config.storage.path)) if sqlite else None
    with lock or contextlib.nullcontext():
        store = create_store(config.storage)
        await store.open()
        try:
            await _run_with_store(
                config,
                stop,
                store,
                on_ready=on_ready,
                console_stream=console_stream,
                sink_options=sink_options,
                stuck_after=stuck_after,
                body_timeout=body_timeout,
                header_timeout=header_timeout,
                reload=reload,
                load_config=load_config,
                log_level=log_level,
            )
        finally:
            await store.close()


def _in_memory(config: Config) -> bool:
    return str(config.storage.path) == ":memory:"


async def _run_with_store(
    config: Config,
    stop: asyncio.Event,
    store: Store,
    *,
    on_ready: Callable[[Running], None] | None,
    console_stream: TextIO | None,
    sink_options: Mapping[str, Mapping[str, Any]] | None,
    stuck_after: float,
    body_timeout: float,
    header_timeout: float,
    reload: asyncio.Event | None,
    load_config: Callable[[], Config] | None,
    log_level: str | None,
) -> None:
    renderer = Renderer(
        formats=message_formats(),
        user_dir=config.templates.dir,
        route_dirs=config.route_template_dirs,
        locale=config.behaviour.locale,
    )
    routes = config.routes
    problems = TargetProblems()
    source_problems = SourceProblems()
    workers: dict[str, OutboxWorker] = {}
    wake = functools.partial(_wake, workers)
    commands = Commands(
        store=store,
        routes=routes,
        problems=problems,
        on_queued=wake,
        source_problems=source_problems,
        locale=config.behaviour.locale,
    )
    sinks = build_sinks(
        config,
        renderer,
        commands,
        console_stream=console_stream,
        sink_options=sink_options,
        problems=problems,
        holds_role=store.hold_role,
        releases_role=store.release_role,
        takes_turn=store.take_turn,
    )
    metrics = (
        Metrics(
            outbox=store.outbox_counts,
            backlog=store.count_undispatched,
            sinks=lambda: sink_states(sinks, workers),
            process_id=PROCESS_ID,
            processes=lambda: health.processes,
        )
        if config.metrics.enabled
        else None
    )
    workers.update(
        (
            name,
            OutboxWorker(store=store, sink=sink, max_age=config.delivery.max_age, metrics=metrics),
        )
        for name, sink in sinks.items()
    )
    dispatcher = Dispatcher(
        store=store,
        routes=routes,
        sinks=sinks,
        card_sinks=[name for name, sink in sinks.items() if sink.keeps_cards],
        on_queued=wake,
        behaviour=config.behaviour,
    )
    stage = DispatchStage(dispatcher)
    preflight = Preflight(
        sinks=sinks, problems=problems, routes=routes, subscriptions=store.subscriptions
    )
    health = Health(
        store=store,
        sinks=sinks,
        stuck_after=stuck_after,
        workers=workers,
        dispatch=stage,
        preflight=preflight,
        source_problems=source_problems,
    )
    intake = Intake(store, on_committed=stage.wake)
    source_runner = _source_runner(intake, store, source_problems, commands)
    app = create_app(
        sources=build_sources(config),
        intake=intake,
        max_body_bytes=config.server.max_body_bytes,
        health=health.report,
        readiness=health.readiness,
        body_timeout=body_timeout,
        metrics=metrics,
        metrics_token=config.metrics.token,
        platform_routes=[route for sink in sinks.values() for route in sink.web_routes],
    )
    runner = ListenerRunner(
        app,
        header_timeout=header_timeout,
        access_log_class=RedactingAccessLogger,
        handle_signals=False,
        shutdown_timeout=SHUTDOWN_GRACE_SECONDS,
        keepalive_timeout=KEEPALIVE_TIMEOUT_SECONDS,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.server.host, config.server.port)
        await site.start()
        host, port = _bound_address(runner, config)
        log.info("listening on http://%s:%d (webhooks: POST /webhook/<source name>)", host, port)
        # Only now: a source's provider may call back at once (Twitch verifies each new
        # subscription with a challenge posted to the listener).
        await _start_sources(source_runner, app[SOURCES_KEY], commands, routes)
        async with asyncio.TaskGroup() as group:
            heartbeat = _watch_the_database(
                group,
                store,
                stop,
                sinks=sinks,
                workers=workers,
                lease=config.storage.lease.total_seconds(),
                health=health,
                sources=source_runner,
            )
            await _start_platforms(sinks, heartbeat, stop)
            if on_ready is not None:
                on_ready(Running(host=host, port=port, store=store, sinks=dict(sinks)))
            group.create_task(
                _start_workers(store, workers, stop, group, health), name="outbox-start"
            )
            group.create_task(stage.run(stop), name="dispatch")
            group.create_task(
                Pruner(store=store, retention=config.storage.retention, metrics=metrics).run(stop),
                name="retention",
            )
            checking = group.create_task(preflight.run(stop), name="preflight")
            reloader = None
            if reload is not None and load_config is not None:
                reloader = group.create_task(
                    _reload_on_request(
                        reload,
                        Reloader(
                            config=config,
                            load=load_config,
                            build_sources=build_sources,
                            renderer=renderer,
                            dispatcher=dispatcher,
                            commands=commands,
                            workers=workers,
                            sources=app[SOURCES_KEY],
                            log_level=log_level,
                            preflight=preflight,
                            source_runner=source_runner,
                        ),
                    ),
                    name="reload",
                )
            await stop.wait()
            if reloader is not None:
                reloader.cancel()
            # A check waiting on a platform's answer must not hold up the shutdown.
            checking.cancel()
            # Senders hear 503 + Retry-After (not a refused connection) while the workers,
            # which saw `stop` too, wait for each send in flight to answer.
            start_draining(app)
            log.info("stopping: answering webhooks with 503; finishing in-flight deliveries")
    finally:
        await source_runner.stop()
        await runner.cleanup()
        for sink in sinks.values():
            await sink.stop()
    log.info("stopped")


def _wake(workers: Mapping[str, OutboxWorker], sink_names: set[str]) -> None:
    """Wake the outbox workers of these sinks: deliveries were queued for them."""
    for name in sink_names:
        if name in workers:
            workers[name].wake()


async def _start_sources(
    runner: SourceRunner,
    sources: dict[str, Source],
    commands: Commands,
    routes: Sequence[Route],
) -> None:
    """Start the sources with work of their own (if this process runs them); the
    commands tell them of /subscribe."""
    await runner.check_role()
    runner.replace(sources)
    commands.reconfigure(routes=routes, followers=runner.followers)


def _source_runner(
    intake: Intake, store: Store, problems: SourceProblems, commands: Commands
) -> SourceRunner:
    """What runs the sources with work of their own, lending them intake and store; in
    the one process on the database that holds their role."""
    runner: SourceRunner

    def tell_commands() -> None:
        commands.set_followers(runner.followers)

    runner = SourceRunner(
        SourceHost(
            emit=functools.partial(_emit, intake),
            subscription_patterns=functools.partial(_subscription_patterns, store),
            problems=problems,
            load=store.source_value,
            save=functools.partial(_save_source_value, store),
        ),
        holds_role=store.hold_role,
        on_change=tell_commands,
    )
    return runner


async def _emit(intake: Intake, event: Event) -> bool:
    """Store an event a source made itself, as a webhook's; True when it was new."""
    return not (await intake.accept(event)).duplicate


async def _save_source_value(store: Store, source: str, key: str, value: str) -> None:
    """Keep one value of a source between runs."""
    await store.set_source_value(source, key, value, now=time.time())


async def _subscription_patterns(store: Store) -> list[str]:
    """Every /subscribe pattern in force, in any chat."""
    return list(dict.fromkeys(sub.pattern for sub in await store.subscriptions()))


STORE_RETRY_FIRST_SECONDS = 0.5
STORE_RETRY_MAX_SECONDS = 15.0


async def _start_workers(
    store: Store,
    workers: Mapping[str, OutboxWorker],
    stop: asyncio.Event,
    group: asyncio.TaskGroup,
    health: Health,
) -> None:
    """Re-queue what the last run left in flight, then start the outbox workers.

    A database refusing writes at start delays only this (webhooks are answered 503
    meanwhile); workers must not claim rows before the old ones are back in the queue.
    """
    delay = STORE_RETRY_FIRST_SECONDS
    while not stop.is_set():
        try:
            requeued = await store.requeue_in_flight()
        except StoreUnavailable:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, STORE_RETRY_MAX_SECONDS)
            continue
        if requeued:
            log.info("resuming %d deliveries interrupted by the last shutdown", requeued)
        break
    else:
        return
    health.workers_started = time.time()
    for worker in workers.values():
        group.create_task(worker.run(stop), name=f"outbox-{worker.sink_name}")


async def _watch_database(store: Store, stop: asyncio.Event) -> None:
    """While the database refuses writes, try one now and then, so that it is seen to be
    back (and /healthz turns green) even when nothing else is waiting to be written."""
    delay = STORE_RETRY_FIRST_SECONDS
    while not stop.is_set():
        if store.health.ok:
            delay = STORE_RETRY_FIRST_SECONDS
        else:
            with contextlib.suppress(StoreUnavailable):
                await store.probe_write()
            delay = min(delay * 2, STORE_RETRY_MAX_SECONDS)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay if not store.health.ok else 1.0)


def _watch_the_database(
    group: asyncio.TaskGroup,
    store: Store,
    stop: asyncio.Event,
    *,
    sinks: Mapping[str, Sink],
    workers: Mapping[str, OutboxWorker],
    lease: float,
    health: Health,
    sources: SourceRunner,
) -> Heartbeat:
    """The database's own chores: whether it takes writes again, this process's
    heartbeat (its claims' leases, its share of the rate limits) and the sources' role."""
    # Deliveries another process queued are this one's to send too (its share).
    store.on_deliveries_queued(lambda sink: _wake(workers, {sink}))
    group.create_task(_watch_database(store, stop), name="database-watch")
    heartbeat = Heartbeat(
        store,
        sinks,
        workers,
        lease=lease,
        on_count=functools.partial(setattr, health, "processes"),
    )
    group.create_task(heartbeat.run(stop), name="heartbeat")
    group.create_task(sources.follow_role(stop), name="sources-role")
    return heartbeat


async def _start_platforms(
    sinks: Mapping[str, Sink], heartbeat: Heartbeat, stop: asyncio.Event
) -> None:
    """Start the sinks, all at once (a chat platform that is slow to connect delays no
    other). Those whose platform counts the whole bot token's requests only once this
    process has its share of the limits and the other processes alive have made room
    for it: no request before that, not even the login (bot.heartbeat)."""
    if any(sink.shares_token_limits for sink in sinks.values()):
        await heartbeat.joined(stop)
    if not stop.is_set():
        await asyncio.gather(*(sink.start() for sink in sinks.values()))


async def _reload_on_request(request: asyncio.Event, reloader: Reloader) -> None:
    """Apply the config again each time `request` is set (by SIGHUP in __main__)."""
    while True:
        await request.wait()
        request.clear()
        try:
            await reloader.reload()
        except Exception:
            # A reload must never take the running bot down with it.
            log.exception("reload failed; the running config stays")


def sink_states(sinks: Mapping[str, Sink], workers: Mapping[str, OutboxWorker]) -> dict[str, str]:
    """Each sink's state; "degraded" when it runs but its worker's sends keep failing."""
    return {
        name: workers[name].state if name in workers else sink.state
        for name, sink in sinks.items()
    }


@dataclass(slots=True)
class Health:
    """The /healthz report: database usable, sinks running, outbox not stuck, and what
    is known to be wrong with the targets.

    Never waits for the database: its state comes from the last write attempt
    (Store.health) and from reads, which WAL mode serves without a lock.
    """

    store: Store
    sinks: Mapping[str, Sink]
    stuck_after: float
    workers: Mapping[str, OutboxWorker] = field(default_factory=dict)
    dispatch: DispatchStage | None = None
    #: What the targets' checks found (a target problem never makes `ok` false: a
    #: restart would not fix a missing permission).
    preflight: Preflight | None = None
    #: What the sources found wrong on their provider's side (never makes `ok` false).
    source_problems: SourceProblems | None = None
    started: float = field(default_factory=time.monotonic)
    # Wall-clock time the workers started; deliveries due before then are not overdue yet.
    workers_started: float | None = None
    #: Bot processes on the database, this one included, at the last heartbeat.
    processes: int = 1

    async def readiness(self) -> str | None:
        """What keeps this process from storing webhooks (for /readyz), or None."""
        probe = await self.store.check()
        return None if probe == "ok" else f"database unavailable: {probe.removeprefix('error: ')}"

    async def report(self) -> dict[str, Any]:
        """What /healthz answers; `ok` decides 200 or 503."""
        probe = await self.store.check()
        database, database_error = ("ok", None) if probe == "ok" else ("unavailable", probe)
        sink_states_now = sink_states(self.sinks, self.workers)
        unrecorded = sum(worker.unrecorded for worker in self.workers.values())
        outbox: dict[str, Any] = {}
        stuck = False
        if database == "ok":
            try:
                counts = await self.store.outbox_counts()
                oldest_due = await self.store.oldest_due(list(self.sinks))
            except StoreUnavailable as exc:
                database, database_error = "unavailable", f"error: {exc}"
            else:
                overdue = 0.0
                if oldest_due is not None and self.workers_started is not None:
                    overdue = max(time.time() - max(oldest_due, self.workers_started), 0.0)
                stuck = overdue > self.stuck_after
                outbox = {
                    "pending": counts.by_state.get("pending", 0),
                    "failed": counts.by_state.get("failed", 0),
                    "overdue_seconds": round(overdue, 1),
                    "stuck": stuck,
                }
        outbox["unrecorded"] = unrecorded
        dispatch_error = self.dispatch.error if self.dispatch is not None else None
        report: dict[str, Any] = {
            "ok": database == "ok"
            and not stuck
            and unrecorded == 0
            and dispatch_error is None
            and all(s == "running" for s in sink_states_now.values()),
            "uptime_seconds": round(time.monotonic() - self.started, 1),
            # Which process answered, of how many on the database (the outbox is shared).
            "process": PROCESS_ID,
            "processes": self.processes,
            "database": database,
            "sinks": sink_states_now,
            "outbox": outbox,
            "targets": self.preflight.as_json() if self.preflight is not None else {},
            "sources": (
                self.source_problems.as_json() if self.source_problems is not None else {}
            ),
        }
        if database_error is not None:
            report["database_error"] = database_error.removeprefix("error: ")
        if dispatch_error is not None:
            # Webhooks are still stored; nothing goes out until this clears.
            report["dispatch_error"] = dispatch_error
        return report


def _bound_address(runner: web.AppRunner, config: Config) -> tuple[str, int]:
    """The address actually bound (port 0 in config means the OS picked one)."""
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return str(address[0]), int(address[1])
    return config.server.host, config.server.port
